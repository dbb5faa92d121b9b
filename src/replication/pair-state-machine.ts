// The pair state machine of spec 001 §5.2 as an explicit table: (role, state, event) → outcome.
// Every operator command and internal event goes through `decide`; whatever the table does not
// list is refused with a message that says why and what to do instead.
import type { CopyMode, PairRole, PairState, SuspendCause } from './pair-model';

export type PairEvent =
  // operator commands
  | 'split'
  | 'resync'
  | 'takeover'
  | 'swap'
  | 'delete'
  // internal events
  | 'copy-complete'
  | 'drain-complete'
  | 'failure'
  | 'peer-took-over';

export const operatorCommands: PairEvent[] = ['split', 'resync', 'takeover', 'swap', 'delete'];
export const internalEvents: PairEvent[] = ['copy-complete', 'drain-complete', 'failure', 'peer-took-over'];

export type Outcome =
  | { kind: 'transition'; to: PairState; cause?: SuspendCause | null; note: string }
  | { kind: 'noop'; note: string }
  | { kind: 'refuse'; message: string };

type Row = Partial<Record<PairEvent, Outcome | ((mode: CopyMode, cause: SuspendCause | null) => Outcome)>>;

const t = (to: PairState, note: string, cause?: SuspendCause | null): Outcome => ({ kind: 'transition', to, note, ...(cause !== undefined ? { cause } : {}) });
const noop = (note: string): Outcome => ({ kind: 'noop', note });
const refuse = (message: string): Outcome => ({ kind: 'refuse', message });

const primary: Record<PairState, Row> = {
  simplex: {},
  'initial-copying': {
    split: t('suspended', 'split during the initial copy; the uncopied range stays recorded', 'operator'),
    resync: noop('the initial copy is already running'),
    takeover: refuse('takeover is run at the secondary node'),
    swap: refuse('the initial copy has not finished: the secondary is not a complete image yet'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'initial copy finished'),
    failure: t('suspended', 'the copy could not be continued', 'failure'),
    'peer-took-over': t('suspended', 'the secondary took over', 'takeover-by-peer'),
  },
  duplex: {
    split: (mode) => mode === 'async'
      ? t('suspending', 'split: draining the journal to the secondary', 'operator')
      : t('suspended', 'split by operator; both sides record changed regions', 'operator'),
    resync: noop('the pair is already duplex'),
    takeover: refuse('takeover is run at the secondary node'),
    swap: t('duplex', 'roles swapped: this node becomes the secondary'),
    delete: t('simplex', 'pair deleted'),
    failure: (mode) => mode === 'async'
      ? t('suspending', 'the journal cannot be shipped; pending entries become recorded regions', 'failure')
      : t('suspended', 'the secondary could not be updated', 'failure'),
    'peer-took-over': t('suspended', 'the secondary took over', 'takeover-by-peer'),
  },
  'duplex-pending': {
    split: t('suspended', 'split during resync; the uncopied range stays recorded', 'operator'),
    resync: noop('the resync is already running'),
    takeover: refuse('takeover is run at the secondary node'),
    swap: refuse('the resync has not finished: the secondary is not a complete image yet'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'resync finished; the volumes are identical'),
    failure: t('suspended', 'the copy could not be continued', 'failure'),
    'peer-took-over': t('suspended', 'the secondary took over', 'takeover-by-peer'),
  },
  suspending: {
    split: noop('the pair is already being split'),
    resync: refuse('the pair is still suspending; wait until it is suspended, then resync'),
    takeover: refuse('takeover is run at the secondary node'),
    swap: refuse('the pair is suspending; wait until it is suspended'),
    delete: t('simplex', 'pair deleted'),
    'drain-complete': t('suspended', 'journal drained; the secondary is consistent at the split point'),
    failure: t('suspending', 'the journal cannot be shipped; pending entries become recorded regions', 'failure'),
    'peer-took-over': t('suspended', 'the secondary took over', 'takeover-by-peer'),
  },
  suspended: {
    // After a failure (or a crash) with fence data, a split is the operator's decision to run on
    // without the secondary (its site is lost): writes resume and are recorded for the resync.
    split: (_mode, cause) => cause === 'failure' || cause === 'crash-recovery'
      ? t('suspended', 'split by operator after the failure: writes continue without the secondary; changed regions are recorded', 'operator')
      : noop('the pair is already suspended'),
    resync: t('duplex-pending', 'resync: copying the regions changed on either side'),
    takeover: refuse('takeover is run at the secondary node'),
    swap: t('duplex-pending', 'roles swapped: this node becomes the secondary and receives the changed regions'),
    delete: t('simplex', 'pair deleted'),
    failure: noop('the pair is already suspended'),
    'peer-took-over': t('suspended', 'the secondary took over', 'takeover-by-peer'),
  },
  'secondary-writable': {},
};

