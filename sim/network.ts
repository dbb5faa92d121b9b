// A simulated network between the nodes of a cluster, and each node incarnation's PeerTransport on
// it. A link between two nodes comes up when one of them wants it, both listen and nothing is cut
// between them; messages travel in order per direction with a random delay; a cut direction drops
// them, and each side declares the link dead after its peer timeout without hearing from the other
// (or at once when the other process died and its kernel closed the connection). Requests time out
// and are failed when the link goes down, as on the real link. Payloads are copied when sent, and a
// payload changed by its sender before it left is reported as a bug.
import { TricopyError, errorMessage } from '../src/common/errors';
import type { PeerAddress } from '../src/contracts/pairs';
import { MessageType, decodeErrorPayload, encodeErrorPayload } from '../src/replication/transport/messages';
import type { PeerRequestHandler, PeerTransport } from '../src/replication/transport/peer-transport';
import type { Random } from './random';
import type { Lifetime, Scheduler } from './scheduler';
import { freshCopy } from './fresh-bytes';

export interface LinkProfile {
  /** One-way delay in virtual milliseconds: base plus a random jitter. */
  delayMs: number;
  jitterMs: number;
}

export interface NetworkTimings {
  peerTimeoutMs: number;
  requestTimeoutMs: number;
  reconnectInitialDelayMs: number;
  reconnectMaxDelayMs: number;
}

export const defaultNetworkTimings: NetworkTimings = { peerTimeoutMs: 2000, requestTimeoutMs: 30_000, reconnectInitialDelayMs: 200, reconnectMaxDelayMs: 5000 };

interface Connection {
  id: number;
  a: string;
  b: string;
  /** Each side's view: up until that side declared the link dead. */
  upAt: Set<string>;
  /** Latest delivery time per direction, so messages stay in order. */
  lastDelivery: Map<string, number>;
  open: boolean;
  /** The incarnations at both ends when it was made. */
  ends: Map<string, SimTransport>;
}

/** Broken-on-purpose behaviour for the simulator's self-test. */
export interface NetworkSabotage {
  /** Requests of these types are answered "ok" at once, before they are delivered. */
  ackBeforeDelivery?: Set<MessageType>;
}

export class SimNetwork {
  private readonly endpoints = new Map<string, SimTransport>();
  private readonly cut = new Set<string>();
  private readonly profiles = new Map<string, LinkProfile>();
  private readonly connections = new Map<string, Connection>();
  private nextConnection = 1;
  sabotage: NetworkSabotage = {};
  /** Told of every message delivered (the trace, with SIM_TRACE_NET=1). */
  onMessage: ((line: string) => void) | undefined;
  /** Problems found in how the product used the transport (reported by the checker). */
  readonly misuse: string[] = [];

  constructor(private readonly scheduler: Scheduler, private readonly rng: Random, readonly timings: NetworkTimings = defaultNetworkTimings,
    private readonly defaultProfile: LinkProfile = { delayMs: 0.2, jitterMs: 0.8 }) {}

  /** The transport of a new incarnation of `node` (replaces the previous one). */
  attach(node: string, lifetime: Lifetime): SimTransport {
    const t = new SimTransport(this, node, lifetime);
    this.endpoints.set(node, t);
    return t;
  }

  /** The node's process is gone: its kernel closes its connections (kill) or nothing answers any more (power loss). */
  detach(node: string, how: 'kill' | 'power'): void {
    const t = this.endpoints.get(node);
    if (!t) return;
    t.listening = false;
    this.endpoints.delete(node);
    for (const c of this.connections.values()) {
      if (!c.open || (c.a !== node && c.b !== node)) continue;
      const other = c.a === node ? c.b : c.a;
      c.upAt.delete(node);
      if (how === 'kill' && !this.isCut(node, other)) this.closeSide(c, other, this.delay(node, other), 'connection closed by peer');
      else this.closeSide(c, other, this.timings.peerTimeoutMs + this.rng.next() * 500, `no heartbeat from ${node}`);
    }
  }

  setProfile(a: string, b: string, profile: LinkProfile): void {
    this.profiles.set(`${a}>${b}`, profile);
    this.profiles.set(`${b}>${a}`, profile);
  }

