// The vocabulary of in-node replicas, snapshots and changed-block bitmaps (spec 003 §5.1) and the
// request/response bodies of the node's replica, snapshot and bitmap API. Pure types; no behaviour.

/**
 * The states of an in-node replica pair (spec 003 §5.1). A pair that does not exist is `simplex`
 * (only `wait` names it: it resolves when the pair is deleted).
 */
export const replicaStates = ['copying', 'duplex', 'split-pending', 'split', 'resync', 'restoring', 'suspended'] as const;
export type ReplicaState = (typeof replicaStates)[number];
export type ReplicaWaitState = ReplicaState | 'simplex';

/** The codes storage operators know from ShadowImage (pairdisplay). */
export type ReplicaCode = 'COPY' | 'PAIR' | 'PSUS(SP)' | 'PSUS' | 'COPY(RS)' | 'COPY(RS-R)' | 'PSUE';

/** How a read of a region of a quick-split replica that is not copied yet is served (spec 003 A13). */
export type ReadMissPolicy = 'copy-on-read' | 'pass-through';

export interface ReplicaRegions {
  /** Copy granularity in bytes (64 KiB). */
  regionBytes: number;
  total: number;
  /** Regions still to copy (initial copy, quick split, resync, restore). */
  pending: number;
  /** Regions the primary changed since the split. */
  dirtyPrimary: number;
  /** Regions hosts changed on the replica since the split. */
  dirtySecondary: number;
}

export interface ReplicaStatus {
  /** The pair's name, which is also the replica volume's name and its NBD export name. */
  name: string;
  /** The primary volume (P-VOL). */
  volume: string;
  state: ReplicaState;
  code: ReplicaCode;
  /** The instant the replica's image was taken (split or quick split), else null. */
  splitAt: string | null;
  readMissPolicy: ReadMissPolicy;
  createdAt: string;
  /** Why the pair is in its state (the last transition's note). */
  reason: string;
  /** Of the running copy (initial, background after a quick split, resync, restore); null when none runs. */
  progressPercent: number | null;
  regions: ReplicaRegions;
  /** Bytes copied by this pair's copies since the node started (initial, background, copy-on-write, copy-on-read, resync, restore). */
  copiedBytes: number;
  /** The export of the replica while hosts may use it (split, split-pending), else null. */
  exportUri: string | null;
  /** Clients attached to the replica's export. */
  clients: number;
}

export interface ReplicaList {
  replicas: ReplicaStatus[];
}

export interface CreateReplicaRequest {
  name: string;
  /** The primary volume. */
  volume: string;
  /** Use the existing volume `name` as the replica (its size must be at least the primary's); else it is created. */
  existing?: boolean;
  readMissPolicy?: ReadMissPolicy;
  /** Create the replica volume thin (overcommit). */
  thin?: boolean;
}

export interface SplitReplicaRequest {
  /** Quick split: usable at once while the remaining regions are copied in the background (copy-on-write/read). */
  quick?: boolean;
}

export interface ForceRequest {
  /** Disconnect the clients that would see data change under them. */
  force?: boolean;
}

export interface DeleteReplicaOptions {
  /** Delete the replica volume too (else it stays, a plain volume). */
  deleteVolume?: boolean;
  /** Disconnect clients of the replica volume (with deleteVolume). */
  force?: boolean;
}

// --- snapshots ---------------------------------------------------------------------------------

export interface SnapshotView {
  volume: string;
  name: string;
  createdAt: string;
  /** The group the snapshot was taken with (one instant across its volumes), or null. */
  group: string | null;
  /** Space the snapshot holds: the blocks the volume changed after it and before the next snapshot. */
  usedBytes: number;
  /** Its read-only NBD export name, `volume@name`. */
  exportName: string;
  exportUri: string;
  /** Changed-block bitmaps frozen with the snapshot: the export offers them as qemu:dirty-bitmap:NAME. */
  bitmaps: string[];
}

export interface SnapshotList {
  snapshots: SnapshotView[];
}

export interface CreateSnapshotRequest {
  name: string;
  /** Volumes to snapshot at one instant. */
  volumes?: string[];
  /** Also every volume of this consistency group on the node. */
  group?: string;
  /**
   * Changed-block bitmaps to freeze into the snapshot and clear at the same instant (incremental
   * backup: the snapshot's export offers what changed since the previous clear).
   */
  bitmaps?: string[];
}

export interface RollbackRequest {
  to: string;
  force?: boolean;
}

// --- changed-block bitmaps ---------------------------------------------------------------------

export interface BitmapView {
  volume: string;
  name: string;
  createdAt: string;
  clearedAt: string;
  granularityBytes: number;
  /** Bytes marked changed (whole regions). */
  dirtyBytes: number;
  /** The NBD metadata context that serves it. */
  context: string;
}

export interface BitmapList {
  bitmaps: BitmapView[];
}
