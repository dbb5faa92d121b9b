// The remote copy networks the manager keeps (spec 002 §3.6, §6.12; management server 103 with
// programs 501/502): the master copy of each network file, applied by the manager itself with the
// same planning and distribution as `network apply` (edge/apply.ts: routes from network-file.ts),
// and, while this manager leads, collected from every relay at each --sample-interval: status
// (links, 732/733/734 per order, log area use, 725/727 per pair) into the store, a sample per order
// and edge (kept at decreasing resolution, as the nodes' samples), and the relay's
// events (edge pair-state and order-state transitions …) into the history under the relay's name,
// each taken once (a cursor per relay process, stored with the events it covers); alerts for a
// relay that does not answer and an order in Failure Suspend (network-alerts.ts). A relay that lost
// the tables (a new data directory) or an apply that found something unreachable is applied again.
import YAML from 'yaml';
import { TricopyError, errorMessage } from '../common/errors';
import type { CollectedRelay, NetworkFailbackResult, NetworkFailoverResult, NetworkRecord, NetworkSample, NetworkStatusDocument, PutNetworkRequest } from '../contracts/managed-network';
import type { RelayInfo, RelayRole, RelayStatus } from '../contracts/network';
import type { NodeEvent } from '../contracts/node';
import { applyNetwork, httpApplyClients } from '../edge/apply';
import { HttpRelayClient } from '../edge/client';
import { type NetworkFile, parseNetworkFile } from '../edge/network-file';
import type { ManagerContext } from './context';
import { isNetworkAlertOf, networkAlerts } from './network-alerts';
import { thinnedKeys } from './sampler';
import type { RelayEventCursor } from './store/collections';
import { normalizeUrl } from './stored-node-client';
import type { Tx } from './writer';

/** A network file larger than this is refused (the API's body limit is set from it). */
export const maxNetworkTextChars = 1024 * 1024;
/** How long one relay may take to answer a collection request. */
const relayTimeoutMs = 5000;

/** The body of PUT /v1/networks/:name as a parsed network file; its name must be the URL's. */
export function networkFromRequest(name: string, body: PutNetworkRequest): NetworkFile {
  let value: unknown;
  try {
    value = YAML.parse(body.text);
  } catch (err) {
    throw new TricopyError('invalid-argument', `network ${name}: the file is not valid YAML: ${errorMessage(err)}`, 'send the network file as it is (YAML or JSON)');
  }
  const file = parseNetworkFile(value, `network ${name}`);
  if (file.name !== name) {
    throw new TricopyError('invalid-argument', `network ${name}: the file is network ${file.name}`, `send it as network ${file.name}, or change its "name" to ${name}`);
  }
  return file;
}

/** What one relay answered in one collection (or why it did not). */
type RelayReading =
  | { name: string; role: RelayRole; api: string; ok: true; info: RelayInfo; status: RelayStatus; events: NodeEvent[]; after: number; cursor: RelayEventCursor }
  | { name: string; role: RelayRole; api: string; ok: false; error: string };

export class ManagerNetworks {
  private timer: NodeJS.Timeout | undefined;
  private collecting = false;
  /** Applies (a PUT, a re-apply) one at a time. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly ctx: ManagerContext) {}

  start(): void {
    const every = this.ctx.config.sampleIntervalMs;
    if (every > 0) this.timer = setInterval(() => void this.collectAll(), every);
  }

  stop(): void {
    clearInterval(this.timer);
  }

  list(): Promise<NetworkRecord[]> {
    return this.ctx.store.listNetworks();
  }

  async get(name: string): Promise<NetworkRecord> {
    const r = await this.ctx.store.getNetwork(name);
    if (!r) throw new TricopyError('not-found', `the manager keeps no network ${name}`, 'give it one: tricopy network apply FILE --manager URL');
    return r;
  }

  /** Stores the file and applies it. Refused (nothing stored) when the file or the running relays contradict it. */
  put(name: string, body: PutNetworkRequest): Promise<NetworkRecord> {
    const file = networkFromRequest(name, body);
    return this.serialized(async () => {
      const { store, writer } = this.ctx;
      const existing = await store.getNetwork(name);
      const now = this.now();
      const base: NetworkRecord = {
        name, text: body.text, storedAt: existing?.storedAt ?? now, updatedAt: now, config: existing?.config ?? null, appliedAt: existing?.appliedAt ?? null, applyError: null,
      };
      const record = await this.applied(file, base);
      await writer.run(async (tx) => {
        tx.ops.push(store.putNetwork(record));
        tx.event({ kind: existing ? 'network-updated' : 'network-added', node: null, subject: name, reason: this.applyReason(record) });
      });
      return record;
    });
  }

