// Splitting an async pair (spec 001 §5.2, "suspending"): the secondary first applies every entry
// written before the split, so it holds the primary's state at the split point. When the journal
// cannot be drained (the link is down, a timeout, a failure), what the secondary lacks becomes
// recorded regions and the pair is suspended; a resync copies them.
import type { ReplicationEnv } from '../env';
import { drainPollIntervalMs, drainTimeoutMs } from '../limits';
import type { PairRuntime } from '../pairs/runtime';
import type { Transition, TransitionEngine } from '../pairs/transitions';
import type { Journals } from './journals';

export class SplitDrain {
  constructor(private readonly env: ReplicationEnv, private readonly journals: Journals, private readonly engine: TransitionEngine) {
    // An async primary cannot drain a stream that failed (no split is draining it): suspend it now.
    engine.onAfter((t: Transition) => {
      const p = t.pair;
      if (t.event === 'failure' && p.record.role === 'primary' && p.record.state === 'suspending' && p.drainTargetSeq === null) {
        return this.suspendUndelivered(p, p.record.reason);
      }
      return undefined;
    });
  }

  /**
   * Waits until the secondary applied every entry written before the split, then suspends the
   * pairs: all members of a consistency group split at the same entry, so the secondary holds the
   * group's state at one instant.
   */
  async drain(members: PairRuntime[]): Promise<void> {
    const first = members[0];
    if (!first) return;
    const journal = this.journals.primary(first.record.group!)!;
    const peer = first.record.peer.node;
    const target = journal.lastSeq;
    for (const p of members) p.drainTargetSeq = target;
    const deadline = this.env.clock.now() + drainTimeoutMs;
    while (journal.appliedSeq < target && this.env.clock.now() < deadline && this.env.transport.isUp(peer) &&
        members.some((p) => p.record.state === 'suspending')) {
      await this.env.clock.sleep(drainPollIntervalMs);
    }
    for (const p of members) p.drainTargetSeq = null;
    const drained = journal.appliedSeq >= target;
    for (const p of members) {
      if (p.record.state !== 'suspending') continue;
      if (drained) {
        await this.engine.apply(p, 'drain-complete', {
          reason: `split: the secondary applied every entry through ${target}; it holds the ${members.length > 1 ? 'group\'s' : 'volume\'s'} state at the split point`,
        });
      } else {
        await this.suspendUndelivered(p,
          `split: the secondary could not be drained (${this.env.transport.isUp(peer) ? 'timeout' : 'link down'}); undelivered entries were recorded as changed regions`);
      }
    }
  }

  /** Entries the secondary has not received become recorded regions; the pair is suspended. */
  private async suspendUndelivered(p: PairRuntime, reason: string): Promise<void> {
    const journal = this.journals.primary(p.record.group!);
    if (journal) {
      for (const e of journal.retainedEntries()) if (e.pair === p.record.name && e.seq > journal.ackedSeq) p.bitmap.markBytes(e.offset, e.length);
    }
    await p.bitmap.sync();
    await this.engine.apply(p, 'drain-failed', { reason });
    await this.journals.retireIfSuspended(p.record.group!);
  }
}
