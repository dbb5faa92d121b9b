// Request/response bodies of the node's control API outside remote copy: the node itself, volumes,
// attached clients, events and errors. Shared by the node, the typed client, the CLI and the tests.

export interface NodePorts {
  nbdPort: number;
  apiPort: number;
  replPort: number;
}

export interface NodeInfo {
  name: string;
  site: string;
  /** Address peers and clients use to reach this node. */
  advertiseHost: string;
  /** Whether this node can replicate (a cluster secret is configured). */
  replication: boolean;
  /** Where peer nodes reach its replication port. */
  replAddress: { host: string; port: number };
  version: string;
  dataDir: string;
  /**
   * The identity of the data directory: a UUID created once per data directory. Another value
   * after a restart means the node came back on another (or an empty) data directory.
   */
  dataDirId: string;
  ports: NodePorts;
  tlsMode: string;
  startedAt: string;
  volumeCount: number;
  nbdConnections: number;
  /** The replication link to every peer a pair names (and every peer seen): up or down, since when. */
  peerLinks: PeerLinkView[];
}

export interface PeerLinkView {
  node: string;
  up: boolean;
  /** When the link last came up or went down (the node's start, if it never connected). */
  since: string;
  /** Why it is down (or 'link up'). */
  reason: string;
}

export interface AccessRules {
  /** CIDR ranges. */
  clients: string[];
  /** TLS identities (PSK user or certificate CN). */
  identities: string[];
}

export interface ClientView {
  id: number;
  address: string;
  port: number;
  tls: boolean;
  identity: string | null;
}

export interface VolumeView {
  name: string;
  uuid: string;
  sizeBytes: number;
  createdAt: string;
  description: string;
  access: AccessRules;
  /**
   * The host groups the volume is mapped to, with its LUN in each (spec 003 §5.6). While there is
   * one, only hosts of these groups see the volume and `access` does not apply.
   */
  hostGroups: Array<{ hostGroup: string; lun: number }>;
  allocatedBytes: number;
  exportUri: string;
  clients: ClientView[];
  /** Whether hosts may write the volume now, and why not (see HostWrites). */
  hostWrites: HostWrites;
  /** Set while the volume is held read-only with its former primary's image (see DetachedSecondary). */
  detachedSecondary: DetachedSecondary | null;
  /** The data area the volume's data lives in (spec 003 areaId; `default` is the data directory). */
  tier: string;
  /** The volume's current move to another tier, or the last one since the node started; null: none. */
  relocation: RelocationView | null;
}

/**
 * An online move of a volume between data areas (spec 003 Fig. 15). `copying`: the background
 * copy runs while hosts go on; `switching`: changes are held for a moment while the new file is
 * committed; `done`; `failed` (the volume stayed where it was; `error` says why); `interrupted`
 * (the node stopped or crashed during the move; the volume stayed where it was; run it again).
 */
export interface RelocationView {
  state: 'copying' | 'switching' | 'done' | 'failed' | 'interrupted';
  from: string;
  to: string;
  /** Bytes of the volume the copy has passed (holes cost nothing), and the volume's size. */
  passedBytes: number;
  totalBytes: number;
  progressPercent: number;
  /** Data copied per second of copying (holes excluded); 0 before the first chunk. */
  bytesPerSecond: number;
  startedAt: string | null;
  finishedAt: string | null;
  /** How long host changes were held at the switch. */
  holdMs: number | null;
  error: string | null;
}

/** NodeClient.relocateVolume */
export interface RelocateVolumeRequest {
  /** The data area to move to. */
  tier: string;
}

/**
 * The volume was the secondary of `pair`, whose primary was node `primary`, until the pair was
 * dissolved at `at` by a topology procedure that left this site behind (or `pair delete
 * --keep-read-only`). It holds an image of that primary, never the application's newest writes,
 * and hosts may not write it (EPERM, a read-only export) until the volume is paired again or
 * `tricopy volume make-writable` lets them (the mark then goes). Topology status does not take such
 * a site for the one where the application runs (spec 001 Fig. 14 step 1405 leaves the sync site so).
 */
export interface DetachedSecondary {
  pair: string;
  primary: string;
  generation: number;
  at: string;
}

/**
 * Whether hosts may write a volume now. 'read-only': for as long as its role lasts (the secondary
 * of an active pair, a primary taken over by its peer); new clients see a read-only export and
 * writes fail with EPERM. 'refused': a fence (fence data and the sync copy cannot be updated):
 * temporary, so the export stays writable to new clients, every write and flush of every client
 * fails with EIO, reads work, and writes are accepted again as soon as the fence lifts.
 */
export interface HostWrites {
  state: 'accepted' | 'read-only' | 'refused';
  reason: string | null;
}

export interface VolumeList {
  volumes: VolumeView[];
}

/** NodeClient.createVolume */
export interface CreateVolumeRequest {
  name: string;
  /** Bytes, or a size with a unit ("10GiB"). */
  size: string | number;
  description?: string;
  thin?: boolean;
  /** The data area to create the volume in (default: the data directory). */
  tier?: string;
}

/** NodeClient.resizeVolume */
export interface ResizeVolumeRequest {
  size: string | number;
}

/** NodeClient.allow and disallow: one rule. */
export interface AccessRuleRequest {
  client?: string;
  identity?: string;
}

export interface NodeEvent {
  id: number;
  time: string;
  kind: string;
  subject: string;
  reason: string;
  details?: Record<string, unknown>;
}

export interface EventList {
  events: NodeEvent[];
}

/** Every failure is answered as a problem document (RFC 9457) with a hint for the operator. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  code: string;
  hint?: string;
}
