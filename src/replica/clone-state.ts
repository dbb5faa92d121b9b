// The life of a clone set as a (state, event) → state table: the only way its record's state
// changes. A set is recorded as `creating` before its snapshots are taken and as `ending` before
// they are deleted, so a node that stops at any point finishes or undoes the step when it opens
// again: `creating` is undone, `ending` is finished, `active` is kept (clones survive restarts).
import { type TransitionTable, nextState } from '../common/transition-table';
import type { CloneSetState } from '../contracts/clones';

export type CloneSetEvent = 'clones-ready' | 'end' | 'failed' | 'removed';

/** `null`: the record is gone. */
const table: TransitionTable<CloneSetState, CloneSetEvent, CloneSetState | null> = {
  creating: { 'clones-ready': 'active', failed: null },
  active: { end: 'ending' },
  ending: { removed: null },
};

export function nextCloneSetState(state: CloneSetState, event: CloneSetEvent): CloneSetState | null {
  return nextState('clone set', table, state, event);
}

/** What opening the node does with a set found in each state. */
export const onRestart: Record<CloneSetState, 'undo' | 'keep' | 'finish'> = { creating: 'undo', active: 'keep', ending: 'finish' };
