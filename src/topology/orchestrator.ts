// The three-data-centre commands of spec 001 over the nodes of one topology: status, apply,
// failover, failback and repair. A facade: the read model is in status.ts, the procedures are one
// per file in procedures/, and the nodes are reached only through the injected NodeClient factory
// (HTTP from the CLI, in-process from a simulator).
import { type RunOptions, TopologyContext } from './context';
import { TricopyError } from '../common/errors';
import type { DeletedCloneSet, DrillResult, DrillView } from '../contracts/clones';
import type { CloneNodeClient } from '../contracts/node-client';
import { apply } from './procedures/apply';
import { type CloneClientOf, drillStatus, endDrill, startDrill } from './procedures/drill';
import { failback } from './procedures/failback';
import { failover } from './procedures/failover';
import { repair } from './procedures/repair';
import { type TopologyStatus, topologyStatus } from './status';
import type { Topology } from './topology-file';

export type { Printer, RunOptions } from './context';
export type { LegStatus, SiteStatus, TopologyStatus } from './status';

export class Orchestrator {
  private readonly ctx: TopologyContext;

  /** `cloneClientFor`: the clone API of a site's node, for drills (HTTP from the CLI). */
  constructor(t: Topology, options: RunOptions, private readonly cloneClientFor?: (address: string) => CloneNodeClient) {
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

  /** A DR drill at a site that holds a copy: writable throwaway clones while replication goes on. */
  startDrill(at: string, name: string): Promise<void> {
    return startDrill(this.ctx, this.clones(), at, name);
  }

  endDrill(options: { at?: string; name?: string; force: boolean; result?: DrillResult; note?: string }): Promise<DeletedCloneSet[]> {
    return endDrill(this.ctx, this.clones(), options);
  }

  drillStatus(): Promise<{ drills: DrillView[]; unreachable: string[] }> {
    return drillStatus(this.ctx, this.clones());
  }

  private clones(): CloneClientOf {
    const make = this.cloneClientFor;
    if (!make) throw new TricopyError('internal', 'drills need the clone API of the nodes; this orchestrator was built without it');
    return (site) => make(site.spec.node);
  }
}
