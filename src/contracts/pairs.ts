// The vocabulary of remote copy (spec 001 §5) and the request/response bodies of the node's pair and
// group API: one definition shared by the node (which produces them), the typed node client, the
// CLI, the topology procedures, the metrics and the tests. Pure types; no behaviour.

export type CopyMode = 'sync' | 'async';
/** data: refuse host writes while the sync secondary cannot be updated; never: go on and record. */
export type FenceLevel = 'data' | 'never';
export type PairRole = 'primary' | 'secondary';
/**
 * What a pair is for (spec 004 §4.1): data (remote copy of a volume hosts use), or quorum (a small
 * sync pair a cluster uses as its quorum volume: resync and swap-resync answer as spec 004's Fig. 4
 * says, so racing reservations have one winner). Created with `pair create --mode quorum`.
 */
export type PairPurpose = 'data' | 'quorum';

export const pairStates = ['simplex', 'initial-copying', 'duplex', 'duplex-pending', 'suspending', 'suspended', 'secondary-writable'] as const;
export type PairState = (typeof pairStates)[number];

/** Why a pair is (or is becoming) suspended. */
export type SuspendCause =
  | 'operator' // split by command (PSUS/SSUS)
  | 'failure' // the copy could not be done: link, peer or volume failure (PSUE)
  | 'journal-full' // async journal overflowed and the group fell back to bitmaps (PSUE)
  | 'crash-recovery' // the node restarted; regions that may differ were recorded (PSUE)
  | 'takeover-by-peer'; // the secondary took over; this side must not be written (PSUE)

/** The short codes operators know from Hitachi CCI. */
export type ShortCode = 'SMPL' | 'COPY' | 'PAIR' | 'PSUS' | 'PSUE' | 'SSUS' | 'SSWS';

/** How a new pair brings the secondary to the primary's contents. */
export type InitialCopy =
  | 'full' // every allocated region
  | 'none' // nothing: the operator states both volumes already hold the same data
  | 'delta'; // compare checksums of both volumes and copy only the blocks that differ

export type JournalFullPolicy = 'delay' | 'suspend';

export interface LagReport {
  entries: number;
  bytes: number;
  seconds: number;
}

/** How the tags reach a delta record. */
export type DeltaRecordSource =
  // The sync site of a multi-target topology: the primary tags each write it forwards.
  | 'forwarded'
  // The primary of a cascade: the intermediate answers each forwarded write with its own tag.
  | 'acknowledged';

export interface DeltaRecordStatus {
  origin: string;
  group: string;
  source: DeltaRecordSource;
  usable: boolean;
  /** The record covers every write after this entry (when usable). */
  baseSeq: number | null;
  newestSeq: number;
  entries: number;
  /** 64 KiB regions held as a bitmap: entries beyond the bound, and writes without a position. */
  overflowRegions: number;
  text: string;
}

export type DeltaMethod = 'sequence' | 'compare';

/** An online verify runs, or how the last one ended. */
export type VerifyState = 'running' | 'finished' | 'cancelled' | 'aborted';

export interface ByteRangeView {
  offset: number;
  length: number;
}

/** The last online verify of a pair at its primary (since the node started). */
export interface VerifyStatus {
  state: VerifyState;
  startedAt: string;
  endedAt: string | null;
  /** Each side is read at most this fast. */
  rateMiBPerSecond: number;
  /** The volume's size: what a finished verify went through. */
  totalBytes: number;
  /** Bytes gone through so far (compared or skipped). */
  doneBytes: number;
  progressPercent: number;
  /** Bytes found different, in 4 KiB blocks. */
  differingBytes: number;
  /** 64 KiB regions found different and recorded in the differential record (resync copies them). */
  differingRegions: number;
  /** The first byte ranges found different (up to 8; the rest are counted). */
  ranges: ByteRangeView[];
  /** Async pairs: bytes not compared because the secondary did not apply the journal in time. */
  skippedBytes: number;
  /** What the verify does now, or why it ended. */
  reason: string;
}

