// Writable clones of a node's volumes (a DR drill's throwaway copies) and the request/response
// bodies of the node's clone API. Pure types; no behaviour.

/** Where a clone set is in its life (src/replica/clone-state.ts has the table). */
export const cloneSetStates = ['creating', 'active', 'ending'] as const;
export type CloneSetState = (typeof cloneSetStates)[number];

/** What a drill at a topology's site records with its clones (spec: DR drill without disruption). */
export interface DrillInfo {
  topology: string;
  site: string;
  /** The copies the drill tests, with their state when it started (PAIR: replication went on untouched). */
  pairs: Array<{ name: string; code: string }>;
}

export interface CloneView {
  volume: string;
  /** The snapshot the clone reads where it did not write (`VOLUME@SET.base`, or the one it was made from; read-only). */
  snapshot: string;
  /** The clone's writable NBD export, `VOLUME@SET`. */
  exportName: string;
  exportUri: string;
  /** Bytes the clone wrote (whole 64 KiB regions): the space it holds. */
  writtenBytes: number;
  clients: number;
}

export interface CloneSetView {
  name: string;
  state: CloneSetState;
  /** The instant every clone of the set shows (its snapshots were taken together). */
  createdAt: string;
  clones: CloneView[];
  drill: DrillInfo | null;
}

export interface CloneSetList {
  cloneSets: CloneSetView[];
}

export interface CreateCloneSetRequest {
  /** The set's name; each clone exports as `VOLUME@NAME`. */
  name: string;
  /** Volumes to clone at one instant. */
  volumes: string[];
  /**
   * An existing snapshot of every volume to clone (an older image); absent: the volumes as they
   * are now (the set takes its own snapshot). Several volumes need one taken of them together.
   */
  snapshot?: string;
  drill?: DrillInfo;
}

export const drillResults = ['passed', 'failed', 'not-given'] as const;
export type DrillResult = (typeof drillResults)[number];

export interface DeleteCloneSetRequest {
  /** Disconnect clients still attached to the clones. */
  force?: boolean;
  /** A drill's outcome as the operator judged it (recorded in the drill-ended event). */
  result?: DrillResult;
  note?: string;
}

export interface DeletedCloneSet {
  name: string;
  /** From the clones' instant to their deletion. */
  durationMs: number;
  writtenBytes: number;
  disconnected: number;
}

/** `tricopy topology drill --status`: a drill running at one site, and the copies it tests now. */
export interface DrillView {
  site: string;
  name: string;
  startedAt: string;
  runningMs: number;
  clones: CloneView[];
  /** The copies at the site when the drill started and now: replication goes on during a drill. */
  pairsAtStart: Array<{ name: string; code: string }>;
  pairsNow: Array<{ name: string; code: string; appliedSeq: number | null }>;
}
