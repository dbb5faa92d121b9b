// Writes to one file gathered while the event loop is busy and handed to one libuv thread-pool
// thread per batch (the native addon's pwriteBatch): the copies into the page cache then run on
// another core while the event loop goes on parsing requests, and a whole batch costs one wake-up
// instead of one per write. Writes queued while a batch runs form the next batch, so one file never
// has two batches in flight (its writers would only contend for its inode lock) and its writes land
// in the order they were issued.
import type { NativeIo } from './native-io';
import { errnoError } from './native-io';

interface Queued {
  pieces: Buffer[];
  position: number;
  resolve: (written: number) => void;
  reject: (err: Error) => void;
}

export class WriteBatcher {
  private queued: Queued[] = [];
  private running = false;
  private scheduled = false;
  private readonly submitBound = (): void => {
    this.scheduled = false;
    this.submit();
  };

  constructor(private readonly fd: number, private readonly batch: NonNullable<NativeIo['pwriteBatch']>) {}

  write(pieces: Buffer[], position: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.queued.push({ pieces, position, resolve, reject });
      // After the writes the current microtasks issue (the rest of this turn's requests) joined.
      if (!this.running && !this.scheduled) {
        this.scheduled = true;
        queueMicrotask(this.submitBound);
      }
    });
  }

  /** Resolves once no write is queued or running (before the file is closed). */
  async idle(): Promise<void> {
    while (this.running || this.queued.length > 0) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
  }

  private readonly idleWaiters: Array<() => void> = [];

  private submit(): void {
    if (!this.running && this.queued.length === 0) for (const w of this.idleWaiters.splice(0)) w();
    if (this.running || this.queued.length === 0) return;
    const batch = this.queued;
    this.queued = [];
    this.running = true;
    this.batch(this.fd, batch.map((q) => q.pieces), batch.map((q) => q.position), (results) => {
      this.running = false;
      results.forEach((r, i) => (r >= 0 ? batch[i]!.resolve(r) : batch[i]!.reject(errnoError(-r, 'write'))));
      this.submit();
    });
  }
}
