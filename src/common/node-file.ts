// A real file for the node's durable structures (volumes, journals, bitmaps), doing each operation
// where it costs least. A libuv thread-pool hop costs a futex wake and two context switches per
// request, and writers of one file serialise on its inode lock anyway; profiles of 4 KiB writes
// showed those hops as most of the node's CPU per write. A write the page cache absorbs, or a read
// it can serve, is a copy of a few microseconds. So:
// - writes up to `inlineWriteMaxBytes` run synchronously on the calling (event-loop) thread.
//   `slowInlineWritesInARow` writes in a row each slower than `slowInlineMs` (the page cache pushes
//   back: dirty-page throttling, metadata reads) send this file's writes to the thread pool for a
//   back-off period that doubles while it keeps happening, so a slow disk stalls the event loop only
//   briefly per period. One slow write alone is not enough: on a busy machine the event loop is
//   preempted in the middle of a write now and then, and that says nothing about the disk;
// - reads run inline only through the native addon's RWF_NOWAIT read, which never waits for the
//   disk; whatever the page cache lacks is read on the thread pool (so is every read without it);
// - fdatasync, truncate, fstat and close always run on the thread pool.
import * as fs from 'node:fs';
import type { DiskFile } from './disk';
import { EAGAIN, EINVAL, EOPNOTSUPP, type NativeIo, errnoError, maxNativePieces } from './native-io';

/**
 * Larger writes are copied on the thread pool, in parallel with the event loop receiving the next
 * request. Tried: 1 MiB writes inline saved a fifth of their CPU on a loaded machine, but the event
 * loop then stops receiving while the page cache copies (and while dirty-page throttling pauses it):
 * 1 MiB QD8 writes stayed near 1000 MiB/s where the thread pool reached 2000 on a quieter machine.
 */
export const inlineWriteMaxBytes = 256 * 1024;
/** Larger reads are copied on the thread pool. */
export const inlineReadMaxBytes = 256 * 1024;
/** Inline writes slower than this, several in a row, mean the page cache is not absorbing writes now. */
export const slowInlineMs = 5;
export const slowInlineWritesInARow = 3;
const firstBackoffMs = 500;
const maxBackoffMs = 30_000;

export interface NodeFileOptions {
  /** The native addon, or undefined for Node's fs module alone. */
  native: NativeIo | undefined;
  /** False: every read and write goes through the thread pool (the behaviour before inline I/O). */
  inline: boolean;
  /** Milliseconds for timing inline writes; performance.now() unless a test drives it. */
  now?: () => number;
}

export class NodeFile implements DiskFile {
  /** Until this time (performance.now()) writes go to the thread pool. */
  private poolUntil = 0;
  private backoffMs = firstBackoffMs;
  private lastSlowAt = Number.NEGATIVE_INFINITY;
  private slowInARow = 0;
  private nowaitReads: boolean;
  private readonly now: () => number;
  /** The last write queued on the thread pool, while one is (see writeOnPool). */
  private poolWrites: Promise<void> | undefined;

  constructor(readonly fd: number, private readonly options: NodeFileOptions) {
    this.nowaitReads = options.inline && options.native !== undefined;
    this.now = options.now ?? (() => performance.now());
  }

  read(target: Buffer, targetOffset: number, length: number, position: number): Promise<number> {
    if (this.nowaitReads && length <= inlineReadMaxBytes) {
      const n = this.options.native!.preadNowait(this.fd, target, targetOffset, length, position);
      if (n >= 0) return Promise.resolve(n); // may be short: the caller reads the rest (on the pool)
      if (-n !== EAGAIN) {
        // EOPNOTSUPP and the like: this file cannot do it; anything else is the read's own error.
        if (-n === EOPNOTSUPP || -n === EINVAL) this.nowaitReads = false;
        else return Promise.reject(errnoError(-n, 'read'));
      }
    }
    return new Promise((resolve, reject) => fs.read(this.fd, target, targetOffset, length, position, (err, n) => (err ? reject(err) : resolve(n))));
  }

  writev(pieces: Buffer[], position: number): Promise<number> {
    if (this.options.inline && pieces.length <= maxNativePieces && this.now() >= this.poolUntil) {
      let total = 0;
      for (const p of pieces) total += p.length;
      if (total <= inlineWriteMaxBytes) return this.writeInline(pieces, position);
    }
    return this.writeOnPool(pieces, position);
  }

  /**
   * One write on the thread pool, after the file's earlier pool writes: writers of one file take its
   * inode lock in turn anyway, and several at once spin on it (a profile of 1 MiB writes at queue
   * depth 8 showed 8 % of the node's CPU in rwsem_spin_on_owner, plus the futex wake-ups).
   */
  private writeOnPool(pieces: Buffer[], position: number): Promise<number> {
    const write = (): Promise<number> => new Promise((resolve, reject) =>
      fs.writev(this.fd, pieces, position, (err, n) => (err ? reject(err) : resolve(n))));
    const result = this.poolWrites ? this.poolWrites.then(write, write) : write();
    const tail = result.then(() => undefined, () => undefined);
    this.poolWrites = tail;
    void tail.then(() => {
      if (this.poolWrites === tail) this.poolWrites = undefined;
    });
    return result;
  }

  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  truncate(sizeBytes: number): Promise<void> {
    return new Promise((resolve, reject) => fs.ftruncate(this.fd, sizeBytes, (err) => (err ? reject(err) : resolve())));
  }

  sizeBytes(): Promise<number> {
    return new Promise((resolve, reject) => fs.fstat(this.fd, (err, st) => (err ? reject(err) : resolve(st.size))));
  }

  close(): Promise<void> {
    return new Promise((resolve, reject) => fs.close(this.fd, (err) => (err ? reject(err) : resolve())));
  }

  private writeInline(pieces: Buffer[], position: number): Promise<number> {
    const started = this.now();
    let written: number;
    const native = this.options.native;
    if (native) {
      written = native.pwritev(this.fd, pieces, position);
      if (written < 0) return Promise.reject(errnoError(-written, 'write'));
    } else {
      try {
        written = fs.writevSync(this.fd, pieces, position);
      } catch (err) {
        return Promise.reject(err);
      }
    }
    const now = this.now();
    if (now - started <= slowInlineMs) this.slowInARow = 0;
    else if (++this.slowInARow >= slowInlineWritesInARow) this.backOff(now);
    return Promise.resolve(written);
  }

  private backOff(now: number): void {
    // Slow again soon after the last back-off ended: wait longer; after a quiet spell start over.
    this.backoffMs = now - this.lastSlowAt < this.backoffMs * 4 ? Math.min(maxBackoffMs, this.backoffMs * 2) : firstBackoffMs;
    this.lastSlowAt = now;
    this.poolUntil = now + this.backoffMs;
    this.slowInARow = 0;
  }
}
