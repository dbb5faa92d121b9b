// Where one snapshot keeps the old contents of the blocks it preserved.
//
// A snapshot taken by this release appends them to snap-ID.log, one run of blocks after another,
// and records each run in snap-ID.slots: (first block, block count, first slot of the log, crc32c).
// A run that was a hole of the volume (nothing to copy; it reads as zeroes) gets a record too, with
// no slot: every block the map counts as preserved then has a record, and a record an interrupted
// copy left for the same block can never be taken for it.
// Appending is the point: first writes after a snapshot land at random offsets of the volume, and on
// ext4 their copies with the syncs they wait for run 1.6 × as fast appended as at their own offsets
// of a sparse file, at 0.85 × the CPU (bench/snapshot-layout.ts); every first write pays its copy
// before it reaches the volume.
//
// A snapshot taken by an earlier release keeps each block at its own offset of the sparse
// snap-ID.data; it is read and written in place, as it was written.
//
// The snapshot's map (snap-ID.map) stays the commit point for both: its bit for a block is set, and
// synced, only after the block and its slot record are durable. So a record counts only for a block
// whose bit is set; records a power loss tore or left without their data fail their checksum or
// name blocks whose bit is clear, and are ignored. A block is appended at most once while its bit is
// set, so the last valid record of a block is the one its bit points at.
import * as path from 'node:path';
import { type Disk, type DiskFile, readFully, writeAll } from '../common/disk';
import { crc32c } from '../common/crc32c';
import { invariant } from '../common/errors';
import { GroupSync } from './group-sync';

/** Bytes of one slot record: first block, block count, first slot, crc32c of the three (all u32 LE). */
export const slotRecordBytes = 16;
/** Blocks per chunk of the in-memory slot index; chunks exist only where something was preserved. */
const indexChunkBlocks = 4096;
/** Mixed into each record's checksum so that zeroes never make a valid record. */
const recordSeed = 0x74726963;
/** The first slot of a record for a run that was a hole of the volume: no data, zeroes. */
export const holeSlot = 0xffff_ffff;
/** In the index: no record (-1), a hole (-2); else the block's slot in the log. */
const noRecord = -1;
const hole = -2;

export interface SlotRecord {
  firstBlock: number;
  blockCount: number;
  firstSlot: number;
}

/** The bytes of one slot record. */
export function encodeSlotRecord(r: SlotRecord): Buffer {
  const b = Buffer.alloc(slotRecordBytes);
  b.writeUInt32LE(r.firstBlock, 0);
  b.writeUInt32LE(r.blockCount, 4);
  b.writeUInt32LE(r.firstSlot, 8);
  b.writeUInt32LE(crc32c(b.subarray(0, 12), recordSeed), 12);
  return b;
}

/** The record in `bytes` (at least slotRecordBytes), or undefined when its checksum does not match. */
export function decodeSlotRecord(bytes: Buffer): SlotRecord | undefined {
  if (bytes.readUInt32LE(12) !== crc32c(bytes.subarray(0, 12), recordSeed)) return undefined;
  const r = { firstBlock: bytes.readUInt32LE(0), blockCount: bytes.readUInt32LE(4), firstSlot: bytes.readUInt32LE(8) };
  return r.blockCount > 0 ? r : undefined;
}

export type SnapshotBlocksLayout = 'log' | 'in-place';

export class SnapshotBlocks {
  /** Slot of each block in the log (or noRecord, hole); chunked so that memory follows what was preserved. */
  private readonly index = new Map<number, Int32Array>();
  private readonly group: GroupSync;

  private constructor(readonly layout: SnapshotBlocksLayout, private readonly data: DiskFile, private readonly slots: DiskFile | undefined,
    private readonly blockBytes: number, private readonly sizeBytes: number, private nextSlot: number, private nextRecord: number) {
    this.group = new GroupSync(() => this.syncFiles());
  }

  /** New, empty, in the log layout. `file(what)` names the snapshot's files. */
  static async create(disk: Disk, file: (what: string) => string, blockBytes: number, sizeBytes: number): Promise<SnapshotBlocks> {
    const log = await disk.open(file('log'), 'wx+');
    try {
      const slots = await disk.open(file('slots'), 'wx+');
      return new SnapshotBlocks('log', log, slots, blockBytes, sizeBytes, 0, 0);
    } catch (err) {
      await log.close();
      throw err;
    }
  }