  /** Cuts one direction (from → to) or, with both, the whole link. */
  cutLink(from: string, to: string, both: boolean): void {
    this.cut.add(`${from}>${to}`);
    if (both) this.cut.add(`${to}>${from}`);
    const c = this.connections.get(key(from, to));
    if (!c || !c.open) return;
    // Each side that stops hearing from the other declares the link dead after its timeout.
    this.closeSide(c, to, this.timings.peerTimeoutMs + this.rng.next() * 500, `no heartbeat from ${from}`);
    if (both) this.closeSide(c, from, this.timings.peerTimeoutMs + this.rng.next() * 500, `no heartbeat from ${to}`);
  }

  heal(): void {
    this.cut.clear();
    this.profiles.clear();
    for (const t of this.endpoints.values()) t.redialSoon();
  }

  healLink(a: string, b: string): void {
    this.cut.delete(`${a}>${b}`);
    this.cut.delete(`${b}>${a}`);
    this.endpoints.get(a)?.redialSoon();
    this.endpoints.get(b)?.redialSoon();
  }

  isCut(from: string, to: string): boolean {
    return this.cut.has(`${from}>${to}`);
  }

  cuts(): string[] {
    return [...this.cut].sort();
  }

  endpoint(node: string): SimTransport | undefined {
    return this.endpoints.get(node);
  }

  delay(from: string, to: string): number {
    const p = this.profiles.get(`${from}>${to}`) ?? this.defaultProfile;
    return p.delayMs + this.rng.next() * p.jitterMs;
  }

  connection(a: string, b: string): Connection | undefined {
    const c = this.connections.get(key(a, b));
    return c?.open ? c : undefined;
  }

  /** The open connection between the current incarnations of both nodes, if any. */
  private current(a: string, b: string): Connection | undefined {
    const c = this.connection(a, b);
    return c && c.ends.get(a) === this.endpoints.get(a) && c.ends.get(b) === this.endpoints.get(b) ? c : undefined;
  }

  /** A dial from `from` to `to`: succeeds after a round trip when both listen and nothing is cut. */
  dial(from: string, to: string): void {
    if (this.current(from, to)) return;
    const rtt = this.delay(from, to) + this.delay(to, from);
    this.scheduler.schedule(rtt, () => {
      const a = this.endpoints.get(from);
      const b = this.endpoints.get(to);
      if (!a?.listening || !b?.listening || this.isCut(from, to) || this.isCut(to, from)) {
        this.onMessage?.(`${from} → ${to}: dial failed (${!a?.listening ? 'not listening' : !b?.listening ? 'peer not listening' : 'link cut'})`);
        a?.dialFailed(to);
        return;
      }
      if (this.current(from, to)) return;
      // A connection of an earlier incarnation that one side has not noticed is dead yet: the new
      // one replaces it (the real link manager keeps the newer of two links from one peer).
      const stale = this.connection(from, to);
      if (stale) {
        for (const side of [...stale.upAt]) {
          stale.upAt.delete(side);
          this.endpoints.get(side)?.peerDown(side === from ? to : from, 'replaced by a new connection');
        }
        stale.open = false;
      }
      const c: Connection = { id: this.nextConnection++, a: from, b: to, upAt: new Set([from, to]), lastDelivery: new Map(), open: true,
        ends: new Map([[from, a], [to, b]]) };
      this.onMessage?.(`${from} → ${to}: connected (#${c.id})`);
      this.connections.set(key(from, to), c);
      // The acceptor is ready first (it checks the dialer's proof), the dialer a moment later.
      b.peerUp(from);
      this.scheduler.schedule(this.delay(to, from), () => {
        if (c.open && c.upAt.has(from)) a.peerUp(to);
      });
    });
  }

  /** One side of a connection declares it dead after `afterMs` (then the other side, after its own delay). */
  closeSide(c: Connection, side: string, afterMs: number, reason: string): void {
    this.scheduler.schedule(afterMs, () => {
      if (!c.upAt.has(side)) return;
      c.upAt.delete(side);
      const other = c.a === side ? c.b : c.a;
      if (c.upAt.size === 0) {
        c.open = false;
        if (this.connections.get(key(c.a, c.b)) === c) this.connections.delete(key(c.a, c.b));
      } else if (!this.isCut(side, other)) {
        // Closing sends a FIN the other side hears.
        this.closeSide(c, other, this.delay(side, other), 'connection closed by peer');
      }
      if (c.upAt.size === 0) c.open = false;
      this.onMessage?.(`${side}: link #${c.id} to ${other} down (${reason})`);
      this.endpoints.get(side)?.peerDown(other, reason);
    });
  }

