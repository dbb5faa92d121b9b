// One volume: a sparse data file plus its allocation map. Owns positional I/O, durability (flush,
// FUA) and allocation status. Writes mark the allocation map durably before the data lands, so the
// map never claims a hole where data may exist.
import { BlockDeviceError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions, totalLength } from './block-device';
import { PersistentBitmap } from './bitmap';
import { type DiskFile, readFully, writeAll } from '../common/disk';
import { errnoCode, invariant } from '../common/errors';
import { WriteOverlay } from './write-overlay';

/** Granularity of the allocation map and of every later region-based copy. */
export const allocationChunkBytes = 64 * 1024;
/** Largest single zero-write issued while zeroing a range. */
const zeroBufferBytes = 1024 * 1024;
const zeroBuffer = Buffer.alloc(zeroBufferBytes);

export interface VolumeStats {
  allocatedBytes: number;
}

/**
 * What runs around every change of a volume, whoever makes it (a host through NBD, a remote copy
 * applying what it received, a resync): in-node replicas, snapshots and changed-block bitmaps
 * (src/replica) install one. `apply` performs the change on the volume itself; a hook calls it
 * exactly once and may do its own work before (copy-on-write, recording) and beside it (a second
 * copy). A hook may also answer a write first and apply it later, with the bytes kept in the
 * volume's overlay meanwhile (and passed to `apply`, since the caller's buffers are reused once
 * answered). The volume knows nothing of what a hook does.
 */
export interface VolumeHooks {
  write(offset: number, pieces: Buffer[], length: number, options: WriteOptions, apply: (pieces?: Buffer[]) => Promise<void>): Promise<void>;
  writeZeroes(offset: number, length: number, options: ZeroOptions, apply: () => Promise<void>): Promise<void>;
  flush(apply: () => Promise<void>): Promise<void>;
}

export class Volume implements BlockDevice {
  readonly readOnly = false;
  private flushRunning: Promise<void> | null = null;
  private flushQueued: Promise<void> | null = null;
  private closed = false;
  private writesSinceSync = 0;
  private hooks: VolumeHooks | null = null;
  /** Changes of the data file in flight, and who waits for none to be. */
  private changesInFlight = 0;
  private idleWaiters: Array<() => void> | null = null;
  /** Set while changes are held (a relocation switches the data file): new changes wait for it. */
  private changeHold: Promise<void> | null = null;
  /** Writes answered but not yet in the data file (see VolumeHooks); every read sees them. */
  readonly overlay = new WriteOverlay();

  constructor(
    readonly name: string,
    private size: number,
    private file: DiskFile,
    readonly allocation: PersistentBitmap,
  ) {
    invariant(allocation.chunkBytes === allocationChunkBytes, 'allocation map uses the volume chunk size');
    invariant(allocation.bitCount === chunkCount(size), 'allocation map covers the volume exactly');
  }

  get sizeBytes(): number {
    return this.size;
  }

  get allocatedBytes(): number {
    return Math.min(this.size, this.allocation.setBitCount * allocationChunkBytes);
  }

  read(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    if (this.overlay.size === 0) return this.readStored(offset, length, target);
    // Taken before the file is read: see WriteOverlay.overlapping.
    const deferred = this.overlay.overlapping(offset, length);
    const read = this.readStored(offset, length, target);
    if (deferred.length === 0) return read;
    return read.then((data) => {
      WriteOverlay.lay(deferred, data, offset);
      return data;
    });
  }

  /**
   * The data file's contents, without the answered writes still waiting in the overlay: what a
   * snapshot falls through to (those writes came after its instant, and once one of them fails
   * for good it never reaches the file).
   */
  readStored(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    try {
      this.checkRange(offset, length, 'EINVAL');
    } catch (err) {
      return Promise.reject(err);
    }
    const buffer = target ? target.subarray(0, length) : Buffer.allocUnsafe(length);
    if (length === 0) return Promise.resolve(buffer);
    // Past the end of a sparse file that was never extended reads as zeroes.
    return readFully(this.file, buffer, length, offset).catch((err: unknown) => Promise.reject(ioError(err, 'read', this.name)));
  }

