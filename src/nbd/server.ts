// The NBD listener: accepts connections up to the limit, builds the TLS context, and tracks which
// clients are attached to which export so the node can refuse or force a delete.
import * as net from 'node:net';
import type { Logger } from '../common/log';
import { NbdConnection, type ConnectionContext } from './connection';
import { TlsUpgrader } from './tls-upgrade';
import type { ExportProvider, NbdClientInfo, NbdObserver, NbdServerLimits, NbdTlsConfig, TlsMode } from './types';

export interface NbdServerOptions {
  host: string;
  port: number;
  provider: ExportProvider;
  observer: NbdObserver;
  limits: NbdServerLimits;
  tlsMode: TlsMode;
  tls?: NbdTlsConfig | undefined;
  log: Logger;
}

export class NbdServer {
  private readonly server: net.Server;
  private readonly connections = new Set<NbdConnection>();
  private nextConnectionId = 1;
  private shuttingDown = false;
  private readonly ctx: ConnectionContext;

  constructor(private readonly options: NbdServerOptions) {
    if (options.tlsMode !== 'off' && !options.tls) {
      throw new Error(`TLS mode ${options.tlsMode} needs certificates or a PSK file`);
    }
    this.ctx = {
      provider: options.provider,
      observer: options.observer,
      limits: options.limits,
      tlsMode: options.tlsMode,
      tls: options.tlsMode === 'off' ? undefined : new TlsUpgrader(options.tls!),
      log: options.log,
      isShuttingDown: () => this.shuttingDown,
    };
    // Paused so a connection can move its socket onto a fixed receive buffer before any read.
    this.server = net.createServer({ noDelay: true, pauseOnConnect: true }, (socket) => this.accept(socket));
    this.server.on('error', (err) => {
      if (this.server.listening) options.log.error({ err }, 'nbd listener error');
    });
  }

  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host: this.options.host, port: this.options.port }, () => {
        this.server.removeListener('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  /** New TLS files' contents for handshakes from now on (see TlsUpgrader.reload). */
  reloadTls(next: NbdTlsConfig): void {
    if (!this.ctx.tls) throw new Error('the NBD server runs without TLS: nothing to reload');
    this.ctx.tls.reload(next);
  }

  /** Clients currently in the transmission phase on `exportName`. */
  clientsOf(exportName: string): NbdClientInfo[] {
    return [...this.connections].filter((c) => c.exportName === exportName).map((c) => c.client);
  }

  get connectionCount(): number {
    return this.connections.size;
  }

  /** Hard-disconnects every client of an export (forced delete). */
  disconnectExport(exportName: string): number {
    let count = 0;
    for (const conn of this.connections) {
      if (conn.exportName === exportName) {
        conn.destroy();
        count++;
      }
    }
    return count;
  }

  /**
   * Hard-disconnects the clients in transmission that `refuse` names (their host lost access to the
   * export), and returns them. The caller decides; the server only knows exports and clients.
   */
  disconnectWhere(refuse: (exportName: string, client: NbdClientInfo) => boolean): Array<{ exportName: string; client: NbdClientInfo }> {
    const closed: Array<{ exportName: string; client: NbdClientInfo }> = [];
    for (const conn of this.connections) {
      const exportName = conn.exportName;
      if (exportName !== undefined && refuse(exportName, conn.client)) {
        conn.destroy();
        closed.push({ exportName, client: conn.client });
      }
    }
    return closed;
  }

  /** Stops accepting, lets in-flight requests finish, then closes every connection. */
  async close(): Promise<void> {
    this.shuttingDown = true;
    // Not waiting for net.Server's close callback: it counts the sockets connections moved away from.
    this.server.close();
    await Promise.all([...this.connections].map((c) => c.shutdown(this.options.limits.shutdownGraceMs)));
  }

  private accept(socket: net.Socket): void {
    if (this.shuttingDown) {
      socket.destroy();
      return;
    }
    if (this.connections.size >= this.options.limits.maxConnections) {
      const client = { address: socket.remoteAddress ?? 'unknown', port: socket.remotePort ?? 0 };
      socket.destroy();
      // Per connection at debug only: the observer turns refusals into metrics and rate-limited events.
      this.options.log.debug({ remote: client.address, limit: this.options.limits.maxConnections }, 'nbd connection refused: connection limit reached');
      this.options.observer.refused({ reason: 'too-many-connections', client, dropped: true,
        detail: `${this.connections.size} NBD connections are open (the limit)` });
      return;
    }
    const conn = new NbdConnection(socket, this.nextConnectionId++, this.ctx, (c) => this.connections.delete(c));
    this.connections.add(conn);
    conn.start();
  }
}

/** Parses a GnuTLS-style PSK file: one `identity:hexkey` per line (as psktool writes it). */
export function parsePskFile(text: string, file: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>();
  text.split(/\r?\n/).forEach((line, index) => {
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#')) return;
    const colon = trimmed.lastIndexOf(':');
    const identity = trimmed.slice(0, colon);
    const hex = trimmed.slice(colon + 1);
    if (colon <= 0 || !/^[0-9a-fA-F]+$/.test(hex) || hex.length % 2 !== 0) {
      throw new Error(`${file}:${index + 1}: expected "identity:hexkey"`);
    }
    keys.set(identity, Buffer.from(hex, 'hex'));
  });
  if (keys.size === 0) throw new Error(`${file} holds no PSK keys`);
  return keys;
}
