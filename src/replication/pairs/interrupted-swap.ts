// Where a swap that stopped half-way is finished. Both ends of a pair are secondaries when the old
// primary stepped down and the requester never became the primary (a cut link, a crash). The rule
// is the node's advice and the simulator's runbook alike.
import type { PairRecord } from './pair-model';

export type SwapEnd = Pick<PairRecord, 'generation' | 'awaitingNewPrimary'>;

/**
 * The end at which `pair swap` finishes the interrupted swap: the requester, when the other end
 * stepped down for it into a copy that never began (it still holds its own image and says so); else
 * the end with the newer generation, which a clean step-down adopted. Ties name `a`.
 */
export function swapFinishesAt<T extends SwapEnd>(a: T, b: T): T {
  if (a.awaitingNewPrimary !== b.awaitingNewPrimary) return a.awaitingNewPrimary ? b : a;
  return a.generation >= b.generation ? a : b;
}