export interface PairStatus {
  name: string;
  role: PairRole;
  code: ShortCode;
  state: PairState;
  volume: string;
  peer: { node: string; volume: string; host: string; replPort: number; connected: boolean };
  mode: CopyMode;
  /** quorum: a spec 004 quorum pair (always sync). */
  purpose: PairPurpose;
  fence: FenceLevel;
  group: string | null;
  suspendCause: SuspendCause | null;
  reason: string;
  generation: number;
  /** Copy progress while COPY, else null. */
  progressPercent: number | null;
  /**
   * An initial copy or resync that stopped before it finished (the pair was suspended during it):
   * how far it got. The secondary then holds an incomplete image that no failover may use. Null
   * when no copy is unfinished.
   */
  interruptedCopyPercent: number | null;
  /** Bytes recorded as changed (to be copied by the next resync). */
  differentialBytes: number;
  hostWritesRecorded: boolean;
  /**
   * This secondary stepped down in a swap and its new primary has not acted yet: it still holds the
   * image it had as the primary. With both ends secondaries, `pair swap` at the other end finishes the
   * swap; at this end it takes the primary back.
   */
  awaitingNewPrimary: boolean;
  secondaryWritable: boolean;
  /** Bytes the last delta copy found different and sent (null when no delta copy ran here). */
  deltaBytes: number | null;
  /** How the last delta copy chose what to compare: 'sequence' (the peer's applied position) or 'compare' (the whole volume). */
  deltaMethod: DeltaMethod | null;
  deltaNote: string | null;
  /** This node's delta record for the pair's volume (kept at a sync secondary or a cascade primary). */
  deltaRecord: DeltaRecordStatus | null;
  /** Async entries held until the sync copy has their writes again (3DC protection). */
  heldEntries: number;
  fenceGroup: string | null;
  journal: { usedBytes: number; capacityBytes: number } | null;
  lag: LagReport | null;
  createdAt: string;
  updatedAt: string;
  /** The last online verify at this node (primary only); absent when none ran since the node started. */
  verify?: VerifyStatus;
  /**
   * The identity (NodeInfo.dataDirId) of the peer's data directory when the pair was created here,
   * if the creator passed it; null when not recorded (the peer created this side, or an older
   * caller). Filled by the node, not by the replication core.
   */
  peerDataDirId?: string | null;
  /**
   * A fast failover through a remote copy network still applies residual entries to this pair's
   * volume (spec 002 §6.9, E-21): host writes to it wait until they are done or discarded.
   */
  residualHold?: ResidualHoldView;
}

/** Host writes held for residual entries of a fast failover (spec 002 E-21). */
export interface ResidualHoldView {
  order: string;
  /** The edge applying them. */
  edge: string;
  /** Entries left, once the source edge reported its high-water mark; null before. */
  remaining: number | null;
  since: string;
  /** Host writes waiting now. */
  waitingWrites: number;
}

export interface GroupStatus {
  group: string;
  role: PairRole;
  peer: string;
  connected: boolean;
  pairs: string[];
  lastSeq: number;
  receivedSeq: number;
  appliedSeq: number;
  journal: { usedBytes: number; capacityBytes: number; fullPolicy: JournalFullPolicy } | null;
  lag: LagReport;
  /**
   * Of the lag's entries, those that cannot ship until an entry held for the sync copy is released
   * (the held ones and every entry after the first of them); 0 at a secondary.
   */
  blockedEntries: number;
}

export interface PeerAddress {
  node: string;
  host: string;
  replPort: number;
}

/** NodeClient.createPair */
export interface CreatePairRequest {
  name: string;
  volume: string;
  peerVolume?: string;
  peer: PeerAddress;
  mode: CopyMode;
  /** quorum: a spec 004 quorum pair (mode sync, a small volume, no consistency group). Default data. */
  purpose?: PairPurpose;
  fence?: FenceLevel;
  group?: string;
  /** Deprecated spelling of initialCopy: 'none'. */
  noCopy?: boolean;
  initialCopy?: InitialCopy;
  fenceGroup?: string;
  /** How the peer reaches this node, when not at its advertised address (NAT, a relay, a test proxy). */
  returnAddress?: { host: string; replPort: number };
  /** The peer's data directory identity as the caller saw it (NodeInfo.dataDirId); the node keeps it with the pair. */
  peerDataDirId?: string;
}

/** NodeClient.split */
export interface SplitRequest {
  /** The secondary accepts host writes while split (Hitachi pairsplit -rw). */
  rw?: boolean;
}

/** NodeClient.resync and swap */
export interface DiscardRequest {
  /** The node whose changes are discarded when both sides were written (split brain). */
  discard?: string;
}

/** NodeClient.verify */
export interface VerifyRequest {
  /** Read each side at most this fast (default 100 MiB/s). */
  rateMiBPerSecond?: number;
}

/** NodeClient.setProtection */
export interface ProtectionRequest {
  fence: FenceLevel;
  fenceGroup?: string | null;
}

export interface PairList {
  pairs: PairStatus[];
}

export interface GroupList {
  groups: GroupStatus[];
}
