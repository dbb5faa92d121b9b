// One authenticated connection to a peer node: framing with checksums, a mutual challenge-response
// handshake on the cluster secret, heartbeats, and multiplexed requests. Any protocol violation
// closes this connection only; the peer manager dials again.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type * as net from 'node:net';
import { ByteQueue } from '../../common/byte-queue';
import { TricopyError, errorMessage, invariant } from '../../common/errors';
import type { Logger } from '../../common/log';
import { FrameKind, type FrameHeader, decodeFrameHeader, encodeFrameHeader, frameChecksumValid, frameHeaderBytes, maxFramePayloadBytes } from './frame';
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
  heartbeatIntervalMs: 1000,
  peerTimeoutMs: 4000,
  handshakeTimeoutMs: 5000,
  requestTimeoutMs: 30_000,
};

export type RequestHandler = (type: MessageType, payload: Buffer, link: PeerLink) => Promise<Buffer | Buffer[] | void>;

interface PendingRequest {
  resolve: (payload: Buffer) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/** Emits 'ready' (after authentication) and 'closed' (reason: string), once each. */
export class PeerLink extends EventEmitter {
  peerNode: string | undefined;
  readonly remote: string;
  private readonly queue = new ByteQueue();
  private header: FrameHeader | undefined;
  private headerBytes: Buffer | undefined;
  private authenticated = false;
  private closedReason: string | undefined;
  private readonly pending = new Map<number, PendingRequest>();
  private nextRequestId = 1;
  private lastHeardAt = Date.now();
  private heartbeat: NodeJS.Timeout | undefined;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private readonly localNonce = randomBytes(32).toString('hex');
  private peerNonce = '';
  requestHandler: RequestHandler | undefined;

  constructor(
    private readonly socket: net.Socket,
    readonly side: 'dialer' | 'acceptor',
    private readonly localNode: string,
    private readonly secret: Buffer,
    private readonly timings: LinkTimings,
    private readonly log: Logger,
    /** The node a dialer expects to reach. */
    private readonly expectedPeer?: string,
  ) {
    super();
    this.remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`;
    socket.setNoDelay(true);
    socket.setKeepAlive(true, 10_000);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.close(`socket error: ${err.message}`));
    socket.on('close', () => this.close('connection closed by peer'));
    this.handshakeTimer = setTimeout(() => this.close('handshake timed out'), timings.handshakeTimeoutMs);
    this.handshakeTimer.unref();
    if (side === 'dialer') {
      this.sendFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 },
        helloCodec.encode({ protocol: linkProtocolVersion, node: localNode, nonce: this.localNonce }));
    }
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
    if (!this.corked) {
      // Frames sent in one event-loop turn leave in one writev.
      this.corked = true;
      this.socket.cork();
      setImmediate(this.uncork);
    }
    this.socket.write(encodeFrameHeader({ ...h, payloadLength: length }, pieces));
    for (const p of pieces) if (p.length > 0) this.socket.write(p);
  }

  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.socket.uncork();
  };

  private onData(chunk: Buffer): void {
    this.queue.push(chunk);
    this.lastHeardAt = Date.now();
    while (this.closedReason === undefined) {
      if (!this.header) {
        if (this.queue.length < frameHeaderBytes) return;
        const bytes = Buffer.from(this.queue.take(frameHeaderBytes));
        const decoded = decodeFrameHeader(bytes);
        if (!decoded.ok) return this.violation(decoded.error);
        this.header = decoded.header;
        this.headerBytes = bytes;
      }
      if (this.queue.length < this.header.payloadLength) return;
      const payload = this.queue.take(this.header.payloadLength);
      const header = this.header;
      const headerBytes = this.headerBytes!;
      this.header = undefined;
      this.headerBytes = undefined;
      if (!frameChecksumValid(headerBytes, payload)) return this.violation('frame checksum mismatch');
      try {
        this.dispatch(header, payload);
      } catch (err) {
        return this.violation(errorMessage(err));
      }
    }
  }

  private violation(reason: string): void {
    this.log.warn({ peer: this.peerNode ?? null, remote: this.remote, reason }, 'replication link dropped: protocol violation');
    this.close(`protocol violation: ${reason}`);
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

  private handshakeStep(h: FrameHeader, payload: Buffer): void {
    if (h.kind !== FrameKind.Message) throw new Error(`unauthenticated peer sent a ${FrameKind[h.kind]} frame`);
    if (this.side === 'acceptor') {
      if (h.type === MessageType.Hello && this.peerNode === undefined) {
        const hello = helloCodec.decode(payload);
        if (hello.protocol !== linkProtocolVersion) throw new Error(`peer speaks link protocol ${hello.protocol}, this node ${linkProtocolVersion}`);
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
        if (!proofsEqual(auth.proof, expected)) {
          this.log.warn({ peer: this.peerNode, remote: this.remote }, 'refused unauthenticated peer: wrong cluster secret');
          throw new Error('peer failed authentication (wrong cluster secret)');
        }
        this.sendFrame({ kind: FrameKind.Message, type: MessageType.AuthOk, requestId: 0, status: 0 }, Buffer.alloc(0));
        this.becomeReady();
        return;
      }
      throw new Error(`unauthenticated peer sent message type ${h.type}`);
    }
    // Dialer.
    if (h.type === MessageType.HelloReply && this.peerNode === undefined) {
      const reply = helloReplyCodec.decode(payload);
      if (this.expectedPeer !== undefined && reply.node !== this.expectedPeer) {
        throw new Error(`expected node ${this.expectedPeer} at ${this.remote} but reached ${reply.node}`);
      }
      const expected = this.proof('acceptor', this.localNonce, reply.nonce, this.localNode, reply.node);
      if (!proofsEqual(reply.proof, expected)) {
        this.log.warn({ peer: reply.node, remote: this.remote }, 'refused peer: it does not know the cluster secret');
        throw new Error('peer failed authentication (wrong cluster secret)');
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
    throw new Error(`peer sent message type ${h.type} during the handshake`);
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
