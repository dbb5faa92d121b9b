// The pair state machine of spec 001 §5.2 as an explicit table: (role, state, event) → outcome.
// Every operator command and every internal event that changes a pair goes through `decide`, and
// the transition engine (transitions.ts) applies only what it returns; whatever the table does not
// list is refused with a message that says why and what to do instead.
import type { CopyMode, PairPurpose, PairRole, PairState, SuspendCause } from './pair-model';

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
  | 'peer-took-over'
  // internal events the first table left to hand-written code
  | 'drain-failed' // an async split could not drain: what the secondary lacks was recorded
  | 'journal-full' // the group's journal overflowed; the group goes on with bitmaps
  | 'crash-recovery' // the node restarted with sync writes in flight
  | 'peer-dissolved' // the peer answers but no longer has the pair (it took over and dissolved it)
  | 'peer-state' // secondary: the primary reports its state (the secondary follows it)
  | 'peer-resumed' // secondary: the primary forwards writes again (a resync it has not announced yet)
  | 'peer-swap'; // secondary: both ends were secondaries (an interrupted swap); the peer becomes the primary

export const operatorCommands: PairEvent[] = ['split', 'resync', 'takeover', 'swap', 'delete'];
export const internalEvents: PairEvent[] = [
  'copy-complete', 'drain-complete', 'failure', 'peer-took-over',
  'drain-failed', 'journal-full', 'crash-recovery', 'peer-dissolved', 'peer-state', 'peer-resumed', 'peer-swap',
];
export const allEvents: PairEvent[] = [...operatorCommands, ...internalEvents];

/** What a row may depend on besides role, state and event. */
export interface DecisionContext {
  mode: CopyMode;
  /** Why the pair is suspended now (suspended or suspending), else null. */
  cause: SuspendCause | null;
  /** swap: nothing differs between the two sides, so no copy follows; resync of a duplex pair: false when regions are recorded. */
  clean?: boolean | undefined;
  /** peer-state: what the primary reports. */
  peerState?: PairState | undefined;
  peerCause?: SuspendCause | null | undefined;
  /** split: the secondary would accept host writes while split (pairsplit -rw). */
  secondaryWritable?: boolean | undefined;
  /** The record's awaitingNewPrimary: a secondary that stepped down in a swap nobody finished. */
  awaitingNewPrimary?: boolean | undefined;
}

/**
 * Pairs of another purpose than data answer some events differently: a quorum pair's resync and
 * swap answer as spec 004's Fig. 4 says (src/quorum/ registers that overlay when the node starts).
 * Given the data table's outcome, an overlay returns the outcome for its purpose.
 */
export type DecisionOverlay = (d: { role: PairRole; state: PairState; event: PairEvent; mode: CopyMode; cause: SuspendCause | null;
  extra: Omit<DecisionContext, 'mode' | 'cause'> }, base: Outcome) => Outcome;

/** What a pair of `purpose` answers to an operator command when no overlay for its purpose is registered. */
export function noOverlay(purpose: PairPurpose, event: PairEvent, base: Outcome): Outcome {
  if (!operatorCommands.includes(event) || event === 'delete') return base;
  return refuse(`this node runs without support for ${purpose} pairs, so it refuses ${event}`);
}

export type Outcome =
  | {
    kind: 'transition';
    to: PairState;
    /** undefined: keep the cause (or clear it when leaving suspended/suspending). */
    cause?: SuspendCause | null;
    /** The pair's new role (a swap reverses the direction). */
    role?: PairRole;
    /** bump: this side's generation + 1; adopt: the generation the peer decided. */
    generation?: 'bump' | 'adopt';
    note: string;
  }
  | { kind: 'noop'; note: string }
  | { kind: 'refuse'; message: string; /** the command belongs at the other node of the pair */ wrongSide?: true };

type Entry = Outcome | ((ctx: DecisionContext) => Outcome);
type Row = Partial<Record<PairEvent, Entry>>;

const t = (to: PairState, note: string, cause?: SuspendCause | null, extra: { role?: PairRole; generation?: 'bump' | 'adopt' } = {}): Outcome =>
  ({ kind: 'transition', to, note, ...(cause !== undefined ? { cause } : {}), ...extra });
