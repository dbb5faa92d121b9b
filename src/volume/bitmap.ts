// A persistent bitmap of fixed-size chunks of a volume, backed by one file. The allocation map and
// the differential records (regions changed while a pair is suspended) are both such bitmaps.
//
// Ordering rule that makes it crash-safe: a caller that sets bits awaits `persist()` *before* the
// data write those bits describe is issued. A bit may therefore be set for data that never arrived
// (harmless: a region is copied or reported allocated needlessly) but never be missing for data that
// did (that would lose a region from a resync or an initial copy).
import { type Disk, type DiskFile, readFully, writeAll } from '../common/disk';
import { InvariantError, invariant } from '../common/errors';

const headerMagic = 'TCBITMAP';
const headerVersion = 1;
export const bitmapHeaderBytes = 64;

export interface BitRun {
  firstBit: number;
  bitCount: number;
  set: boolean;
}

export class PersistentBitmap {
  private bits: Uint8Array;
  private dirtyLowByte = Number.POSITIVE_INFINITY;
  private dirtyHighByte = 0;
  private changeGeneration = 0;
  private persistedGeneration = 0;
  private syncedGeneration = 0;
  private persistChain: Promise<void> = Promise.resolve();
  /** The datasync running now, if one is (see sync()). */
  private syncing: Promise<void> | null = null;
  private setCount: number;
  private closed = false;

  private constructor(
    readonly file: string,
    private readonly handle: DiskFile,
    readonly chunkBytes: number,
    private bitCountValue: number,
    bits: Uint8Array,
  ) {
    this.bits = bits;
    this.setCount = countBits(bits, bitCountValue);
  }