  async remove(name: string): Promise<void> {
    await this.get(name);
    const ops = await this.ctx.store.deleteNetwork(name);
    await this.ctx.writer.run(async (tx) => {
      tx.ops.push(...ops);
      tx.event({ kind: 'network-removed', node: null, subject: name, reason: 'the manager no longer keeps or collects it; its relays keep running it' });
      for (const a of this.ctx.alerts.activeAlerts().filter((x) => isNetworkAlertOf(name, x.key))) {
        tx.alert(this.ctx.alerts.clear(a.key, `the manager no longer keeps network ${name}`));
      }
    });
  }

  /**
   * §6.9 after the loss of the source site, asked of the manager: its master copy names the order's
   * target edge, which has the source edge flush and stops the order. The outcome (the recovery
   * point) goes into the history, so it is on record beside the takeover that follows.
   */
  async failover(name: string, order: string, timeoutMs: number | undefined, fast = false): Promise<NetworkFailoverResult> {
    const { o, edge } = await this.targetEdge(name, order);
    const result = await edge.failover(order, timeoutMs, fast);
    await this.ctx.writer.run(async (tx) => {
      tx.event({
        kind: 'network-failover', node: o.to, subject: order,
        reason: result.residual !== undefined
          ? `order ${order} of network ${name} failed over fast at ${o.to} (§6.9, ¶0087): its storages take over now; ${o.to} applies the residual entries, hosts' writes wait until then`
          : `order ${order} of network ${name} stopped at ${o.to} (§6.9): reflected through ${result.reflected}; ` +
            (result.highWaterMark === null ? 'the source edge did not answer' : `high-water mark ${result.highWaterMark}, ${result.missing} missing`),
        details: { network: name, relay: o.to, reflected: result.reflected, highWaterMark: result.highWaterMark, missing: result.missing, fast },
      });
    });
    return { ...result, network: name, edge: o.to };
  }

  /** E-22 at the order's target edge, after its failover; recorded in the history when it released anything. */
  async failback(name: string, order: string): Promise<NetworkFailbackResult> {
    const { o, edge } = await this.targetEdge(name, order);
    const result = await edge.failback(order);
    if (result.released) {
      await this.ctx.writer.run(async (tx) => {
        tx.event({
          kind: 'network-failback', node: o.to, subject: order,
          reason: `order ${order} of network ${name}: the storages behind ${o.to} reach ${o.from}'s again (pairs ${result.pairs.join(', ') || 'none'})`,
          details: { network: name, relay: o.to, pairs: result.pairs },
        });
      });
    }
    return { ...result, network: name };
  }

  /** The order of a kept network, and a client of its target edge (where §6.9 and E-22 run). */
  private async targetEdge(name: string, order: string): Promise<{ o: NetworkFile['orders'][string]; edge: HttpRelayClient }> {
    const file = networkFromRequest(name, await this.get(name));
    const o = file.orders[order];
    if (!o) throw new TricopyError('not-found', `network ${name} has no order ${order}`, `its orders: ${Object.keys(file.orders).join(', ')}`);
    return { o, edge: new HttpRelayClient(file.edges[o.to]!.api) };
  }

  /** What was last collected, with the record's current apply state. */
  async status(name: string): Promise<NetworkStatusDocument> {
    const record = await this.get(name);
    const doc = await this.ctx.store.getNetworkStatus(name);
    const relays = doc?.relays ?? relaysOf(networkFromRequest(name, record)).map(([n, api, role]) => ({
      name: n, role, api, reachable: false, error: 'not collected yet', collectedAt: null, status: null,
    }));
    return { network: name, version: record.config?.version ?? null, appliedAt: record.appliedAt, applyError: record.applyError, collectedAt: doc?.collectedAt ?? null, relays };
  }

  /** The collected history of the network's orders at its edges, oldest first per order, edge and side. */
  async samples(name: string, order: string | undefined, sinceMs: number): Promise<NetworkSample[]> {
    await this.get(name);
    return (await this.ctx.store.listNetworkSamples(name)).map((r) => r.sample)
      .filter((s) => (order === undefined || s.order === order) && Date.parse(s.time) >= sinceMs);
  }