const noop = (note: string): Outcome => ({ kind: 'noop', note });
const refuse = (message: string): Outcome => ({ kind: 'refuse', message });
const wrongSide = (message: string): Outcome => ({ kind: 'refuse', message, wrongSide: true });

const tookOver = t('suspended', 'the secondary took over', 'takeover-by-peer');
const dissolved = t('suspended', 'the peer no longer has the pair: it took over and dissolved it, or lost its data', 'takeover-by-peer');
const journalFull = t('suspended', 'the journal overflowed; pending entries became recorded regions', 'journal-full');
const crashed = t('suspended', 'the node restarted with writes in flight; they will be resynchronised', 'crash-recovery');
/** The old primary of a swap: it becomes the secondary, and receives the regions that differ unless clean. */
const swappedAway = (ctx: DecisionContext): Outcome => ctx.clean === false
  ? t('duplex-pending', 'roles swapped: this node becomes the secondary and receives the changed regions', undefined, { role: 'secondary', generation: 'adopt' })
  : t('duplex', 'roles swapped: this node becomes the secondary', undefined, { role: 'secondary', generation: 'adopt' });

const primary: Record<PairState, Row> = {
  simplex: {},
  'initial-copying': {
    split: t('suspended', 'split during the initial copy; the uncopied range stays recorded', 'operator'),
    resync: noop('the initial copy is already running'),
    takeover: wrongSide('takeover is run at the secondary node'),
    swap: refuse('the initial copy has not finished: the secondary is not a complete image yet'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'initial copy finished'),
    failure: t('suspended', 'the copy could not be continued', 'failure'),
    'peer-took-over': tookOver,
    'journal-full': journalFull,
    'crash-recovery': crashed,
    'peer-dissolved': dissolved,
  },
  duplex: {
    split: (ctx) => ctx.mode === 'async'
      ? t('suspending', 'split: draining the journal to the secondary', 'operator')
      : t('suspended', 'split by operator; both sides record changed regions', 'operator'),
    // Online verify runs in duplex and records the regions that differ; a resync copies them.
    resync: (ctx) => ctx.clean === false
      ? t('duplex-pending', 'resync: copying the regions online verify found different')
      : noop('the pair is already duplex'),
    takeover: wrongSide('takeover is run at the secondary node'),
    swap: swappedAway,
    delete: t('simplex', 'pair deleted'),
    failure: (ctx) => ctx.mode === 'async'
      ? t('suspending', 'the journal cannot be shipped; pending entries become recorded regions', 'failure')
      : t('suspended', 'the secondary could not be updated', 'failure'),
    'peer-took-over': tookOver,
    'journal-full': journalFull,
    'crash-recovery': crashed,
    'peer-dissolved': dissolved,
  },
  'duplex-pending': {
    split: t('suspended', 'split during resync; the uncopied range stays recorded', 'operator'),
    resync: noop('the resync is already running'),
    takeover: wrongSide('takeover is run at the secondary node'),
    swap: refuse('the resync has not finished: the secondary is not a complete image yet'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'resync finished; the volumes are identical'),
    failure: t('suspended', 'the copy could not be continued', 'failure'),
    'peer-took-over': tookOver,
    'journal-full': journalFull,
    'crash-recovery': crashed,
    'peer-dissolved': dissolved,
  },
  suspending: {
    split: noop('the pair is already being split'),
    resync: refuse('the pair is still suspending; wait until it is suspended, then resync'),
    takeover: wrongSide('takeover is run at the secondary node'),
    swap: refuse('the pair is suspending; wait until it is suspended'),
    delete: t('simplex', 'pair deleted'),
    'drain-complete': t('suspended', 'journal drained; the secondary is consistent at the split point'),
    // The secondary could not take everything: what it lacks was recorded, and a resync copies it.
    // The cause is kept: an operator's split stays a split (no automatic resync undoes it).
    'drain-failed': t('suspended', 'the journal could not be drained; undelivered entries became recorded regions'),
    failure: t('suspending', 'the journal cannot be shipped; pending entries become recorded regions', 'failure'),
    'peer-took-over': tookOver,
    'journal-full': journalFull,
    'crash-recovery': noop('an async pair recovers from its journal'),
    'peer-dissolved': dissolved,
  },
  suspended: {
    // After a failure (or a crash) with fence data, a split is the operator's decision to run on
    // without the secondary (its site is lost): writes resume and are recorded for the resync.
    split: (ctx) => ctx.cause === 'failure' || ctx.cause === 'crash-recovery'
      ? t('suspended', 'split by operator after the failure: writes continue without the secondary; changed regions are recorded', 'operator')
      : noop('the pair is already suspended'),
    resync: t('duplex-pending', 'resync: copying the regions changed on either side'),
    takeover: wrongSide('takeover is run at the secondary node'),
    swap: (ctx) => swappedAway({ ...ctx, clean: false }),
    delete: t('simplex', 'pair deleted'),
    failure: noop('the pair is already suspended'),
    'peer-took-over': tookOver,
    'journal-full': noop('the pair is already suspended'),
    'crash-recovery': noop('the pair is already suspended'),
    'peer-dissolved': (ctx) => ctx.cause === 'takeover-by-peer' ? noop('already known: the peer took over') : dissolved,
  },
  'secondary-writable': {},
};

