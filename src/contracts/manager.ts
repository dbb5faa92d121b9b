// Request/response bodies of the manager's HTTP API: registered nodes, topologies, the status of
// everything in one document, events from the store, alerts, procedure runs and performance
// samples. Shared by the manager, the typed manager client, the CLI, the web console's tests and
// the tests. Pure types; no behaviour.
import type { ArbiterState, FailbackState } from './failover';
import type { GroupStatus, PairStatus } from './pairs';
import type { CopyReport, ManagementTableEntry } from './monitor';
import type { VolumeView } from './node';
// The topology read model's document (type only: erased at run time, so no code depends upward).
import type { TopologyStatus } from '../topology/status';

export type { TopologyStatus };

export interface ManagerInfo {
  managerId: string;
  version: string;
  store: 'embedded' | 'etcd';
  /** This manager's own API address (as other managers and nodes reach it). */
  url: string;
  leader: boolean;
  /** The leading manager's address, when known. */
  leaderUrl: string | null;
  /** Every manager sharing the store. */
  managers: string[];
  pollIntervalMs: number | null;
  startedAt: string;
}

export interface AddNodeRequest {
  url: string;
  /** Bearer token of the node's control API, when it demands one. */
  token?: string;
}

export interface NodeRecord {
  name: string;
  site: string;
  url: string;
  registeredAt: string;
  /** Whether the last /metrics scrape (or push) reached it. */
  reachable: boolean;
  lastSeenAt: string | null;
  lastError: string | null;
  /** The node process incarnation the manager last heard from. */
  incarnation: string | null;
  version: string | null;
}

export interface NodeList {
  nodes: NodeRecord[];
}

export interface AddTopologyRequest {
  /** The topology file as YAML or JSON text. */
  text: string;
}

export interface TopologyRecord {
  name: string;
  layout: 'multi-target' | 'cascade';
  text: string;
  addedAt: string;
  sites: { primary: string; sync: string; async: string };
}

export interface TopologyList {
  topologies: TopologyRecord[];
}

/** One site's agent in a topology's arbiter panel, as its last reported decision says. */
export interface ArbiterSiteView {
  site: string;
  role: 'primary' | 'sync' | 'async';
  /** The node that reported it (null: no report in the events read). */
  node: string | null;
  /** The agent's state (null: no report, or the node takes no part any more). */
  state: ArbiterState | null;
  failback: FailbackState | null;
  /** The reason of its last decision, and when it was made (node time). */
  reason: string | null;
  at: string | null;
}

/** One decision of a site's agent, from the manager's history. */
export interface ArbiterDecisionView {
  seq: number;
  /** When the node made it (its clock). */
  at: string;
  site: string;
  node: string | null;
  kind: string;
  reason: string;
}

/**
 * GET /v1/topologies/:name/arbiter — automatic failover of one topology as the manager knows it:
 * the settings from the topology file, and from the agents' events (what nodes pushed; no node is
 * asked) who holds the arbiter, each site's agent and the last decisions.
 */
export interface ArbiterBoard {
  topology: string;
  failover: 'manual' | 'automatic';
  /** As the agents show it (null: manual, or no agent reported yet). */
  arbiter: string | null;
  leaseMs: number | null;
  renewMs: number | null;
  fenceMarginMs: number | null;
  failback: 'manual' | 'automatic';
  failbackDelayMs: number | null;
  /** The site holding the arbiter as the latest reports say (null: nobody, or not known). */
  holder: string | null;
  sites: ArbiterSiteView[];
  /** Newest first. */
  decisions: ArbiterDecisionView[];
  /** How many of the manager's latest events were read to build this. */
  eventsRead: number;
}

export interface PairView extends PairStatus {
  node: string;
}

export interface GroupView extends GroupStatus {
  node: string;
}

export interface VolumeRecord extends VolumeView {
  node: string;
}

export interface StatusDocument {
  manager: ManagerInfo;
  time: string;
  healthy: boolean;
  sites: Array<{ site: string; nodes: string[]; reachable: boolean }>;
  nodes: NodeRecord[];
  volumes: VolumeRecord[];
  pairs: PairView[];
  groups: GroupView[];
  topologies: TopologyStatus[];
  /**
   * Per topology and site: what a failover there would lose now. `kind` as topology status says it
   * (none, bounded, unknown, unbounded); `bytes` and `seconds` are 0 for none, the bound when
   * bounded, and null when not known.
   */
  dataAtRisk: Array<{ topology: string; site: string; kind: string; bytes: number | null; seconds: number | null; text: string }>;
  alertsOpen: number;
  /** The management table of every node, as last pushed (who relays reports for which copy). */
  tables: Array<{ node: string; rows: ManagementTableEntry[] }>;
}

export type ManagerEventKind = string;

export interface ManagerEvent {
  seq: number;
  time: string;
  kind: ManagerEventKind;
  /** The node it happened on, or null for the manager's own events. */
  node: string | null;
  subject: string;
  reason: string;
  details?: Record<string, unknown>;
}

export interface ManagerEventList {
  events: ManagerEvent[];
}

export type AlertState = 'open' | 'acknowledged' | 'closed';
export type AlertKind = 'copy-failed' | 'copy-lag' | 'journal-full' | 'node-unreachable' | 'unroutable-report' | 'relay-unreachable' | 'order-failure-suspend';
export type AlertSeverity = 'critical' | 'warning';

export interface Alert {
  id: string;
  /** What the alert is about; at most one alert per key is not closed. */
  key: string;
  kind: AlertKind;
  severity: AlertSeverity;
  state: AlertState;
  subject: string;
  message: string;
  /** The copy (pair) it names, and the node whose monitor reported it. */
  copy: string | null;
  reportedBy: string | null;
  topology: string | null;
  openedAt: string;
  updatedAt: string;
  acknowledgedAt: string | null;
  acknowledgedBy: string | null;
  closedAt: string | null;
  /** Reports that fed it (a repeat of the same failure counts, it does not open another). */
  reports: number;
  lastReport: CopyReport | null;
}

export interface AlertList {
  alerts: Alert[];
}

export interface AckRequest {
  by?: string;
}

export type ProcedureName = 'apply' | 'failover' | 'failback' | 'repair';
export type ProcedureState = 'running' | 'succeeded' | 'failed' | 'interrupted';

export interface StartProcedureRequest {
  topology: string;
  procedure: ProcedureName;
  to?: string;
  newestFrom?: string;
  wait?: boolean;
  timeoutSeconds?: number;
}

export interface ProcedureRun {
  id: string;
  topology: string;
  procedure: ProcedureName;
  args: { to: string | null; newestFrom: string | null; wait: boolean };
  state: ProcedureState;
  startedAt: string;
  endedAt: string | null;
  /** The step lines the procedure printed, in order. */
  output: string[];
  error: string | null;
  /** Who started it (the console, the CLI). */
  startedBy: string;
}

export interface ProcedureList {
  runs: ProcedureRun[];
}

/** One sample per volume (or group) per interval; older ones are kept at coarser resolution. */
export interface PerfSample {
  time: string;
  node: string;
  /** volume:<name> or group:<name> */
  subject: string;
  intervalSeconds: number;
  iops: number | null;
  readRatio: number | null;
  mibPerSecond: number | null;
  latencyMs: number | null;
  lagSeconds: number | null;
  lagBytes: number | null;
  journalPercent: number | null;
}

export interface SampleList {
  samples: PerfSample[];
}
