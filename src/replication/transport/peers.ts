// The replication port and the set of authenticated links to peer nodes. Dials every peer some
// pair needs (with capped exponential back-off), accepts peers that dial in, and keeps exactly one
// ready link per peer. Connections still in their handshake are limited apart from authenticated
// links, so unauthenticated clients cannot crowd out peers. Emits 'peer-up' (node) and 'peer-down'
// (node, reason); refusals go to `refusalObserver`.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { TricopyError, invariant } from '../../common/errors';
import { ReceiveSink } from '../../common/fast-socket';
import type { Logger } from '../../common/log';
import { frameHeaderBytes, maxFramePayloadBytes, maxHandshakePayloadBytes } from './frame';
import {
  linkReceiveBufferBytes,
  PeerLink, keepsNewLink, largestHandshakePayloadBytes, type LinkRefusal, type LinkRefusalObserver, type LinkRefusalReason, type LinkTimings, type RequestHandler,
} from './link';
import { LinkTlsAcceptor, type LinkTlsConfig, LinkTlsRefused, RateLimitedWarnings, dialLinkSocket, onTlsDialFailure } from './link-tls';
import type { MessageType } from './messages';
import type { PeerAddress } from '../../contracts/pairs';
import type { PeerRequestHandler, PeerTransport } from './peer-transport';

import {
  maxAuthenticatedLinks, maxHandshakeTimeoutMs, maxUnauthenticatedBufferedBytes, maxUnauthenticatedLinks, reconnectInitialDelayMs,
  reconnectMaxDelayMs,
} from '../limits';

export { maxAuthenticatedLinks, maxHandshakeTimeoutMs, maxUnauthenticatedBufferedBytes, maxUnauthenticatedLinks, reconnectInitialDelayMs, reconnectMaxDelayMs };

/** The relations between the link limits; checked when a replication port is set up. */
export function assertLinkLimits(timings: LinkTimings): void {
  invariant(maxHandshakePayloadBytes < maxFramePayloadBytes,
    `the handshake payload limit (${maxHandshakePayloadBytes} bytes) must be below the data frame limit (${maxFramePayloadBytes} bytes)`);
  invariant(largestHandshakePayloadBytes() <= maxHandshakePayloadBytes,
    `a handshake message can be ${largestHandshakePayloadBytes()} bytes, over the ${maxHandshakePayloadBytes}-byte handshake limit`);
  invariant(maxUnauthenticatedLinks * (frameHeaderBytes + maxHandshakePayloadBytes) <= maxUnauthenticatedBufferedBytes,
    `${maxUnauthenticatedLinks} unauthenticated connections could hold more than ${maxUnauthenticatedBufferedBytes} bytes`);
  invariant(timings.handshakeTimeoutMs > 0 && timings.handshakeTimeoutMs <= maxHandshakeTimeoutMs,
    `the handshake timeout must be between 1 and ${maxHandshakeTimeoutMs} ms, not ${timings.handshakeTimeoutMs}`);
}

interface Wanted {
  address: PeerAddress;
  timer: NodeJS.Timeout | undefined;
  delayMs: number;
  dialing: PeerLink | undefined;
}

export class PeerManager extends EventEmitter implements PeerTransport {
  private readonly server: net.Server;
  private readonly links = new Map<string, PeerLink>();
  private readonly wanted = new Map<string, Wanted>();
  private readonly handshaking = new Set<PeerLink>();
  /** The inbound part of `handshaking`: connections that have not authenticated yet. */
  private readonly unauthenticated = new Set<PeerLink>();
  /** Accepted connections whose first bytes or TLS handshake are awaited (they count as unauthenticated). */
  private tlsPending = 0;
  private readonly tlsAcceptor: LinkTlsAcceptor;
  private readonly tlsWarnings = new RateLimitedWarnings(10_000);
  private closed = false;
  requestHandler: RequestHandler | undefined;
  /** Told about every refused connection and protocol violation on this node's links. */
  refusalObserver: LinkRefusalObserver | undefined;

  constructor(
    readonly localNode: string,
    private readonly secret: Buffer | undefined,
    private readonly timings: LinkTimings,
    private readonly log: Logger,
    /** TLS on replication links (accepted and dialed); undefined: plain only. */
    private tls: LinkTlsConfig | undefined = undefined,
  ) {
    super();
    assertLinkLimits(timings);
    this.tlsAcceptor = new LinkTlsAcceptor(tls, timings.handshakeTimeoutMs);
    this.server = net.createServer((socket) => this.accept(socket));
    this.server.on('error', (err) => log.error({ err }, 'replication listener error'));
  }

