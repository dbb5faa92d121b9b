// A raw TCP peer for protocol tests: send exact bytes, read exact bytes, observe the close.
import * as net from 'node:net';
import { ByteQueue } from '../../src/common/byte-queue';

export class RawSocket {
  private readonly queue = new ByteQueue();
  private wake: (() => void) | null = null;
  private ended = false;
  readonly closed: Promise<void>;

  private constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.queue.push(d);
      this.poke();
    });
    this.closed = new Promise((resolve) => {
      socket.on('close', () => {
        this.ended = true;
        this.poke();
        resolve();
      });
    });
    socket.on('error', () => undefined);
  }

  static connect(port: number, host = '127.0.0.1'): Promise<RawSocket> {
    return new Promise((resolve, reject) => {
      const s = net.connect({ port, host }, () => resolve(new RawSocket(s)));
      s.once('error', reject);
    });
  }

  send(...parts: Buffer[]): void {
    for (const p of parts) this.socket.write(p);
  }

  get buffered(): number {
    return this.queue.length;
  }

  async read(n: number, timeoutMs = 10_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length < n) {
      if (this.ended) throw new Error(`connection closed with ${this.queue.length} of ${n} bytes`);
      if (Date.now() > deadline) throw new Error(`timed out reading ${n} bytes (have ${this.queue.length})`);
      await new Promise<void>((resolve) => {
        this.wake = resolve;
        setTimeout(resolve, 50);
      });
    }
    return Buffer.from(this.queue.take(n));
  }

  /** Resolves true if the peer closes within the deadline. */
  async closesWithin(timeoutMs: number): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<boolean>((r) => (timer = setTimeout(() => r(false), timeoutMs)));
    try {
      return await Promise.race([this.closed.then(() => true), expired]);
    } finally {
      clearTimeout(timer);
    }
  }

  destroy(): void {
    this.socket.destroy();
  }

  private poke(): void {
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
  }
}