  /** Opens what `create` (or an earlier release's sparse data file) left, after a restart or a power loss. */
  static async open(disk: Disk, file: (what: string) => string, blockBytes: number, sizeBytes: number, names: readonly string[]): Promise<SnapshotBlocks> {
    if (!names.includes(path.basename(file('slots')))) {
      return new SnapshotBlocks('in-place', await disk.open(file('data'), 'r+'), undefined, blockBytes, sizeBytes, 0, 0);
    }
    const log = await disk.open(file('log'), 'r+');
    let slots: DiskFile | undefined;
    try {
      slots = await disk.open(file('slots'), 'r+');
      const slotBytes = await slots.sizeBytes();
      const logSlots = Math.ceil((await log.sizeBytes()) / blockBytes);
      const records = await readFully(slots, Buffer.alloc(slotBytes), slotBytes, 0);
      const blocks = new SnapshotBlocks('log', log, slots, blockBytes, sizeBytes, logSlots, Math.floor(slotBytes / slotRecordBytes));
      const blockCount = Math.ceil(sizeBytes / blockBytes);
      for (let at = 0; at + slotRecordBytes <= slotBytes; at += slotRecordBytes) {
        const r = decodeSlotRecord(records.subarray(at, at + slotRecordBytes));
        // Past the log's end or the volume's: its data or its whole record did not survive.
        if (!r || r.firstBlock + r.blockCount > blockCount) continue;
        if (r.firstSlot === holeSlot) {
          for (let i = 0; i < r.blockCount; i++) blocks.setSlot(r.firstBlock + i, hole);
        } else if (r.firstSlot + r.blockCount <= logSlots) {
          for (let i = 0; i < r.blockCount; i++) blocks.setSlot(r.firstBlock + i, r.firstSlot + i);
        }
      }
      return blocks;
    } catch (err) {
      await slots?.close();
      await log.close();
      throw err;
    }
  }

  /**
   * Writes the old contents of blocks `first`… (`data`, whole blocks but for the volume's last).
   * Durable after a later `sync`.
   */
  async write(first: number, data: Buffer): Promise<void> {
    const count = Math.ceil(data.length / this.blockBytes);
    invariant(data.length > 0 && (data.length % this.blockBytes === 0 || first * this.blockBytes + data.length === this.sizeBytes),
      'a snapshot write covers whole blocks (but for the volume\'s last)');
    if (this.layout === 'in-place') return writeAll(this.data, [data], first * this.blockBytes);
    // Both positions are taken before the first await, so concurrent writes never share one.
    const slot = this.nextSlot;
    const record = this.nextRecord;
    this.nextSlot += count;
    this.nextRecord += 1;
    await Promise.all([
      writeAll(this.data, [data], slot * this.blockBytes),
      writeAll(this.slots!, [encodeSlotRecord({ firstBlock: first, blockCount: count, firstSlot: slot })], record * slotRecordBytes),
    ]);
    for (let i = 0; i < count; i++) this.setSlot(first + i, slot + i);
  }

  /**
   * Records that blocks `first`… (`count`) were holes of the volume: they read as zeroes. Durable
   * after a later `sync`; false when there was nothing to write (in place, the sparse file's hole
   * already reads so).
   */
  async writeHole(first: number, count: number): Promise<boolean> {
    if (this.layout === 'in-place') return false;
    const record = this.nextRecord++;
    await writeAll(this.slots!, [encodeSlotRecord({ firstBlock: first, blockCount: count, firstSlot: holeSlot })], record * slotRecordBytes);
    for (let i = 0; i < count; i++) this.setSlot(first + i, hole);
    return true;
  }

  /** Every write completed before the call is durable when it resolves (group commit). */
  sync(): Promise<void> {
    return this.group.sync();
  }

  /**
   * Reads bytes [offset, offset + into.length) of the snapshot's blocks, every one of them
   * preserved (the map says which are).
   */
  async read(offset: number, into: Buffer): Promise<void> {
    if (this.layout === 'in-place') {
      await readFully(this.data, into, into.length, offset);
      return;
    }
    const end = offset + into.length;
    let at = offset;
    while (at < end) {
      // One read per run of blocks that are consecutive in the log too.
      const block = Math.floor(at / this.blockBytes);
      const slot = this.slotOf(block);
      invariant(slot !== noRecord, `snapshot block ${block} has a record of where it is`);
      const next = (b: number): number => (slot === hole ? hole : slot + (b - block));
      let stop = Math.min(end, (block + 1) * this.blockBytes);
      for (let b = block + 1; stop < end && this.slotOf(b) === next(b); b++) stop = Math.min(end, (b + 1) * this.blockBytes);
      const part = into.subarray(at - offset, stop - offset);
      if (slot === hole) part.fill(0);
      else await readFully(this.data, part, stop - at, slot * this.blockBytes + (at - block * this.blockBytes));
      at = stop;
    }
  }

  async close(): Promise<void> {
    await this.slots?.close().catch(() => undefined);
    await this.data.close().catch(() => undefined);
  }

  private async syncFiles(): Promise<void> {
    await Promise.all([this.data.datasync(), this.slots?.datasync()]);
  }

  private slotOf(b: number): number {
    return this.index.get(Math.floor(b / indexChunkBlocks))?.[b % indexChunkBlocks] ?? noRecord;
  }

  private setSlot(b: number, slot: number): void {
    const key = Math.floor(b / indexChunkBlocks);
    let chunk = this.index.get(key);
    if (!chunk) {
      chunk = new Int32Array(indexChunkBlocks).fill(noRecord);
      this.index.set(key, chunk);
    }
    chunk[b % indexChunkBlocks] = slot;
  }
}