  /** Installs (or with null removes) what runs around every change of this volume. */
  setHooks(hooks: VolumeHooks | null): void {
    this.hooks = hooks;
  }

  get hooked(): boolean {
    return this.hooks !== null;
  }

  /**
   * Resolves once no change of the data file is in flight. Whoever installs hooks waits for this
   * (with its own gate closed) so that no change that started before the hooks is still running.
   */
  idle(): Promise<void> {
    if (this.changesInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => (this.idleWaiters ??= []).push(resolve));
  }

  private changeDone(): void {
    if (--this.changesInFlight === 0 && this.idleWaiters) {
      const waiters = this.idleWaiters;
      this.idleWaiters = null;
      for (const resolve of waiters) resolve();
    }
  }

  write(offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    const length = totalLength(data);
    try {
      this.checkRange(offset, length, 'ENOSPC');
    } catch (err) {
      return Promise.reject(err);
    }
    if (this.overlay.failure) return Promise.reject(this.overlay.failure);
    if (length === 0) return Promise.resolve();
    if (this.hooks) {
      return this.hooks.write(offset, Buffer.isBuffer(data) ? [data] : data, length, options, (pieces) => this.writeUnhooked(offset, pieces ?? data, length, options));
    }
    return this.writeUnhooked(offset, data, length, options);
  }

  private writeUnhooked(offset: number, data: Buffer | Buffer[], length: number, options: WriteOptions): Promise<void> {
    if (this.changeHold) return this.changeHold.then(() => this.writeUnhooked(offset, data, length, options));
    const first = Math.floor(offset / allocationChunkBytes);
    const count = Math.floor((offset + length - 1) / allocationChunkBytes) - first + 1;
    if (!options.fua && !this.allocation.hasUnpersistedChanges && this.allocation.allSet(first, count)) {
      // The common case, without the awaits of the general path: the region is allocated and the
      // map says so durably, so only the data is written.
      const pieces = Buffer.isBuffer(data) ? [data] : data;
      this.changesInFlight++;
      return this.file.writev(pieces, offset).then((written) => {
        // Short: all of it again through writeAll, which continues after short writes.
        if (written < length) {
          return this.writeAt(pieces, offset).then(() => {
            this.writesSinceSync++;
            this.changeDone();
          }, (err: unknown) => {
            this.changeDone();
            throw err;
          });
        }
        this.writesSinceSync++;
        this.changeDone();
        return undefined;
      }, (err: unknown) => {
        this.changeDone();
        return Promise.reject(ioError(err, 'write', this.name));
      });
    }
    return this.writeAllocating(offset, data, length, options);
  }

  private async writeAllocating(offset: number, data: Buffer | Buffer[], length: number, options: WriteOptions): Promise<void> {
    this.changesInFlight++;
    try {
      await this.markAllocated(offset, length);
      await this.writeAt(Buffer.isBuffer(data) ? [data] : data, offset);
      this.writesSinceSync++;
    } finally {
      this.changeDone();
    }
    if (options.fua) await this.flushUnhooked();
  }

