// The links of one relay, all on its one --listen port: to other relays (under its own name) and to
// attached storage nodes (under the name of the virtual storage each node dials: the node it pairs
// with, spec 002 §5.3). Every link is a replication PeerLink: framing with checksums, the mutual
// handshake on the cluster secret, heartbeats, multiplexed requests. Links are keyed by
// (kind, peer, the name this end answers as); a pair of links dialed both ways is resolved by the
// same rule the storage nodes use, so both ends keep the same one.
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { TricopyError } from '../common/errors';
import type { Logger } from '../common/log';
import { PeerLink, keepsNewLink, linkReceiveBufferBytes, type LinkRefusal, type LinkTimings } from '../replication/transport/link';
import { ReceiveSink } from '../common/fast-socket';
import { LinkTlsAcceptor, LinkTlsRefused, RateLimitedWarnings, dialLinkSocket, onTlsDialFailure, type LinkTlsConfig } from '../replication/transport/link-tls';
import type { MessageType } from '../replication/transport/messages';
import { assertLinkLimits, maxAuthenticatedLinks, maxUnauthenticatedLinks, reconnectInitialDelayMs, reconnectMaxDelayMs } from '../replication/transport/peers';

export type LinkKind = 'relay' | 'storage';

export interface LinkTarget {
  kind: LinkKind;
  /** The other end's name. */
  peer: string;
  /** The name this end has on the link (this relay's, or a virtual storage's). */
  local: string;
  host: string;
  port: number;
}

/** How an accepted connection is admitted: as a relay link, as a storage link under a name, or refused. */
export type Admission = { kind: LinkKind; local: string } | { refuse: string };

export type LinkRequestHandler = (link: PeerLink, kind: LinkKind, type: MessageType, payload: Buffer) => Promise<Buffer | Buffer[] | void>;

export function linkKey(kind: LinkKind, peer: string, local: string): string {
  return kind === 'relay' ? `relay:${peer}` : `storage:${peer}:${local}`;
}

interface Wanted {
  target: LinkTarget;
  timer: NodeJS.Timeout | undefined;
  delayMs: number;
  dialing: PeerLink | undefined;
}

/** Emits 'up' (key, kind, peer, local) and 'down' (key, kind, peer, local, reason). */
export class RelayLinks extends EventEmitter {
  private readonly server: net.Server;
  private readonly links = new Map<string, PeerLink>();
  private readonly kinds = new WeakMap<PeerLink, LinkKind>();
  private readonly wanted = new Map<string, Wanted>();
  private readonly handshaking = new Set<PeerLink>();
  private readonly unauthenticated = new Set<PeerLink>();
  /** Accepted connections whose first bytes or TLS handshake are awaited (they count as unauthenticated). */
  private tlsPending = 0;
  private readonly tlsAcceptor: LinkTlsAcceptor;
  private readonly tlsWarnings = new RateLimitedWarnings(10_000);
  private closed = false;
  requestHandler: LinkRequestHandler | undefined;
  refusedConnections = 0;
  lastRefusal: (LinkRefusal & { at: string }) | undefined;

