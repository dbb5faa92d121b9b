// Optional TLS under replication links (node ↔ node, node ↔ edge, relay ↔ relay). The framed protocol
// and the cluster-secret handshake run unchanged inside TLS (defence in depth). One port carries
// both: an acceptor looks at the first byte a dialer sends — a TLS ClientHello starts with the
// handshake record type 0x16, a link Hello frame never does — and puts it back before handing the
// connection on. With a CA, both ends present certificates and verify the other's (mutual TLS).
//
// Modes, as for NBD: `off` (plain only), `optional` (accept TLS and plain, dial plain: for switching
// a running network over one process at a time), `required` (accept TLS only, dial TLS).
import { X509Certificate } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { ConnectionWaiters } from '../../common/connection-waiters';
import { TricopyError, errorMessage } from '../../common/errors';
import type { ReceiveSink } from '../../common/fast-socket';

export const linkTlsModes = ['off', 'optional', 'required'] as const;
export type LinkTlsMode = (typeof linkTlsModes)[number];

/** The first byte of a TLS record carrying a handshake message (the ClientHello). */
export const tlsHandshakeRecordType = 0x16;

export interface LinkTlsFiles {
  mode: LinkTlsMode;
  cert: string | undefined;
  key: string | undefined;
  ca: string | undefined;
}

export interface LinkTlsConfig {
  mode: Exclude<LinkTlsMode, 'off'>;
  certPem: Buffer;
  keyPem: Buffer;
  /** Peers' certificates must chain to it, both ways; none: encrypted, certificates not verified. */
  caPem: Buffer | undefined;
}

/** The certificate a link end presents, for status: who it names, until when, and its fingerprint. */
export interface LinkCertificateSummary {
  subject: string;
  notAfter: string;
  fingerprint256: string;
}

export function certificateSummary(certPem: Buffer | undefined): LinkCertificateSummary | null {
  if (!certPem) return null;
  const cert = new X509Certificate(certPem);
  return { subject: cert.subject.replace(/\n/g, ', '), notAfter: new Date(cert.validTo).toISOString(), fingerprint256: cert.fingerprint256 };
}

/** How an accepted connection's first byte is taken: a TLS ClientHello, or a plain link frame. */
export function sniffLinkStart(firstByte: number): 'tls' | 'plain' {
  return firstByte === tlsHandshakeRecordType ? 'tls' : 'plain';
}

/** What to do with an accepted connection, by its first byte and this end's mode (a table). */
export function linkStartDecision(mode: LinkTlsMode, start: 'tls' | 'plain'): 'tls' | 'plain' | 'refuse' {
  const table: Record<LinkTlsMode, Record<'tls' | 'plain', 'tls' | 'plain' | 'refuse'>> = {
    off: { tls: 'plain', plain: 'plain' }, // a ClientHello then fails as a malformed frame
    optional: { tls: 'tls', plain: 'plain' },
    required: { tls: 'tls', plain: 'refuse' },
  };
  return table[mode][start];
}

/** Checks the flag combination and loads the files; undefined when TLS is off. Errors say what to fix. */
export async function loadLinkTls(files: LinkTlsFiles, flags = { cert: '--tls-cert', key: '--tls-key', ca: '--tls-ca', mode: '--tls-mode' }): Promise<LinkTlsConfig | undefined> {
  if (!(linkTlsModes as readonly string[]).includes(files.mode)) {
    throw new TricopyError('invalid-argument', `${flags.mode} "${files.mode}" is not one of ${linkTlsModes.join(', ')}`);
  }
  const given = files.cert !== undefined || files.key !== undefined || files.ca !== undefined;
  if (files.mode === 'off') {
    if (given) throw new TricopyError('invalid-argument', `TLS files were given but ${flags.mode} is off`, `pass ${flags.mode} optional or ${flags.mode} required to use them`);
    return undefined;
  }
  if (files.cert === undefined || files.key === undefined) {
    throw new TricopyError('invalid-argument', `${flags.mode} ${files.mode} needs ${flags.cert} and ${flags.key}`, `and ${flags.ca} to verify peers' certificates (mutual TLS)`);
  }
  const read = async (file: string, flag: string): Promise<Buffer> => {
    try {
      return await fsp.readFile(file);
    } catch (err) {
      throw new TricopyError('invalid-argument', `cannot read ${flag} ${file}: ${errorMessage(err)}`);
    }
  };
  const config: LinkTlsConfig = {
    mode: files.mode,
    certPem: await read(files.cert, flags.cert),
    keyPem: await read(files.key, flags.key),
    caPem: files.ca === undefined ? undefined : await read(files.ca, flags.ca),
  };
  try {
    tls.createSecureContext({ cert: config.certPem, key: config.keyPem });
  } catch (err) {
    const text = errorMessage(err);
    throw new TricopyError('invalid-argument', /key values mismatch/i.test(text)
      ? `the key in ${files.key} does not belong to the certificate in ${files.cert}`
      : `cannot use ${flags.cert} ${files.cert} with ${flags.key} ${files.key}: ${text}`, 'both must be PEM; the key must be the certificate\'s');
  }
  if (config.caPem) {
    try {
      new X509Certificate(config.caPem); // createSecureContext accepts a file without certificates
    } catch (err) {
      throw new TricopyError('invalid-argument', `cannot use ${flags.ca} ${files.ca}: ${errorMessage(err)}`, 'it must hold PEM CA certificates');
    }
  }
  return config;
}

