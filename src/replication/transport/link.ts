// One authenticated connection to a peer node: framing with checksums, a mutual challenge-response
// handshake on the cluster secret, heartbeats, and multiplexed requests. Any protocol violation
// closes this connection only; the peer manager dials again. Until the peer has authenticated, only
// the next handshake message is accepted, and its size is checked on the frame header, so an
// unauthenticated peer cannot make the node buffer more than a handshake needs. Refusals are
// reported to an observer (classified by a small fixed set of reasons) before the connection closes.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { ByteQueue } from '../../common/byte-queue';
import { type DirectReads, type ReceiveSink, adoptWithReceiveBuffer } from '../../common/fast-socket';
import { TricopyError, errorMessage, invariant } from '../../common/errors';
import type { Logger } from '../../common/log';
import {
  FrameKind, type FrameHeader, decodeFrameHeader, frameChecksumValid, frameHeaderBytes, maxFramePayloadBytes,
  maxHandshakePayloadBytes, writeFrameHeader,
} from './frame';
import { defaultHandshakeTimeoutMs, defaultHeartbeatIntervalMs, defaultPeerTimeoutMs, defaultRequestTimeoutMs } from '../limits';
import { SendBuffer } from '../../common/send-buffer';
import {
  MessageType, authCodec, decodeErrorPayload, encodeErrorPayload, helloCodec, helloReplyCodec, responseError, responseOk,
} from './messages';

export const linkProtocolVersion = 1;

export interface LinkTimings {
  heartbeatIntervalMs: number;
  /** Silence after which the peer is declared dead. */
  peerTimeoutMs: number;
  handshakeTimeoutMs: number;
  requestTimeoutMs: number;
}

export const defaultLinkTimings: LinkTimings = {
  heartbeatIntervalMs: defaultHeartbeatIntervalMs,
  peerTimeoutMs: defaultPeerTimeoutMs,
  handshakeTimeoutMs: defaultHandshakeTimeoutMs,
  requestTimeoutMs: defaultRequestTimeoutMs,
};

/** A payload at least this large is read from the socket straight into its own buffer (adopted sockets). */
export const linkDirectReadMinBytes = 64 * 1024;
/** The fixed buffer an adopted socket reads headers and small frames into. */
export const linkReceiveBufferBytes = 256 * 1024;

export type RequestHandler = (type: MessageType, payload: Buffer, link: PeerLink) => Promise<Buffer | Buffer[] | void>;

/**
 * Who an accepting end answers as, given the dialer's name and the name it expects: a name, or why
 * the connection is refused. A storage node always answers as itself; a relay of a remote copy
 * network answers as the virtual storage the dialer asks for (spec 002 §5.3).
 */
export type AcceptorIdentity = (dialer: string, expect: string | undefined) => string | { refuse: string };

/**
 * Two ready links between the same ends (both dialed): keep the one dialed by the end whose name
 * sorts first. Two links from the same dialer mean the older one is dead but not yet detected: keep
 * the new one. Both ends decide alike, so they keep the same link.
 */
export function keepsNewLink(fresh: PeerLink, current: PeerLink, local: string, peer: string): boolean {
  return fresh.side === current.side || (fresh.side === 'dialer' ? local : peer) < (current.side === 'dialer' ? local : peer);
}

/** Why the replication port refused a peer or dropped a connection. A fixed set: it is a metric label. */
export const linkRefusalReasons = [
  'no-secret', 'too-many-connections', 'handshake-timeout', 'closed-before-auth', 'bad-frame', 'oversized-frame', 'bad-checksum',
  'unauthenticated-message', 'malformed-handshake', 'wrong-secret', 'wrong-node', 'protocol-violation', 'tls-required', 'tls-failed',
] as const;
export type LinkRefusalReason = (typeof linkRefusalReasons)[number];

export interface LinkRefusal {
  reason: LinkRefusalReason;
  remoteAddress: string;
  remotePort: number;
  /** Which end of the connection this node is. */
  side: 'dialer' | 'acceptor';
  /** The node name the peer gave in its handshake, if it got that far (not proven when refused). */
  claimedNode: string | undefined;
  detail: string;
}

