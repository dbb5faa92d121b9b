// Where the application of a topology runs, as one node can tell from its own pairs: every
// topology volume is here and its pairs let hosts write it by their roles (primary and not taken
// over, or taken over here: SSWS). The agents of both arbiters read it the same way.
import type { PairStatus } from '../../contracts/pairs';
import { type Topology, parsePairName } from '../../topology/topology-file';

export function applicationRunsHere(t: Topology, pairs: PairStatus[], hasVolume: (name: string) => boolean): boolean {
  const mine = pairs.filter((p) => parsePairName(t, p.name) !== undefined);
  if (mine.length === 0) return false;
  return t.volumes.every((v) => hasVolume(v.name) && mine.filter((p) => p.volume === v.name)
    .every((p) => (p.role === 'primary' && p.suspendCause !== 'takeover-by-peer') || p.state === 'secondary-writable'));
}

/** The common part of both agents: what the status says of automatic failback when there is no watch. */
export function failbackReasonWithoutWatch(mode: 'manual' | 'automatic'): string {
  return mode === 'manual' ? 'failback is manual: tricopy topology failback' : 'only the sync site fails back by itself';
}