  constructor(
    readonly name: string,
    private readonly secret: Buffer | undefined,
    private readonly timings: LinkTimings,
    private readonly log: Logger,
    private readonly admit: (dialer: string, expect: string | undefined) => Admission,
    /** TLS on this relay's links (accepted and dialed); undefined: plain only. */
    private tls: LinkTlsConfig | undefined = undefined,
  ) {
    super();
    assertLinkLimits(timings);
    this.tlsAcceptor = new LinkTlsAcceptor(tls, timings.handshakeTimeoutMs);
    this.server = net.createServer((socket) => this.accept(socket));
    this.server.on('error', (err) => log.error({ err }, 'relay listener error'));
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

  get(kind: LinkKind, peer: string, local: string): PeerLink | undefined {
    const link = this.links.get(linkKey(kind, peer, local));
    return link?.isReady ? link : undefined;
  }

  /** Ready links, for status. */
  /** New TLS files' contents: dials and accepts from now on use them; links already up keep their session. */
  reloadTls(next: LinkTlsConfig | undefined): void {
    this.tlsAcceptor.reload(next);
    this.tls = next;
  }

  list(): Array<{ kind: LinkKind; peer: string; local: string; up: boolean; tls: boolean }> {
    const out = new Map<string, { kind: LinkKind; peer: string; local: string; up: boolean; tls: boolean }>();
    for (const w of this.wanted.values()) out.set(linkKey(w.target.kind, w.target.peer, w.target.local), { kind: w.target.kind, peer: w.target.peer, local: w.target.local, up: false, tls: false });
    for (const [key, link] of this.links) {
      if (link.isReady) out.set(key, { kind: this.kinds.get(link)!, peer: link.peerNode!, local: link.localName, up: true, tls: link.encrypted });
    }
    return [...out.values()].sort((a, b) => `${a.kind}${a.peer}${a.local}`.localeCompare(`${b.kind}${b.peer}${b.local}`));
  }

  /** Keeps a link to `target` up, dialing with capped back-off, until `release`. Address changes are taken. */
  want(target: LinkTarget): void {
    if (this.closed) return;
    const key = linkKey(target.kind, target.peer, target.local);
    const existing = this.wanted.get(key);
    if (existing) {
      existing.target = target;
      return;
    }
    const w: Wanted = { target, timer: undefined, delayMs: reconnectInitialDelayMs, dialing: undefined };
    this.wanted.set(key, w);
    if (!this.links.get(key)?.isReady) this.dial(w);
  }

  release(kind: LinkKind, peer: string, local: string): void {
    const key = linkKey(kind, peer, local);
    const w = this.wanted.get(key);
    if (!w) return;
    clearTimeout(w.timer);
    this.wanted.delete(key);
  }

  wantedTargets(): LinkTarget[] {
    return [...this.wanted.values()].map((w) => w.target);
  }

  /** The link to `target`, dialing now if it is down; rejects after `timeoutMs`. */
  connect(target: LinkTarget, timeoutMs: number): Promise<PeerLink> {
    const key = linkKey(target.kind, target.peer, target.local);
    const ready = this.links.get(key);
    if (ready?.isReady) return Promise.resolve(ready);
    this.want(target);
    const w = this.wanted.get(key);
    if (w && !w.dialing) {
      clearTimeout(w.timer);
      w.delayMs = reconnectInitialDelayMs;
      this.dial(w);
    }
    return new Promise((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.removeListener('up', onUp);
      };
      const timer = setTimeout(() => {
        done();
        reject(new TricopyError('unavailable', `${target.kind === 'relay' ? 'relay' : 'storage node'} ${target.peer} is not reachable at ${target.host}:${target.port}`));
      }, timeoutMs);
      const onUp = (upKey: string): void => {
        if (upKey !== key) return;
        done();
        resolve(this.links.get(key)!);
      };
      this.on('up', onUp);
    });
  }

