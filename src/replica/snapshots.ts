// The snapshots of one volume: space-efficient, copy-on-write, oldest first. A snapshot stores only
// the blocks the volume changed after it was taken and before the next snapshot: a write to the
// volume first copies the old contents of each block the newest snapshot has not preserved yet,
// durably, and only then changes the volume. Reading snapshot k at block b takes b from the first
// snapshot at or after k that preserved it, else from the volume itself (unchanged since k).
//
// Blocks are 4 KiB (larger for very large volumes, see snapshotBlockBytesFor), one size for the
// whole chain: chosen when its first snapshot is taken, recorded in each map's header. Locks,
// changed-block bitmaps and the volume's allocation stay in 64 KiB regions.
//
// Files in the volume's directory: snapshots.json (the list; the commit point), and per snapshot
// snap-ID.log and snap-ID.slots (the preserved blocks, appended, and where each is: see
// snapshot-blocks.ts; snap-ID.data instead for snapshots taken by earlier releases), snap-ID.map
// (which blocks it preserved) and snap-ID.bitmap-NAME (changed-block bitmaps frozen with it).
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { TricopyError, invariant } from '../common/errors';
import { atomicWriteJson, isAtomicTemp, readJsonIfExists } from '../common/fsutil';
import type { ContextRun, Extent } from '../volume/block-device';
import { PersistentBitmap } from '../volume/bitmap';
import type { Volume } from '../volume/volume';
import { bitmapRuns } from './changed-blocks';
import { SnapshotBlocks } from './snapshot-blocks';
import { copyBatchRegions, maxSnapshotsPerVolume, regionBytes, snapshotBlockBytesFor } from './limits';

export interface SnapshotRecord {
  id: number;
  name: string;
  createdAt: string;
  group: string | null;
  /** Changed-block bitmaps frozen with it. */
  bitmaps: string[];
}

/** A change's copy-on-write into the newest snapshot: see SnapshotChain.preserve. */
export interface Preservation {
  copied: Promise<void>;
  durable: Promise<void>;
}

export interface SnapshotEntry {
  record: SnapshotRecord;
  blocks: SnapshotBlocks;
  map: PersistentBitmap;
  frozen: Map<string, PersistentBitmap>;
}

interface Index {
  nextId: number;
  snapshots: SnapshotRecord[];
}

export class SnapshotChain {
  private entries: SnapshotEntry[] = [];
  private nextId = 1;
  /** The chain's block size: its snapshots' (all alike), or what the next first snapshot will use. */
  private blockBytes: number;

  private constructor(private readonly dir: string, private readonly disk: Disk, private readonly sizeBytes: number) {
    this.blockBytes = snapshotBlockBytesFor(sizeBytes);
  }

  static async open(disk: Disk, dir: string, sizeBytes: number): Promise<SnapshotChain> {
    const chain = new SnapshotChain(dir, disk, sizeBytes);
    const index = (await readJsonIfExists(path.join(dir, 'snapshots.json'), disk)) as Index | undefined;
    const names = await disk.list(dir);
    if (index) {
      chain.nextId = index.nextId;
      for (const record of index.snapshots) chain.entries.push(await chain.openEntry(record, names));
      if (chain.entries.length > 0) chain.blockBytes = chain.entries[0]!.map.chunkBytes;
      for (const e of chain.entries) {
        invariant(e.map.chunkBytes === chain.blockBytes, `snapshot ${e.record.name} of ${dir} has blocks of ${e.map.chunkBytes} bytes, its chain ${chain.blockBytes}`);
      }
    }
    const live = new Set(chain.entries.map((e) => e.record.id));
    for (const name of names) {
      const match = /^snap-(\d+)\./.exec(name);
      if ((match && !live.has(Number(match[1]))) || (name.startsWith('.snapshots.json') && isAtomicTemp(name))) {
        await disk.remove(path.join(dir, name)); // an uncommitted create or an interrupted delete
      }
    }
    return chain;
  }

  get count(): number {
    return this.entries.length;
  }

  list(): SnapshotRecord[] {
    return this.entries.map((e) => e.record);
  }

  has(name: string): boolean {
    return this.entries.some((e) => e.record.name === name);
  }