  static async create(disk: Disk, file: string, chunkBytes: number, bitCount: number): Promise<PersistentBitmap> {
    invariant(Number.isInteger(chunkBytes) && chunkBytes > 0, 'bitmap chunk size is a positive integer');
    const handle = await disk.open(file, 'wx+');
    try {
      const bits = new Uint8Array(byteLength(bitCount));
      await writeAll(handle, [encodeHeader(chunkBytes, bitCount), Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength)], 0);
      await handle.datasync();
      return new PersistentBitmap(file, handle, chunkBytes, bitCount, bits);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  /** `expectedChunkBytes`: the chunk size the file must have, or 'recorded' for whatever its header says. */
  static async open(disk: Disk, file: string, expectedChunkBytes: number | 'recorded'): Promise<PersistentBitmap> {
    const handle = await disk.open(file, 'r+');
    try {
      const fileBytes = await handle.sizeBytes();
      const header = await readFully(handle, Buffer.alloc(bitmapHeaderBytes), Math.min(bitmapHeaderBytes, fileBytes), 0);
      const { chunkBytes, bitCount } = decodeHeader(fileBytes < bitmapHeaderBytes ? Buffer.alloc(0) : header, file);
      if (expectedChunkBytes !== 'recorded' && chunkBytes !== expectedChunkBytes) {
        throw new Error(`bitmap ${file} has chunk size ${chunkBytes}, expected ${expectedChunkBytes}`);
      }
      const bits = new Uint8Array(byteLength(bitCount));
      if (fileBytes < bitmapHeaderBytes + bits.length) throw new Error(`bitmap ${file} is truncated`);
      await readFully(handle, Buffer.from(bits.buffer, bits.byteOffset, bits.byteLength), bits.length, bitmapHeaderBytes);
      return new PersistentBitmap(file, handle, chunkBytes, bitCount, bits);
    } catch (err) {
      await handle.close();
      throw err;
    }
  }

  get bitCount(): number {
    return this.bitCountValue;
  }

  get setBitCount(): number {
    return this.setCount;
  }

  /** True while some bit change is not yet written to the file (not necessarily synced). */
  get hasUnpersistedChanges(): boolean {
    return this.persistedGeneration < this.changeGeneration;
  }

  get(bit: number): boolean {
    return (this.bits[bit >>> 3]! & (1 << (bit & 7))) !== 0;
  }

  /** Chunk indexes covering [offset, offset+length). */
  chunkRange(offset: number, length: number): { first: number; count: number } {
    if (length === 0) return { first: Math.floor(offset / this.chunkBytes), count: 0 };
    const first = Math.floor(offset / this.chunkBytes);
    const last = Math.floor((offset + length - 1) / this.chunkBytes);
    return { first, count: last - first + 1 };
  }

  /** Chunks wholly inside [offset, offset+length). */
  fullChunkRange(offset: number, length: number): { first: number; count: number } {
    const first = Math.ceil(offset / this.chunkBytes);
    const end = Math.floor((offset + length) / this.chunkBytes);
    return { first, count: Math.max(0, end - first) };
  }

  anySet(first: number, count: number): boolean {
    for (let bit = first; bit < first + count; bit++) if (this.get(bit)) return true;
    return false;
  }

  allSet(first: number, count: number): boolean {
    for (let bit = first; bit < first + count; bit++) if (!this.get(bit)) return false;
    return true;
  }

  /** Sets bits; returns true if any bit changed. The caller must await persist() before relying on it. */
  setRange(first: number, count: number): boolean {
    return this.changeRange(first, count, true);
  }

  clearRange(first: number, count: number): boolean {
    return this.changeRange(first, count, false);
  }

  setAll(): void {
    this.setRange(0, this.bitCountValue);
  }

  clearAll(): void {
    this.clearRange(0, this.bitCountValue);
  }

  /** Marks every chunk touched by a byte range. */
  markBytes(offset: number, length: number): boolean {
    const { first, count } = this.chunkRange(offset, length);
    return this.setRange(first, count);
  }

  /** ORs another bitmap of the same geometry into this one (union of differential records). */
  mergeFrom(other: PersistentBitmap | Uint8Array): boolean {
    const src = other instanceof PersistentBitmap ? other.bits : other;
    invariant(src.length === this.bits.length, 'merged bitmaps have the same geometry');
    let changed = false;
    for (let i = 0; i < src.length; i++) {
      const merged = this.bits[i]! | src[i]!;
      if (merged !== this.bits[i]) {
        this.bits[i] = merged;
        this.noteDirty(i, i + 1);
        changed = true;
      }
    }
    if (changed) {
      this.setCount = countBits(this.bits, this.bitCountValue);
      this.changeGeneration++;
    }
    return changed;
  }

  snapshot(): Uint8Array {
    return this.bits.slice();
  }

  /** Runs of equal bits from `firstBit`, at most `maxRuns` of them, covering at most `maxBits`. */
  runs(firstBit: number, maxBits: number, maxRuns: number): BitRun[] {
    const out: BitRun[] = [];
    const end = Math.min(this.bitCountValue, firstBit + maxBits);
    let bit = firstBit;
    while (bit < end && out.length < maxRuns) {
      const set = this.get(bit);
      let next = bit + 1;
      while (next < end && this.get(next) === set) {
        // Skip whole bytes of equal content quickly.
        if ((next & 7) === 0 && next + 8 <= end) {
          const byte = this.bits[next >>> 3]!;
          if ((set && byte === 0xff) || (!set && byte === 0)) {
            next += 8;
            continue;
          }
        }
        next++;
      }
      out.push({ firstBit: bit, bitCount: next - bit, set });
      bit = next;
    }
    return out;
  }

  /** Iterates set bits as [first, count) runs. */
  *setRuns(): Generator<{ first: number; count: number }> {
    let bit = 0;
    while (bit < this.bitCountValue) {
      const byte = this.bits[bit >>> 3]!;
      if ((bit & 7) === 0 && byte === 0) {
        bit += 8;
        continue;
      }
      if (!this.get(bit)) {
        bit++;
        continue;
      }
      const first = bit;
      while (bit < this.bitCountValue && this.get(bit)) bit++;
      yield { first, count: bit - first };
    }
  }

  /** Grows the bitmap (volumes only grow). New bits start clear or set as asked. */
  async grow(newBitCount: number, fillSet: boolean): Promise<void> {
    invariant(newBitCount >= this.bitCountValue, 'bitmaps only grow');
    const oldCount = this.bitCountValue;
    const bits = new Uint8Array(byteLength(newBitCount));
    bits.set(this.bits);
    this.bits = bits;
    this.bitCountValue = newBitCount;
    if (fillSet) this.setRange(oldCount, newBitCount - oldCount);
    // Rare: rewrite the whole file rather than track which tail bytes are new.
    this.noteDirty(0, bits.length);
    this.changeGeneration++;
    await this.persist();
    await writeAll(this.handle, [encodeHeader(this.chunkBytes, newBitCount)], 0);
    await this.sync();
  }

  /** Writes every change made so far to the file (page cache). Survives a process crash. */
  persist(): Promise<void> {
    if (this.persistedGeneration === this.changeGeneration) return this.persistChain;
    const target = this.changeGeneration;
    this.persistChain = this.persistChain.then(async () => {
      if (this.persistedGeneration >= target) return;
      const generation = this.changeGeneration;
      const low = this.dirtyLowByte;
      const high = this.dirtyHighByte;
      this.dirtyLowByte = Number.POSITIVE_INFINITY;
      this.dirtyHighByte = 0;
      if (high > low) {
        // Copy so later in-memory changes cannot tear what is being written.
        const slice = Buffer.from(this.bits.subarray(low, high));
        await writeAll(this.handle, [slice], bitmapHeaderBytes + low);
      }
      this.persistedGeneration = generation;
    });
    return this.persistChain;
  }

  /**
   * persist() and then fdatasync: survives power loss. Group commit: callers that arrive while a
   * datasync runs wait for it and then share one more (the running one may have started before
   * their bits were written), so N concurrent first writes cost two fdatasyncs, not N.
   */
  async sync(): Promise<void> {
    const target = this.changeGeneration;
    await this.persist();
    while (this.syncedGeneration < target) {
      if (!this.syncing) {
        // Everything persisted so far is in the page cache: this datasync covers it.
        const covers = this.persistedGeneration;
        this.syncing = this.handle.datasync().then(() => {
          this.syncedGeneration = Math.max(this.syncedGeneration, covers);
        }).finally(() => {
          this.syncing = null;
        });
      }
      await this.syncing;
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.sync();
    await this.handle.close();
  }

  private changeRange(first: number, count: number, value: boolean): boolean {
    if (first < 0 || count < 0 || first + count > this.bitCountValue) {
      throw new InvariantError(`bit range ${first}+${count} outside bitmap of ${this.bitCountValue} bits`);
    }
    let changed = false;
    for (let bit = first; bit < first + count; bit++) {
      const index = bit >>> 3;
      const mask = 1 << (bit & 7);
      const before = this.bits[index]!;
      const after = value ? before | mask : before & ~mask;
      if (after !== before) {
        this.bits[index] = after;
        this.setCount += value ? 1 : -1;
        this.noteDirty(index, index + 1);
        changed = true;
      }
    }
    if (changed) this.changeGeneration++;
    return changed;
  }

  private noteDirty(low: number, high: number): void {
    if (low < this.dirtyLowByte) this.dirtyLowByte = low;
    if (high > this.dirtyHighByte) this.dirtyHighByte = high;
  }
}

function byteLength(bitCount: number): number {
  return Math.ceil(bitCount / 8);
}

function countBits(bits: Uint8Array, bitCount: number): number {
  let count = 0;
  for (let i = 0; i < bits.length; i++) {
    let v = bits[i]!;
    if (i === bits.length - 1 && bitCount % 8 !== 0) v &= (1 << (bitCount % 8)) - 1;
    while (v) {
      v &= v - 1;
      count++;
    }
  }
  return count;
}

function encodeHeader(chunkBytes: number, bitCount: number): Buffer {
  const header = Buffer.alloc(bitmapHeaderBytes);
  header.write(headerMagic, 0, 'ascii');
  header.writeUInt32BE(headerVersion, 8);
  header.writeUInt32BE(chunkBytes, 12);
  header.writeBigUInt64BE(BigInt(bitCount), 16);
  return header;
}

function decodeHeader(header: Buffer, file: string): { chunkBytes: number; bitCount: number } {
  if (header.length < bitmapHeaderBytes || header.toString('ascii', 0, 8) !== headerMagic) {
    throw new Error(`${file} is not a tricopy bitmap (bad magic)`);
  }
  const version = header.readUInt32BE(8);
  if (version !== headerVersion) throw new Error(`${file} has unsupported bitmap version ${version}`);
  return { chunkBytes: header.readUInt32BE(12), bitCount: Number(header.readBigUInt64BE(16)) };
}