  async writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    this.checkRange(offset, length, 'ENOSPC');
    if (length === 0) return;
    if (this.overlay.failure) throw this.overlay.failure;
    if (this.hooks) {
      const touched = this.allocation.chunkRange(offset, length);
      if (options.fastOnly && this.allocation.anySet(touched.first, touched.count)) {
        throw new BlockDeviceError('ENOTSUP', 'zeroing allocated regions is no faster than writing them');
      }
      return this.hooks.writeZeroes(offset, length, options, () => this.writeZeroesUnhooked(offset, length, options));
    }
    return this.writeZeroesUnhooked(offset, length, options);
  }

  private async writeZeroesUnhooked(offset: number, length: number, options: ZeroOptions): Promise<void> {
    while (this.changeHold) await this.changeHold;
    this.changesInFlight++;
    try {
      await this.zeroNow(offset, length, options);
    } finally {
      this.changeDone();
    }
  }

  private async zeroNow(offset: number, length: number, options: ZeroOptions): Promise<void> {
    const touched = this.allocation.chunkRange(offset, length);
    const anyAllocated = this.allocation.anySet(touched.first, touched.count);
    if (options.fastOnly && anyAllocated) {
      throw new BlockDeviceError('ENOTSUP', 'zeroing allocated regions is no faster than writing them');
    }
    if (!anyAllocated && !options.noHole) return; // the whole range is a hole: it already reads as zeroes
    // Zero only what may hold data; holes already read as zeroes.
    let position = offset;
    const end = offset + length;
    while (position < end) {
      const chunk = Math.floor(position / allocationChunkBytes);
      const chunkEnd = Math.min(end, (chunk + 1) * allocationChunkBytes);
      if (this.allocation.get(chunk) || options.noHole) {
        await this.markAllocated(position, chunkEnd - position);
        let at = position;
        while (at < chunkEnd) {
          const n = Math.min(zeroBufferBytes, chunkEnd - at);
          await this.writeAt([zeroBuffer.subarray(0, n)], at);
          at += n;
        }
      }
      position = chunkEnd;
    }
    if (!options.noHole) {
      // Chunks now wholly zero read the same as holes; report them as such.
      const full = this.allocation.fullChunkRange(offset, Math.min(length, this.size - offset));
      const tailIsPartial = offset + length === this.size && this.size % allocationChunkBytes !== 0;
      const lastFull = tailIsPartial ? chunkCount(this.size) : full.first + full.count;
      if (lastFull > full.first && this.allocation.clearRange(full.first, lastFull - full.first)) {
        await this.allocation.persist();
      }
    }
    this.writesSinceSync++;
    if (options.fua) await this.flushUnhooked();
  }

  async trim(offset: number, length: number, _options: WriteOptions): Promise<void> {
    // Advisory. Without hole punching, discarding would cost a write; leaving data is always safe.
    this.checkRange(offset, length, 'EINVAL');
  }

  flush(): Promise<void> {
    if (this.overlay.failure) return Promise.reject(this.overlay.failure);
    if (this.hooks) return this.hooks.flush(() => this.flushUnhooked());
    return this.flushUnhooked();
  }

  /** Group commit: concurrent flushes share one fdatasync, and a flush never covers less than it must. */
  private flushUnhooked(): Promise<void> {
    if (this.flushQueued) return this.flushQueued;
    if (!this.flushRunning) {
      this.flushRunning = this.syncNow().finally(() => {
        this.flushRunning = null;
      });
      return this.flushRunning;
    }
    // A sync is running; writes completed before now may have missed it. Queue exactly one more.
    const queued = this.flushRunning.catch(() => undefined).then(() => {
      this.flushQueued = null;
      this.flushRunning = this.syncNow().finally(() => {
        this.flushRunning = null;
      });
      return this.flushRunning;
    });
    this.flushQueued = queued;
    return queued;
  }

  extents(offset: number, length: number, maxExtents: number): Extent[] {
    this.checkRange(offset, length, 'EINVAL');
    const firstChunk = Math.floor(offset / allocationChunkBytes);
    const end = offset + Math.max(length, 1);
    const lastChunk = Math.min(chunkCount(this.size), Math.ceil(end / allocationChunkBytes));
    const runs = this.allocation.runs(firstChunk, lastChunk - firstChunk, maxExtents);
    const out: Extent[] = [];
    for (const run of runs) {
      const runStart = Math.max(offset, run.firstBit * allocationChunkBytes);
      const runEnd = Math.min(this.size, (run.firstBit + run.bitCount) * allocationChunkBytes);
      if (runEnd <= runStart) continue;
      out.push({ offset: runStart, length: runEnd - runStart, allocated: run.set, zero: !run.set });
    }
    invariant(out.length > 0 || length === 0, 'extents cover at least the first byte asked for');
    return out;
  }

  /**
   * Holds every new change of the data file and resolves, with the release, once none is in
   * flight: the data file can then be replaced (relocation). Reads go on. Holds do not nest.
   */
  async holdChanges(): Promise<() => void> {
    while (this.changeHold) await this.changeHold;
    let release!: () => void;
    this.changeHold = new Promise<void>((resolve) => (release = resolve));
    await this.idle();
    return () => {
      this.changeHold = null;
      release();
    };
  }

  /** Replaces the data file with what `next` makes of the current one (with changes held; see holdChanges). */
  replaceFile<T extends DiskFile>(next: (current: DiskFile) => T): T {
    invariant(this.changeHold !== null && this.changesInFlight === 0, 'the data file is replaced with changes held');
    const file = next(this.file);
    this.file = file;
    return file;
  }

  /** Grows the data file and the allocation map; the caller commits the new size to metadata. */
  async grow(newSize: number): Promise<void> {
    invariant(newSize >= this.size, 'volumes only grow');
    await this.file.truncate(newSize);
    await this.file.datasync();
    await this.allocation.grow(chunkCount(newSize), false);
    this.size = newSize;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Whoever defers writes issues them before the volume closes (ReplicaService.close); what is
    // left here belongs to a hook that failed, and every flush since has said so (EIO).
    await this.flushUnhooked();
    await this.allocation.close();
    await this.file.close();
  }

  stats(): VolumeStats {
    return { allocatedBytes: this.allocatedBytes };
  }

  private async writeAt(pieces: Buffer[], offset: number): Promise<void> {
    try {
      await writeAll(this.file, pieces, offset);
    } catch (err) {
      throw ioError(err, 'write', this.name);
    }
  }

  private async markAllocated(offset: number, length: number): Promise<void> {
    const { first, count } = this.allocation.chunkRange(offset, length);
    this.allocation.setRange(first, count);
    // Also wait when another writer set these bits and their persist has not landed yet.
    if (this.allocation.hasUnpersistedChanges) await this.allocation.persist();
  }

  private async syncNow(): Promise<void> {
    const writes = this.writesSinceSync;
    this.writesSinceSync = 0;
    try {
      // Both at once: the flush promises only that both are durable when it resolves; between them
      // there is no order to keep (writeback may send either to the disk first anyway), and a
      // copy-on-write into this volume waits for this flush before its host write goes on.
      const data = this.file.datasync().catch((err: unknown) => Promise.reject(ioError(err, 'flush', this.name)));
      const [map, own] = await Promise.allSettled([this.allocation.sync(), data]);
      if (map.status === 'rejected') throw map.reason;
      if (own.status === 'rejected') throw own.reason;
    } catch (err) {
      this.writesSinceSync += writes;
      throw err;
    }
  }

  private checkRange(offset: number, length: number, errno: 'EINVAL' | 'ENOSPC'): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 ||
        offset + length > this.size) {
      throw new BlockDeviceError(errno, `range ${offset}+${length} is outside volume ${this.name} of ${this.size} bytes`);
    }
  }
}

export function chunkCount(sizeBytes: number): number {
  return Math.ceil(sizeBytes / allocationChunkBytes);
}

function ioError(err: unknown, op: string, name: string): BlockDeviceError {
  const code = errnoCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EFBIG') {
    return new BlockDeviceError('ENOSPC', `${op} on volume ${name}: no space left on the node's disk (${code})`);
  }
  return new BlockDeviceError('EIO', `${op} on volume ${name} failed: ${code ?? String(err)}`);
}
