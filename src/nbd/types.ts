// The NBD server's view of the world: exports come from a provider, events go to an observer.
// Neither side knows about volumes stores, access lists or replication.
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

export interface NbdObserver {
  requestCompleted(exportName: string, command: NbdCommandName, bytes: number, seconds: number, errno: number): void;
  clientAttached(exportName: string, client: NbdClientInfo): void;
  clientDetached(exportName: string, client: NbdClientInfo): void;
  protocolError(client: NbdClientInfo, reason: string): void;
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