/** Secondary: the primary's view of the pair, which the secondary follows. */
const followPrimary = (ctx: DecisionContext): Outcome => {
  const to = ctx.peerState;
  if (to === undefined || to === 'simplex' || to === 'secondary-writable') {
    return refuse(`the primary reports state ${to ?? 'nothing'}, which a secondary cannot follow`);
  }
  const suspendedLike = to === 'suspended' || to === 'suspending';
  return t(to, 'the primary reports a new state', suspendedLike ? (ctx.peerCause ?? null) : null);
};
/** The new primary of a swap (run here): it sends the regions that differ unless clean. */
const swapHere = (ctx: DecisionContext): Outcome => ctx.clean === true
  ? t('duplex', 'roles swapped: this node becomes the primary', undefined, { role: 'primary', generation: 'bump' })
  : t('duplex-pending', 'roles swapped: this node becomes the primary and sends the changed regions', undefined, { role: 'primary', generation: 'bump' });
const removedByPrimary = t('simplex', 'the primary no longer has the pair; this volume is independent again');
/** Both ends were secondaries: the peer finished becoming the primary; this side receives what differs. */
const peerTookPrimary = t('duplex-pending', 'the peer became the primary; this side stays the secondary and receives the regions that differ', undefined, { generation: 'adopt' });

