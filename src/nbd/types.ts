// The NBD server's view of the world: exports come from a provider, events go to an observer.
// Neither side knows about volumes stores, access lists, replication or the node's event journal.
import type { BlockDevice } from '../volume/block-device';

export interface NbdClientInfo {
  id: number;
  address: string;
  port: number;
  tls: boolean;
  /** PSK username or verified client-certificate common name. */
  tlsIdentity?: string | undefined;
}

export interface NbdExport {
  name: string;
  description: string;
  device: BlockDevice;
}

export type ExportLookup =
  | { status: 'ok'; export: NbdExport }
  | { status: 'unknown'; message: string }
  | { status: 'denied'; message: string };

export interface ExportProvider {
  lookup(name: string, client: NbdClientInfo): ExportLookup;
  /** Exports this client may see in NBD_OPT_LIST. */
  list(client: NbdClientInfo): Array<{ name: string; description: string }>;
}

export type NbdCommandName = 'read' | 'write' | 'flush' | 'trim' | 'write_zeroes' | 'cache' | 'block_status';

/** Why the server refused a connection, an option or a request. A fixed set: it is a metric label. */
export const nbdRefusalReasons = [
  'too-many-connections', 'handshake-timeout', 'bad-handshake', 'oversized-option', 'tls-failed', 'tls-required',
  'access-denied', 'unknown-export', 'bad-request', 'oversized-request',
] as const;
export type NbdRefusalReason = (typeof nbdRefusalReasons)[number];

export interface NbdRefusal {
  reason: NbdRefusalReason;
  /** The client as far as it is known (a connection over the limit has no id yet). */
  client: { address: string; port: number; tlsIdentity?: string | undefined };
  /** The export the client asked for, when the refusal concerns one. */
  exportName?: string | undefined;
  /** True when the connection was closed; false when the client got an error reply and may go on. */
  dropped: boolean;
  detail: string;
}

export interface NbdObserver {
  requestCompleted(exportName: string, command: NbdCommandName, bytes: number, seconds: number, errno: number): void;
  clientAttached(exportName: string, client: NbdClientInfo): void;
  clientDetached(exportName: string, client: NbdClientInfo): void;
  /**
   * A refusal: a dropped connection (protocol violation, missed handshake deadline, failed TLS, one
   * connection too many) or an option refused by policy. Reported once per connection, reason and export.
   */
  refused(refusal: NbdRefusal): void;
}

export type TlsMode = 'off' | 'optional' | 'required';

export type NbdTlsConfig =
  | { kind: 'x509'; certPem: Buffer; keyPem: Buffer; caPem?: Buffer | undefined }
  | { kind: 'psk'; keys: ReadonlyMap<string, Buffer> };

export interface NbdServerLimits {
  maxConnections: number;
  handshakeTimeoutMs: number;
  /** Requests a single connection may have in flight before the server stops reading from it. */
  maxInFlightPerConnection: number;
  /** Smallest addressable unit; 1 means any byte offset (a regular file supports that). */
  minBlockBytes: number;
  shutdownGraceMs: number;
}

export const defaultNbdLimits: NbdServerLimits = {
  maxConnections: 256,
  handshakeTimeoutMs: 10_000,
  maxInFlightPerConnection: 256,
  minBlockBytes: 1,
  shutdownGraceMs: 10_000,
};
