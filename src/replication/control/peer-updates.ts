// Primary → secondary: the primary's view of a pair (state, generation, protection, copy progress
// and, for 3DC, where the secondary's delta record may start). Sent after every transition at the
// primary and when the link comes up. An update lost while the link stays up (a request that timed
// out, a secondary busy past the timeout) is sent again, with the state of the moment, a few times:
// otherwise the secondary would show the old state until the next reconnect.
import type { Clock } from '../../common/clock';
import { errorMessage } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { Journals } from '../async/journals';
import type { PairRegistry } from '../pairs/registry';
import { pairUpdateRetries, pairUpdateRetryDelayMs } from '../limits';
import type { PairRuntime } from '../pairs/runtime';
import { type PairUpdate, pairUpdateCodec } from '../transport/control-messages';
import { MessageType } from '../transport/messages';
import type { PeerTransport } from '../transport/peer-transport';

export class PeerUpdates {
  constructor(private readonly transport: PeerTransport, private readonly registry: PairRegistry, private readonly journals: Journals,
    private readonly clock: Clock, private readonly log: Logger) {}

  /** Where a sync secondary's delta record may start: both copies of the volume in step now. */
  deltaBaseFor(p: PairRuntime): { group: string; seq: number } | null {
    if (p.record.role !== 'primary' || p.record.mode !== 'sync' || p.record.state !== 'duplex') return null;
    const asyncPairs = this.registry.ofVolume(p.record.volume).filter((x) => x.record.role === 'primary' && x.record.mode === 'async');
    const only = asyncPairs.length === 1 ? asyncPairs[0]! : undefined;
    const journal = only?.record.state === 'duplex' ? this.journals.primary(only.record.group!) : undefined;
    return journal ? { group: journal.group, seq: journal.lastSeq } : null;
  }

  update(p: PairRuntime): PairUpdate {
    const r = p.record;
    return {
      name: r.name, role: 'secondary', state: r.state, suspendCause: r.suspendCause, reason: r.reason, generation: r.generation,
      secondaryWritable: r.secondaryWritable, copyTotal: r.copy?.totalChunks ?? 0, copyDone: r.copy?.doneChunks ?? 0,
      deltaBase: this.deltaBaseFor(p), fence: r.fence, fenceGroup: r.fenceGroup,
    };
  }

  /** Mirrors the pair to the secondary (sent again on a live link if it fails; reconciled again on reconnect). */
  tell(p: PairRuntime): Promise<void> {
    return this.send(p, 0);
  }

  private send(p: PairRuntime, attempt: number): Promise<void> {
    if (!this.transport.isUp(p.record.peer.node)) return Promise.resolve();
    return this.transport.request(p.record.peer.node, MessageType.PairUpdate, pairUpdateCodec.encode(this.update(p))).then(() => undefined, (err: unknown) => {
      const again = attempt < pairUpdateRetries;
      this.log[again ? 'debug' : 'warn']({ pair: p.record.name, attempt, err: errorMessage(err) },
        again ? 'could not tell the secondary about a state change; sending it again' : 'could not tell the secondary about a state change; it learns at the next reconnect');
      if (again) this.clock.setTimer(pairUpdateRetryDelayMs, () => this.retry(p, attempt + 1)).unref();
    });
  }

  /** The update goes again only while this runtime is still the pair's primary here. */
  private retry(p: PairRuntime, attempt: number): void {
    if (this.registry.get(p.record.name) !== p || p.record.role !== 'primary') return;
    void this.send(p, attempt);
  }
}
