// The in-node replica pair state machine of spec 003 §5.1 as an explicit table: (state, event) →
// outcome. Every command and every internal event that changes a replica pair goes through `decide`;
// the pair runtime applies only what it returns, and whatever the table does not allow is refused
// with a message that says why and what to do instead.
import type { ReplicaCode, ReplicaState } from '../contracts/replicas';

export type ReplicaEvent =
  // operator commands
  | 'split'
  | 'quick-split'
  | 'resync'
  | 'restore'
  | 'delete'
  // internal events
  | 'copy-complete' // the running copy (initial, background, resync, restore) copied its last region
  | 'failure'; // a copy or a dual write to the replica failed

export const replicaCommands: ReplicaEvent[] = ['split', 'quick-split', 'resync', 'restore', 'delete'];
export const replicaInternalEvents: ReplicaEvent[] = ['copy-complete', 'failure'];
export const allReplicaEvents: ReplicaEvent[] = [...replicaCommands, ...replicaInternalEvents];

export interface ReplicaDecisionContext {
  /** Every region of the replica holds what the primary holds (nothing left to copy). */
  inSync: boolean;
}

export type ReplicaOutcome =
  | { kind: 'transition'; to: ReplicaState | 'simplex'; note: string }
  | { kind: 'noop'; note: string }
  | { kind: 'refuse'; message: string; code: 'PAIR_NOT_SYNCHRONIZED' | 'INVALID_STATE' };

type Entry = ReplicaOutcome | ((ctx: ReplicaDecisionContext) => ReplicaOutcome);
type Row = Record<ReplicaEvent, Entry>;

const t = (to: ReplicaState | 'simplex', note: string): ReplicaOutcome => ({ kind: 'transition', to, note });
const noop = (note: string): ReplicaOutcome => ({ kind: 'noop', note });
const refuse = (message: string): ReplicaOutcome => ({ kind: 'refuse', message, code: 'INVALID_STATE' });

const deleted = t('simplex', 'deleted by operator');
const quickSplit = (ctx: ReplicaDecisionContext): ReplicaOutcome => ctx.inSync
  ? t('split', 'quick split of an in-sync pair: the replica holds the image already')
  : t('split-pending', 'quick split: the replica is usable now; the remaining regions are copied in the background (copy-on-write, copy-on-read)');
const failed = t('suspended', 'a copy to the replica failed; the replica is not a usable image until it is resynchronised');

export const replicaStateTable: Record<ReplicaState, Row> = {
  copying: {
    split: {
      kind: 'refuse', code: 'PAIR_NOT_SYNCHRONIZED',
      message: 'the initial copy is still running: wait until the pair is duplex (tricopy replica wait NAME --state duplex), or split with --quick',
    },
    'quick-split': quickSplit,
    resync: noop('the initial copy is running already'),
    restore: refuse('the replica does not hold a complete image yet: there is nothing to restore from'),
    delete: deleted,
    'copy-complete': t('duplex', 'initial copy complete: both volumes are identical and every write goes to both'),
    failure: failed,
  },
  duplex: {
    split: t('split', 'split: the replica holds the primary\'s image of this instant; later writes go to the primary only'),
    'quick-split': quickSplit,
    resync: noop('the pair is duplex already'),
    restore: refuse('the pair is duplex: both volumes are identical. Split first; restore copies the replica\'s image back'),
    delete: deleted,
    'copy-complete': noop('nothing was copying'),
    failure: failed,
  },
  'split-pending': {
    split: noop('the replica is split already (its background copy is running)'),
    'quick-split': noop('the replica is split already (its background copy is running)'),
    resync: t('resync', 'resync: copying the regions changed on either side and those not copied yet'),
    restore: refuse('the replica\'s background copy is still running: wait until it is split (tricopy replica wait NAME --state split), then restore'),
    delete: t('simplex', 'deleted by operator during the background copy: the replica volume\'s content is undefined'),
    'copy-complete': t('split', 'background copy complete: the replica physically holds the split image'),
    failure: failed,
  },
  split: {
    split: noop('the replica is split already'),
    'quick-split': noop('the replica is split already'),
    resync: t('resync', 'resync: copying the regions changed on either side since the split'),
    restore: t('restoring', 'restore: copying the replica\'s image back over the regions changed since the split'),
    delete: deleted,
    'copy-complete': noop('nothing was copying'),
    failure: noop('a split replica has no copy running'),
  },
  resync: {
    split: {
      kind: 'refuse', code: 'PAIR_NOT_SYNCHRONIZED',
      message: 'the resync is still running: wait until the pair is duplex (tricopy replica wait NAME --state duplex), or split with --quick',
    },
    'quick-split': quickSplit,
    resync: noop('the resync is running already'),
    restore: refuse('the resync is running: the replica no longer holds its split image'),
    delete: deleted,
    'copy-complete': t('duplex', 'resync complete: both volumes are identical and every write goes to both'),
    failure: failed,
  },
  restoring: {
    split: refuse('the restore is still running: wait until the pair is duplex, then split'),
    'quick-split': refuse('the restore is still running: wait until the pair is duplex, then split'),
    resync: refuse('the restore is running: wait until the pair is duplex'),
    restore: noop('the restore is running already'),
    delete: t('simplex', 'deleted by operator during a restore: the primary holds a mix of its own and the replica\'s regions'),
    'copy-complete': t('duplex', 'restore complete: the primary holds the replica\'s image and every write goes to both'),
    failure: failed,
  },
  suspended: {
    split: refuse('the replica is not a usable image after a failed copy: resync it first (tricopy replica resync NAME)'),
    'quick-split': refuse('the replica is not a usable image after a failed copy: resync it first (tricopy replica resync NAME)'),
    resync: t('resync', 'resync after a failure: copying every region that may differ'),
    restore: refuse('the replica is not a usable image after a failed copy: there is nothing to restore from'),
    delete: deleted,
    'copy-complete': noop('nothing was copying'),
    failure: noop('suspended already'),
  },
};

export function decideReplica(state: ReplicaState, event: ReplicaEvent, ctx: ReplicaDecisionContext): ReplicaOutcome {
  const entry = replicaStateTable[state][event];
  return typeof entry === 'function' ? entry(ctx) : entry;
}

export function replicaCode(state: ReplicaState): ReplicaCode {
  switch (state) {
    case 'copying': return 'COPY';
    case 'duplex': return 'PAIR';
    case 'split-pending': return 'PSUS(SP)';
    case 'split': return 'PSUS';
    case 'resync': return 'COPY(RS)';
    case 'restoring': return 'COPY(RS-R)';
    case 'suspended': return 'PSUE';
  }
}

/** States in which every host write to the primary is also written to the replica. */
export function mirrors(state: ReplicaState): boolean {
  return state === 'copying' || state === 'duplex' || state === 'resync';
}

/** States in which hosts may read and write the replica (its export is offered). */
export function exported(state: ReplicaState): boolean {
  return state === 'split' || state === 'split-pending';
}

/** States with a copy running in the background. */
export function copyRunning(state: ReplicaState): 'to-replica' | 'to-primary' | null {
  if (state === 'copying' || state === 'split-pending' || state === 'resync') return 'to-replica';
  if (state === 'restoring') return 'to-primary';
  return null;
}
