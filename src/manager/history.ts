// The manager's event history: every report, pushed node event, alert change and procedure step,
// numbered in one sequence by the leading manager and kept in the store, so it survives a restart
// of any manager and is the same whichever manager answers. Readers ask from a time (found by
// bisection over the sequence) or after a sequence number; followers of the stream get each new
// event as it is stored.
import type { Clock } from '../common/clock';
import type { ManagerEvent } from '../contracts/manager';
import type { KvOp } from './store/kv';
import type { ManagerStore } from './store/collections';

/** Events kept; the oldest are deleted past this. */
export const maxEventsKept = 200_000;
export const maxEventsPerQuery = 10_000;

export type NewEvent = Omit<ManagerEvent, 'seq' | 'time'> & { time?: string };

export class EventHistory {
  private seq = 0;
  private first = 0;
  private readonly listeners = new Set<(e: ManagerEvent) => void>();

  constructor(private readonly store: ManagerStore, private readonly clock: Clock) {}

  /** On taking the lead: continue the sequence where the store ends. */
  async load(): Promise<void> {
    this.seq = await this.store.lastEventSeq();
    this.first = await this.store.firstEventSeq();
  }

  /** Numbers the events and returns the operations that store them (the caller commits, then calls published). */
  prepare(events: NewEvent[]): { events: ManagerEvent[]; ops: KvOp[] } {
    const now = new Date(this.clock.now()).toISOString();
    const numbered = events.map((e) => ({ ...e, time: e.time ?? now, seq: ++this.seq }));
    const ops = numbered.map((e) => this.store.putEvent(e));
    if (this.first === 0 && numbered.length > 0) this.first = numbered[0]!.seq;
    while (this.seq - this.first + 1 > maxEventsKept) ops.push(this.store.deleteEvent(this.first++));
    return { events: numbered, ops };
  }

  /** Tells live followers (after the events are committed). */
  published(events: ManagerEvent[]): void {
    for (const e of events) for (const l of this.listeners) l(e);
  }

  /** A write that did not commit: its numbers are given out again. */
  async rollback(): Promise<void> {
    await this.load();
  }

  async append(events: NewEvent[]): Promise<ManagerEvent[]> {
    const { events: numbered, ops } = this.prepare(events);
    try {
      await this.store.commit(ops);
    } catch (err) {
      await this.rollback();
      throw err;
    }
    this.published(numbered);
    return numbered;
  }

  subscribe(listener: (e: ManagerEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async query(options: { sinceMs?: number; afterSeq?: number; limit?: number }): Promise<ManagerEvent[]> {
    const limit = Math.min(options.limit ?? maxEventsPerQuery, maxEventsPerQuery);
    let after = options.afterSeq ?? 0;
    if (options.sinceMs !== undefined) after = Math.max(after, (await this.firstAtOrAfter(options.sinceMs)) - 1);
    return this.store.eventsAfter(after, limit);
  }

  /** The first sequence number whose event is at or after `ms` (the events are in time order). */
  private async firstAtOrAfter(ms: number): Promise<number> {
    let lo = await this.store.firstEventSeq();
    let hi = await this.store.lastEventSeq();
    if (lo === 0) return 1;
    hi += 1;
    while (lo < hi) {
      const mid = Math.floor((lo + hi) / 2);
      const e = await this.store.eventAt(mid);
      if (e === undefined || Date.parse(e.time) < ms) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }
}