const secondary: Record<PairState, Row> = {
  simplex: {},
  'initial-copying': {
    'peer-swap': peerTookPrimary,
    split: t('suspended', 'split during the initial copy', 'operator'),
    resync: wrongSide('resync is run at the primary node'),
    takeover: refuse('the initial copy has not finished: this volume is not a usable image yet'),
    swap: refuse('the initial copy has not finished: this volume is not a usable image yet'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'initial copy finished'),
    failure: t('suspended', 'the primary could not be reached', 'failure'),
    'peer-dissolved': removedByPrimary,
    'peer-state': followPrimary,
  },
  duplex: {
    'peer-swap': peerTookPrimary,
    split: t('suspended', 'split by operator', 'operator'),
    // In every state: a secondary has nothing to copy, and "nothing to do" would hide the mistake.
    resync: wrongSide('resync is run at the primary node'),
    takeover: t('secondary-writable', 'takeover: this volume was made writable', undefined, { generation: 'bump' }),
    swap: (ctx) => swapHere({ ...ctx, clean: ctx.clean ?? true }),
    delete: t('simplex', 'pair deleted'),
    failure: t('suspended', 'the primary could not be reached', 'failure'),
    'peer-dissolved': removedByPrimary,
    'peer-state': followPrimary,
  },
  'duplex-pending': {
    'peer-swap': peerTookPrimary,
    split: t('suspended', 'split during resync', 'operator'),
    resync: wrongSide('resync is run at the primary node'),
    // A swap that stopped after this side stepped down: nothing was copied here, so the volume is
    // still the consistent image it had as the primary and may become the primary again.
    takeover: (ctx) => ctx.awaitingNewPrimary === true
      ? t('secondary-writable', 'takeover: the swap that made this node a secondary never finished; volume made writable', undefined, { generation: 'bump' })
      : refuse('a resync is copying into this volume: it is not a consistent image'),
    swap: (ctx) => ctx.awaitingNewPrimary === true
      ? swapHere({ ...ctx, clean: false })
      : refuse('a resync is copying into this volume: it is not a consistent image'),
    delete: t('simplex', 'pair deleted'),
    'copy-complete': t('duplex', 'resync finished'),
    failure: t('suspended', 'the primary could not be reached during resync', 'failure'),
    'peer-dissolved': removedByPrimary,
    'peer-state': followPrimary,
  },
  suspending: {
    'peer-swap': peerTookPrimary,
    split: noop('the pair is already being split'),
    resync: wrongSide('resync is run at the primary node'),
    takeover: t('secondary-writable', 'takeover: applied what was received, volume made writable', undefined, { generation: 'bump' }),
    swap: refuse('the pair is suspending; wait until it is suspended'),
    delete: t('simplex', 'pair deleted'),
    'drain-complete': t('suspended', 'journal drained'),
    failure: t('suspended', 'the primary could not be reached', 'failure'),
    'peer-dissolved': removedByPrimary,
    'peer-state': followPrimary,
  },
  suspended: {
    'peer-swap': peerTookPrimary,
    split: noop('the pair is already suspended'),
    resync: wrongSide('resync is run at the primary node'),
    takeover: t('secondary-writable', 'takeover: volume made writable', undefined, { generation: 'bump' }),
    swap: (ctx) => swapHere({ ...ctx, clean: false }),
    delete: t('simplex', 'pair deleted'),
    failure: noop('the pair is already suspended'),
    'peer-dissolved': removedByPrimary,
    'peer-state': followPrimary,
    'peer-resumed': t('duplex-pending', 'the primary resumed forwarding'),
  },
  'secondary-writable': {
    'peer-swap': peerTookPrimary,
    split: noop('the volume is already writable'),
    resync: refuse('this side took over: run swap here to make it the primary and resync the other side'),
    takeover: noop('takeover already done'),
    swap: (ctx) => swapHere({ ...ctx, clean: false }),
    delete: t('simplex', 'pair deleted'),
    failure: noop('the peer is not reachable; the volume stays writable'),
    'peer-dissolved': noop('this side took over; the old primary dissolving its side changes nothing here'),
    // Only news with a newer generation than this side's takeover reaches the table.
    'peer-state': followPrimary,
  },
};

export function decide(role: PairRole, state: PairState, event: PairEvent, mode: CopyMode, cause: SuspendCause | null = null,
  extra: Omit<DecisionContext, 'mode' | 'cause'> = {}): Outcome {
  const row = (role === 'primary' ? primary : secondary)[state];
  const entry = row[event];
  if (entry === undefined) {
    if (state === 'simplex') return refuse('the volume is not in a pair');
    if (event === 'takeover' && role === 'primary') return wrongSide('takeover is run at the secondary node');
    if (event === 'copy-complete') return refuse(`no copy runs in state ${state}`);
    if (event === 'drain-complete' || event === 'drain-failed') return refuse(`no drain runs in state ${state}`);
    if (event === 'peer-took-over') return refuse(`a ${role} in state ${state} has no peer that could take over`);
    if (event === 'peer-state' || event === 'peer-resumed') return refuse(`a ${role} does not follow its peer's state`);
    return refuse(`${event} is not possible for a ${role} in state ${state}`);
  }
  return typeof entry === 'function' ? entry({ mode, cause, ...extra }) : entry;
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

/** The decisions for the original events (operator commands and the first four internal events). */
export function allDecisions(events: PairEvent[] = ['split', 'resync', 'takeover', 'swap', 'delete', 'copy-complete', 'drain-complete', 'failure', 'peer-took-over']): Decision[] {
  const out: Decision[] = [];
  for (const role of ['primary', 'secondary'] as const) {
    for (const state of Object.keys(role === 'primary' ? primary : secondary) as PairState[]) {
      for (const event of events) {
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

/** True for (role, state) pairs a record may hold. */
export function validRoleState(role: PairRole, state: PairState): boolean {
  return state !== 'simplex' && (state !== 'secondary-writable' || role === 'secondary');
}
