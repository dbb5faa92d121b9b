// The three-data-centre commands of spec 001 over the nodes of one topology: status, apply,
// failover, failback and repair. A facade: the read model is in status.ts, the procedures are one
// per file in procedures/, and the nodes are reached only through the injected NodeClient factory
// (HTTP from the CLI, in-process from a simulator).
import { type RunOptions, TopologyContext } from './context';
import { apply } from './procedures/apply';
import { failback } from './procedures/failback';
import { failover } from './procedures/failover';
import { repair } from './procedures/repair';
import { type TopologyStatus, topologyStatus } from './status';
import type { Topology } from './topology-file';

export type { Printer, RunOptions } from './context';
export type { LegStatus, SiteStatus, TopologyStatus } from './status';

export class Orchestrator {
  private readonly ctx: TopologyContext;

  constructor(t: Topology, options: RunOptions) {
    this.ctx = new TopologyContext(t, options);
  }

  status(): Promise<TopologyStatus> {
    return topologyStatus(this.ctx);
  }

  apply(): Promise<void> {
    return apply(this.ctx);
  }

  /** To the sync site (Fig. 10), the async site (Fig. 13), or the async site with the sync site's newest data (Fig. 14). */
  failover(to: string, newestFrom: string | undefined): Promise<void> {
    return failover(this.ctx, to, newestFrom);
  }

  failback(to: string): Promise<void> {
    return failback(this.ctx, to);
  }

  repair(): Promise<void> {
    return repair(this.ctx);
  }
}
