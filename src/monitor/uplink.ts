// The node's link to its manager: which manager it belongs to (learned when `manager node add`
// registers it, kept in the data directory), and the push of its state and events there. After
// every (re)connection the first batch carries a snapshot of the whole node, then events follow in
// order (as DRBD's events2 does), so the manager never needs to ask. While the manager is away,
// events wait in a bounded buffer; when it is full the oldest are dropped, counted, and the next
// batch carries a fresh snapshot, so what is lost is history, never the current state.
import * as path from 'node:path';
import type { Clock } from '../common/clock';
import type { Disk } from '../common/disk';
import type { EventJournal } from '../common/events';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { Logger } from '../common/log';
import type { ManagerBinding, NodeSnapshot, PushedEvent, RegisterManagerRequest } from '../contracts/monitor';
import type { NodeEvent } from '../contracts/node';
import { Outbox, type RetryPolicy } from './outbox';
import type { MonitorTransport } from './transport';

/** Events buffered for the manager while it cannot be reached. */
export const uplinkEventCapacity = 10_000;
/** Events per push. */
export const uplinkBatchMax = 500;

interface StoredBinding extends ManagerBinding {
  token?: string;
}

export interface UplinkDeps {
  self: string;
  dir: string;
  disk: Disk;
  clock: Clock;
  log: Logger;
  events: EventJournal;
  transport: MonitorTransport;
  retry: RetryPolicy;
  /** Changes whenever the node process restarts. */
  incarnation: string;
  snapshot: () => NodeSnapshot;
  /** The event with the current view of what it is about. */
  enrich: (event: NodeEvent) => PushedEvent;
}

export class ManagerUplink {
  private binding: StoredBinding | null = null;
  private outbox!: Outbox<PushedEvent>;
  private needSnapshot = true;
  private dropped = 0;
  private unsubscribe: () => void = () => undefined;

  private constructor(private readonly deps: UplinkDeps) {}

  static async open(deps: UplinkDeps): Promise<ManagerUplink> {
    const uplink = new ManagerUplink(deps);
    uplink.binding = ((await readJsonIfExists(uplink.file, deps.disk)) as StoredBinding | undefined) ?? null;
    uplink.outbox = await Outbox.open<PushedEvent>({
      destination: 'manager (events)', capacity: uplinkEventCapacity, maxBatch: uplinkBatchMax, file: null,
      disk: deps.disk, clock: deps.clock, retry: deps.retry,
      deliver: (items) => uplink.deliver(items),
      hasExtra: () => uplink.binding !== null && uplink.needSnapshot,
      onDrop: () => {
        uplink.dropped++;
        uplink.needSnapshot = true;
      },
    });
    uplink.unsubscribe = deps.events.subscribe((event) => {
      if (uplink.binding === null) return;
      void uplink.outbox.push([deps.enrich(event)]);
    });
    return uplink;
  }

  private get file(): string {
    return path.join(this.deps.dir, 'manager.json');
  }

  current(): ManagerBinding | null {
    if (this.binding === null) return null;
    return { managerId: this.binding.managerId, urls: [...this.binding.urls], registeredAt: this.binding.registeredAt };
  }

  token(): string | undefined {
    return this.binding?.token;
  }

  /** Binds the node to a manager (durably) and starts pushing: a snapshot first, then events. */
  async register(request: RegisterManagerRequest): Promise<ManagerBinding> {
    const binding: StoredBinding = {
      managerId: request.managerId, urls: request.urls, registeredAt: new Date(this.deps.clock.now()).toISOString(),
      ...(request.token !== undefined ? { token: request.token } : {}),
    };
    await atomicWriteJson(this.file, binding, this.deps.disk);
    const changed = this.binding?.managerId !== binding.managerId;
    this.binding = binding;
    this.needSnapshot = true;
    this.deps.events.emit('manager-registered', request.managerId, changed ? 'this node reports to a new manager' : 'manager addresses updated',
      { urls: request.urls });
    this.outbox.kick();
    return this.current()!;
  }

  status(): ReturnType<Outbox<PushedEvent>['status']> {
    return this.outbox.status();
  }

  /** The manager may be back (a report reached it): retry the event push now. */
  kick(): void {
    this.outbox.kick();
  }

  async close(): Promise<void> {
    this.unsubscribe();
    await this.outbox.close();
  }

  private async deliver(items: PushedEvent[]): Promise<void> {
    const binding = this.binding;
    if (binding === null) return; // unbound: nothing is pushed (events before registration are not kept)
    const snapshot = this.needSnapshot ? this.deps.snapshot() : null;
    const dropped = this.dropped;
    try {
      await this.deps.transport.ingest(binding.urls, binding.token, {
        node: this.deps.self, incarnation: this.deps.incarnation, snapshot, events: items, droppedEvents: dropped,
      });
    } catch (err) {
      // The manager may have restarted without what we sent: reconnect with a snapshot.
      this.needSnapshot = true;
      throw err;
    }
    if (snapshot !== null) this.needSnapshot = false;
    this.dropped -= dropped;
  }
}
