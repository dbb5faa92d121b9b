// What a pair is: its record (kept by both nodes), the state names of spec 001 §5 and the short
// codes operators know from Hitachi CCI (SMPL, COPY, PAIR, PSUS, PSUE, SSUS, SSWS).
import type { CopyMode, FenceLevel, PairPurpose, PairRole, PairState, PeerAddress, ShortCode, SuspendCause } from '../../contracts/pairs';

export { pairStates } from '../../contracts/pairs';
export type { CopyMode, DeltaMethod, FenceLevel, InitialCopy, PairPurpose, PairRole, PairState, PeerAddress, ShortCode, SuspendCause } from '../../contracts/pairs';

export interface CopyProgress {
  totalChunks: number;
  doneChunks: number;
}

/**
 * A pair as this node keeps it. The fields that define where the pair stands (state, role,
 * generation, suspend cause, protection, the transition's reason) are readonly here: only the
 * transition engine (transitions.ts) writes them, through its own mutable view.
 */
export interface PairRecord {
  readonly name: string;
  readonly role: PairRole;
  /** Local volume. */
  readonly volume: string;
  /** The volume on the peer node. */
  readonly peerVolume: string;
  readonly peer: PeerAddress;
  readonly mode: CopyMode;
  /** data, or quorum (spec 004: a quorum pair, whose resync and swap answer as Fig. 4 says). */
  readonly purpose: PairPurpose;
  readonly fence: FenceLevel;
  /** Consistency group of an async pair (one ordered journal per group). */
  readonly group: string | null;
  /**
   * Pairs protected together (a 3DC topology): when one sync pair of the fence group with fence
   * data cannot update its secondary, host writes to every volume of the group are refused.
   */
  readonly fenceGroup: string | null;
  readonly state: PairState;
  readonly suspendCause: SuspendCause | null;
  /** Human words for the last transition. */
  readonly reason: string;
  /** Secondary accepts host writes while suspended (Hitachi pairsplit -rw). */
  readonly secondaryWritable: boolean;
  /** Raised at every takeover or swap; a side with a lower generation is stale. */
  readonly generation: number;
  readonly createdAt: string;
  updatedAt: string;
  /** Progress of the running copy (kept by the copy engine). */
  copy: CopyProgress | null;
  /**
   * This side recorded acknowledged host writes the other side does not have (written while apart).
   * Both sides true is a split brain: resync refuses until the operator names the side to discard.
   */
  hostWritesRecorded: boolean;
  /** Async secondary: the last journal entry it had received when it took over (null otherwise). */
  readonly receivedSeqAtTakeover: number | null;
  /**
   * This side stepped down in a swap and nothing of the new primary has been written here since:
   * the volume still holds the consistent image it had as the primary. If the swap stopped half-way
   * (the requester never became the primary), both ends are secondaries and nobody sends; this side
   * keeps dialing its peer and may be made the primary again.
   */
  readonly awaitingNewPrimary: boolean;
}

/** The engine's view of a record: the only place its readonly fields are written. */
export type MutablePairRecord = { -readonly [K in keyof PairRecord]: PairRecord[K] };

export function shortCode(p: Pick<PairRecord, 'role' | 'state' | 'suspendCause'>): ShortCode {
  switch (p.state) {
    case 'simplex':
      return 'SMPL';
    case 'initial-copying':
    case 'duplex-pending':
      return 'COPY';
    case 'duplex':
      return 'PAIR';
    case 'secondary-writable':
      return 'SSWS';
    case 'suspending':
    case 'suspended':
      if (p.suspendCause !== 'operator') return 'PSUE';
      return p.role === 'primary' ? 'PSUS' : 'SSUS';
  }
}

/** True when the secondary holds a write-order-consistent image (it may serve a takeover). */
export function secondaryIsConsistent(p: Pick<PairRecord, 'state'>): boolean {
  return p.state === 'duplex' || p.state === 'suspending' || p.state === 'suspended' || p.state === 'secondary-writable';
}

export const pairNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export const groupNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