const tlsVersions = { minVersion: 'TLSv1.2' } as const;

/**
 * What a reload (SIGHUP) may change: the certificate, key and CA files' contents. The mode and
 * whether peers must present certificates are fixed at start (the accept decisions and the TLS
 * server's requestCert depend on them): changing them needs a restart.
 */
export function checkLinkTlsReload(current: LinkTlsConfig | undefined, next: LinkTlsConfig | undefined, modeFlag = '--tls-mode'): void {
  const mode = (c: LinkTlsConfig | undefined): LinkTlsMode => c?.mode ?? 'off';
  if (mode(current) !== mode(next)) {
    throw new TricopyError('invalid-argument', `${modeFlag} cannot change from ${mode(current)} to ${mode(next)} without a restart`);
  }
  if ((current?.caPem === undefined) !== (next?.caPem === undefined)) {
    throw new TricopyError('invalid-argument', `mutual TLS (a CA file) cannot be ${current?.caPem === undefined ? 'turned on' : 'turned off'} without a restart`);
  }
}

/**
 * A connection to a link acceptor: TLS when this end requires it, else plain. The server's chain is
 * verified against the CA when there is one; its host name is not (addresses come from network files
 * and peer records; who the peer is, is proven by the cluster-secret handshake inside).
 */
export function dialLinkSocket(host: string, port: number, config: LinkTlsConfig | undefined, sink?: ReceiveSink): net.Socket {
  // A plain link reads into the sink's fixed buffer (the PeerLink binds it); TLS reads as a stream.
  if (config?.mode !== 'required') return net.connect({ host, port, ...(sink ? { onread: sink.onread } : {}) });
  return tls.connect({
    host, port, ...tlsVersions, cert: config.certPem, key: config.keyPem, ca: config.caPem,
    rejectUnauthorized: config.caPem !== undefined, checkServerIdentity: () => undefined,
    ...(net.isIP(host) ? {} : { servername: host }),
  });
}

/** Why an accepted connection was not handed on: TLS required but plain, or the TLS handshake failed. */
export class LinkTlsRefused extends Error {
  constructor(readonly reason: 'tls-required' | 'tls-failed' | 'closed-before-auth' | 'handshake-timeout', message: string) {
    super(message);
  }
}

interface PendingTls {
  resolve: (socket: net.Socket) => void;
  reject: (err: LinkTlsRefused) => void;
}

/**
 * Takes accepted connections to the socket a PeerLink should read: the connection itself (plain) or
 * its TLS session. Runs TLS through a non-listening tls.Server so Node's own server handshake is
 * used; the peer's certificate is checked here to say precisely what is wrong with it.
 */
export class LinkTlsAcceptor {
  private readonly server: tls.Server | undefined;
  private readonly pending = new ConnectionWaiters<PendingTls>();

