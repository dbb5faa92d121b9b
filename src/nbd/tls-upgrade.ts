// STARTTLS: upgrades an established TCP connection to TLS. The upgrade runs through a non-listening
// tls.Server so Node applies its own client-certificate verification (requestCert/rejectUnauthorized)
// and PSK handling exactly as for a TLS listener; a hand-built TLSSocket would skip verification.
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { ConnectionWaiters } from '../common/connection-waiters';
import type { NbdTlsConfig } from './types';

export interface UpgradedConnection {
  socket: tls.TLSSocket;
  /** PSK username, or the verified client certificate's common name. */
  identity: string | undefined;
}

interface PendingUpgrade {
  resolve: (value: UpgradedConnection) => void;
  reject: (err: Error) => void;
}

export class TlsUpgrader {
  private readonly server: tls.Server;
  private readonly pending = new ConnectionWaiters<PendingUpgrade>();
  private readonly pskIdentities = new WeakMap<tls.TLSSocket, string>();

  constructor(private config: NbdTlsConfig) {
    const options: tls.TlsOptions = { minVersion: 'TLSv1.2' };
    if (config.kind === 'x509') {
      options.cert = config.certPem;
      options.key = config.keyPem;
      if (config.caPem) {
        options.ca = config.caPem;
        options.requestCert = true;
        options.rejectUnauthorized = true;
      }
    } else {
      // Node offers PSK only up to TLS 1.2; GnuTLS clients (qemu, libnbd) negotiate it there.
      options.ciphers = 'ECDHE-PSK:DHE-PSK:PSK:!NULL';
      options.maxVersion = 'TLSv1.2';
      options.pskCallback = (socket: tls.TLSSocket, identity: string) => {
        // this.config, not the constructor's: a reload replaces the keys.
        const key = this.config.kind === 'psk' ? this.config.keys.get(identity) : undefined;
        if (key) this.pskIdentities.set(socket, identity);
        return key ?? null;
      };
    }
    this.server = tls.createServer(options);
    this.server.on('secureConnection', (socket: tls.TLSSocket) => {
      const waiter = this.pending.take(socket);
      if (!waiter) {
        socket.destroy();
        return;
      }
      let identity: string | undefined;
      if (this.config.kind === 'psk') identity = this.pskIdentities.get(socket);
      else if (socket.authorized) {
        const cn = socket.getPeerCertificate().subject?.CN;
        if (typeof cn === 'string') identity = cn;
      }
      waiter.resolve({ socket, identity });
    });
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      this.pending.take(socket)?.reject(err);
      socket.destroy();
    });
  }

  /**
   * New certificate, key and CA (or PSK keys) for handshakes from now on; connections already in TLS
   * keep their session. The kind, and whether clients must present certificates, are fixed at start.
   */
  reload(next: NbdTlsConfig): void {
    if (next.kind !== this.config.kind) throw new Error(`NBD TLS cannot change from ${this.config.kind} to ${next.kind} without a restart`);
    if (next.kind === 'x509' && this.config.kind === 'x509' && (next.caPem === undefined) !== (this.config.caPem === undefined)) {
      throw new Error(`client certificates (--tls-ca) cannot be ${next.caPem === undefined ? 'turned off' : 'turned on'} without a restart`);
    }
    // First: it throws on a key that is not the certificate's, and then nothing has changed.
    if (next.kind === 'x509') this.server.setSecureContext({ minVersion: 'TLSv1.2', cert: next.certPem, key: next.keyPem, ca: next.caPem });
    this.config = next;
  }

  /** Runs the TLS handshake on `raw` (whose reads must already be paused and unconsumed). */
  upgrade(raw: net.Socket): Promise<UpgradedConnection> {
    return new Promise((resolve, reject) => {
      this.pending.set(raw, { resolve, reject });
      raw.once('close', () => this.pending.take(raw)?.reject(new Error('connection closed during the TLS handshake')));
      this.server.emit('connection', raw);
    });
  }
}