export type LinkRefusalObserver = (refusal: LinkRefusal) => void;

/** A handshake or frame the link refuses, with the reason it is counted under. */
class LinkRefused extends Error {
  constructor(readonly reason: LinkRefusalReason, message: string) {
    super(message);
  }
}

/** The largest handshake payload this node's own messages can produce (schema maxima, every character escaped). */
export function largestHandshakePayloadBytes(): number {
  const worst = (n: number): string => '\u0000'.repeat(n); // JSON escapes it to six bytes
  return Math.max(
    helloCodec.encode({ protocol: linkProtocolVersion, node: worst(63), nonce: worst(128), expect: worst(63) }).length,
    helloReplyCodec.encode({ node: worst(63), nonce: worst(128), proof: worst(128) }).length,
    authCodec.encode({ proof: worst(128) }).length,
  );
}

interface PendingRequest {
  resolve: (payload: Buffer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Emits 'ready' (after authentication) and 'closed' (reason: string), once each. */
export class PeerLink extends EventEmitter {
  peerNode: string | undefined;
  private remoteText: string | undefined;
  private readonly queue = new ByteQueue();
  private header: FrameHeader | undefined;
  private headerBytes: Buffer | undefined;
  /** A large payload being read straight into its buffer, and how much of it has arrived. */
  private payload: Buffer | undefined;
  private payloadFill = 0;
  /** The socket reads into a fixed buffer and large payloads into their own (common/fast-socket.ts). */
  private readonly direct: boolean;
  private authenticated = false;
  private closedReason: string | undefined;
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private lastHeardAt = Date.now();
  private heartbeat: NodeJS.Timeout | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private readonly localNonce = randomBytes(32).toString('hex');
  private peerNonce = '';
  /** A name the peer gave but has not proven (kept only to name it in a refusal). */
  private claimedNode: string | undefined;
  requestHandler: RequestHandler | undefined;
  /** Told about every refusal of this connection (set right after construction). */
  refusalObserver: LinkRefusalObserver | undefined;
  private readonly out: SendBuffer;

  /** Decides the accepting end's name from the Hello (set right after construction); none: `localNode`. */
  acceptorIdentity: AcceptorIdentity | undefined;

  private readonly socket: net.Socket;

  constructor(
    socket: net.Socket,
    readonly side: 'dialer' | 'acceptor',
    private localNode: string,
    private readonly secret: Buffer,
    private readonly timings: LinkTimings,
    private readonly log: Logger,
    /** The node a dialer expects to reach. */
    private readonly expectedPeer?: string,
    /** A dialer's plain socket made with this sink's `onread` (dialLinkSocket). */
    sink?: ReceiveSink,
  ) {
    super();
    // A plain connection reads into a fixed buffer, and large payloads (replicated writes, journal
    // batches) straight into their own buffers: no buffer per socket read, no copy to assemble a
    // frame. An accepted socket is moved onto such a socket; a dialed one was made with the sink's
    // `onread`. A TLS socket reads as a stream.
    const plain = !(socket instanceof tls.TLSSocket);
    const adopted = side === 'acceptor' && plain ? this.adopt(socket) : undefined;
    const dialedWithSink = side === 'dialer' && plain && sink !== undefined;
    if (dialedWithSink) sink.bind((view) => this.onData(Buffer.from(view)), this.directReads());
    this.direct = adopted !== undefined || dialedWithSink;
    this.socket = adopted?.socket ?? socket;
    socket = this.socket;
    this.out = new SendBuffer(socket);
    this.rememberRemote();
    if (side === 'dialer') socket.once('connect', () => this.rememberRemote());
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    if (!this.direct) socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.lost(`socket error: ${err.message}`));
    socket.on('close', () => this.lost('connection closed by peer'));
    // An accepted socket arrives paused when its first bytes were looked at (link-tls.ts).
    if (!adopted) socket.resume();
    this.handshakeTimer = setTimeout(() => {
      // Only an accepting node counts a peer that never authenticates; a dialer just dials again.
      if (side === 'acceptor') this.refuse('handshake-timeout', `handshake not finished within ${timings.handshakeTimeoutMs} ms`);
      else this.close('handshake timed out');
    }, timings.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    if (side === 'dialer') {
      this.sendFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 },
        helloCodec.encode({ protocol: linkProtocolVersion, node: localNode, nonce: this.localNonce, ...(expectedPeer !== undefined ? { expect: expectedPeer } : {}) }));
    }
  }

