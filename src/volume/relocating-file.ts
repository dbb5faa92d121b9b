// The data file of a volume while it moves to another data area (spec 003 Fig. 15): reads and
// writes go to the source file; a background copy fills the target file chunk by chunk from the
// front; a write to the part already copied also goes to the target, so when the copy reaches the
// end the two files are equal. The volume writes through this as through any DiskFile and knows
// nothing of the move (neither do NBD and replication, above it).
//
// Correctness: a chunk's copy and the writes that touch it hold the same range lock, so a copy never
// reads a write half landed, and overlapping writes reach both files in the same order. Only the
// copy writes the target beyond the copied prefix, so what lies there is always read afresh.
// A failure on the target never fails a host write: the move stops and reports it.
import type { DiskFile } from '../common/disk';
import { readFully, writeAll } from '../common/disk';
import { invariant } from '../common/errors';
import { RangeLock } from './range-lock';

export class RelocatingFile implements DiskFile {
  private readonly lock: RangeLock;
  /** [0, copiedBytes) of the target equals the source (writes in flight hold their lock). */
  private copied = 0;
  private opsInFlight = 0;
  private drainWaiters: Array<() => void> = [];
  /** The first failure writing the target: the move is abandoned, host I/O goes on. */
  targetError: unknown = null;

  constructor(readonly source: DiskFile, readonly target: DiskFile, readonly volumeBytes: number, lockUnitBytes: number) {
    this.lock = new RangeLock(lockUnitBytes);
  }

  get copiedBytes(): number {
    return this.copied;
  }

  get done(): boolean {
    return this.copied >= this.volumeBytes;
  }

  read(target: Buffer, targetOffset: number, length: number, position: number): Promise<number> {
    return this.tracked(() => this.source.read(target, targetOffset, length, position));
  }

  writev(pieces: Buffer[], position: number): Promise<number> {
    return this.tracked(async () => {
      const length = pieces.reduce((n, p) => n + p.length, 0);
      const release = await this.lock.acquire(position, length);
      try {
        const written = await this.source.writev(pieces, position);
        // Only the copied prefix is mirrored: beyond it the copy reads the source later.
        const mirrored = Math.min(written, this.copied - position);
        if (mirrored > 0 && this.targetError === null) {
          await writeAll(this.target, prefixOf(pieces, mirrored), position).catch((err: unknown) => {
            this.targetError ??= err;
          });
        }
        return written;
      } finally {
        release();
      }
    });
  }

  /**
   * Copies the next chunk (at most `chunkBytes`) from the source to the target, or only moves past
   * it when `isHole` says it reads as zeroes (the target is sparse). Resolves with the bytes passed.
   */
  copyNext(chunkBytes: number, isHole: (offset: number, length: number) => boolean, buffer: Buffer): Promise<number> {
    invariant(!this.done, 'the copy is not finished');
    return this.tracked(async () => {
      const offset = this.copied;
      const length = Math.min(chunkBytes, this.volumeBytes - offset);
      const release = await this.lock.acquire(offset, length);
      try {
        if (this.targetError !== null) throw this.targetError;
        if (!isHole(offset, length)) {
          const data = buffer.subarray(0, length);
          await readFully(this.source, data, length, offset);
          await writeAll(this.target, [data], offset);
        }
        this.copied = offset + length;
        return length;
      } finally {
        release();
      }
    });
  }

  /** Durable means durable in the source: until the switch only the source counts. */
  datasync(): Promise<void> {
    return this.tracked(() => this.source.datasync());
  }

  truncate(sizeBytes: number): Promise<void> {
    // The node refuses to grow a volume while it moves; a truncate here is a bug.
    return Promise.reject(new Error(`a volume cannot change size while it moves (asked for ${sizeBytes} bytes)`));
  }

  sizeBytes(): Promise<number> {
    return this.source.sizeBytes();
  }

  /** Closes both files (the node stops during a move); the move is then abandoned. */
  async close(): Promise<void> {
    await this.drained();
    await this.source.close();
    await this.target.close().catch(() => undefined);
  }

  /** Resolves once no operation that came through this file is in flight. */
  drained(): Promise<void> {
    if (this.opsInFlight === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainWaiters.push(resolve));
  }

  private tracked<T>(op: () => Promise<T>): Promise<T> {
    this.opsInFlight++;
    const finish = (): void => {
      if (--this.opsInFlight === 0 && this.drainWaiters.length > 0) {
        const waiters = this.drainWaiters;
        this.drainWaiters = [];
        for (const resolve of waiters) resolve();
      }
    };
    let result: Promise<T>;
    try {
      result = op();
    } catch (err) {
      finish();
      return Promise.reject(err);
    }
    return result.finally(finish);
  }
}

/** The first `bytes` bytes of the pieces, without copying. */
function prefixOf(pieces: Buffer[], bytes: number): Buffer[] {
  const out: Buffer[] = [];
  let left = bytes;
  for (const p of pieces) {
    if (left <= 0) break;
    out.push(p.length <= left ? p : p.subarray(0, left));
    left -= p.length;
  }
  return out;
}