  /** Delivers `fn` at the receiving side in order, unless the direction is cut or the link died meanwhile. */
  deliver(c: Connection, from: string, to: string, fn: () => void): void {
    const dir = `${from}>${to}`;
    const at = Math.max(this.scheduler.now + this.delay(from, to), c.lastDelivery.get(dir) ?? 0);
    c.lastDelivery.set(dir, at);
    this.scheduler.schedule(at - this.scheduler.now, () => {
      if (!c.upAt.has(to) || !c.upAt.has(from) || this.isCut(from, to)) return;
      fn();
    });
  }
}

function key(a: string, b: string): string {
  return a < b ? `${a}|${b}` : `${b}|${a}`;
}

interface Pending {
  peer: string;
  reject: (err: Error) => void;
  done: boolean;
}

export class SimTransport implements PeerTransport {
  readonly hasSecret = true;
  listening = false;
  private handler: PeerRequestHandler | undefined;
  private readonly upListeners: Array<(node: string) => void> = [];
  private readonly downListeners: Array<(node: string, reason: string) => void> = [];
  private readonly wanted = new Map<string, { address: PeerAddress; delayMs: number; timer: boolean }>();
  private readonly pending = new Set<Pending>();
  private readonly upWaiters = new Set<{ node: string; resolve: () => void }>();
  private readonly upPeers = new Set<string>();

  constructor(private readonly net: SimNetwork, readonly node: string, private readonly lifetime: Lifetime) {}

  private get scheduler(): Scheduler {
    return (this.net as unknown as { scheduler: Scheduler }).scheduler;
  }

  listen(): Promise<number> {
    this.listening = true;
    for (const w of this.wanted.values()) this.net.dial(this.node, w.address.node);
    return Promise.resolve(7000);
  }

  close(): Promise<void> {
    this.listening = false;
    this.net.detach(this.node, 'kill');
    return Promise.resolve();
  }

  setRequestHandler(handler: PeerRequestHandler): void {
    this.handler = handler;
  }

  onPeerUp(listener: (node: string) => void): void {
    this.upListeners.push(listener);
  }

  onPeerDown(listener: (node: string, reason: string) => void): void {
    this.downListeners.push(listener);
  }

  isUp(node: string): boolean {
    return this.upPeers.has(node);
  }

  want(address: PeerAddress): void {
    const w = this.wanted.get(address.node);
    if (w) {
      w.address = address;
      return;
    }
    this.wanted.set(address.node, { address, delayMs: this.net.timings.reconnectInitialDelayMs, timer: false });
    if (this.listening && !this.isUp(address.node)) this.net.dial(this.node, address.node);
  }

  release(node: string): void {
    this.wanted.delete(node);
  }

  connectNow(address: PeerAddress, timeoutMs: number): Promise<unknown> {
    this.want(address);
    if (this.isUp(address.node)) return Promise.resolve();
    this.net.dial(this.node, address.node);
    return new Promise((resolve, reject) => {
      const waiter = { node: address.node, resolve: () => resolve(undefined) };
      this.upWaiters.add(waiter);
      this.scheduler.schedule(timeoutMs, () => {
        if (!this.upWaiters.delete(waiter)) return;
        reject(new TricopyError('unavailable', `node ${address.node} is not reachable`,
          'check that it runs, that its replication port is reachable, and that both nodes use the same cluster secret'));
      }, this.lifetime);
    });
  }

  request(node: string, type: MessageType, payload: Buffer | Buffer[], timeoutMs = this.net.timings.requestTimeoutMs): Promise<Buffer> {
    const c = this.net.connection(this.node, node);
    if (!c || !this.isUp(node)) return Promise.reject(new TricopyError('unavailable', `node ${node} is not connected`));
    const bytes = this.capture(payload, type);
    if (this.net.sabotage.ackBeforeDelivery?.has(type)) {
      this.net.deliver(c, this.node, node, () => void this.net.endpoint(node)?.receive(type, bytes, this.node).catch(() => undefined));
      return Promise.resolve(Buffer.alloc(0));
    }
    return new Promise((resolve, reject) => {
      const p: Pending = { peer: node, reject, done: false };
      this.pending.add(p);
      const finish = (fn: () => void): void => {
        if (p.done) return;
        p.done = true;
        this.pending.delete(p);
        fn();
      };
      this.scheduler.schedule(timeoutMs, () => finish(() => reject(new TricopyError('unavailable', `node ${node} did not answer within ${timeoutMs} ms`))), this.lifetime);
      this.net.deliver(c, this.node, node, () => {
        const receiver = this.net.endpoint(node);
        if (!receiver) return;
        this.net.onMessage?.(`${this.node} → ${node}: ${MessageType[type]} request`);
        receiver.receive(type, bytes, this.node).then((answer) => {
          const reply = freshCopy(answer === undefined ? [] : Array.isArray(answer) ? answer : [answer]);
          this.net.deliver(c, node, this.node, () => {
            this.net.onMessage?.(`${node} → ${this.node}: ${MessageType[type]} answer`);
            finish(() => resolve(reply));
          });
        }, (err: unknown) => {
          const encoded = encodeErrorPayload(err);
          this.net.deliver(c, node, this.node, () => {
            this.net.onMessage?.(`${node} → ${this.node}: ${MessageType[type]} error ${errorMessage(err)}`);
            finish(() => reject(decodeErrorPayload(encoded, node)));
          });
        });
      });
    });
  }

