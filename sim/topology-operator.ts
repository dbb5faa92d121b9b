// The simulated operator of a three-site topology (spec 001): applies the topology with the real
// procedures, fails over to the sync or the async site (with or without the sync site's newest
// data), fails back and repairs while faults happen, moves the application to the site the
// topology says is active, and at the end follows the runbook until the topology is whole again.
import { errorMessage } from '../src/common/errors';
import { Orchestrator, type TopologyStatus } from '../src/topology/orchestrator';
import { type Topology, parseTopology } from '../src/topology/topology-file';
import type { Checker } from './checker';
import type { Cluster } from './cluster';
import { SimNodeClient } from './node-client';
import type { Random } from './random';

export class TopologyOperator {
  readonly topology: Topology;
  private readonly clients = new Map<string, SimNodeClient>();

  constructor(private readonly cluster: Cluster, private readonly checker: Checker, private readonly rng: Random,
    sites: { primary: string; sync: string; async: string }, volumes: Record<string, number>) {
    this.topology = parseTopology({
      name: 'erp', layout: 'multi-target', volumes,
      primary: { site: sites.primary, node: `http://${sites.primary}` },
      sync: { site: sites.sync, node: `http://${sites.sync}`, fence: 'data' },
      async: { site: sites.async, node: `http://${sites.async}` },
    });
  }

  private orchestrator(): Orchestrator {
    return new Orchestrator(this.topology, {
      clientFor: (url) => {
        const name = new URL(url).hostname;
        let c = this.clients.get(name);
        if (!c) {
          c = new SimNodeClient(this.cluster.node(name), this.cluster.scheduler, url);
          this.clients.set(name, c);
        }
        return c;
      },
      print: (line) => this.cluster.trace.add(`  ${line.trim()}`),
      waitSeconds: 120,
      clock: this.cluster.scheduler.clock({ alive: true }),
    });
  }

  /** Runs a procedure; the trace says how it ended. */
  private async run(what: string, op: (o: Orchestrator) => Promise<unknown>): Promise<boolean> {
    const c = this.cluster;
    c.trace.add(`operator: topology ${what}`);
    const result = await c.scheduler.runUntilSettled(op(this.orchestrator()), c.scheduler.now + 900_000);
    if (!result.done) {
      c.trace.add(`operator: topology ${what} → no end within 15 minutes`);
      return false;
    }
    if ('error' in result && result.error !== undefined) {
      c.trace.add(`operator: topology ${what} → error: ${errorMessage(result.error)}`);
      return false;
    }
    c.trace.add(`operator: topology ${what} → ok`);
    return true;
  }

  async status(): Promise<TopologyStatus | undefined> {
    const r = await this.cluster.scheduler.runUntilSettled(this.orchestrator().status(), this.cluster.scheduler.now + 120_000);
    return r.done && 'value' in r ? r.value : undefined;
  }

  async setUp(): Promise<void> {
    const t = this.topology;
    if (!await this.run('apply', (o) => o.apply())) this.cluster.fail('topology apply failed on a healthy cluster');
    for (const v of t.volumes) {
      this.cluster.active.set(v.name, t.primary.site);
      this.checker.activeChanged(v.name, undefined, t.primary.site, false);
    }
  }

  /** One random procedure, as an operator might run it during trouble. */
  async randomCommand(): Promise<void> {
    const t = this.topology;
    const choices: Array<() => Promise<void>> = [
      () => this.failover(t.sync.site, undefined),
      () => this.failover(t.async.site, undefined),
      () => this.failover(t.async.site, t.sync.site),
      () => this.failback(t.primary.site),
      async () => void await this.run('repair', (o) => o.repair()),
    ];
    await this.rng.pick(choices)();
  }

  private async failover(to: string, newestFrom: string | undefined): Promise<void> {
    const ok = await this.run(`failover --to ${to}${newestFrom ? ` --newest-from ${newestFrom}` : ''}`, (o) => o.failover(to, newestFrom));
    if (ok) await this.follow(newestFrom);
  }

  private async failback(to: string): Promise<void> {
    if (await this.run(`failback --to ${to}`, (o) => o.failback(to))) await this.follow(undefined, true);
  }

  /**
   * The application moves to the site the topology now says is active. A failback is a planned
   * move (the copy there is complete); a failover keeps what the new site held (and, with
   * --newest-from, what the sync site held too).
   */
  private async follow(newestFrom: string | undefined, planned = false): Promise<void> {
    const status = await this.status();
    const site = status?.activeSite;
    if (!site) return;
    for (const v of this.topology.volumes) {
      const from = this.cluster.active.get(v.name);
      if (from === site) continue;
      if (newestFrom) this.checker.carryFrom(newestFrom, site, v.name);
      this.cluster.active.set(v.name, site);
      this.cluster.trace.add(`application of ${v.name} moves to ${site}`);
      this.checker.activeChanged(v.name, from, site, planned);
    }
  }

  /** The runbook: fail back to the primary site and repair until every copy is in step. */
  async converge(deadlineMs: number): Promise<boolean> {
    const c = this.cluster;
    while (c.scheduler.now < deadlineMs) {
      const status = await this.status();
      // Healthy too: a node just restarted can report a stale leg as PAIR whose other end is gone (seed 1474).
      if (status && status.healthy && status.activeSite === this.topology.primary.site && status.legs.length > 0 && status.legs.every((l) => l.code === 'PAIR') &&
          status.sites.every((s) => s.reachable) && this.drained()) {
        return true;
      }
      if (status?.activeSite && status.activeSite !== this.topology.primary.site) await this.failback(this.topology.primary.site);
      else if (!await this.run('repair', (o) => o.repair())) await this.failback(this.topology.primary.site);
      await c.run(2000);
    }
    return false;
  }

  private drained(): boolean {
    for (const node of this.cluster.nodes.values()) {
      if (!node.service) return false;
      for (const g of node.service.groups()) {
        const s = node.service.groupStatus(g);
        if (s.role === 'primary' && (s.lag.entries > 0 || s.appliedSeq < s.lastSeq)) return false;
      }
    }
    return true;
  }
}
