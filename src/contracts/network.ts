// The remote copy network (spec 002): what `network apply` distributes to the relays and to the
// storage nodes, and what relays answer about themselves. Shared by the relays, their typed client,
// the nodes, the CLI and the tests. Pure types; no behaviour.

export type RelayRole = 'edge' | 'core';

/** Core batch transfer (program 420): entries wait this long after the first of them, then leave together. */
export interface BatchConfig {
  waitMs: number;
  maxBytes: number;
}

export interface RelayAddress {
  role: RelayRole;
  /** The relay's --listen address: where other relays and attached storage nodes dial it. */
  host: string;
  port: number;
  /** Its control API URL. */
  api: string;
  /** Cores only: batch transfer, when on. */
  batch?: BatchConfig | null;
}

/** A storage node attached to an edge (503), with the address it is dialed at. */
export interface AttachedStorage {
  edge: string;
  customer: string;
  /** The node's control API URL, as the network file names it. */
  api: string;
  host: string;
  replPort: number;
  /** What the node was when the network was applied; its virtual storages answer configuration queries with it (absent from older applies). */
  configuration?: StorageConfiguration;
}

/**
 * A storage node's configuration as a configuration query to a virtual storage answers it (spec 002
 * §9.55): collected from the node by `network apply` (the management server's tables, 501), so an
 * edge answers for a partner it cannot reach. A tricopy volume is addressed by its name (the NBD
 * export), which stands for the LUN; its host-group LUNs are listed where it is mapped.
 */
export interface StorageConfiguration {
  product: string;
  version: string;
  site: string;
  /** What a host sees of each volume. */
  emulation: string;
  volumeCount: number;
  capacityBytes: number;
  /** The first volumes by name (at most maxListedVolumes); volumeCount counts them all. */
  volumes: Array<{ name: string; sizeBytes: number; luns: Array<{ hostGroup: string; lun: number }> }>;
}

/**
 * A virtual storage an edge presents to the storage nodes attached to it (§4.4, §9.50): it answers
 * as its partner, a node attached to another edge, with the partner's configuration; under the
 * partner's name (its WWN) in the base variant, under a name of its own in the Fig. 2 variant.
 */
export interface VirtualStorage {
  /** The name it answers with: the partner's own (base variant) or one allocated for it (Fig. 2). */
  wwn: string;
  partner: string;
  /** The edge the partner is attached to. */
  partnerEdge: string;
  /** The nodes attached to this edge that may pair with the partner (same customer). */
  presentedTo: string[];
  /** Order-guarantee ids between this edge and the partner's edge, either way. */
  orders: string[];
  /** The partner as the last apply found it; null when that apply did not collect it. */
  configuration: StorageConfiguration | null;
}

/** base: a virtual storage answers under its partner's name; own-names: under one of its own (Fig. 2, §6.13). */
export type VirtualStorageVariant = 'base' | 'own-names';

export interface VirtualStoragesAnswer {
  edge: string;
  network: string | null;
  variant: VirtualStorageVariant;
  virtualStorages: VirtualStorage[];
}

/** An order-guarantee id (412) and how its entries are retransmitted (§5.8, E-2) and buffered (E-6). */
export interface OrderConfig {
  /** The source edge (it numbers the entries) and the target edge (it applies them in order). */
  from: string;
  to: string;
  /** Pairs assigned to the id in the file (method B); others are assigned when created with --via. */
  pairs: string[];
  /** No answer within this long: resend what is unacknowledged (doubling up to retransmitMaxMs). */
  retransmitMs: number;
  retransmitMaxMs: number;
  /** Without progress for this long the order enters Failure Suspend (retransmission exhausted). */
  giveUpMs: number;
  /** Capacity of the source edge's log area for the order. */
  logBytes: number;
  /** A full log area delays acknowledgements; full for this long, the order enters Failure Suspend. */
  fullTimeoutMs: number;
  /** Failover (§6.9): how long the target edge waits for the source edge's SOK and missing entries. */
  failoverTimeoutMs: number;
}

