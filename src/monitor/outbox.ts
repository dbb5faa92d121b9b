// A bounded queue of messages to one destination (a neighbour node, or the manager), delivered in
// order, in batches, one request at a time, retried with exponential back-off while the destination
// is down (spec 000 E4). Durable when given a file: the queue is rewritten atomically on every
// change, so reports survive a restart of this node. When full, the lowest-priority oldest message
// is dropped and counted (the caller says which messages matter least).
import type { Clock, TimerHandle } from '../common/clock';
import type { Disk } from '../common/disk';
import { errorMessage } from '../common/errors';
import { CoalescingSaver, atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { OutboxStatus } from '../contracts/monitor';

export interface RetryPolicy {
  initialDelayMs: number;
  maxDelayMs: number;
}

export const defaultRetryPolicy: RetryPolicy = { initialDelayMs: 250, maxDelayMs: 5000 };

export interface OutboxOptions<T> {
  destination: string;
  capacity: number;
  maxBatch: number;
  /** Where the queue is kept across restarts; null keeps it in memory only. */
  file: string | null;
  disk: Disk;
  clock: Clock;
  retry: RetryPolicy;
  /** Sends a batch; resolves once the destination has it, rejects to retry later. */
  deliver: (items: T[]) => Promise<void>;
  /** Something besides queued items needs sending (a snapshot): deliver is called with none. */
  hasExtra?: () => boolean;
  /** Lower numbers are dropped first when the queue is full (default: all equal, oldest first). */
  priority?: (item: T) => number;
  onDrop?: (item: T) => void;
}

export class Outbox<T> {
  private queue: T[] = [];
  private sending = false;
  private timer: TimerHandle | undefined;
  private delayMs: number;
  private closed = false;
  /** The queue as it is when each write starts; pushes made together share one write. */
  private readonly saver = new CoalescingSaver(async () => {
    if (this.o.file !== null) await atomicWriteJson(this.o.file, { items: this.queue }, this.o.disk);
  });
  private counts = { dropped: 0, delivered: 0, failures: 0 };
  private lastError: string | null = null;
  private nextAttemptAt: number | null = null;

  private constructor(private readonly o: OutboxOptions<T>) {
    this.delayMs = o.retry.initialDelayMs;
  }

  static async open<T>(options: OutboxOptions<T>): Promise<Outbox<T>> {
    const box = new Outbox(options);
    if (options.file !== null) {
      const saved = (await readJsonIfExists(options.file, options.disk)) as { items: T[] } | undefined;
      if (saved) box.queue = saved.items.slice(-options.capacity);
    }
    box.pump();
    return box;
  }

  get length(): number {
    return this.queue.length;
  }

  /** Queues messages (durably when the outbox has a file) and starts delivery. */
  async push(items: T[]): Promise<void> {
    for (const item of items) {
      if (this.queue.length >= this.o.capacity) this.dropOne();
      this.queue.push(item);
    }
    await this.save();
    this.pump();
  }

  /** Try now instead of at the next back-off deadline (the destination is known to be back). */
  kick(): void {
    if (this.sending || this.closed) return;
    this.o.clock.clearTimer(this.timer);
    this.timer = undefined;
    this.delayMs = this.o.retry.initialDelayMs;
    this.pump();
  }

  status(): OutboxStatus {
    return {
      destination: this.o.destination, queued: this.queue.length, capacity: this.o.capacity, ...this.counts, lastError: this.lastError,
      nextAttemptAt: this.nextAttemptAt === null ? null : new Date(this.nextAttemptAt).toISOString(),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.o.clock.clearTimer(this.timer);
    await this.saver.settled();
  }

  private dropOne(): void {
    const priority = this.o.priority ?? ((): number => 0);
    let victim = 0;
    for (let i = 1; i < this.queue.length; i++) if (priority(this.queue[i]!) < priority(this.queue[victim]!)) victim = i;
    const [dropped] = this.queue.splice(victim, 1);
    this.counts.dropped++;
    if (dropped !== undefined) this.o.onDrop?.(dropped);
  }

  private pump(): void {
    if (this.sending || this.closed || this.timer !== undefined) return;
    if (this.queue.length === 0 && !(this.o.hasExtra?.() ?? false)) return;
    this.sending = true;
    const batch = this.queue.slice(0, this.o.maxBatch);
    this.o.deliver(batch).then(async () => {
      // Only what was sent leaves: messages queued meanwhile (or dropped from the front) stay.
      const sent = new Set(batch);
      this.queue = this.queue.filter((x) => !sent.has(x));
      this.counts.delivered += batch.length;
      this.lastError = null;
      this.nextAttemptAt = null;
      this.delayMs = this.o.retry.initialDelayMs;
      await this.save().catch(() => undefined);
      this.sending = false;
      this.pump();
    }, (err: unknown) => {
      this.counts.failures++;
      this.lastError = errorMessage(err);
      this.sending = false;
      if (this.closed) return;
      const delay = this.delayMs;
      this.delayMs = Math.min(this.delayMs * 2, this.o.retry.maxDelayMs);
      this.nextAttemptAt = this.o.clock.now() + delay;
      this.timer = this.o.clock.setTimer(delay, () => {
        this.timer = undefined;
        this.pump();
      });
      this.timer.unref();
    });
  }

  private save(): Promise<void> {
    return this.o.file === null ? Promise.resolve() : this.saver.save();
  }
}
