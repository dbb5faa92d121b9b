// Nodes and topologies the manager looks after. Adding a node asks it who it is, tells it its
// manager (it persists that and pushes to it from then on) and registers the command paths of its
// copies; adding a topology keeps its definition and registers its copies' paths through the
// primary. Paths are reconciled again whenever a change calls for it (a procedure ended, a node
// pushed a pair created or deleted), one reconciliation at a time, a moment after the change.
import YAML from 'yaml';
import { TricopyError, errorMessage } from '../common/errors';
import type { NodeRecord, TopologyRecord } from '../contracts/manager';
import { type Topology, parseTopology } from '../topology/topology-file';
import { type ReconcileResult, type Scope, reconcilePaths } from './command-paths';
import type { ManagerContext } from './context';
import type { StoredNode } from './store/collections';
import { normalizeUrl } from './stored-node-client';

/** Changes arrive in bursts (a topology's pairs are created together): reconcile once after them. */
export const reconcileDelayMs = 300;

export class Registry {
  private chain: Promise<unknown> = Promise.resolve();
  private readonly pending = new Map<string, NodeJS.Timeout>();

  constructor(private readonly ctx: ManagerContext) {}

  async addNode(url: string, token: string | undefined): Promise<NodeRecord> {
    const address = normalizeUrl(url);
    const api = this.ctx.clientFor({ url: address, ...(token ? { token } : {}) });
    const info = await api.nodeInfo({ timeoutMs: 5000 }).catch((err: unknown) => {
      throw new TricopyError('unavailable', `cannot reach a node at ${address}: ${errorMessage(err)}`, 'is `tricopy node run` running there? Give its control API URL');
    });
    const existing = (await this.ctx.store.listNodes()).find((n) => n.name === info.name);
    if (existing && normalizeUrl(existing.url) !== address) this.ctx.log.info({ node: info.name, from: existing.url, to: address }, 'node moved');
    const now = new Date(this.ctx.clock.now()).toISOString();
    const node: StoredNode = {
      name: info.name, site: info.site, url: address, registeredAt: existing?.registeredAt ?? now, reachable: true, lastSeenAt: now, lastError: null,
      incarnation: existing?.incarnation ?? null, version: info.version, ...(token ? { token } : {}),
    };
    await this.ctx.writer.run(async (tx) => {
      tx.ops.push(this.ctx.store.putNode(node));
      tx.event({ kind: 'node-registered', node: node.name, subject: node.name, reason: `registered at ${address} (site ${node.site})` });
    });
    await this.tellManager(node);
    await this.reconcileNow({ node: node.name, topologies: await this.topologies() });
    for (const t of await this.topologies()) if ([t.primary.node, t.sync.node, t.async.node].map(normalizeUrl).includes(address)) await this.reconcileNow({ topology: t });
    return publicNode(node);
  }

  /** Tells a node which managers to push to (on registration, and when another manager takes the lead). */
  async tellManager(node: StoredNode): Promise<void> {
    await this.ctx.clientFor(node).registerManager({
      managerId: this.ctx.managerId(), urls: await this.ctx.leadership.managers(), ...(this.ctx.apiToken ? { token: this.ctx.apiToken } : {}),
    });
  }

  async addTopology(text: string): Promise<TopologyRecord> {
    let value: unknown;
    try {
      value = YAML.parse(text);
    } catch (err) {
      throw new TricopyError('invalid-argument', `the topology is not valid YAML: ${errorMessage(err)}`);
    }
    const t = parseTopology(value, 'topology');
    const nodes = await this.ctx.store.listNodes();
    const missing = [t.primary, t.sync, t.async].filter((s) => !nodes.some((n) => normalizeUrl(n.url) === normalizeUrl(s.node)));
    if (missing.length > 0) {
      throw new TricopyError('conflict', `topology ${t.name} names nodes the manager does not know: ${missing.map((s) => `${s.site} (${s.node})`).join(', ')}`,
        `register them first: ${missing.map((s) => `tricopy manager node add ${s.node}`).join('; ')}`);
    }
    const existing = await this.ctx.store.getTopology(t.name);
    const record: TopologyRecord = {
      name: t.name, layout: t.layout, text, addedAt: existing?.addedAt ?? new Date(this.ctx.clock.now()).toISOString(),
      sites: { primary: t.primary.site, sync: t.sync.site, async: t.async.site },
    };
    await this.ctx.writer.run(async (tx) => {
      tx.ops.push(this.ctx.store.putTopology(record));
      tx.event({ kind: 'topology-added', node: null, subject: t.name, reason: `${t.layout}: ${t.primary.site} → ${t.sync.site} (sync), ${t.layout === 'cascade' ? t.sync.site : t.primary.site} → ${t.async.site} (async)` });
    });
    await this.reconcileNow({ topology: t });
    return record;
  }

  async topologies(): Promise<Topology[]> {
    return (await this.ctx.store.listTopologies()).map((r) => parseTopology(YAML.parse(r.text), r.name));
  }

  async topology(name: string): Promise<Topology> {
    const r = await this.ctx.store.getTopology(name);
    if (!r) throw new TricopyError('not-found', `the manager keeps no topology ${name}`, 'add it: tricopy manager topology add <file>');
    return parseTopology(YAML.parse(r.text), name);
  }

  /** A node's pair was created or deleted: its topology's paths (or the node's own) a moment later. */
  pairChanged(node: string, pair: string): void {
    void this.topologies().then((ts) => {
      const t = ts.find((x) => pair.startsWith(`${x.name}.`));
      this.reconcileSoon(t ? { topology: t } : { node, topologies: ts });
    });
  }

  reconcileSoon(scope: Scope): void {
    const key = 'topology' in scope ? `t:${scope.topology.name}` : `n:${scope.node}`;
    clearTimeout(this.pending.get(key));
    this.pending.set(key, setTimeout(() => {
      this.pending.delete(key);
      if (this.ctx.leadership.isLeader()) void this.reconcileNow(scope).catch((err: unknown) => this.ctx.log.warn({ err: errorMessage(err) }, 'reconcile failed'));
    }, reconcileDelayMs).unref());
  }

  /** One reconciliation at a time: two would each send the construct the other is sending. */
  reconcileNow(scope: Scope): Promise<ReconcileResult> {
    const run = this.chain.then(async () => reconcilePaths({
      managerId: this.ctx.managerId(), monitored: this.ctx.config.monitored, log: this.ctx.log, clientFor: (n) => this.ctx.clientFor(n),
      record: (kind, copy, path, note) => this.ctx.writer.run(async (tx) => {
        tx.event({ kind, node: path[0] ?? null, subject: copy.copyId, reason: `${note} along ${path.join(' → ')}`, details: { path, topology: copy.topology } });
      }),
    }, scope, await this.ctx.store.listNodes()));
    this.chain = run.catch(() => undefined);
    return run;
  }

  stop(): void {
    for (const t of this.pending.values()) clearTimeout(t);
    this.pending.clear();
  }
}

export function publicNode(n: StoredNode): NodeRecord {
  const { token: _token, ...rest } = n;
  return rest;
}
