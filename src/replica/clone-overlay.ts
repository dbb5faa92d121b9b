// A writable clone of a read-only image (a snapshot's export), for a DR drill or any throwaway
// test: the image never changes; what hosts write to the clone goes to an overlay, a sparse file the
// image's size plus a bitmap of the 64 KiB regions it holds. The first write to a region copies the
// image's region into the overlay together with the write, makes it durable and only then records
// the region (so after a crash a recorded region always holds whole data); later writes to the
// region go to the overlay alone. Reads take each region from the overlay when it is recorded,
// else from the image. The clone costs only the regions it wrote.
//
// Files: DIR/ID.data (sparse, the image's size) and DIR/ID.map (the recorded regions).
import * as path from 'node:path';
import { type Disk, type DiskFile, readFully, writeAll } from '../common/disk';
import { RangeLock } from '../common/range-lock';
import { PersistentBitmap } from '../volume/bitmap';
import { BlockDeviceError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions, maxIoBytes } from '../volume/block-device';
import { GroupSync } from './group-sync';
import { regionBytes } from './limits';

/** Zeroes are written in pieces of this size (a write-zeroes request may span the whole clone). */
const zeroPieceBytes = 4 * 1024 * 1024;

export class CloneOverlay {
  private readonly sync: GroupSync;
  /** Set once the clone is discarded: requests still in flight fail instead of touching closed files. */
  closed = false;
  /**
   * Serialises the first write of a region (copy from the image, then record) across every
   * connection to the clone: each NBD connection gets its own device, all share the overlay.
   */
  readonly lock = new RangeLock();

  private constructor(readonly sizeBytes: number, private readonly data: DiskFile, readonly map: PersistentBitmap) {
    this.sync = new GroupSync(() => data.datasync());
  }

  static async create(disk: Disk, dir: string, id: string, sizeBytes: number): Promise<CloneOverlay> {
    await disk.mkdirp(dir);
    const data = await disk.open(path.join(dir, `${id}.data`), 'w+');
    try {
      await data.truncate(sizeBytes);
      await data.datasync();
      const map = await PersistentBitmap.create(disk, path.join(dir, `${id}.map`), regionBytes, Math.ceil(sizeBytes / regionBytes));
      await disk.syncDir(dir);
      return new CloneOverlay(sizeBytes, data, map);
    } catch (err) {
      await data.close().catch(() => undefined);
      throw err;
    }
  }

  static async open(disk: Disk, dir: string, id: string, sizeBytes: number): Promise<CloneOverlay> {
    const data = await disk.open(path.join(dir, `${id}.data`), 'r+');
    try {
      const map = await PersistentBitmap.open(disk, path.join(dir, `${id}.map`), regionBytes);
      return new CloneOverlay(sizeBytes, data, map);
    } catch (err) {
      await data.close().catch(() => undefined);
      throw err;
    }
  }

  static async remove(disk: Disk, dir: string, id: string): Promise<void> {
    await disk.remove(path.join(dir, `${id}.data`));
    await disk.remove(path.join(dir, `${id}.map`));
  }

  /** Bytes the clone wrote (whole regions). */
  get writtenBytes(): number {
    return Math.min(this.sizeBytes, this.map.setBitCount * regionBytes);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.map.close().catch(() => undefined);
    await this.data.close().catch(() => undefined);
  }

  readData(target: Buffer, offset: number, length: number): Promise<Buffer> {
    return readFully(this.data, target, length, offset);
  }

  writeData(pieces: Buffer[], offset: number): Promise<void> {
    return writeAll(this.data, pieces, offset);
  }

  syncData(): Promise<void> {
    return this.sync.sync();
  }
}

/** The clone's export: the image where the clone did not write, the overlay where it did. */
export class CloneDevice implements BlockDevice {
  readonly readOnly = false;

  constructor(readonly name: string, private readonly image: BlockDevice, private readonly overlay: CloneOverlay) {}

  get sizeBytes(): number {
    return this.overlay.sizeBytes;
  }

  async read(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    this.check(offset, length);
    const out = target ? target.subarray(0, length) : Buffer.allocUnsafe(length);
    const map = this.overlay.map;
    let at = offset;
    while (at < offset + length) {
      const region = Math.floor(at / regionBytes);
      const inOverlay = map.get(region);
      let stop = Math.min(offset + length, (region + 1) * regionBytes);
      while (stop < offset + length && map.get(Math.floor(stop / regionBytes)) === inOverlay) stop = Math.min(offset + length, stop + regionBytes);
      const into = out.subarray(at - offset, stop - offset);
      if (inOverlay) await this.overlay.readData(into, at, stop - at);
      else await this.image.read(at, stop - at, into);
      at = stop;
    }
    return out;
  }

