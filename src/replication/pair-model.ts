// What a pair is: its record (kept by both nodes), the state names of spec 001 §5 and the short
// codes operators know from Hitachi CCI (SMPL, COPY, PAIR, PSUS, PSUE, SSUS, SSWS).
import type { CopyMode, FenceLevel, PairRole, PairState, PeerAddress, ShortCode, SuspendCause } from '../contracts/pairs';

export { pairStates } from '../contracts/pairs';
export type { CopyMode, FenceLevel, InitialCopy, PairRole, PairState, PeerAddress, ShortCode, SuspendCause } from '../contracts/pairs';

export interface CopyProgress {
  totalChunks: number;
  doneChunks: number;
}

export interface PairRecord {
  name: string;
  role: PairRole;
  /** Local volume. */
  volume: string;
  /** The volume on the peer node. */
  peerVolume: string;
  peer: PeerAddress;
  mode: CopyMode;
  fence: FenceLevel;
  /** Consistency group of an async pair (one ordered journal per group). */
  group: string | null;
  /**
   * Pairs protected together (a 3DC topology): when one sync pair of the fence group with fence
   * data cannot update its secondary, host writes to every volume of the group are refused.
   */
  fenceGroup: string | null;
  state: PairState;
  suspendCause: SuspendCause | null;
  /** Human words for the last transition. */
  reason: string;
  /** Secondary accepts host writes while suspended (Hitachi pairsplit -rw). */
  secondaryWritable: boolean;
  /** Raised at every takeover or swap; a side with a lower generation is stale. */
  generation: number;
  createdAt: string;
  updatedAt: string;
  copy: CopyProgress | null;
  /**
   * This side recorded acknowledged host writes the other side does not have (written while apart).
   * Both sides true is a split brain: resync refuses until the operator names the side to discard.
   */
  hostWritesRecorded: boolean;
  /** Async secondary: the last journal entry it had received when it took over (null otherwise). */
  receivedSeqAtTakeover: number | null;
}

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