  /** Keeps the samples at decreasing resolution with age (sampler.ts tiers, as for the nodes' samples). */
  private async thin(name: string): Promise<void> {
    const rows = await this.ctx.store.listNetworkSamples(name);
    const dels = thinnedKeys(rows.map(({ key, sample: s }) => ({ key, series: `${s.order}/${s.edge}/${s.side}`, timeMs: Date.parse(s.time) })), this.ctx.clock.now());
    if (dels.length > 0) await this.ctx.store.commit(dels.map((key) => ({ type: 'del' as const, key })));
  }

  /** One collection of every network; only the leading manager collects (and writes). */
  async collectAll(): Promise<void> {
    if (!this.ctx.leadership.isLeader() || this.collecting) return;
    this.collecting = true;
    try {
      for (const record of await this.ctx.store.listNetworks()) {
        await this.collect(record).catch((err: unknown) => this.ctx.log.warn({ network: record.name, err: errorMessage(err) }, 'collecting the network failed'));
      }
    } finally {
      this.collecting = false;
    }
  }

  private async collect(record: NetworkRecord): Promise<void> {
    const { store, writer } = this.ctx;
    const file = networkFromRequest(record.name, record);
    const previous = await store.getNetworkStatus(record.name);
    const readings = await Promise.all(relaysOf(file).map(([name, api, role]) => this.read(record.name, name, api, role)));
    const now = this.now();
    await writer.run(async (tx) => {
      if (!(await store.getNetwork(record.name))) return; // removed while it was being read
      const relays = readings.map((r) => this.take(tx, record.name, r, previous?.relays.find((p) => p.name === r.name), now));
      for (const r of readings) if (r.ok) tx.ops.push(...orderSamples(record.name, r.name, r.status, now).map((s) => store.putNetworkSample(s)));
      const alerts = networkAlerts(record.name, readings);
      for (const input of alerts.raise) tx.alert(this.ctx.alerts.raise(input));
      for (const c of alerts.clear) tx.alert(this.ctx.alerts.clear(c.key, c.why));
      tx.ops.push(store.putNetworkStatus({ network: record.name, version: record.config?.version ?? null, appliedAt: record.appliedAt, applyError: record.applyError, collectedAt: now, relays }));
    });
    await this.thin(record.name).catch((err: unknown) => this.ctx.log.warn({ network: record.name, err: errorMessage(err) }, 'thinning network samples failed'));
    const stale = readings.filter((r) => r.ok && r.status.configVersion !== record.config?.version).map((r) => r.name);
    if (record.applyError !== null || stale.length > 0) await this.reapply(record.name, stale, record.config?.version ?? null);
  }

  /** Asks one relay who it is (its process), its status, and its events after the stored cursor. */
  private async read(network: string, name: string, api: string, role: RelayRole): Promise<RelayReading> {
    const client = new HttpRelayClient(api, relayTimeoutMs);
    try {
      const [info, status] = await Promise.all([client.info(), client.status()]);
      const cursor = await this.ctx.store.getRelayCursor(network, name);
      const after = cursor && cursor.incarnation === info.startedAt ? cursor.lastEventId : 0;
      const events = await client.events(after);
      return { name, role, api, ok: true, info, status, events, after, cursor: { incarnation: info.startedAt, lastEventId: events.at(-1)?.id ?? after } };
    } catch (err) {
      return { name, role, api, ok: false, error: errorMessage(err) };
    }
  }