const secondary: Record<PairState, Row> = {
  simplex: {},
  'initial-copying': {
    split: t('suspended', 'split during the initial copy', 'operator'),
    resync: refuse('resync is run at the primary node'),
    takeover: refuse('the initial copy has not finished: this volume is not a usable image yet'),
    swap: refuse('the initial copy has not finished: this volume is not a usable image yet'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'initial copy finished'),
    failure: t('suspended', 'the primary could not be reached', 'failure'),
  },
  duplex: {
    split: t('suspended', 'split by operator', 'operator'),
    resync: noop('the pair is already duplex'),
    takeover: t('secondary-writable', 'takeover: this volume was made writable'),
    swap: t('duplex', 'roles swapped: this node becomes the primary'),
    delete: t('simplex', 'pair deleted'),
    failure: t('suspended', 'the primary could not be reached', 'failure'),
  },
  'duplex-pending': {
    split: t('suspended', 'split during resync', 'operator'),
    resync: refuse('resync is run at the primary node'),
    takeover: refuse('a resync is copying into this volume: it is not a consistent image'),
    swap: refuse('a resync is copying into this volume: it is not a consistent image'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'resync finished'),
    failure: t('suspended', 'the primary could not be reached during resync', 'failure'),
  },
  suspending: {
    split: noop('the pair is already being split'),
    resync: refuse('resync is run at the primary node'),
    takeover: t('secondary-writable', 'takeover: applied what was received, volume made writable'),
    swap: refuse('the pair is suspending; wait until it is suspended'),
    delete: t('simplex', 'pair deleted'),
    'drain-complete': t('suspended', 'journal drained'),
    failure: t('suspended', 'the primary could not be reached', 'failure'),
  },
  suspended: {
    split: noop('the pair is already suspended'),
    resync: refuse('resync is run at the primary node'),
    takeover: t('secondary-writable', 'takeover: volume made writable'),
    swap: t('duplex-pending', 'roles swapped: this node becomes the primary and sends the changed regions'),
    delete: t('simplex', 'pair deleted'),
    failure: noop('the pair is already suspended'),
  },
  'secondary-writable': {
    split: noop('the volume is already writable'),
    resync: refuse('this side took over: run swap here to make it the primary and resync the other side'),
    takeover: noop('takeover already done'),
    swap: t('duplex-pending', 'roles swapped: this node becomes the primary and sends the changed regions'),
    delete: t('simplex', 'pair deleted'),
    failure: noop('the peer is not reachable; the volume stays writable'),
  },
};

export function decide(role: PairRole, state: PairState, event: PairEvent, mode: CopyMode, cause: SuspendCause | null = null): Outcome {
  const row = (role === 'primary' ? primary : secondary)[state];
  const entry = row[event];
  if (entry === undefined) {
    if (state === 'simplex') return refuse('the volume is not in a pair');
    if (event === 'takeover' && role === 'primary') return refuse('takeover is run at the secondary node');
    if (event === 'copy-complete') return refuse(`no copy runs in state ${state}`);
    if (event === 'drain-complete') return refuse(`no drain runs in state ${state}`);
    if (event === 'peer-took-over') return refuse(`a ${role} in state ${state} has no peer that could take over`);
    return refuse(`${event} is not possible for a ${role} in state ${state}`);
  }
  return typeof entry === 'function' ? entry(mode, cause) : entry;
}

/** Every (role, state, event) with its outcome: the table as data, for tests and docs. */
const suspendCauses: SuspendCause[] = ['operator', 'failure', 'journal-full', 'crash-recovery', 'takeover-by-peer'];

export interface Decision {
  role: PairRole;
  state: PairState;
  event: PairEvent;
  mode: CopyMode;
  cause: SuspendCause | null;
  outcome: Outcome;
}

export function allDecisions(): Decision[] {
  const out: Decision[] = [];
  for (const role of ['primary', 'secondary'] as const) {
    for (const state of Object.keys(role === 'primary' ? primary : secondary) as PairState[]) {
      for (const event of [...operatorCommands, ...internalEvents]) {
        for (const mode of ['sync', 'async'] as const) {
          for (const cause of state === 'suspended' ? suspendCauses : [null]) {
            out.push({ role, state, event, mode, cause, outcome: decide(role, state, event, mode, cause) });
          }
        }
      }
    }
  }
  return out;
}
