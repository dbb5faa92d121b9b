// The vocabulary of autonomous copy monitoring (spec 000) and the bodies of the node's monitor API:
// control commands that travel along the command path, the management table they fill, the
// reports that travel back, and what a node pushes to its manager. Shared by the node (monitor/),
// the manager, the typed clients, the CLI and the tests. Pure types; no behaviour.
import type { GroupStatus, PairStatus, ShortCode } from './pairs';
import type { NodeEvent, NodeInfo, VolumeView } from './node';

/** A node name, or `manager:<id>` for a management server (spec 000 §4.1). */
export type NeighbourId = string;

export const managerNeighbourPrefix = 'manager:';

/** Spec 000 §4.2 (A6): the copy a command constructs, matched by copyId (the pair's name). */
export interface CopyDescriptor {
  copyId: string;
  /** The copy's source node (the executor of its construction, A5). */
  source: string;
  target: string;
  volume: string;
  mode: 'sync' | 'async';
  /** The topology the copy belongs to, when it belongs to one. */
  topology: string | null;
}

/** One node of a command path, with the control API address its upstream neighbour reaches it at. */
export interface Hop {
  node: string;
  url: string;
}

/**
 * What a node watches on a copy it executed (spec 000 §4.6, A7): entering a code in `codes` sends
 * one report; leaving it sends a recovery report. Thresholds add conditions that are checked
 * locally (no message unless crossed).
 */
export interface MonitoredSet {
  codes: ShortCode[];
  /** Async copies: report when the group's lag exceeds this many seconds (null: not watched). */
  lagSeconds: number | null;
  /** Async copies: report when the journal is fuller than this percentage (null: not watched). */
  journalPercent: number | null;
  /**
   * Report a copy in step whose replication link to the target has been down this long (null: not
   * watched). Sync copies with fence data suspend at once (PSUE); an idle async copy would stay
   * PAIR with nothing to tell.
   */
  linkDownSeconds: number | null;
}

export const defaultMonitoredCodes: ShortCode[] = ['PSUE'];
export const defaultLinkDownSeconds = 2;

/** Spec 000 §4.7: construct or release, relayed hop by hop along `path` to its last node (the executor). */
export interface MonitorCommand {
  commandId: string;
  type: 'construct' | 'release';
  copy: CopyDescriptor;
  /** The management server that issued it (its id, without the manager: prefix). */
  issuer: string;
  /** From the first node the issuer reaches to the executor; every node on it relays to the next. */
  path: Hop[];
  /** construct only; default: failure-suspended codes, no thresholds. */
  monitored?: MonitoredSet;
}

/** Spec 000 §4.3: one row per construction command received (receivedFrom, sentTo, copy). */
export interface ManagementTableEntry {
  receivedFrom: NeighbourId;
  /** Where a report for this row goes when receivedFrom is a node (its control API). */
  receivedFromUrl: string | null;
  /** The neighbour the command was forwarded to, or this node's own name when it executed it. */
  sentTo: NeighbourId;
  copy: CopyDescriptor;
  commandId: string;
  registeredAt: string;
  monitored: MonitoredSet;
}

export interface CommandResult {
  commandId: string;
  /** What this node did: registered (construct), removed (release), or already so (a repeat). */
  outcome: 'registered' | 'already-registered' | 'removed' | 'no-row';
  /** The node that executed it (the last of the path). */
  executor: string;
  /** What the next hop answered, when this node relayed the command. */
  relayed: CommandResult | null;
}

/** The condition a report carries: a pair code, or a crossed threshold. */
export type ReportCondition = ShortCode | 'lag-high' | 'journal-high' | 'link-down';

/** Spec 000 §4.4: a monitoring result travelling back along the command path. */
export interface CopyReport {
  copy: CopyDescriptor;
  status: {
    /** Entered (a monitored state was entered) or recovered (it was left). */
    change: 'entered' | 'recovered';
    condition: ReportCondition;
    /** The pair's code and state at detection (null when the pair no longer exists). */
    code: ShortCode | null;
    state: string | null;
    reason: string;
    lagSeconds: number | null;
  };
  origin: string;
  lastHop: string;
  reportId: string;
  detectedAt: string;
  hops: number;
}

/** Reports sent to the manager or a neighbour go in batches (spec 000 E8: each still identifiable). */
export interface ReportBatch {
  reports: CopyReport[];
}

export interface ReportAck {
  accepted: number;
  duplicates: number;
}

/** POST to a node: the manager it belongs to (persisted; the node pushes to it from now on). */
export interface RegisterManagerRequest {
  /** The manager's id (one id for every manager sharing a store). */
  managerId: string;
  /** Every manager's API address; the node sends to the first that answers (followers forward). */
  urls: string[];
  /** Bearer token the node presents to the manager, when the manager demands one. */
  token?: string;
}

export interface ManagerBinding {
  managerId: string;
  urls: string[];
  registeredAt: string;
}

/** A report that matched no row (spec 000 E1), kept on the node as a local alert. */
export interface LocalAlert {
  id: number;
  time: string;
  reason: string;
  report: CopyReport;
}

/** How the node's reports and events leave it: one queue per destination. */
export interface OutboxStatus {
  destination: string;
  queued: number;
  capacity: number;
  dropped: number;
  delivered: number;
  failures: number;
  lastError: string | null;
  nextAttemptAt: string | null;
}

/** GET /v1/monitor on a node. */
export interface MonitorStatus {
  node: string;
  manager: ManagerBinding | null;
  table: ManagementTableEntry[];
  /** Per copy this node executed: whether it is in a monitored state now. */
  copies: Array<{ copyId: string; inMonitoredState: boolean; condition: ReportCondition | null }>;
  localAlerts: LocalAlert[];
  outboxes: OutboxStatus[];
  reportsSent: number;
  reportsRelayed: number;
  reportsDropped: number;
}

/** The node's whole state, sent first after every (re)connection to its manager (as DRBD events2 does). */
export interface NodeSnapshot {
  info: NodeInfo;
  volumes: VolumeView[];
  pairs: PairStatus[];
  groups: GroupStatus[];
  table: ManagementTableEntry[];
}

/** One event as the node pushes it: the event, with the current view of what it is about. */
export interface PushedEvent {
  event: NodeEvent;
  /** For pair events: the pair now (null once deleted). */
  pair?: PairStatus | null;
  /** For volume events: the volume now (null once deleted). */
  volume?: VolumeView | null;
  /** For pair events of a consistency group: the group now. */
  group?: GroupStatus | null;
  /** For management table changes: the table now. */
  table?: ManagementTableEntry[];
}

/** POST /v1/ingest at the manager: a node's snapshot (when reconnecting) and its events in order. */
export interface IngestBatch {
  node: string;
  /** Changes whenever the node process restarts (event ids restart then). */
  incarnation: string;
  snapshot: NodeSnapshot | null;
  events: PushedEvent[];
  /** Events the node had to drop because its buffer was full while the manager was away. */
  droppedEvents: number;
}

export interface IngestAck {
  accepted: number;
}
