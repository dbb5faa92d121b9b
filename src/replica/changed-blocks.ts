// Changed-block bitmaps of one volume, one per consumer (a backup tool): persistent and crash-safe.
// A write marks its regions and the new bits reach the disk before the write is issued (the rule of
// volume/bitmap.ts), so after any crash a bitmap covers every write that may have landed. Served
// over NBD as the metadata context qemu:dirty-bitmap:NAME (flag 1: dirty).
//
// Files in the volume's directory: bitmaps.json (the list; the commit point) and bitmap-NAME.bits.
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { TricopyError } from '../common/errors';
import { atomicWriteJson, isAtomicTemp, readJsonIfExists } from '../common/fsutil';
import type { ContextRun } from '../volume/block-device';
import { PersistentBitmap } from '../volume/bitmap';
import { maxBitmapsPerVolume, objectNamePattern, regionBytes } from './limits';

export const dirtyBitmapContextPrefix = 'qemu:dirty-bitmap:';
/** qemu's NBD_STATE_DIRTY. */
export const stateDirty = 1;

export interface BitmapRecord {
  name: string;
  createdAt: string;
  clearedAt: string;
}

interface Entry {
  record: BitmapRecord;
  bits: PersistentBitmap;
}

export class ChangedBlockBitmaps {
  private readonly entries = new Map<string, Entry>();

  private constructor(private readonly dir: string, private readonly disk: Disk, private readonly regionCount: number) {}

  static async open(disk: Disk, dir: string, regionCount: number): Promise<ChangedBlockBitmaps> {
    const set = new ChangedBlockBitmaps(dir, disk, regionCount);
    const records = ((await readJsonIfExists(path.join(dir, 'bitmaps.json'), disk)) ?? []) as BitmapRecord[];
    for (const record of records) {
      const bits = await PersistentBitmap.open(disk, set.file(record.name), regionBytes);
      set.entries.set(record.name, { record, bits });
    }
    // A bitmap file without a record is the leftover of an add that did not commit.
    for (const name of await disk.list(dir)) {
      const match = /^bitmap-(.*)\.bits$/.exec(name);
      if ((match && !set.entries.has(match[1]!)) || (name.startsWith('.bitmaps.json') && isAtomicTemp(name))) {
        await disk.remove(path.join(dir, name));
      }
    }
    return set;
  }

  get size(): number {
    return this.entries.size;
  }

  names(): string[] {
    return [...this.entries.keys()].sort();
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  record(name: string): BitmapRecord {
    return this.entry(name).record;
  }

  bits(name: string): PersistentBitmap {
    return this.entry(name).bits;
  }

  /** The caller holds the volume's gate: the bitmap starts at one instant between two writes. */
  async add(name: string, now: string, volume: string): Promise<BitmapRecord> {
    validateObjectName(name, 'bitmap');
    if (this.entries.has(name)) {
      throw new TricopyError('already-exists', `volume ${volume} has a bitmap named ${name} already`, `clear it with: tricopy volume bitmap clear ${volume} --name ${name}`);
    }
    if (this.entries.size >= maxBitmapsPerVolume) {
      throw new TricopyError('no-space', `volume ${volume} has ${maxBitmapsPerVolume} bitmaps, the most it may have`, 'delete one a backup tool no longer uses');
    }
    await this.disk.mkdirp(this.dir);
    await this.disk.remove(this.file(name));
    const bits = await PersistentBitmap.create(this.disk, this.file(name), regionBytes, this.regionCount);
    const record: BitmapRecord = { name, createdAt: now, clearedAt: now };
    this.entries.set(name, { record, bits });
    try {
      await this.saveIndex();
    } catch (err) {
      this.entries.delete(name);
      await bits.close().catch(() => undefined);
      throw err;
    }
    return record;
  }

  /** The caller holds the volume's gate. */
  async clear(name: string, now: string): Promise<BitmapRecord> {
    const entry = this.entry(name);
    entry.bits.clearAll();
    await entry.bits.sync();
    entry.record = { ...entry.record, clearedAt: now };
    await this.saveIndex();
    return entry.record;
  }

  async remove(name: string): Promise<void> {
    const entry = this.entry(name);
    this.entries.delete(name);
    await this.saveIndex();
    await entry.bits.close().catch(() => undefined);
    await this.disk.remove(this.file(name));
  }

  /** Marks the regions of a change; the promise (when any bit is new) resolves once they are on disk. */
  mark(offset: number, length: number): Promise<void> | undefined {
    let pending: Promise<void>[] | undefined;
    for (const { bits } of this.entries.values()) {
      if (bits.markBytes(offset, length) || bits.hasUnpersistedChanges) (pending ??= []).push(bits.sync());
    }
    if (!pending) return undefined;
    return pending.length === 1 ? pending[0] : Promise.all(pending).then(() => undefined);
  }

  async closeAll(): Promise<void> {
    for (const { bits } of this.entries.values()) await bits.close().catch(() => undefined);
  }

  /** Removes every bitmap and the list (the volume is deleted). */
  async destroy(): Promise<void> {
    await this.closeAll();
    for (const name of this.entries.keys()) await this.disk.remove(this.file(name));
    this.entries.clear();
    await this.disk.remove(path.join(this.dir, 'bitmaps.json'));
  }

  private entry(name: string): Entry {
    const entry = this.entries.get(name);
    if (!entry) throw new TricopyError('not-found', `no bitmap named ${name}`, 'list them with: tricopy volume bitmap list VOLUME');
    return entry;
  }

  private file(name: string): string {
    return path.join(this.dir, `bitmap-${name}.bits`);
  }

  private saveIndex(): Promise<void> {
    return atomicWriteJson(path.join(this.dir, 'bitmaps.json'), [...this.entries.values()].map((e) => e.record), this.disk);
  }
}

/** Runs of a bitmap as NBD status runs (flag 1 where dirty), from `offset`, clipped to `sizeBytes`. */
export function bitmapRuns(bits: { get(bit: number): boolean; runs(first: number, max: number, maxRuns: number): Array<{ firstBit: number; bitCount: number; set: boolean }> },
  sizeBytes: number, offset: number, length: number, maxRuns: number): ContextRun[] {
  const end = Math.min(sizeBytes, offset + Math.max(1, length));
  const first = Math.floor(offset / regionBytes);
  const last = Math.ceil(end / regionBytes);
  const out: ContextRun[] = [];
  for (const run of bits.runs(first, last - first, maxRuns)) {
    const start = Math.max(offset, run.firstBit * regionBytes);
    const stop = Math.min(sizeBytes, (run.firstBit + run.bitCount) * regionBytes);
    if (stop <= start) continue;
    const flags = run.set ? stateDirty : 0;
    const previous = out[out.length - 1];
    if (previous && previous.flags === flags) previous.length += stop - start;
    else out.push({ length: stop - start, flags });
  }
  return out;
}

export function validateObjectName(name: string, what: string): void {
  if (!objectNamePattern.test(name)) {
    throw new TricopyError('invalid-argument', `"${name}" is not a valid ${what} name`,
      'use 1–63 letters, digits, ".", "_" or "-", starting with a letter or digit');
  }
}
