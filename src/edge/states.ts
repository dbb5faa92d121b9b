// The state machines of an edge, as tables (spec 002 §5.12): the edge's view of each pair (725) and
// the state of each order-guarantee id. This module is the only writer of both; every transition is
// an event with its reason (the relay's event journal, its log, its status).
//
// 725 follows what the storages tell each other through the edge (a pair created, a state announced
// by its primary) and what the network itself does to the pair (Failure Suspend of its id, a
// failover). Orders are active, in Failure Suspend (retransmission exhausted, log area full, the
// target storage refusing, a failover done), or waiting for the source edge's SOK (failover).
import type { EventJournal } from '../common/events';
import type { OrderState } from '../contracts/network';
import type { PairRow, SourceCounters, TargetCounters } from './state';

/** 725: a storage pair state (as relayed), or one of the edge's own. */
export type EdgePairState =
  | 'simplex' | 'initial-copying' | 'duplex' | 'duplex-pending' | 'suspending' | 'suspended' | 'secondary-writable'
  | 'failure-suspend' | 'suspend-waiting' | 'deleted';

export type EdgePairEvent =
  /** A pair-create exchange went through (SE1–SE2, TE1–TE2): Simplex, then IC (or Duplex without a copy). */
  | { kind: 'created'; copy: boolean }
  /** The primary announced a state (Duplex transition, resync, planned Suspend: SE3, SE6–SE8, TE3, TE9–TE10). */
  | { kind: 'announced'; state: string }
  /** The order-guarantee id entered Failure Suspend (SE4, TE4, SE5). */
  | { kind: 'failure' }
  /** Failover: the Suspend instruction left the target edge (TE5). */
  | { kind: 'suspend-instruction' }
  /** The pair was deleted through the edge. */
  | { kind: 'deleted' };

const relayedStates = new Set(['simplex', 'initial-copying', 'duplex', 'duplex-pending', 'suspending', 'suspended', 'secondary-writable']);

/** The table of 725: the next state, or undefined when the event changes nothing in this state. */
export function nextPairState(from: string, e: EdgePairEvent): EdgePairState | undefined {
  if (from === 'deleted') return undefined;
  switch (e.kind) {
    case 'created':
      return e.copy ? 'initial-copying' : 'duplex';
    case 'announced':
      return relayedStates.has(e.state) && e.state !== from ? e.state as EdgePairState : undefined;
    case 'failure':
      return from === 'simplex' || from === 'failure-suspend' ? undefined : 'failure-suspend';
    case 'suspend-instruction':
      return from === 'simplex' || from === 'failure-suspend' || from === 'suspend-waiting' ? undefined : 'suspend-waiting';
    case 'deleted':
      return 'deleted';
  }
}

export function applyPairEvent(events: EventJournal, name: string, row: PairRow, e: EdgePairEvent, reason: string): boolean {
  const to = nextPairState(row.state, e);
  if (to === undefined || to === row.state) return false;
  const from = row.state;
  row.state = to;
  events.emit('edge-pair-state', name, reason, { from, to, order: row.order, side: row.side });
  return true;
}

export type OrderEvent = 'failure' | 'resume' | 'suspend-instruction' | 'failover-done';

/** The table of an order-guarantee id's state. */
export function nextOrderState(from: OrderState, e: OrderEvent): OrderState | undefined {
  switch (e) {
    case 'failure':
      return from === 'failure-suspend' ? undefined : 'failure-suspend';
    case 'resume':
      return from === 'active' ? undefined : 'active';
    case 'suspend-instruction':
      return from === 'active' ? 'suspend-waiting' : undefined;
    case 'failover-done':
      return from === 'failure-suspend' ? undefined : 'failure-suspend';
  }
}

export function applyOrderEvent(events: EventJournal, order: string, side: 'source' | 'target', c: SourceCounters | TargetCounters, e: OrderEvent, reason: string): boolean {
  const to = nextOrderState(c.state, e);
  if (to === undefined) return false;
  const from = c.state;
  c.state = to;
  c.reason = reason;
  events.emit('order-state', order, reason, { from, to, side });
  return true;
}