  async write(offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    const pieces = Buffer.isBuffer(data) ? [data] : data;
    const length = pieces.reduce((n, p) => n + p.length, 0);
    this.check(offset, length);
    if (length === 0) return;
    const first = Math.floor(offset / regionBytes);
    const last = Math.floor((offset + length - 1) / regionBytes);
    const release = await this.overlay.lock.acquire(first * regionBytes, (last - first + 1) * regionBytes);
    try {
      const fresh: number[] = [];
      for (let r = first; r <= last; r++) if (!this.overlay.map.get(r)) fresh.push(r);
      // The parts of a fresh region the write does not cover keep the image's contents.
      for (const r of fresh) {
        const start = r * regionBytes;
        const end = Math.min(this.sizeBytes, start + regionBytes);
        if (offset <= start && offset + length >= end) continue;
        const base = await this.image.read(start, end - start);
        await this.overlay.writeData([base], start);
      }
      await this.overlay.writeData(pieces, offset);
      // A region is recorded only once its data is durable, so a recorded region never reads as a hole.
      if (fresh.length > 0 || options.fua) await this.overlay.syncData();
      if (fresh.length > 0) {
        for (const r of fresh) this.overlay.map.setRange(r, 1);
        await this.overlay.map.sync();
      }
    } finally {
      release();
    }
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    this.check(offset, length, false);
    if (options.fastOnly) throw new BlockDeviceError('ENOTSUP', 'a clone writes zeroes as data');
    const zero = Buffer.alloc(Math.min(zeroPieceBytes, Math.max(1, length)));
    for (let at = offset; at < offset + length; at += zero.length) {
      const n = Math.min(zero.length, offset + length - at);
      await this.write(at, zero.subarray(0, n), { fua: false });
    }
    if (options.fua) await this.flush();
  }

  async trim(offset: number, length: number): Promise<void> {
    // Advisory: the data stays (the image's or the overlay's); nothing is freed in a throwaway clone.
    this.check(offset, length, false);
  }

  async flush(): Promise<void> {
    await this.overlay.syncData();
    if (this.overlay.map.hasUnpersistedChanges) await this.overlay.map.sync();
  }

  extents(offset: number, length: number, maxExtents: number): Extent[] {
    const end = Math.min(this.sizeBytes, offset + Math.max(1, length));
    const out: Extent[] = [];
    const push = (e: Extent): void => {
      const previous = out[out.length - 1];
      if (previous && previous.allocated === e.allocated && previous.zero === e.zero && previous.offset + previous.length === e.offset) previous.length += e.length;
      else out.push({ ...e });
    };
    let at = offset;
    while (at < end && out.length < maxExtents) {
      const region = Math.floor(at / regionBytes);
      const inOverlay = this.overlay.map.get(region);
      let stop = Math.min(end, (region + 1) * regionBytes);
      while (stop < end && this.overlay.map.get(Math.floor(stop / regionBytes)) === inOverlay) stop = Math.min(end, stop + regionBytes);
      if (inOverlay) push({ offset: at, length: stop - at, allocated: true, zero: false });
      else {
        let covered = at;
        for (const e of this.image.extents(at, stop - at, maxExtents)) {
          const length = Math.min(e.length, stop - covered);
          if (length <= 0) break;
          push({ offset: covered, length, allocated: e.allocated, zero: e.zero });
          covered += length;
        }
        if (covered < stop) push({ offset: covered, length: stop - covered, allocated: true, zero: false });
      }
      at = stop;
    }
    return out.slice(0, maxExtents);
  }

  private check(offset: number, length: number, oneRequest = true): void {
    if (this.overlay.closed) throw new BlockDeviceError('ESHUTDOWN', `clone ${this.name} was discarded`);
    if (offset < 0 || length < 0 || offset + length > this.sizeBytes) {
      throw new BlockDeviceError('EINVAL', `clone ${this.name}: ${length} bytes at ${offset} fall outside its ${this.sizeBytes} bytes`);
    }
    if (oneRequest && length > maxIoBytes) throw new BlockDeviceError('EINVAL', `clone ${this.name}: ${length} bytes is more than one request may hold`);
  }
}