/** A customer (902) and its contract limits (E-29); storages of different customers never meet. */
export interface CustomerConfig {
  /** Edges the customer may attach storages to (empty: any). */
  edges: string[];
  maxStorages: number | null;
  maxOrders: number | null;
}

export interface LinkAddress {
  /** The relay that dials … */
  from: string;
  /** … its neighbour `to`, at host:port. */
  to: string;
  host: string;
  port: number;
}

/**
 * How one relay link carries entries (what WAN relays are bought for): zstd compression at a level
 * and a bandwidth ceiling, the same in both directions. Links the file leaves plain have no entry.
 */
export interface LinkShaping {
  between: [string, string];
  /** zstd level (1 fastest … 19 smallest); null: sent as they are. */
  compressLevel: number | null;
  /** The most this link may carry, in bits per second (frames after compression); null: no limit. */
  bandwidthBitsPerSecond: number | null;
}

/** A path between two edges, the edges first and last (714). Both directions are installed. */
export interface RouteConfig {
  from: string;
  to: string;
  hops: string[];
  /**
   * Paths that avoid one core of `hops` each, then one link of `hops` each, in order of preference.
   * The edge sending an entry puts one of these on it when something on `hops` is dead (paths.ts);
   * a relay given an entry that carries no path sends on along the first of these it is on whose
   * next hop is up. Absent from configs applied by older versions.
   */
  alternates?: string[][];
}

/** The network as every relay runs it: the master tables of the management server (§4.13). */
export interface RelayNetworkConfig {
  network: string;
  /** Changes whenever the content does (a digest). */
  version: string;
  relays: Record<string, RelayAddress>;
  links: Array<[string, string]>;
  /** Where one relay dials its neighbour when not at its listen address (a NAT, a WAN proxy). */
  linkAddresses: LinkAddress[];
  /** Compression and bandwidth limits of links (absent from files applied by older versions). */
  linkShaping?: LinkShaping[];
  routes: RouteConfig[];
  storages: Record<string, AttachedStorage>;
  orders: Record<string, OrderConfig>;
  customers: Record<string, CustomerConfig>;
  /**
   * The Fig. 2 variant (§6.13): per edge, the name each partner of its attached nodes is presented
   * under (partner → name). Absent, or no entry for an edge: partners answer under their own names.
   */
  virtualNames?: Record<string, Record<string, string>>;
}

/** What a storage node keeps about a network it is attached to (`network apply` tells it). */
export interface NetworkAttachment {
  network: string;
  version: string;
  /** This node's name, and the edge it is attached to (its virtual storages answer there). */
  node: string;
  edge: { name: string; host: string; port: number; api: string };
  /**
   * Storage nodes this one may pair with through the network, and the edge each is attached to;
   * `as`: the name this node's edge presents the peer under (Fig. 2 variant), absent: the peer's own.
   */
  peers: Record<string, { edge: string; host: string; port: number; api: string; as?: string }>;
  orders: Record<string, { from: string; to: string }>;
}

export interface RelayInfo {
  name: string;
  role: RelayRole;
  version: string;
  listen: { host: string; port: number };
  apiPort: number;
  dataDir: string;
  startedAt: string;
  /** The network it runs, once applied. */
  network: string | null;
  configVersion: string | null;
}

export interface RelayPorts {
  apiPort: number;
  listenPort: number;
}

/** A pair whose copy goes through this edge (411). */
export interface RelayPairStatus {
  name: string;
  order: string;
  /** source: this edge is attached to the primary (it numbers); target: to the secondary (it applies). */
  side: 'source' | 'target';
  source: string;
  target: string;
  /** The edge's view of the pair state (725): the node's state as relayed, or failure-suspend. */
  state: string;
  /** Bytes of 64 KiB regions recorded in the edge's differential bitmap (727). */
  differentialBytes: number;
}

export type OrderState = 'active' | 'failure-suspend' | 'suspend-waiting';