  /** One relay's reading into the transaction: its events and cursor, reachability changes, its row of the status. */
  private take(tx: Tx, network: string, r: RelayReading, before: CollectedRelay | undefined, now: string): CollectedRelay {
    const wasReachable = before?.reachable ?? true;
    if (!r.ok) {
      if (wasReachable) tx.event({ kind: 'relay-unreachable', node: r.name, subject: r.name, reason: `${r.role} of network ${network} does not answer: ${r.error}`, details: { network, relay: r.name } });
      return { name: r.name, role: r.role, api: r.api, reachable: false, error: r.error, collectedAt: before?.collectedAt ?? null, status: before?.status ?? null };
    }
    if (!wasReachable) tx.event({ kind: 'relay-reachable', node: r.name, subject: r.name, reason: `${r.role} of network ${network} answers again`, details: { network, relay: r.name } });
    const first = r.events[0];
    if (first && first.id > r.after + 1) {
      tx.event({ kind: 'relay-events-dropped', node: r.name, subject: r.name, reason: `${first.id - r.after - 1} events of relay ${r.name} left its ring before the manager read them`, details: { network, relay: r.name } });
    }
    for (const e of r.events) {
      tx.event({ kind: e.kind, node: r.name, subject: e.subject, reason: e.reason, details: { ...(e.details ?? {}), network, relay: r.name, relayEventId: e.id, relayTime: e.time } });
    }
    if (r.events.length > 0 || r.after === 0) tx.ops.push(this.ctx.store.putRelayCursor(network, r.name, r.cursor));
    return { name: r.name, role: r.role, api: r.api, reachable: true, error: null, collectedAt: now, status: r.status };
  }

  /** Applies the stored file again (a relay lost its tables, or the last apply found something down). */
  private reapply(name: string, stale: string[], seenVersion: string | null): Promise<void> {
    return this.serialized(async () => {
      const { store, writer } = this.ctx;
      const record = await store.getNetwork(name);
      if (!record) return;
      if (record.applyError === null && (record.config?.version ?? null) !== seenVersion) return; // applied anew since it was read
      let next: NetworkRecord;
      try {
        next = await this.applied(networkFromRequest(name, record), record);
      } catch (err) {
        next = { ...record, applyError: errorMessage(err) };
      }
      if (next.applyError !== null && next.applyError === record.applyError) return; // still failing the same way: nothing new to tell
      await writer.run(async (tx) => {
        tx.ops.push(store.putNetwork(next));
        const why = stale.length > 0 ? `${stale.join(', ')} ran another version` : 'the last apply did not reach everything';
        tx.event({ kind: next.applyError === null ? 'network-reapplied' : 'network-apply-failed', node: null, subject: name, reason: `${why}: ${this.applyReason(next)}` });
      });
    });
  }

  /** Applies `file` like `network apply`; something unreachable is recorded (tried again later), any other failure refuses. */
  private async applied(file: NetworkFile, record: NetworkRecord): Promise<NetworkRecord> {
    const tokens = new Map((await this.ctx.store.listNodes()).map((n) => [normalizeUrl(n.url), n.token]));
    try {
      const plan = await applyNetwork(file, httpApplyClients((api) => tokens.get(normalizeUrl(api))));
      return { ...record, config: plan.config, appliedAt: this.now(), applyError: null };
    } catch (err) {
      if (err instanceof TricopyError && err.code === 'unavailable') return { ...record, applyError: err.message };
      throw err;
    }
  }

  private applyReason(r: NetworkRecord): string {
    if (r.applyError !== null) return `kept, not applied everywhere (tried again at each collection): ${r.applyError}`;
    const c = r.config!;
    return `applied version ${c.version}: ${Object.keys(c.relays).length} relays, ${Object.keys(c.storages).length} storage nodes, ` +
      `${Object.keys(c.orders).length} order-guarantee ids; routes ${c.routes.filter((x) => x.from < x.to).map((x) => x.hops.join('→')).join(', ') || '-'}`;
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.chain.then(fn);
    this.chain = run.catch(() => undefined);
    return run;
  }

  private now(): string {
    return new Date(this.ctx.clock.now()).toISOString();
  }
}

/** One sample per order-guarantee id the relay (an edge) reports. */
function orderSamples(network: string, edge: string, status: RelayStatus, time: string): NetworkSample[] {
  return status.orders.map((o) => ({
    time, network, order: o.id, edge, side: o.side, state: o.state, generated: o.generated, reflected: o.reflected, deleted: o.deleted,
    inFlight: o.inFlight, logBytes: o.log.bytes, logCapacityBytes: o.log.capacityBytes, ackDelayMs: o.ackDelayMs,
    reflectionDelayMs: o.reflectionDelayMs, retransmissions: o.retransmissions,
  }));
}

/** Every relay of the file: edges first, then cores. */
function relaysOf(file: NetworkFile): Array<[string, string, RelayRole]> {
  return [...Object.entries(file.edges).map(([n, e]) => [n, e.api, 'edge'] as [string, string, RelayRole]),
    ...Object.entries(file.cores).map(([n, c]) => [n, c.api, 'core'] as [string, string, RelayRole])];
}