  send(node: string, type: MessageType, payload: Buffer | Buffer[]): void {
    const c = this.net.connection(this.node, node);
    if (!c || !this.isUp(node)) return;
    const bytes = this.capture(payload, type);
    this.net.deliver(c, this.node, node, () => void this.net.endpoint(node)?.receive(type, bytes, this.node).catch(() => undefined));
  }

  // --- called by the network -------------------------------------------------------------------

  receive(type: MessageType, payload: Buffer, from: string): Promise<Buffer | Buffer[] | void> {
    if (!this.handler) return Promise.reject(new TricopyError('unavailable', 'replication is not ready'));
    try {
      return this.handler(type, payload, from);
    } catch (err) {
      this.net.misuse.push(`${this.node}: the request handler threw instead of rejecting (${errorMessage(err)}); the real link would close`);
      return Promise.reject(err);
    }
  }

  peerUp(node: string): void {
    if (this.upPeers.has(node)) return;
    this.upPeers.add(node);
    const w = this.wanted.get(node);
    if (w) w.delayMs = this.net.timings.reconnectInitialDelayMs;
    for (const waiter of [...this.upWaiters]) {
      if (waiter.node !== node) continue;
      this.upWaiters.delete(waiter);
      waiter.resolve();
    }
    for (const l of this.upListeners) l(node);
  }

  peerDown(node: string, reason: string): void {
    if (!this.upPeers.delete(node)) return;
    const err = new TricopyError('unavailable', `link to ${node} lost: ${reason}`);
    for (const p of [...this.pending]) {
      if (p.peer !== node || p.done) continue;
      p.done = true;
      this.pending.delete(p);
      p.reject(err);
    }
    for (const l of this.downListeners) l(node, reason);
    this.redialLater(node, reason);
  }

  dialFailed(node: string): void {
    this.redialLater(node, 'dial failed');
  }

  redialSoon(): void {
    for (const [node, w] of this.wanted) {
      w.delayMs = this.net.timings.reconnectInitialDelayMs;
      if (this.listening && !this.isUp(node)) this.net.dial(this.node, node);
    }
  }

  private redialLater(node: string, _reason: string): void {
    const w = this.wanted.get(node);
    if (!w || w.timer || !this.listening) return;
    w.timer = true;
    const delay = w.delayMs * (0.8 + (this.net as unknown as { rng: Random }).rng.next() * 0.4);
    w.delayMs = Math.min(this.net.timings.reconnectMaxDelayMs, w.delayMs * 2);
    this.scheduler.schedule(delay, () => {
      w.timer = false;
      if (this.wanted.get(node) === w && this.listening && !this.isUp(node)) this.net.dial(this.node, node);
    }, this.lifetime);
  }

  /** Copies the payload now, and checks a moment later that the sender did not change it meanwhile. */
  private capture(payload: Buffer | Buffer[], type: MessageType): Buffer {
    const pieces = Array.isArray(payload) ? payload : [payload];
    const bytes = freshCopy(pieces);
    this.scheduler.schedule(0, () => {
      if (!samePieces(pieces, bytes)) this.net.misuse.push(`${this.node}: the payload of a ${type} message changed after it was handed to the transport`);
    });
    return bytes;
  }
}

/** `pieces` back to back equal `bytes` (Buffer.concat(pieces).equals(bytes) without the copy). */
function samePieces(pieces: readonly Buffer[], bytes: Buffer): boolean {
  let at = 0;
  for (const piece of pieces) {
    if (at + piece.length > bytes.length || !piece.equals(bytes.subarray(at, at + piece.length))) return false;
    at += piece.length;
  }
  return at === bytes.length;
}

export { errorMessage };
