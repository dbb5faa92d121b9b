// Virtual time for a whole simulated cluster: one queue of timed events, run one at a time in
// (time, order) order. After each event every promise reaction it caused runs to completion before
// the next event, so a run depends on nothing but the seed. Each node incarnation gets a Clock
// whose timers stop firing when that incarnation crashes.
import type { Clock, TimerHandle } from '../src/common/clock';

export const simEpochMs = Date.UTC(2026, 0, 1);

interface Scheduled {
  at: number;
  order: number;
  fn: () => void;
  cancelled: boolean;
}

/** Something that may stop existing (a node incarnation): its events are dropped once dead. */
export interface Lifetime {
  readonly alive: boolean;
}

export const forever: Lifetime = { alive: true };

export class Scheduler {
  private nowMs = simEpochMs;
  private order = 0;
  private heap: Scheduled[] = [];
  /** Events run so far (a measure of a run's size). */
  steps = 0;

  get now(): number {
    return this.nowMs;
  }

  /** Virtual milliseconds since the run started. */
  get elapsed(): number {
    return this.nowMs - simEpochMs;
  }

  schedule(delayMs: number, fn: () => void, lifetime: Lifetime = forever): Scheduled {
    const item: Scheduled = { at: this.nowMs + Math.max(0, delayMs), order: this.order++, fn: () => {
      if (lifetime.alive) fn();
    }, cancelled: false };
    this.push(item);
    return item;
  }

  cancel(item: Scheduled | undefined): void {
    if (item) item.cancelled = true;
  }

  get pending(): number {
    return this.heap.length;
  }

  /** Runs the next event; false when there is none. */
  async step(): Promise<boolean> {
    for (;;) {
      const item = this.pop();
      if (!item) return false;
      if (item.cancelled) continue;
      this.nowMs = item.at;
      this.steps++;
      item.fn();
      // Every so many events a real event-loop turn: Node reports unhandled rejections only once
      // its tick queue is empty, and the run records them as failures (run.ts) near where they happened.
      await (this.steps % rejectionCheckEverySteps === 0 ? eventLoopTurn() : settle());
      return true;
    }
  }

  /** Runs events until virtual time `untilMs` (absolute) or until none is left. */
  async runUntil(untilMs: number): Promise<void> {
    while (this.heap.length > 0 && this.peekAt() <= untilMs) await this.step();
    if (this.nowMs < untilMs) this.nowMs = untilMs;
  }

  /** Runs events until `done()` holds or virtual time passes `deadlineMs`; returns whether it held. */
  async runUntilTrue(done: () => boolean, deadlineMs: number): Promise<boolean> {
    while (!done()) {
      if (this.heap.length === 0 || this.peekAt() > deadlineMs) {
        if (this.nowMs < deadlineMs && this.heap.length === 0) this.nowMs = deadlineMs;
        return done();
      }
      await this.step();
    }
    return true;
  }

  /** Runs events until `promise` settles (or the deadline passes). */
  async runUntilSettled<T>(promise: Promise<T>, deadlineMs: number): Promise<{ done: true; value?: T; error?: unknown } | { done: false }> {
    let result: { done: true; value?: T; error?: unknown } | undefined;
    promise.then((value) => (result = { done: true, value }), (error: unknown) => (result = { done: true, error }));
    await settle();
    await this.runUntilTrue(() => result !== undefined, deadlineMs);
    return result ?? { done: false };
  }

  clock(lifetime: Lifetime): Clock {
    return new NodeClock(this, lifetime);
  }

  private peekAt(): number {
    return this.heap[0]!.at;
  }

  private push(item: Scheduled): void {
    const h = this.heap;
    h.push(item);
    let i = h.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(h[i]!, h[parent]!)) break;
      [h[i], h[parent]] = [h[parent]!, h[i]!];
      i = parent;
    }
  }

  private pop(): Scheduled | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: Scheduled, b: Scheduled): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/** How often (in events) a run passes through the event loop, where unhandled rejections are reported. */
const rejectionCheckEverySteps = 256;

/** One turn of the event loop: everything settle() reaches, and Node's report of unhandled rejections. */
export function eventLoopTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

/**
 * Lets every promise reaction queued so far (and those they queue) run. A tick callback queued now
 * runs only after the microtask queue has drained, and the code the simulator drives queues no
 * ticks or immediates of its own (time reaches it through the Clock), so this is the same point an
 * event-loop turn (setImmediate) would reach, at a fraction of its cost per simulated event.
 */
export function settle(): Promise<void> {
  return new Promise((resolve) => process.nextTick(resolve));
}

class NodeClock implements Clock {
  constructor(private readonly scheduler: Scheduler, private readonly lifetime: Lifetime) {}

  now(): number {
    return this.scheduler.now;
  }

  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const item = this.scheduler.schedule(delayMs, fn, this.lifetime);
    return { unref: () => undefined, item } as TimerHandle & { item: Scheduled };
  }

  clearTimer(handle: TimerHandle | undefined): void {
    if (handle) this.scheduler.cancel((handle as TimerHandle & { item?: Scheduled }).item);
  }

  defer(fn: () => void): void {
    this.scheduler.schedule(0, fn, this.lifetime);
  }

  sleep(delayMs: number): Promise<void> {
    return new Promise((resolve) => this.scheduler.schedule(delayMs, resolve, this.lifetime));
  }
}