  indexOf(name: string, volume: string): number {
    const index = this.entries.findIndex((e) => e.record.name === name);
    if (index < 0) {
      throw new TricopyError('not-found', `volume ${volume} has no snapshot named ${name}`, `list them with: tricopy snapshot list ${volume}`);
    }
    return index;
  }

  entry(index: number): SnapshotEntry {
    return this.entries[index]!;
  }

  /** Bytes held by snapshot `index`: the blocks it preserved. */
  usedBytes(index: number): number {
    return this.entries[index]!.map.setBitCount * this.blockBytes;
  }

  /**
   * Takes a snapshot. The caller holds the volume's gate: no change is in flight, so the snapshot
   * is the volume at this instant.
   */
  async create(name: string, now: string, group: string | null, frozen: Map<string, Uint8Array>, volume: string): Promise<SnapshotRecord> {
    if (this.has(name)) {
      throw new TricopyError('already-exists', `volume ${volume} has a snapshot named ${name} already`, 'choose another name, or delete the old snapshot first');
    }
    if (this.entries.length >= maxSnapshotsPerVolume) {
      throw new TricopyError('no-space', `volume ${volume} has ${maxSnapshotsPerVolume} snapshots, the most it may have`, 'delete old snapshots first');
    }
    await this.disk.mkdirp(this.dir);
    if (this.entries.length === 0) this.blockBytes = snapshotBlockBytesFor(this.sizeBytes);
    const record: SnapshotRecord = { id: this.nextId++, name, createdAt: now, group, bitmaps: [...frozen.keys()].sort() };
    let entry: SnapshotEntry | undefined;
    try {
      const blocks = await SnapshotBlocks.create(this.disk, (what) => this.file(record.id, what), this.blockBytes, this.sizeBytes);
      entry = { record, blocks, map: undefined as unknown as PersistentBitmap, frozen: new Map() };
      entry.map = await PersistentBitmap.create(this.disk, this.file(record.id, 'map'), this.blockBytes, Math.ceil(this.sizeBytes / this.blockBytes));
      for (const [bitmap, bits] of frozen) {
        const copy = await PersistentBitmap.create(this.disk, this.file(record.id, `bitmap-${bitmap}`), regionBytes, regionCountOf(this.sizeBytes));
        copy.mergeFrom(bits);
        await copy.sync();
        entry.frozen.set(bitmap, copy);
      }
      await this.disk.syncDir(this.dir);
      this.entries.push(entry);
      await this.saveIndex(); // commit point
    } catch (err) {
      this.entries = this.entries.filter((e) => e !== entry);
      if (entry) await closeEntry(entry);
      await this.removeFiles(record.id);
      throw err;
    }
    return record;
  }

  /**
   * Preserves, in the newest snapshot, the blocks of a change it has not preserved yet. The caller
   * holds the region lock of the range; the change must not reach the volume before `durable`
   * (undefined: nothing to do). `copied` resolves earlier, once the old contents are in the
   * snapshot's file (not yet durable): from then on a later read of the volume can no longer take
   * them, so the change may be answered if it is held back from the volume until `durable`.
   */
  preserve(volume: Volume, offset: number, length: number): Preservation | undefined {
    const newest = this.entries[this.entries.length - 1];
    if (!newest) return undefined;
    const first = Math.floor(offset / this.blockBytes);
    const last = Math.floor((offset + Math.max(1, length) - 1) / this.blockBytes);
    if (newest.map.allSet(first, last - first + 1)) return undefined;
    const copied = this.copyBlocks(newest, volume, first, last - first + 1);
    const durable = copied.then((wrote) => this.persistBlocks(newest, first, last - first + 1, wrote));
    durable.catch(() => undefined); // a caller that failed on `copied` never waits for it
    return { copied: copied.then(() => undefined), durable };
  }

  /** Copies the old contents of the blocks not preserved yet (holes of the volume as holes); true when anything was written. */
  private async copyBlocks(entry: SnapshotEntry, volume: Volume, first: number, count: number): Promise<boolean> {
    let wrote = false;
    const allocated = (b: number): boolean => volume.allocation.get(Math.floor((b * this.blockBytes) / regionBytes));
    for (let b = first; b < first + count;) {
      if (entry.map.get(b)) {
        b++;
        continue;
      }
      const isHole = !allocated(b);
      let end = b + 1;
      while (end < first + count && !entry.map.get(end) && allocated(end) !== isHole) end++;
      const start = b * this.blockBytes;
      const stop = Math.min(this.sizeBytes, end * this.blockBytes);
      if (isHole) {
        if (await entry.blocks.writeHole(b, end - b)) wrote = true;
      } else {
        await entry.blocks.write(b, await volume.readStored(start, stop - start));
        wrote = true;
      }
      b = end;
    }
    return wrote;
  }

