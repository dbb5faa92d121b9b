// What every topology procedure shares: the three sites of the topology file with the client of
// each site's node and what the last probe learned of it, the topology's pairs as a site sees them,
// and the numbered step lines the procedures print. The procedures themselves live in procedures/.
import { type Clock, systemClock } from '../common/clock';
import { TricopyError, errorMessage } from '../common/errors';
import type { NodeInfo } from '../contracts/node';
import type { NodeClient, NodeClientFactory } from '../contracts/node-client';
import type { PairStatus } from '../contracts/pairs';
import { type SiteSpec, type Topology, parsePairName } from './topology-file';

export interface Printer {
  (line: string): void;
}

export type SiteRole = 'primary' | 'sync' | 'async';

export interface Site {
  role: SiteRole;
  spec: SiteSpec;
  api: NodeClient;
  /** What the node said of itself at the last probe; undefined when it did not answer. */
  info: NodeInfo | undefined;
  error: string | undefined;
}

export interface RunOptions {
  /** The client of a site's node, from its address in the topology file (HTTP, or a simulated node). */
  clientFor: NodeClientFactory;
  print: Printer;
  /** Seconds to wait for copies to finish (0 = do not wait). */
  waitSeconds: number;
  /** Time for waits between polls (the system clock; a simulator's virtual one). */
  clock?: Clock;
  /** The API token the nodes are reached with, given to them for automatic failover (they reach each other with it). */
  apiToken?: string | undefined;
  /** A site that does not answer this fast counts as unreachable for this run (default 5 s). */
  probeTimeoutMs?: number;
}

/** A site that does not answer this fast counts as unreachable for this run. */
const probeTimeoutMs = 5000;

export class TopologyContext {
  readonly sites: Site[];
  readonly clock: Clock;
  private stepNo = 0;

  constructor(readonly t: Topology, readonly options: RunOptions) {
    this.clock = options.clock ?? systemClock;
    const make = (role: SiteRole, spec: SiteSpec): Site => ({ role, spec, api: options.clientFor(spec.node), info: undefined, error: undefined });
    this.sites = [make('primary', t.primary), make('sync', t.sync), make('async', t.async)];
  }

  async probe(): Promise<void> {
    await Promise.all(this.sites.map(async (s) => {
      try {
        s.info = await s.api.nodeInfo({ timeoutMs: this.options.probeTimeoutMs ?? probeTimeoutMs });
        s.error = undefined;
      } catch (err) {
        s.info = undefined;
        s.error = errorMessage(err);
      }
    }));
  }

  site(role: SiteRole): Site {
    return this.sites.find((s) => s.role === role)!;
  }

  siteByName(name: string): Site {
    const s = this.sites.find((x) => x.spec.site === name);
    if (!s) throw new TricopyError('invalid-argument', `${name} is not a site of topology ${this.t.name}`, `its sites: ${this.sites.map((x) => x.spec.site).join(', ')}`);
    return s;
  }

  /** The pairs of this topology at `s` (a node may hold pairs of other topologies too). */
  async pairsAt(s: Site): Promise<PairStatus[]> {
    const pairs = await s.api.listPairs();
    return pairs.filter((p) => parsePairName(this.t, p.name) !== undefined);
  }

  async pairAt(s: Site, name: string): Promise<PairStatus | undefined> {
    if (!s.info) return undefined;
    return (await this.pairsAt(s)).find((p) => p.name === name);
  }

  header(text: string): void {
    this.print(text);
  }

  step(text: string): void {
    this.stepNo += 1;
    this.print(`  [${this.stepNo}] ${text}`);
  }

  print(line: string): void {
    this.options.print(line);
  }
}
