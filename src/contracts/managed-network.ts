// The remote copy networks the manager keeps (spec 002 §3.6, §6.12; management server 103,
// programs 501/502): the master copy of each network file, the tables it last gave the relays, and
// what it collected from them (counters 732/733/734 per order-guarantee id, log area use, pair
// states 725). Bodies of the manager's /v1/networks API, shared by the manager, its client, the CLI
// and the tests. Types and the limits of the API; no behaviour.
import type { RelayNetworkConfig, RelayRole, RelayStatus, SuspendResult, FailbackResult } from './network';

/** PUT /v1/networks/:name — the network file as YAML or JSON text; its `name` must be the URL's. */
export interface PutNetworkRequest {
  text: string;
}

/** A network as the manager keeps it. */
export interface NetworkRecord {
  name: string;
  /** The network file, as given. */
  text: string;
  storedAt: string;
  updatedAt: string;
  /** The tables the manager computed (routes included) and gave every relay; null until applied once. */
  config: RelayNetworkConfig | null;
  appliedAt: string | null;
  /**
   * Why the last apply did not reach every relay and attached node (one was unreachable); the
   * leading manager applies it again at each collection until it succeeds. Null once applied.
   */
  applyError: string | null;
}

export interface NetworkList {
  networks: NetworkRecord[];
}

/** One relay of a network as the manager last collected it. */
export interface CollectedRelay {
  name: string;
  role: RelayRole;
  api: string;
  reachable: boolean;
  /** Why the last collection failed (null when it answered). */
  error: string | null;
  /** When it last answered. */
  collectedAt: string | null;
  /** Its status when it last answered (links, orders with 732/733/734 and log use, pairs with 725/727). */
  status: RelayStatus | null;
}

/** GET /v1/networks/:name/status — the network as the leading manager collected it. */
export interface NetworkStatusDocument {
  network: string;
  /** The version of the tables the manager applied (null: not applied yet). */
  version: string | null;
  appliedAt: string | null;
  applyError: string | null;
  /** When the last collection ended (null: none yet). */
  collectedAt: string | null;
  relays: CollectedRelay[];
}

/** The longest `timeoutMs` a failover through the manager may ask for. */
export const maxNetworkFailoverTimeoutMs = 10 * 60_000;

/** POST /v1/networks/:name/orders/:order/failover — §6.9 at the order's target edge, through the manager. */
export interface NetworkFailoverRequest {
  /** How long the target edge waits for the source edge and the missing entries (default: the order's failoverTimeout). */
  timeoutMs?: number;
  /** The fast variant (spec 002 ¶0087): the target storages take over at once, residual entries are applied after. */
  fast?: boolean;
}

/** What the target edge answered to a failback (E-22), and in which network. */
export interface NetworkFailbackResult extends FailbackResult {
  network: string;
}

/** What the target edge answered, and which edge that was. */
export interface NetworkFailoverResult extends SuspendResult {
  network: string;
  edge: string;
}

/**
 * One order-guarantee id at one edge, as one collection found it: the history behind
 * GET /v1/networks/:name/samples (kept at decreasing resolution, like the nodes' samples).
 */
export interface NetworkSample {
  time: string;
  network: string;
  order: string;
  edge: string;
  side: 'source' | 'target';
  state: string;
  /** 732 (source), 733 (target), 734 (source). */
  generated: number;
  reflected: number;
  deleted: number;
  inFlight: number;
  logBytes: number;
  logCapacityBytes: number;
  ackDelayMs: number | null;
  reflectionDelayMs: number | null;
  retransmissions: number;
}

export interface NetworkSampleList {
  samples: NetworkSample[];
}