  private async persistBlocks(entry: SnapshotEntry, first: number, count: number, wrote: boolean): Promise<void> {
    // Both syncs before the change is issued, not only before it is acknowledged: the volume is
    // written through the page cache, and writeback may put the new data on the disk at any moment
    // after that; a power loss must find the old contents and the bit that points at them there
    // first. Data before the bit: a bit on disk never points at data a power loss took. Both are
    // group commits (GroupSync, PersistentBitmap.sync), so concurrent first writes share them.
    if (wrote) await entry.blocks.sync();
    if (entry.map.setRange(first, count) || entry.map.hasUnpersistedChanges) await entry.map.sync();
  }

  /** The snapshot that holds block `b` of snapshot `index`'s image, or undefined: the volume does. */
  private sourceOf(index: number, b: number): SnapshotEntry | undefined {
    for (let j = index; j < this.entries.length; j++) {
      const e = this.entries[j]!;
      if (e.map.get(b)) return e;
    }
    return undefined;
  }

  /** Reads snapshot `index`'s image. The caller holds the volume's gate and the region lock of the range. */
  async read(index: number, volume: Volume, offset: number, length: number, target: Buffer): Promise<void> {
    const end = offset + length;
    let at = offset;
    while (at < end) {
      const block = Math.floor(at / this.blockBytes);
      const source = this.sourceOf(index, block);
      let stop = Math.min(end, (block + 1) * this.blockBytes);
      while (stop < end && this.sourceOf(index, Math.floor(stop / this.blockBytes)) === source) stop = Math.min(end, stop + this.blockBytes);
      const into = target.subarray(at - offset, stop - offset);
      if (source) await source.blocks.read(at, into);
      else await volume.readStored(at, stop - at, into);
      at = stop;
    }
  }

  /** Allocation status of snapshot `index`'s image: preserved regions are data, the rest is the volume's. */
  extents(index: number, volume: Volume, offset: number, length: number, maxExtents: number): Extent[] {
    const end = Math.min(this.sizeBytes, offset + Math.max(1, length));
    const out: Extent[] = [];
    let at = offset;
    while (at < end && out.length < maxExtents) {
      const region = Math.floor(at / regionBytes);
      const stop = Math.min(end, (region + 1) * regionBytes);
      const allocated = volume.allocation.get(region) || this.anyPreserved(index, region);
      const previous = out[out.length - 1];
      if (previous && previous.allocated === allocated) previous.length += stop - at;
      else if (out.length < maxExtents) out.push({ offset: at, length: stop - at, allocated, zero: !allocated });
      at = stop;
    }
    return out;
  }

  /** Whether snapshot `index`'s image takes any block of `region` from a snapshot. */
  private anyPreserved(index: number, region: number): boolean {
    const perRegion = regionBytes / this.blockBytes;
    for (let b = region * perRegion; b < (region + 1) * perRegion && b * this.blockBytes < this.sizeBytes; b++) {
      if (this.sourceOf(index, b) !== undefined) return true;
    }
    return false;
  }

  /** Runs of a bitmap frozen with snapshot `index`, or undefined. */
  frozenRuns(index: number, bitmap: string, offset: number, length: number, maxRuns: number): ContextRun[] | undefined {
    const bits = this.entries[index]?.frozen.get(bitmap);
    if (!bits) return undefined;
    return bitmapRuns(bits, this.sizeBytes, offset, length, maxRuns);
  }

  /** Regions that differ between snapshot `index` and the volume now (a block of them preserved by it or a newer one). */
  changedSince(index: number): Uint8Array {
    const union = new Uint8Array(Math.ceil(regionCountOf(this.sizeBytes) / 8));
    const perRegion = regionBytes / this.blockBytes;
    for (let j = index; j < this.entries.length; j++) {
      for (const run of this.entries[j]!.map.setRuns()) {
        const last = Math.floor((run.first + run.count - 1) / perRegion);
        for (let r = Math.floor(run.first / perRegion); r <= last; r++) union[r >>> 3]! |= 1 << (r & 7);
      }
    }
    return union;
  }

