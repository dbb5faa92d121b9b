// Takeover at the secondary (spec 001 §5.2; Hitachi horctakeover): with the primary reachable it
// is a swap; without it, the secondary applies everything it received and becomes writable (SSWS)
// with a new generation, so the old primary learns it was taken over when it returns.
import type { PairStatus } from '../../contracts/pairs';
import type { Journals } from '../async/journals';
import type { AppliedMarks } from '../delta/marks';
import type { ReplicationEnv } from '../env';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import type { PeerDemand } from './peer-demand';
import type { Swap } from './swap';
import { refusal } from './operator';

export interface TakeoverParts {
  env: ReplicationEnv;
  registry: PairRegistry;
  engine: TransitionEngine;
  journals: Journals;
  marks: AppliedMarks;
  demand: PeerDemand;
  swap: Swap;
  status: (p: PairRuntime) => PairStatus;
}

export class Takeover {
  constructor(private readonly parts: TakeoverParts) {}

  /** At the secondary: takes over this pair, or every pair of its consistency group. */
  takeover(name: string): Promise<PairStatus[]> {
    const { registry, engine, env } = this.parts;
    const first = registry.require(name);
    const members = first.record.group ? [...registry.ofGroup(first.record.group)] : [first];
    return registry.serializeAll(members.map((p) => p.record.name), async () => {
      for (const p of members) {
        const outcome = engine.decide(p, 'takeover');
        if (outcome.kind === 'refuse') throw refusal(p, outcome, `takeover of pair ${p.record.name}`);
      }
      if (members.every((p) => p.record.state === 'secondary-writable')) return members.map((p) => this.parts.status(p));
      if (env.transport.isUp(first.record.peer.node)) {
        // With the primary reachable the takeover is a swap, so the swap's row decides too, before
        // the old primary steps down. A secondary still `suspending` (the news that its primary's
        // drain ended has not been applied here) may be taken over alone, not swapped: becomePrimary
        // would be refused for it after the old primary had stepped down for the whole group, and
        // the pair would be left with two secondaries (sim seed 1543).
        const swapping = members.filter((p) => p.record.role === 'secondary');
        for (const p of swapping) {
          const outcome = engine.decide(p, 'swap');
          if (outcome.kind === 'refuse') throw refusal(p, outcome, `takeover of pair ${p.record.name}`);
        }
        await this.parts.swap.becomePrimary(swapping, false);
        return members.map((p) => this.parts.status(p));
      }
      // The primary is gone: apply everything received, then open the volumes for writes.
      const journal = first.record.group ? this.parts.journals.received(first.record.group) : undefined;
      if (journal) await journal.drain();
      for (const p of members) {
        await engine.apply(p, 'takeover', {
          receivedSeqAtTakeover: journal ? journal.receivedSeq : null, hostWritesRecorded: false,
          reason: `takeover: primary ${p.record.peer.node} unreachable${journal ? `; applied all ${journal.appliedSeq} received journal entries` : ''}; volume is writable (SSWS)`,
        });
        // Watch for the old primary: when it returns it must learn it was taken over.
        this.parts.demand.wantIfSender(p);
        if (journal && p.record.group) await this.parts.marks.save(p.record.volume, { origin: p.record.peer.node, group: p.record.group, appliedSeq: journal.appliedSeq });
      }
      return members.map((p) => this.parts.status(p));
    });
  }
}
