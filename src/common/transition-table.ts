// The lookup every small state machine shares: a (state, event) → state table is the only way its
// state changes, and an event the table does not allow in a state is a bug, reported loudly.
import { TricopyError } from './errors';

export type TransitionTable<S extends string, E extends string, N = S> = Record<S, Partial<Record<E, N>>>;

/** The state after `event` in `state`; throws when the table does not allow it. `what` names the machine in the error. */
export function nextState<S extends string, E extends string, N>(what: string, table: TransitionTable<S, E, N>, state: S, event: E): N {
  const next = table[state][event];
  if (next === undefined) throw new TricopyError('internal', `${what}: event ${event} is not allowed in state ${state}`);
  return next;
}