  listen(host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port }, () => {
        this.server.removeListener('error', reject);
        resolve((this.server.address() as net.AddressInfo).port);
      });
    });
  }

  get hasSecret(): boolean {
    return this.secret !== undefined;
  }

  /** New TLS files' contents: dials and accepts from now on use them; links already up keep their session. */
  reloadTls(next: LinkTlsConfig | undefined): void {
    this.tlsAcceptor.reload(next);
    this.tls = next;
  }

  isUp(node: string): boolean {
    return this.links.get(node)?.isReady ?? false;
  }

  connectedPeers(): string[] {
    return [...this.links.keys()];
  }

  /** Keeps a link to `address` up (dialing as needed) until `release`. Address changes are taken. */
  want(address: PeerAddress): void {
    if (this.closed) return;
    const existing = this.wanted.get(address.node);
    if (existing) {
      existing.address = address;
      return;
    }
    const w: Wanted = { address, timer: undefined, delayMs: reconnectInitialDelayMs, dialing: undefined };
    this.wanted.set(address.node, w);
    if (!this.isUp(address.node)) this.dial(w);
  }

  release(node: string): void {
    const w = this.wanted.get(node);
    if (!w) return;
    clearTimeout(w.timer);
    this.wanted.delete(node);
  }

  /** Connects now (without waiting for a back-off) and resolves when the link is ready. */
  async connectNow(address: PeerAddress, timeoutMs: number): Promise<PeerLink> {
    this.want(address);
    const w = this.wanted.get(address.node)!;
    if (!this.isUp(address.node) && !w.dialing) {
      clearTimeout(w.timer);
      w.delayMs = reconnectInitialDelayMs;
      this.dial(w);
    }
    return this.waitFor(address.node, timeoutMs);
  }

  waitFor(node: string, timeoutMs: number): Promise<PeerLink> {
    const link = this.links.get(node);
    if (link?.isReady) return Promise.resolve(link);
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.removeListener('peer-up', onUp);
        this.removeListener('dial-refused', onRefused);
      };
      const timer = setTimeout(() => {
        done();
        reject(new TricopyError('unavailable', `node ${node} is not reachable`,
          'check that it runs, that its replication port is reachable, and that both nodes use the same cluster secret'));
      }, timeoutMs);
      const onUp = (up: string): void => {
        if (up !== node) return;
        done();
        resolve(this.links.get(node)!);
      };
      // The peer answered but the handshake failed (another cluster secret, another node there):
      // waiting longer cannot help, so say what happened now.
      const onRefused = (refused: string, refusal: LinkRefusal): void => {
        if (refused !== node) return;
        done();
        reject(new TricopyError('unavailable', `node ${node} answered at ${refusal.remoteAddress}:${refusal.remotePort}, but the link was refused: ${refusal.detail}`,
          refusal.reason === 'wrong-secret' ? 'the two nodes use different cluster secrets: start both with the same --cluster-secret-file'
            : refusal.reason === 'wrong-node' ? `another node listens at that address: check the peer's address (its replication port and --advertise-host)`
              : refusal.reason === 'tls-failed' ? 'give both ends certificates from the same CA (--tls-cert, --tls-key, --tls-ca) and TLS on both (--repl-tls)'
              : 'check that both nodes run the same tricopy version'));
      };
      this.on('peer-up', onUp);
      this.on('dial-refused', onRefused);
    });
  }

  link(node: string): PeerLink {
    const link = this.links.get(node);
    if (!link?.isReady) throw new TricopyError('unavailable', `node ${node} is not connected`);
    return link;
  }

  request(node: string, type: MessageType, payload: Buffer | Buffer[], timeoutMs?: number): Promise<Buffer> {
    try {
      return this.link(node).request(type, payload, timeoutMs);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  setRequestHandler(handler: PeerRequestHandler): void {
    this.requestHandler = (type, payload, link) => handler(type, payload, link.peerNode!);
  }

  onPeerUp(listener: (node: string) => void): void {
    this.on('peer-up', listener);
  }

  onPeerDown(listener: (node: string, reason: string) => void): void {
    this.on('peer-down', listener);
  }

  send(node: string, type: MessageType, payload: Buffer | Buffer[]): void {
    const link = this.links.get(node);
    if (link?.isReady) link.send(type, payload);
  }

  /** Drops the link to a peer (tests, and a peer that turned out to be stale). */
  disconnect(node: string, reason: string): void {
    this.links.get(node)?.close(reason);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.wanted.values()) clearTimeout(w.timer);
    this.wanted.clear();
    for (const link of [...this.links.values(), ...this.handshaking]) link.close('node shutting down');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    if (this.closed) {
      socket.destroy();
      return;
    }
    if (!this.secret) return this.refuseConnection(socket, 'no-secret', 'no cluster secret is configured on this node');
    if (this.unauthenticated.size + this.tlsPending >= maxUnauthenticatedLinks) {
      return this.refuseConnection(socket, 'too-many-connections',
        `${this.unauthenticated.size + this.tlsPending} connections are already in their handshake (the limit)`);
    }
    if (this.links.size >= maxAuthenticatedLinks) {
      return this.refuseConnection(socket, 'too-many-connections', `${this.links.size} peer links are up (the limit)`);
    }
    const secret = this.secret;
    this.tlsPending++;
    this.tlsAcceptor.accept(socket).then((linkSocket) => {
      this.tlsPending--;
      if (this.closed) return void linkSocket.destroy();
      this.acceptLink(linkSocket, secret);
    }, (err: LinkTlsRefused) => {
      this.tlsPending--;
      this.warnTls(err.reason, err.message, socket, 'acceptor');
      this.refuseConnection(socket, err.reason, err.message);
    });
  }

  /** A connection that TLS (or its absence) let through: the link handshake runs on it. */
  private acceptLink(socket: net.Socket, secret: Buffer): void {
    const link = new PeerLink(socket, 'acceptor', this.localNode, secret, this.timings, this.log);
    this.unauthenticated.add(link);
    const settled = (): void => {
      this.unauthenticated.delete(link);
    };
    link.once('ready', settled);
    link.once('closed', settled);
    this.adopt(link);
  }

  private refuseConnection(socket: net.Socket, reason: LinkRefusalReason, detail: string): void {
    const refusal: LinkRefusal = {
      reason, remoteAddress: socket.remoteAddress ?? '?', remotePort: socket.remotePort ?? 0, side: 'acceptor', claimedNode: undefined, detail,
    };
    socket.destroy();
    this.log.debug({ remote: `${refusal.remoteAddress}:${refusal.remotePort}`, reason, detail }, 'replication connection refused');
    this.refusalObserver?.(refusal);
  }

  private dial(w: Wanted): void {
    if (this.closed || !this.wanted.has(w.address.node)) return;
    if (!this.secret) {
      this.log.warn({ peer: w.address.node }, 'cannot dial peer: no cluster secret configured');
      return;
    }
    const sink = new ReceiveSink(linkReceiveBufferBytes);
    const socket = dialLinkSocket(w.address.host, w.address.replPort, this.tls, sink);
    let refusal: LinkRefusal | undefined;
    // Before the PeerLink's own error handler, which closes the link: the refusal is known by then.
    onTlsDialFailure(socket, (detail) => {
      refusal = { reason: 'tls-failed', remoteAddress: w.address.host, remotePort: w.address.replPort, side: 'dialer', claimedNode: undefined, detail };
      this.warnTls('tls-failed', detail, socket, 'dialer', w.address.node);
      this.refusalObserver?.(refusal);
    });
    const link = new PeerLink(socket, 'dialer', this.localNode, this.secret, this.timings, this.log, w.address.node, sink);
    w.dialing = link;
    link.once('closed', (reason: string) => {
      if (w.dialing === link) w.dialing = undefined;
      if (refusal && !link.isReady) this.emit('dial-refused', w.address.node, refusal);
      if (this.wanted.get(w.address.node) === w && !this.isUp(w.address.node)) this.scheduleDial(w, reason);
    });
    this.adopt(link);
    const forward = link.refusalObserver;
    link.refusalObserver = (r) => {
      refusal = r;
      forward?.(r);
    };
  }

  /** TLS faults are something to fix: a warning per reason at most every 10 s (the rest at debug). */
  private warnTls(reason: LinkRefusalReason, detail: string, socket: net.Socket, side: 'acceptor' | 'dialer', peer?: string): void {
    if (reason !== 'tls-required' && reason !== 'tls-failed') return;
    const fields = { remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, side, peer: peer ?? null, reason, detail };
    if (this.tlsWarnings.take(reason)) this.log.warn(fields, 'replication connection refused (TLS); more of these within 10 s are logged at debug');
    else this.log.debug(fields, 'replication connection refused (TLS)');
  }

  private scheduleDial(w: Wanted, reason: string): void {
    clearTimeout(w.timer);
    const jitter = 0.8 + Math.random() * 0.4;
    const delay = Math.round(w.delayMs * jitter);
    this.log.debug({ peer: w.address.node, delayMs: delay, reason }, 'will redial peer');
    w.timer = setTimeout(() => this.dial(w), delay);
    w.timer.unref();
    w.delayMs = Math.min(reconnectMaxDelayMs, w.delayMs * 2);
  }

  private adopt(link: PeerLink): void {
    this.handshaking.add(link);
    link.refusalObserver = (refusal) => this.refusalObserver?.(refusal);
    link.requestHandler = (type, payload, l) => {
      const handler = this.requestHandler;
      if (!handler) return Promise.reject(new TricopyError('unavailable', 'replication is not ready'));
      return handler(type, payload, l);
    };
    link.once('ready', () => {
      this.handshaking.delete(link);
      const node = link.peerNode!;
      const current = this.links.get(node);
      if (current?.isReady) {
        if (!keepsNewLink(link, current, this.localNode, node)) {
          link.close('duplicate link');
          return;
        }
        this.links.set(node, link);
        current.close('duplicate link');
      } else {
        this.links.set(node, link);
      }
      const w = this.wanted.get(node);
      if (w) {
        w.delayMs = reconnectInitialDelayMs;
        clearTimeout(w.timer);
      }
      this.log.info({ peer: node, remote: link.remote, side: link.side }, 'replication link up');
      this.emit('peer-up', node);
    });
    link.once('closed', (reason: string) => {
      this.handshaking.delete(link);
      const node = link.peerNode;
      if (node === undefined || this.links.get(node) !== link) return;
      this.links.delete(node);
      this.log.warn({ peer: node, reason }, 'replication link down');
      this.emit('peer-down', node, reason);
      const w = this.wanted.get(node);
      if (w && !w.dialing && !this.closed) this.scheduleDial(w, reason);
    });
  }
}
