// The node's event journal: every state change is recorded once here with its reason, logged, kept in
// a bounded ring for late readers and pushed to live subscribers (the API's event stream).
import type { NodeEvent } from '../contracts/node';
import { type Clock, systemClock } from './clock';
import type { Logger } from './log';

export const eventRingCapacity = 1000;

export type { NodeEvent };

export type EventListener = (event: NodeEvent) => void;

export class EventJournal {
  private readonly ring: NodeEvent[] = [];
  private readonly listeners = new Set<EventListener>();
  private nextId = 1;

  constructor(private readonly log: Logger, private readonly clock: Clock = systemClock) {}

  emit(kind: string, subject: string, reason: string, details?: Record<string, unknown>): NodeEvent {
    const event: NodeEvent = { id: this.nextId++, time: new Date(this.clock.now()).toISOString(), kind, subject, reason };
    if (details !== undefined) event.details = details;
    this.ring.push(event);
    if (this.ring.length > eventRingCapacity) this.ring.shift();
    this.log.info({ event: kind, subject, reason, ...details }, `${kind} ${subject}: ${reason}`);
    for (const listener of this.listeners) listener(event);
    return event;
  }

  /** Events with id greater than `afterId`, oldest first. */
  since(afterId: number): NodeEvent[] {
    return this.ring.filter((e) => e.id > afterId);
  }

  subscribe(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }
}
