// The manager's picture of the cluster, built only from what nodes push: each node's snapshot (sent
// after every reconnection) with the changes its events carry applied in order. Nothing here asks
// a node anything. The leader keeps it in memory and stores each node's state after a change;
// other managers read it from the store.
import type { Clock } from '../common/clock';
import type { IngestBatch, PushedEvent } from '../contracts/monitor';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import type { KvOp } from './store/kv';
import type { ManagerStore, NodeState } from './store/collections';

export class ClusterModel {
  private states = new Map<string, NodeState>();

  constructor(private readonly store: ManagerStore, private readonly clock: Clock) {}

  async load(): Promise<void> {
    this.states = new Map((await this.store.listNodeStates()).map((s) => [s.name, s]));
  }

  get(name: string): NodeState | undefined {
    return this.states.get(name);
  }

  all(): NodeState[] {
    return [...this.states.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  /**
   * Takes a node's batch: events not seen before (a retried batch repeats some) are returned for the
   * history; their views are applied, then the snapshot (taken after every event of its batch).
   */
  ingest(batch: IngestBatch): { fresh: PushedEvent[]; ops: KvOp[] } {
    const s = this.states.get(batch.node) ?? empty(batch.node, batch.incarnation);
    if (s.incarnation !== batch.incarnation) {
      s.incarnation = batch.incarnation;
      s.lastEventId = 0;
    }
    const fresh = batch.events.filter((e) => e.event.id > s.lastEventId);
    for (const e of fresh) applyView(s, e);
    if (batch.snapshot) {
      s.info = batch.snapshot.info;
      s.volumes = batch.snapshot.volumes;
      s.pairs = batch.snapshot.pairs;
      s.groups = batch.snapshot.groups;
      s.table = batch.snapshot.table;
    }
    s.lastEventId = Math.max(s.lastEventId, ...fresh.map((e) => e.event.id));
    s.updatedAt = new Date(this.clock.now()).toISOString();
    this.states.set(s.name, s);
    return { fresh, ops: [this.store.putNodeState(s)] };
  }

  /** Lag and journal figures sampled from a node's metrics (they change without events). */
  updateLag(node: string, groups: Map<string, { role: string; lagSeconds: number; lagBytes: number; lagEntries: number; journalUsed: number | null }>): void {
    const s = this.states.get(node);
    if (!s) return;
    for (const g of s.groups) {
      const m = groups.get(`${g.group}/${g.role}`);
      if (!m) continue;
      g.lag = { seconds: m.lagSeconds, bytes: m.lagBytes, entries: m.lagEntries };
      if (g.journal && m.journalUsed !== null) g.journal.usedBytes = m.journalUsed;
      for (const p of s.pairs) if (p.group === g.group && p.role === g.role && p.lag) p.lag = { ...g.lag };
    }
  }

  stateOps(node: string): KvOp[] {
    const s = this.states.get(node);
    return s ? [this.store.putNodeState(s)] : [];
  }
}

function empty(name: string, incarnation: string): NodeState {
  return { name, incarnation, lastEventId: 0, updatedAt: '', info: null, volumes: [], pairs: [], groups: [], table: [] };
}

function applyView(s: NodeState, e: PushedEvent): void {
  if (e.pair !== undefined) s.pairs = upsert<PairStatus>(s.pairs, (p) => p.name === e.event.subject, e.pair);
  if (e.group !== undefined && e.group !== null) {
    const g = e.group;
    s.groups = upsert<GroupStatus>(s.groups, (x) => x.group === g.group, g);
  }
  if (e.pair === null) s.groups = s.groups.filter((g) => s.pairs.some((p) => p.group === g.group));
  if (e.volume !== undefined) s.volumes = upsert(s.volumes, (v) => v.name === e.event.subject, e.volume);
  if (e.table !== undefined) s.table = e.table;
}

function upsert<T>(list: T[], match: (x: T) => boolean, value: T | null): T[] {
  const rest = list.filter((x) => !match(x));
  return value === null ? rest : [...rest, value];
}