/** An order-guarantee id at one edge (412), with its log area (413). */
export interface RelayOrderStatus {
  id: string;
  side: 'source' | 'target';
  from: string;
  to: string;
  state: OrderState;
  /** 732: last number assigned (source). */
  generated: number;
  /** 733: last number reflected (target). */
  reflected: number;
  /** 734: numbers acknowledged and deleted (source). */
  deleted: number;
  /** 732 − 734 at the source; entries buffered and not yet reflected at the target. */
  inFlight: number;
  log: { entries: number; bytes: number; capacityBytes: number };
  /** Source: the last acknowledgement delay (claims 8, 13); target: the last reflection delay (735). */
  ackDelayMs: number | null;
  reflectionDelayMs: number | null;
  retransmissions: number;
  /** Local acknowledgements held back because the log area was full. */
  delayedAcks: number;
  reason: string;
  /** Target side: entries a fast failover still applies (§9.44: positive while any remain, 0 once done); absent from older relays. */
  residual?: number;
}

export interface RelayLinkStatus {
  peer: string;
  /** relay: another edge or core; storage: an attached node, under the name this edge answers as. */
  kind: 'relay' | 'storage';
  as: string;
  up: boolean;
  /** The link runs inside TLS (false while down). */
  tls: boolean;
}

export interface RelayStatus {
  name: string;
  role: RelayRole;
  network: string | null;
  configVersion: string | null;
  links: RelayLinkStatus[];
  orders: RelayOrderStatus[];
  pairs: RelayPairStatus[];
  counters: {
    entriesForwarded: number;
    bytesForwarded: number;
    /** Bytes that left for other relays after compression (equal to bytesForwarded on plain links). */
    bytesSent: number;
    /** Entries dropped at this relay (no route, next hop down): the source edge resends them. */
    entriesDropped: number;
    /** PathDown entries sent: entries this relay could not forward on their carried path, reported to the edge they left. */
    pathDownNotices: number;
    /** Times this edge changed the path it sends on toward another edge (around a dead link, or back). */
    reroutes: number;
    /** Connections refused (wrong secret, not permitted, malformed frames). */
    refusedConnections: number;
    /** Requests of attached storages refused (no order id, access control, Failure Suspend). */
    refusedRequests: number;
  };
  /**
   * TLS on this relay's links (--tls-mode), whether peers' certificates are checked against a CA
   * (mutual), and the certificate it presents (the one read at start or at the last SIGHUP).
   */
  tls: { mode: 'off' | 'optional' | 'required'; mutual: boolean; certificate: { subject: string; notAfter: string; fingerprint256: string } | null };
  /** The last connection refused, and why (a node of another customer, a wrong secret …). */
  lastRefusal: { peer: string | null; reason: string; detail: string; at: string } | null;
  /** The paths this relay sends its own entries on, per destination edge, and the links it avoids (issue 15; absent from older relays). */
  paths?: RelayPathsStatus;
}

export interface RelayPathsStatus {
  toward: Array<{ to: string; hops: string[] }>;
  /** Links a relay at one end reported it could not forward across, avoided until `until`. */
  avoided: Array<{ between: [string, string]; until: string; reason: string }>;
}

/** Failback at the target edge (E-22): whether the order had failed over there, and its pairs. */
export interface FailbackResult {
  order: string;
  edge: string;
  /** False: the order had not failed over at this edge, nothing was held down. */
  released: boolean;
  pairs: string[];
}

/** Failover at the target edge (§6.9): what the target holds when the order stopped. */
export interface SuspendResult {
  order: string;
  /** The source edge's last assigned number, when it answered (null: it did not within the timeout). */
  highWaterMark: number | null;
  /** The last number reflected to the target storage: the failover's recovery point. */
  reflected: number;
  /** Numbers the source assigned that the target never got (0 when everything arrived). */
  missing: number;
  reason: string;
  /**
   * A fast failover (spec 002 ¶0087): residual entries still to apply when it answered (positive
   * until the source edge's high-water mark is known); absent for the base variant.
   */
  residual?: number;
}