  /** Closes a link (it is dialed again if wanted). */
  disconnect(kind: LinkKind, peer: string, local: string, reason: string): void {
    this.links.get(linkKey(kind, peer, local))?.close(reason);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.wanted.values()) clearTimeout(w.timer);
    this.wanted.clear();
    for (const link of [...this.links.values(), ...this.handshaking]) link.close('relay shutting down');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    if (this.closed) return void socket.destroy();
    const refuse = (detail: string): void => {
      this.refusedConnections++;
      this.lastRefusal = {
        reason: 'too-many-connections', remoteAddress: socket.remoteAddress ?? '?', remotePort: socket.remotePort ?? 0, side: 'acceptor', claimedNode: undefined, detail,
        at: new Date().toISOString(),
      };
      this.log.debug({ remote: `${socket.remoteAddress}:${socket.remotePort}`, detail }, 'relay connection refused');
      socket.destroy();
    };
    if (!this.secret) return refuse('no cluster secret is configured on this relay');
    if (this.unauthenticated.size + this.tlsPending >= maxUnauthenticatedLinks) return refuse('too many connections in their handshake');
    if (this.links.size >= maxAuthenticatedLinks) return refuse('too many links');
    const secret = this.secret;
    this.tlsPending++;
    this.tlsAcceptor.accept(socket).then((linkSocket) => {
      this.tlsPending--;
      if (this.closed) return void linkSocket.destroy();
      this.acceptLink(linkSocket, secret);
    }, (err: LinkTlsRefused) => {
      this.tlsPending--;
      this.tlsRefused(err, socket, 'acceptor');
    });
  }

  /** A connection that TLS (or its absence) let through: the link handshake runs on it. */
  private acceptLink(socket: net.Socket, secret: Buffer): void {
    const link = new PeerLink(socket, 'acceptor', this.name, secret, this.timings, this.log);
    link.acceptorIdentity = (dialer, expect) => {
      const admission = this.admit(dialer, expect);
      if ('refuse' in admission) return admission;
      this.kinds.set(link, admission.kind);
      return admission.local;
    };
    this.unauthenticated.add(link);
    const settled = (): void => {
      this.unauthenticated.delete(link);
    };
    link.once('ready', settled);
    link.once('closed', settled);
    this.adopt(link);
  }

  private dial(w: Wanted): void {
    const key = linkKey(w.target.kind, w.target.peer, w.target.local);
    if (this.closed || this.wanted.get(key) !== w) return;
    if (!this.secret) return;
    const t = w.target;
    const sink = new ReceiveSink(linkReceiveBufferBytes);
    const socket = dialLinkSocket(t.host, t.port, this.tls, sink);
    onTlsDialFailure(socket, (detail) => this.tlsRefused(new LinkTlsRefused('tls-failed', detail), socket, 'dialer', t.peer));
    const link = new PeerLink(socket, 'dialer', t.local, this.secret, this.timings, this.log, t.peer, sink);
    this.kinds.set(link, t.kind);
    w.dialing = link;
    link.once('closed', (reason: string) => {
      if (w.dialing === link) w.dialing = undefined;
      if (this.wanted.get(key) === w && !this.links.get(key)?.isReady) this.scheduleDial(w, reason);
    });
    this.adopt(link);
  }

  /** A connection refused for TLS: counted, shown in status, and logged (warnings rate-limited per reason). */
  private tlsRefused(err: LinkTlsRefused, socket: net.Socket, side: 'acceptor' | 'dialer', peer?: string): void {
    // Silence and early closes are counted like a link handshake's; only TLS faults are worth a warning.
    const reason = err.reason;
    if (side === 'acceptor') this.refusedConnections++;
    this.lastRefusal = {
      reason, remoteAddress: socket.remoteAddress ?? '?', remotePort: socket.remotePort ?? 0, side, claimedNode: peer, detail: err.message,
      at: new Date().toISOString(),
    };
    const fields = { remote: `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`, side, peer: peer ?? null, reason, detail: err.message };
    const tlsFault = reason === 'tls-required' || reason === 'tls-failed';
    if (tlsFault && this.tlsWarnings.take(reason)) this.log.warn(fields, 'relay connection refused (TLS); more of these within 10 s are logged at debug');
    else this.log.debug(fields, 'relay connection refused');
  }

  private scheduleDial(w: Wanted, reason: string): void {
    clearTimeout(w.timer);
    const delay = Math.round(w.delayMs * (0.8 + Math.random() * 0.4));
    this.log.debug({ peer: w.target.peer, as: w.target.local, delayMs: delay, reason }, 'will redial');
    w.timer = setTimeout(() => this.dial(w), delay);
    w.timer.unref();
    w.delayMs = Math.min(reconnectMaxDelayMs, w.delayMs * 2);
  }

  private adopt(link: PeerLink): void {
    this.handshaking.add(link);
    link.refusalObserver = (refusal) => {
      if (refusal.side === 'acceptor') this.refusedConnections++;
      this.lastRefusal = { ...refusal, at: new Date().toISOString() };
    };
    link.requestHandler = (type, payload, l) => {
      const handler = this.requestHandler;
      if (!handler) return Promise.reject(new TricopyError('unavailable', 'relay is not ready'));
      return handler(l, this.kinds.get(l)!, type, payload);
    };
    link.once('ready', () => {
      this.handshaking.delete(link);
      const kind = this.kinds.get(link)!;
      const peer = link.peerNode!;
      const local = link.localName;
      const key = linkKey(kind, peer, local);
      const current = this.links.get(key);
      if (current?.isReady) {
        if (!keepsNewLink(link, current, local, peer)) {
          link.close('duplicate link');
          return;
        }
        this.links.set(key, link);
        current.close('duplicate link');
      } else {
        this.links.set(key, link);
      }
      const w = this.wanted.get(key);
      if (w) {
        w.delayMs = reconnectInitialDelayMs;
        clearTimeout(w.timer);
      }
      this.log.info({ kind, peer, as: local, remote: link.remote, side: link.side }, 'relay link up');
      this.emit('up', key, kind, peer, local);
    });
    link.once('closed', (reason: string) => {
      this.handshaking.delete(link);
      const peer = link.peerNode;
      const kind = this.kinds.get(link);
      if (peer === undefined || kind === undefined) return;
      const key = linkKey(kind, peer, link.localName);
      if (this.links.get(key) !== link) return;
      this.links.delete(key);
      this.log.warn({ kind, peer, as: link.localName, reason }, 'relay link down');
      this.emit('down', key, kind, peer, link.localName, reason);
      const w = this.wanted.get(key);
      if (w && !w.dialing && !this.closed) this.scheduleDial(w, reason);
    });
  }
}