  /**
   * First part of deleting snapshot `index`: the older neighbour reads through it, so every block
   * it preserved that the neighbour did not moves there. Runs while the volume is in use; when the
   * snapshot is the newest, writes keep preserving into it, so `finishDelete` moves the rest.
   * Returns the bytes moved.
   */
  async mergeIntoOlder(index: number): Promise<number> {
    if (index === 0) return 0;
    const from = this.entries[index]!;
    const into = this.entries[index - 1]!;
    let moved = 0;
    const bits = from.map.snapshot();
    const blocks = from.map.bitCount;
    const batchBlocks = (copyBatchRegions * regionBytes) / this.blockBytes;
    for (let b = 0; b < blocks;) {
      const byte = bits[b >>> 3]!;
      if ((b & 7) === 0 && byte === 0) {
        b += 8;
        continue;
      }
      if (!(byte & (1 << (b & 7))) || into.map.get(b)) {
        b++;
        continue;
      }
      let end = b + 1;
      while (end < blocks && end - b < batchBlocks && (bits[end >>> 3]! & (1 << (end & 7))) && !into.map.get(end)) end++;
      const start = b * this.blockBytes;
      const stop = Math.min(this.sizeBytes, end * this.blockBytes);
      const data = Buffer.allocUnsafe(stop - start);
      await from.blocks.read(start, data);
      await into.blocks.write(b, data);
      await into.blocks.sync();
      into.map.setRange(b, end - b);
      await into.map.sync();
      moved += stop - start;
      b = end;
    }
    return moved;
  }

  /** Removes snapshot `index`. The caller holds the volume's gate (no change, no read in flight). */
  async finishDelete(index: number): Promise<void> {
    await this.mergeIntoOlder(index);
    const [entry] = this.entries.splice(index, 1);
    invariant(entry !== undefined, 'the deleted snapshot exists');
    try {
      await this.saveIndex(); // commit point
    } catch (err) {
      this.entries.splice(index, 0, entry);
      throw err;
    }
    await closeEntry(entry);
    await this.removeFiles(entry.record.id);
  }

  async closeAll(): Promise<void> {
    for (const entry of this.entries) await closeEntry(entry);
  }

  async destroy(): Promise<void> {
    await this.closeAll();
    for (const entry of this.entries) await this.removeFiles(entry.record.id);
    this.entries = [];
    await this.disk.remove(path.join(this.dir, 'snapshots.json'));
  }

  private async openEntry(record: SnapshotRecord, names: readonly string[]): Promise<SnapshotEntry> {
    const map = await PersistentBitmap.open(this.disk, this.file(record.id, 'map'), 'recorded');
    const blocks = await SnapshotBlocks.open(this.disk, (what) => this.file(record.id, what), map.chunkBytes, this.sizeBytes, names);
    const frozen = new Map<string, PersistentBitmap>();
    for (const bitmap of record.bitmaps) frozen.set(bitmap, await PersistentBitmap.open(this.disk, this.file(record.id, `bitmap-${bitmap}`), regionBytes));
    return { record, blocks, map, frozen };
  }

  private file(id: number, what: string): string {
    return path.join(this.dir, `snap-${id}.${what}`);
  }

  private async removeFiles(id: number): Promise<void> {
    for (const name of await this.disk.list(this.dir)) {
      if (name.startsWith(`snap-${id}.`)) await this.disk.remove(path.join(this.dir, name));
    }
  }

  private saveIndex(): Promise<void> {
    const index: Index = { nextId: this.nextId, snapshots: this.entries.map((e) => e.record) };
    return atomicWriteJson(path.join(this.dir, 'snapshots.json'), index, this.disk);
  }
}

export function regionCountOf(sizeBytes: number): number {
  return Math.ceil(sizeBytes / regionBytes);
}

async function closeEntry(entry: SnapshotEntry): Promise<void> {
  await entry.map?.close().catch(() => undefined);
  for (const bits of entry.frozen.values()) await bits.close().catch(() => undefined);
  await entry.blocks?.close();
}
