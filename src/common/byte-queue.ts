// A FIFO of received bytes for stream protocols. Payloads are taken as slices of the received
// buffers, so large writes travel from socket to disk without being copied.

export class ByteQueue {
  private chunks: Buffer[] = [];
  private head = 0; // consumed bytes of chunks[0]
  private total = 0;

  get length(): number {
    return this.total;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.chunks.push(chunk);
    this.total += chunk.length;
  }

  /** Takes `n` bytes as one buffer; copies only when they span received chunks. */
  take(n: number): Buffer {
    if (n > this.total) throw new RangeError(`take(${n}) with only ${this.total} bytes queued`);
    if (n === 0) return Buffer.alloc(0);
    const first = this.chunks[0]!;
    if (first.length - this.head >= n) {
      const out = first.subarray(this.head, this.head + n);
      this.advance(n);
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const chunk = this.chunks[0]!;
      const count = Math.min(n - filled, chunk.length - this.head);
      chunk.copy(out, filled, this.head, this.head + count);
      filled += count;
      this.advance(count);
    }
    return out;
  }

  /** Returns the first `n` bytes without consuming them. */
  peek(n: number): Buffer {
    if (n > this.total) throw new RangeError(`peek(${n}) with only ${this.total} bytes queued`);
    const first = this.chunks[0];
    if (first && first.length - this.head >= n) return first.subarray(this.head, this.head + n);
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    for (let i = 0; filled < n; i++) {
      const chunk = this.chunks[i]!;
      const start = i === 0 ? this.head : 0;
      const count = Math.min(n - filled, chunk.length - start);
      chunk.copy(out, filled, start, start + count);
      filled += count;
    }
    return out;
  }

  /** Takes `n` bytes as the list of slices they arrived in (no copy). */
  takePieces(n: number): Buffer[] {
    if (n > this.total) throw new RangeError(`takePieces(${n}) with only ${this.total} bytes queued`);
    const out: Buffer[] = [];
    let remaining = n;
    while (remaining > 0) {
      const chunk = this.chunks[0]!;
      const count = Math.min(remaining, chunk.length - this.head);
      out.push(chunk.subarray(this.head, this.head + count));
      remaining -= count;
      this.advance(count);
    }
    return out;
  }

  /** Removes and returns everything queued (e.g. to hand bytes back to a socket before a TLS upgrade). */
  drain(): Buffer {
    return this.take(this.total);
  }

  skip(n: number): void {
    let remaining = Math.min(n, this.total);
    while (remaining > 0) {
      const count = Math.min(remaining, this.chunks[0]!.length - this.head);
      this.advance(count);
      remaining -= count;
    }
  }

  private advance(n: number): void {
    this.head += n;
    this.total -= n;
    if (this.head === this.chunks[0]!.length) {
      this.chunks.shift();
      this.head = 0;
    }
  }
}