  /**
   * Moves an accepted socket's connection onto a socket that reads into a fixed buffer. What the
   * old socket had buffered already (the first bytes link-tls.ts looked at) is read out first and
   * queued, so nothing is lost or reordered. Undefined when the socket cannot be moved.
   */
  private adopt(socket: net.Socket): { socket: net.Socket } | undefined {
    const buffered: Buffer[] = [];
    for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) buffered.push(chunk);
    const adopted = adoptWithReceiveBuffer(socket, (view) => this.onData(Buffer.from(view)), linkReceiveBufferBytes, this.directReads());
    if (!adopted) {
      for (const chunk of buffered.reverse()) socket.unshift(chunk);
      return undefined;
    }
    for (const chunk of buffered) this.queue.push(chunk);
    // Parsed once the link is constructed (a handshake frame may be among them).
    if (buffered.length > 0) setImmediate(() => this.onData(Buffer.alloc(0)));
    return { socket: adopted };
  }

  private directReads(): DirectReads {
    return {
      next: () => (this.directBytesAwaited() > 0 ? this.payload!.subarray(this.payloadFill) : undefined),
      filled: (n) => this.directFilled(n),
      awaiting: () => this.directBytesAwaited(),
    };
  }

  /** The rest of the large payload being received, when the socket reads it straight in; else 0. */
  private directBytesAwaited(): number {
    if (!this.payload || this.queue.length > 0 || this.closedReason !== undefined) return 0;
    return this.payload.length - this.payloadFill;
  }

  /** `n` bytes of the large payload arrived where the socket was told to put them. */
  private directFilled(n: number): void {
    if (!this.payload || this.closedReason !== undefined) return;
    this.payloadFill += n;
    invariant(this.payloadFill <= this.payload.length, 'a direct read never runs past the payload it fills');
    if (this.payloadFill === this.payload.length) this.onData(Buffer.alloc(0));
  }

  /** The name this end has on the link (an acceptor's may be chosen by `acceptorIdentity`). */
  get localName(): string {
    return this.localNode;
  }

  /** Whether this link runs inside TLS (in `optional` mode some links may be plain). */
  get encrypted(): boolean {
    return this.socket instanceof tls.TLSSocket;
  }

  /** Bytes handed to the socket and not yet sent (a slow link backs up here). */
  get bufferedBytes(): number {
    return this.socket.writableLength;
  }

  /** address:port of the other end ('?' until a dialer's socket has connected). */
  get remote(): string {
    return this.remoteText ?? '?';
  }

  /** Kept once known: a destroyed socket no longer says where it went. */
  private rememberRemote(): void {
    if (this.socket.remoteAddress !== undefined) this.remoteText = `${this.socket.remoteAddress}:${this.socket.remotePort ?? 0}`;
  }

  get isReady(): boolean {
    return this.authenticated && this.closedReason === undefined;
  }

  get isClosed(): boolean {
    return this.closedReason !== undefined;
  }

  /** Sends a request and resolves with the response payload; rejects with the peer's error. */
  request(type: MessageType, payload: Buffer | Buffer[], timeoutMs = this.timings.requestTimeoutMs): Promise<Buffer> {
    if (!this.isReady) {
      return Promise.reject(new TricopyError('unavailable', `link to ${this.peerNode ?? this.remote} is not connected`));
    }
    const bytes = Array.isArray(payload) ? payload.reduce((n, b) => n + b.length, 0) : payload.length;
    invariant(bytes <= maxFramePayloadBytes, `a ${MessageType[type]} of ${bytes} bytes exceeds the ${maxFramePayloadBytes}-byte frame limit`);
    const requestId = this.nextRequestId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(requestId);
        reject(new TricopyError('unavailable', `node ${this.peerNode} did not answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.pending.set(requestId, { resolve, reject, timer });
      this.sendFrame({ kind: FrameKind.Request, type, requestId, status: 0 }, payload);
    });
  }

  /** A one-way message (no answer). */
  send(type: MessageType, payload: Buffer | Buffer[]): void {
    if (this.isReady) this.sendFrame({ kind: FrameKind.Message, type, requestId: 0, status: 0 }, payload);
  }

  close(reason: string): void {
    if (this.closedReason !== undefined) return;
    this.closedReason = reason;
    clearTimeout(this.handshakeTimer);
    clearInterval(this.heartbeat);
    const err = new TricopyError('unavailable', `link to ${this.peerNode ?? this.remote} lost: ${reason}`);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(err);
    }
    this.pending.clear();
    this.socket.destroy();
    this.emit('closed', reason);
  }

  private sendFrame(h: Omit<FrameHeader, 'payloadLength'>, payload: Buffer | Buffer[]): void {
    if (this.socket.destroyed) return;
    const pieces = Array.isArray(payload) ? payload : [payload];
    let length = 0;
    for (const p of pieces) length += p.length;
    // Frames sent in one event-loop turn leave in one socket write (send-buffer.ts).
    const at = this.out.reserve(frameHeaderBytes);
    writeFrameHeader(this.out.slab, at, { ...h, payloadLength: length }, pieces);
    for (const p of pieces) this.out.append(p);
  }

  private onData(chunk: Buffer): void {
    this.queue.push(chunk);
    this.lastHeardAt = Date.now();
    if (this.payload) {
      // A large payload being filled: queued bytes (when a read went to the fixed buffer) go into it.
      const take = Math.min(this.queue.length, this.payload.length - this.payloadFill);
      if (take > 0) {
        this.queue.take(take).copy(this.payload, this.payloadFill);
        this.payloadFill += take;
      }
      if (this.payloadFill < this.payload.length) return;
    }
    while (this.closedReason === undefined) {
      if (!this.header) {
        if (this.queue.length < frameHeaderBytes) return;
        // A slice of a received chunk (never reused) or a fresh copy when it spans chunks: safe to keep.
        const bytes = this.queue.take(frameHeaderBytes);
        const decoded = decodeFrameHeader(bytes);
        if (!decoded.ok) return this.refuse(decoded.fault === 'oversized' ? 'oversized-frame' : 'bad-frame', decoded.error);
        // Before authentication, refused on the header: the payload is never waited for.
        if (!this.authenticated) {
          const refused = this.refusedBeforeAuthentication(decoded.header);
          if (refused) return this.refuse(refused.reason, refused.message);
        }
        this.header = decoded.header;
        this.headerBytes = bytes;
      }
      let payload: Buffer;
      if (this.payload) {
        payload = this.payload;
        this.payload = undefined;
        this.payloadFill = 0;
      } else if (this.queue.length < this.header.payloadLength) {
        if (this.direct && this.authenticated && this.header.payloadLength >= linkDirectReadMinBytes) {
          // The rest lands straight in the payload's buffer (directBytesAwaited), with what is queued first.
          this.payload = Buffer.allocUnsafe(this.header.payloadLength);
          this.payloadFill = this.queue.length;
          if (this.payloadFill > 0) this.queue.take(this.payloadFill).copy(this.payload);
        }
        return;
      } else {
        payload = this.queue.take(this.header.payloadLength);
      }
      const header = this.header;
      const headerBytes = this.headerBytes!;
      this.header = undefined;
      this.headerBytes = undefined;
      if (!frameChecksumValid(headerBytes, payload)) return this.refuse('bad-checksum', 'frame checksum mismatch');
      try {
        this.dispatch(header, payload);
      } catch (err) {
        const reason = err instanceof LinkRefused ? err.reason : this.authenticated ? 'protocol-violation' : 'malformed-handshake';
        return this.refuse(reason, errorMessage(err));
      }
    }
  }

  /** The one handshake message this end waits for next. */
  private expectedHandshakeMessage(): MessageType {
    if (this.side === 'acceptor') return this.peerNode === undefined ? MessageType.Hello : MessageType.Auth;
    return this.peerNode === undefined ? MessageType.HelloReply : MessageType.AuthOk;
  }

  private refusedBeforeAuthentication(h: FrameHeader): LinkRefused | undefined {
    const expected = this.expectedHandshakeMessage();
    if (h.kind !== FrameKind.Message || h.type !== expected) {
      return new LinkRefused('unauthenticated-message', `unauthenticated peer sent a ${FrameKind[h.kind]} frame of type ` +
        `${MessageType[h.type] ?? h.type} where the handshake expects ${MessageType[expected]}`);
    }
    if (h.payloadLength > maxHandshakePayloadBytes) {
      return new LinkRefused('oversized-frame', `unauthenticated peer announced a ${h.payloadLength}-byte ${MessageType[h.type]}; ` +
        `before authentication frames carry at most ${maxHandshakePayloadBytes} bytes`);
    }
    return undefined;
  }

  /** The connection ended from the other side or the network. */
  private lost(reason: string): void {
    if (this.closedReason === undefined && !this.authenticated && this.side === 'acceptor') {
      this.report('closed-before-auth', reason);
    }
    this.close(reason);
  }

  /** Reports a refusal to the observer and closes this connection. */
  private refuse(reason: LinkRefusalReason, detail: string): void {
    if (this.closedReason !== undefined) return;
    this.report(reason, detail);
    this.close(reason === 'handshake-timeout' ? 'handshake timed out' : `protocol violation: ${detail}`);
  }

  private report(reason: LinkRefusalReason, detail: string): void {
    // Per connection at debug only: an attack must not fill the disk with log lines. The observer
    // turns refusals into metrics and rate-limited events.
    this.log.debug({ peer: this.peerNode ?? null, remote: this.remote, side: this.side, reason, detail }, 'replication connection refused');
    this.refusalObserver?.({
      reason, remoteAddress: this.socket.remoteAddress ?? '?', remotePort: this.socket.remotePort ?? 0, side: this.side,
      claimedNode: this.peerNode ?? this.claimedNode, detail,
    });
  }

  private dispatch(h: FrameHeader, payload: Buffer): void {
    if (!this.authenticated) {
      this.handshakeStep(h, payload);
      return;
    }
    if (h.kind === FrameKind.Response) {
      const p = this.pending.get(h.requestId);
      if (!p) return; // answered after its timeout: nobody waits any more
      this.pending.delete(h.requestId);
      clearTimeout(p.timer);
      if (h.status === responseOk) p.resolve(payload);
      else p.reject(decodeErrorPayload(payload, this.peerNode ?? this.remote));
      return;
    }
    if (h.type === MessageType.Ping) return; // lastHeardAt already moved
    const handler = this.requestHandler;
    const kind = h.kind;
    const requestId = h.requestId;
    if (!handler) {
      if (kind === FrameKind.Request) this.respondError(h.type, requestId, new TricopyError('unavailable', 'node is not ready for replication'));
      return;
    }
    handler(h.type, payload, this).then(
      (response) => {
        if (kind === FrameKind.Request && !this.isClosed) {
          this.sendFrame({ kind: FrameKind.Response, type: h.type, requestId, status: responseOk }, response ?? Buffer.alloc(0));
        }
      },
      (err: unknown) => {
        if (kind === FrameKind.Request && !this.isClosed) this.respondError(h.type, requestId, err);
        else this.log.warn({ peer: this.peerNode, type: h.type, err: errorMessage(err) }, 'replication message failed');
      },
    );
  }

  private respondError(type: number, requestId: number, err: unknown): void {
    this.sendFrame({ kind: FrameKind.Response, type, requestId, status: responseError }, encodeErrorPayload(err));
  }

  private proof(role: 'dialer' | 'acceptor', dialerNonce: string, acceptorNonce: string, dialerNode: string, acceptorNode: string): string {
    return createHmac('sha256', this.secret).update(`tricopy-link-v1\n${role}\n${dialerNonce}\n${acceptorNonce}\n${dialerNode}\n${acceptorNode}`).digest('hex');
  }

  /** One handshake message, already checked to be the one expected next (see refusedBeforeAuthentication). */
  private handshakeStep(h: FrameHeader, payload: Buffer): void {
    if (this.side === 'acceptor') {
      if (h.type === MessageType.Hello && this.peerNode === undefined) {
        const hello = helloCodec.decode(payload);
        if (hello.protocol !== linkProtocolVersion) {
          throw new LinkRefused('malformed-handshake', `peer speaks link protocol ${hello.protocol}, this node ${linkProtocolVersion}`);
        }
        if (this.acceptorIdentity) {
          const identity = this.acceptorIdentity(hello.node, hello.expect);
          if (typeof identity !== 'string') {
            this.claimedNode = hello.node;
            throw new LinkRefused('wrong-node', identity.refuse);
          }
          this.localNode = identity;
        }
        this.peerNode = hello.node;
        this.peerNonce = hello.nonce;
        const proof = this.proof('acceptor', hello.nonce, this.localNonce, hello.node, this.localNode);
        this.sendFrame({ kind: FrameKind.Message, type: MessageType.HelloReply, requestId: 0, status: 0 },
          helloReplyCodec.encode({ node: this.localNode, nonce: this.localNonce, proof }));
        return;
      }
      if (h.type === MessageType.Auth && this.peerNode !== undefined) {
        const auth = authCodec.decode(payload);
        const expected = this.proof('dialer', this.peerNonce, this.localNonce, this.peerNode, this.localNode);
        if (!proofsEqual(auth.proof, expected)) throw new LinkRefused('wrong-secret', 'peer failed authentication (wrong cluster secret)');
        this.sendFrame({ kind: FrameKind.Message, type: MessageType.AuthOk, requestId: 0, status: 0 }, Buffer.alloc(0));
        this.becomeReady();
        return;
      }
      throw new LinkRefused('unauthenticated-message', `unauthenticated peer sent message type ${h.type}`);
    }
    // Dialer.
    if (h.type === MessageType.HelloReply && this.peerNode === undefined) {
      const reply = helloReplyCodec.decode(payload);
      if (this.expectedPeer !== undefined && reply.node !== this.expectedPeer) {
        throw new LinkRefused('wrong-node', `expected node ${this.expectedPeer} at ${this.remote} but reached ${reply.node}`);
      }
      const expected = this.proof('acceptor', this.localNonce, reply.nonce, this.localNode, reply.node);
      if (!proofsEqual(reply.proof, expected)) {
        this.claimedNode = reply.node;
        throw new LinkRefused('wrong-secret', `peer ${reply.node} does not know the cluster secret`);
      }
      this.peerNode = reply.node;
      this.peerNonce = reply.nonce;
      this.sendFrame({ kind: FrameKind.Message, type: MessageType.Auth, requestId: 0, status: 0 },
        authCodec.encode({ proof: this.proof('dialer', this.localNonce, reply.nonce, this.localNode, reply.node) }));
      return;
    }
    if (h.type === MessageType.AuthOk && this.peerNode !== undefined) {
      this.becomeReady();
      return;
    }
    throw new LinkRefused('unauthenticated-message', `peer sent message type ${h.type} during the handshake`);
  }

  private becomeReady(): void {
    this.authenticated = true;
    clearTimeout(this.handshakeTimer);
    this.lastHeardAt = Date.now();
    this.heartbeat = setInterval(() => {
      const silentMs = Date.now() - this.lastHeardAt;
      if (silentMs > this.timings.peerTimeoutMs) {
        this.close(`no heartbeat from ${this.peerNode} for ${silentMs} ms`);
        return;
      }
      this.sendFrame({ kind: FrameKind.Message, type: MessageType.Ping, requestId: 0, status: 0 }, Buffer.alloc(0));
    }, this.timings.heartbeatIntervalMs);
    this.heartbeat.unref();
    this.emit('ready');
  }
}

function proofsEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}
