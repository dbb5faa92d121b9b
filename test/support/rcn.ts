// A remote copy network on loopback for integration tests: storage nodes (a Cluster), edges and
// cores (`tricopy edge run`), optional fault proxies on relay links, and the network file applied
// with the CLI.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { RelayOrderStatus, RelayStatus } from '../../src/contracts/network';
import { Cluster } from './cluster';
import { FaultProxy } from './fault-proxy';
import { cli } from './node-process';
import { RelayProcess } from './relay-process';
import { waitFor } from './wait';

export interface RcnOptions {
  /** Storage node name → the edge it attaches to. */
  nodes: Record<string, string>;
  cores: string[];
  links: Array<[string, string]>;
  /** Links whose first relay reaches the second through a fault proxy. */
  proxied?: Array<[string, string]>;
  /** More keys per link (compress, bandwidth), by `a>b` as the link is listed. */
  linkExtra?: Record<string, Record<string, unknown>>;
  orders: Record<string, Record<string, unknown>>;
  /** More top-level keys of the network file (customers, routes). */
  extra?: Record<string, unknown>;
  /** More keys per core (batch, capacity). */
  coreExtra?: Record<string, Record<string, unknown>>;
  /** Customer per storage node. */
  customers?: Record<string, string>;
  /** More `edge run` flags per relay (TLS files). */
  relayArgs?: Record<string, string[]>;
  /** More `node run` flags for every storage node. */
  nodeArgs?: string[];
}

export class Rcn {
  readonly relays = new Map<string, RelayProcess>();
  readonly proxies = new Map<string, FaultProxy>();
  file = '';

  private constructor(readonly dir: string, readonly cluster: Cluster, readonly options: RcnOptions) {}

  static async create(dir: string, options: RcnOptions): Promise<Rcn> {
    const cluster = await Cluster.create(dir, Object.keys(options.nodes), ['--peer-timeout', '3s', ...(options.nodeArgs ?? [])]);
    const rcn = new Rcn(dir, cluster, options);
    const edges = [...new Set(Object.values(options.nodes))];
    for (const e of edges) await rcn.startRelay(e, 'edge');
    for (const c of options.cores) await rcn.startRelay(c, 'core');
    for (const [from, to] of options.proxied ?? []) {
      const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: rcn.relay(to).ports.listenPort });
      rcn.proxies.set(`${from}>${to}`, proxy);
    }
    await rcn.writeFile();
    return rcn;
  }

  async startRelay(name: string, role: 'edge' | 'core'): Promise<RelayProcess> {
    const r = await RelayProcess.start({ name, role, dataDir: path.join(this.dir, name), secretFile: this.cluster.secretFile, args: this.options.relayArgs?.[name] });
    this.relays.set(name, r);
    return r;
  }

  relay(name: string): RelayProcess {
    const r = this.relays.get(name);
    if (!r) throw new Error(`no relay ${name}`);
    return r;
  }

  proxy(from: string, to: string): FaultProxy {
    const p = this.proxies.get(`${from}>${to}`);
    if (!p) throw new Error(`no proxy ${from} > ${to}`);
    return p;
  }

  async writeFile(): Promise<string> {
    const o = this.options;
    const edges: Record<string, unknown> = {};
    for (const e of new Set(Object.values(o.nodes))) {
      edges[e] = {
        api: this.relay(e).apiUrl,
        attach: Object.entries(o.nodes).filter(([, edge]) => edge === e).map(([n]) => (o.customers?.[n]
          ? { node: this.cluster.node(n).apiUrl, customer: o.customers[n] } : this.cluster.node(n).apiUrl)),
      };
    }
    const cores: Record<string, unknown> = {};
    for (const c of o.cores) cores[c] = { api: this.relay(c).apiUrl, ...(o.coreExtra?.[c] ?? {}) };
    const links = o.links.map(([a, b]) => {
      const p = this.proxies.get(`${a}>${b}`);
      const extra = o.linkExtra?.[`${a}>${b}`];
      if (!p && !extra) return [a, b];
      return { between: [a, b], ...(p ? { address: { [b]: `127.0.0.1:${p.port}` } } : {}), ...(extra ?? {}) };
    });
    const doc = { name: 'rcn', edges, cores, links, orders: o.orders, ...(o.extra ?? {}) };
    this.file = path.join(this.dir, 'rcn.yaml');
    await fsp.writeFile(this.file, JSON.stringify(doc, null, 2));
    return this.file;
  }

  async apply(): Promise<void> {
    const r = await cli(['network', 'apply', this.file]);
    if (r.code !== 0) throw new Error(`network apply failed: ${r.stderr}`);
  }

  /** pair create --via rcn:ORDER with the CLI; returns its output. */
  async pairVia(opts: { name: string; primary: string; secondary: string; volume: string; order: string; mode?: 'sync' | 'async'; extra?: string[] }): Promise<string> {
    const r = await cli(['--node', this.cluster.node(opts.primary).apiUrl, 'pair', 'create', opts.name, '--volume', opts.volume,
      '--to', this.cluster.node(opts.secondary).apiUrl, '--mode', opts.mode ?? 'sync', '--via', `rcn:${opts.order}`, ...(opts.extra ?? [])]);
    if (r.code !== 0) throw new Error(`pair create --via failed: ${r.stderr}`);
    return r.stdout;
  }

  async status(relay: string): Promise<RelayStatus> {
    return this.relay(relay).api.status();
  }

  async order(relay: string, id: string, side: 'source' | 'target'): Promise<RelayOrderStatus> {
    const o = (await this.status(relay)).orders.find((x) => x.id === id && x.side === side);
    if (!o) throw new Error(`relay ${relay} has no ${side} order ${id}`);
    return o;
  }

  /** Waits until the source edge has every entry of the order acknowledged. */
  async drained(order: string, timeoutMs = 60_000): Promise<RelayOrderStatus> {
    const from = this.options.orders[order]!.from as string;
    return waitFor(`order ${order} drained at ${from}`, async () => {
      const o = await this.order(from, order, 'source');
      return o.inFlight === 0 ? o : undefined;
    }, { timeoutMs, intervalMs: 100 });
  }

  async killRelay(name: string): Promise<void> {
    await this.relay(name).kill();
  }

  /** The relay again on its ports and data directory; with `args`, with those flags instead of its own. */
  async restartRelay(name: string, args?: string[]): Promise<RelayProcess> {
    const old = this.relay(name);
    const r = args ? await RelayProcess.start({ ...old.spec, ports: old.ports, args }) : await old.restart();
    this.relays.set(name, r);
    return r;
  }

  async stopAll(): Promise<void> {
    for (const p of this.proxies.values()) await p.close().catch(() => undefined);
    for (const r of this.relays.values()) await r.stop().catch(() => undefined);
    await this.cluster.stopAll();
  }
}