  constructor(private config: LinkTlsConfig | undefined, private readonly timeoutMs: number) {
    if (!config) return;
    this.server = tls.createServer({
      ...tlsVersions, cert: config.certPem, key: config.keyPem, ca: config.caPem,
      requestCert: config.caPem !== undefined, rejectUnauthorized: false,
    });
    this.server.on('secureConnection', (socket: tls.TLSSocket) => {
      const waiter = this.pending.take(socket);
      if (!waiter) return void socket.destroy();
      const fault = this.certificateFault(socket);
      if (fault) {
        socket.destroy();
        return waiter.reject(new LinkTlsRefused('tls-failed', fault));
      }
      waiter.resolve(socket);
    });
    this.server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      this.pending.take(socket)?.reject(new LinkTlsRefused('tls-failed', `TLS handshake failed: ${err.message}`));
      socket.destroy();
    });
  }

  get mode(): LinkTlsMode {
    return this.config?.mode ?? 'off';
  }

  /** New certificate, key and CA for connections accepted from now on (checkLinkTlsReload first). */
  reload(next: LinkTlsConfig | undefined): void {
    checkLinkTlsReload(this.config, next);
    if (this.server && next) this.server.setSecureContext({ ...tlsVersions, cert: next.certPem, key: next.keyPem, ca: next.caPem });
    this.config = next;
  }

  /** Resolves with the socket to read links from; rejects with LinkTlsRefused (the raw socket is then destroyed). */
  accept(raw: net.Socket): Promise<net.Socket> {
    if (!this.server) return Promise.resolve(raw);
    const server = this.server;
    raw.setNoDelay(true);
    return new Promise<net.Socket>((resolve, reject) => {
      let settled = false;
      const fail = (err: LinkTlsRefused): void => {
        if (settled) return;
        settled = true;
        cleanup();
        this.pending.take(raw);
        raw.destroy();
        reject(err);
      };
      const timer = setTimeout(() => fail(new LinkTlsRefused('handshake-timeout', `nothing received within ${this.timeoutMs} ms`)), this.timeoutMs);
      timer.unref();
      let sniffed = false;
      const onClose = (): void => fail(new LinkTlsRefused('closed-before-auth',
        sniffed ? 'connection closed during the TLS handshake' : 'connection closed before it sent anything'));
      const onError = (err: Error): void => fail(new LinkTlsRefused('closed-before-auth', `socket error: ${err.message}`));
      const cleanup = (): void => {
        clearTimeout(timer);
        raw.removeListener('close', onClose);
        raw.removeListener('error', onError);
        raw.removeListener('data', onData);
      };
      const onData = (chunk: Buffer): void => {
        sniffed = true;
        raw.pause();
        raw.removeListener('data', onData);
        // Back into the socket's buffer: a PeerLink reads it as 'data', a TLSSocket takes it as received.
        raw.unshift(chunk);
        const decision = linkStartDecision(this.mode, sniffLinkStart(chunk[0]!));
        if (decision === 'refuse') {
          return fail(new LinkTlsRefused('tls-required', 'a plain connection where TLS is required (the peer runs without TLS, or with TLS optional, which dials plain)'));
        }
        if (decision === 'plain') {
          settled = true;
          cleanup();
          return resolve(raw);
        }
        this.pending.set(raw, {
          resolve: (s) => {
            if (settled) return void s.destroy();
            settled = true;
            cleanup();
            resolve(s);
          },
          reject: fail,
        });
        server.emit('connection', raw);
      };
      raw.on('close', onClose);
      raw.on('error', onError);
      raw.on('data', onData);
    });
  }

  private certificateFault(socket: tls.TLSSocket): string | undefined {
    if (!this.config?.caPem || socket.authorized) return undefined;
    const cert = socket.getPeerCertificate();
    if (!cert || Object.keys(cert).length === 0) return 'the peer presented no certificate (mutual TLS: start it with --tls-cert and --tls-key)';
    const subject = typeof cert.subject?.CN === 'string' ? ` (CN=${cert.subject.CN})` : '';
    return `the peer's certificate${subject} is not trusted: ${String(socket.authorizationError)} (it must chain to --tls-ca)`;
  }
}

/** Socket errors that say the network failed, not TLS: a dialer retries these quietly. */
const networkErrorCodes = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'ENOTFOUND', 'ECONNABORTED']);

/**
 * Calls `onFailure` when a dialed TLS connection fails its handshake for a TLS reason (the server's
 * certificate is not trusted, no common protocol): something an operator must fix, unlike a refused
 * connection. Plain sockets never fail this way.
 */
export function onTlsDialFailure(socket: net.Socket, onFailure: (detail: string) => void): void {
  if (!(socket instanceof tls.TLSSocket)) return;
  let secure = false;
  socket.once('secureConnect', () => {
    secure = true;
  });
  socket.once('error', (err: NodeJS.ErrnoException) => {
    if (secure || (err.code !== undefined && networkErrorCodes.has(err.code))) return;
    onFailure(`TLS handshake with the peer failed: ${err.message}${/certificate|verify/i.test(err.message) ? ' (its certificate must chain to --tls-ca)' : ''}`);
  });
}

/** Logs a line per reason at most once per interval (the rest at debug): refusals must not flood the log. */
export class RateLimitedWarnings {
  private readonly lastAt = new Map<string, number>();

  constructor(private readonly intervalMs: number) {}

  /** True when this one should be logged as a warning. */
  take(reason: string, nowMs = Date.now()): boolean {
    const last = this.lastAt.get(reason);
    if (last !== undefined && nowMs - last < this.intervalMs) return false;
    this.lastAt.set(reason, nowMs);
    return true;
  }
}
