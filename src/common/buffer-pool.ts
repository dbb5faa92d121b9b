// Reusable I/O buffers for the data path. Allocating a fresh multi-megabyte Buffer per request makes
// V8 account large external allocations and run major GCs; recycling them keeps the heap still.
// A buffer must be released only when nothing (a pending socket or file write) still reads it.
import { invariant } from './errors';

const minClassBytes = 4096;
const maxClassBytes = 32 * 1024 * 1024;

export class BufferPool {
  private readonly free = new Map<number, Buffer[]>();
  private pooledBytes = 0;

  constructor(private readonly maxPooledBytes: number) {}

  /** A buffer of at least `length` bytes (its size class); use `.subarray(0, length)`. */
  acquire(length: number): Buffer {
    if (length > maxClassBytes) return Buffer.allocUnsafeSlow(length);
    const size = classSize(length);
    const list = this.free.get(size);
    const buffer = list?.pop();
    if (buffer) {
      this.pooledBytes -= size;
      return buffer;
    }
    return Buffer.allocUnsafeSlow(size);
  }

  release(buffer: Buffer): void {
    const size = buffer.buffer.byteLength;
    // Only whole class-sized buffers that this pool could have handed out come back.
    if (size !== buffer.length || size < minClassBytes || size > maxClassBytes || (size & (size - 1)) !== 0) return;
    invariant(buffer.byteOffset === 0, 'pooled buffers start at their ArrayBuffer');
    if (this.pooledBytes + size > this.maxPooledBytes) return;
    let list = this.free.get(size);
    if (!list) {
      list = [];
      this.free.set(size, list);
    }
    list.push(buffer);
    this.pooledBytes += size;
  }

  get bytesPooled(): number {
    return this.pooledBytes;
  }
}

function classSize(length: number): number {
  let size = minClassBytes;
  while (size < length) size *= 2;
  return size;
}

/** The data path's shared pool (one process, one pool). */
export const ioBuffers = new BufferPool(256 * 1024 * 1024);
