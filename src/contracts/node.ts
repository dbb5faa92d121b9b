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
  ports: NodePorts;
  tlsMode: string;
  startedAt: string;
  volumeCount: number;
  nbdConnections: number;
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
  allocatedBytes: number;
  exportUri: string;
  clients: ClientView[];
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
