// A fault-injecting TCP proxy for integration tests. It owns one listener in front of one target and
// every connection made through it, and can cut them (RST), black-hole them, stop deliveries to
// clients at a byte count, add latency and cap throughput; latency and throughput apply per
// direction through a FIFO, so bytes never reorder.
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';

export interface FaultProxyOptions {
  targetHost: string;
  targetPort: number;
  /** Default 127.0.0.1. */
  listenHost?: string;
  /** Default 0: any free port. */
  listenPort?: number;
}

export interface BytesForwarded {
  toTarget: number;
  toClient: number;
}

/** A bandwidth limit releases bytes in slices worth this much link time: smooth pacing, few timers. */
const bandwidthSliceMs = 10;
/** Bytes held back (delayed or throttled) per direction above which the sending socket is paused. */
const maxQueuedBytes = 4 * 1024 * 1024;

type Faults = Readonly<{ delayMs: number; bytesPerSecond: number; blackholed: boolean; stalled: boolean }>;

/** How many more bytes a lane may deliver before it holds the rest (Infinity: no limit). */
type Allowance = () => number;

/** Destroys with RST where possible, so the peer sees a reset at once rather than a clean FIN. */
function sever(socket: net.Socket): void {
  if (socket.destroyed) return;
  try {
    if (!socket.connecting && typeof socket.resetAndDestroy === 'function') return void socket.resetAndDestroy();
  } catch {
    // not a TCP handle after all: a plain destroy below
  }
  socket.destroy();
}

type Pending = { data: Buffer; readyAtMs: number };

/** One direction of one connection: releases chunks in arrival order, after their delay and at the link rate. */
class Lane {
  private readonly queue: Pending[] = [];
  private queuedBytes = 0;
  private timer: NodeJS.Timeout | null = null;
  private waitingDrain = false;
  private pausedSource = false;
  private linkFreeAtMs = 0;
  private sourceEnded = false;
  private endSent = false;
  private disposed = false;

  constructor(private readonly source: net.Socket, private readonly dest: net.Socket, private readonly faults: Faults,
    private readonly onForwarded: (bytes: number) => void, private readonly allowance: Allowance = () => Infinity) {
    source.on('data', (chunk: Buffer) => this.receive(chunk));
    source.on('end', () => {
      this.sourceEnded = true;
      this.kick();
    });
  }

  /** Drops everything held back: a black hole loses the bytes in flight too. */
  discard(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.resumeSourceIfRoom();
  }

  dispose(): void {
    this.disposed = true;
    this.discard();
  }

  /** Delivers whatever is due now and arms a timer for the rest (unless already armed or waiting for drain). */
  kick(): void {
    if (!this.timer && !this.waitingDrain) this.pump();
  }

  private receive(chunk: Buffer): void {
    if (this.disposed || this.faults.blackholed) return;
    this.queue.push({ data: chunk, readyAtMs: performance.now() + this.faults.delayMs });
    this.queuedBytes += chunk.length;
    if (this.queuedBytes > maxQueuedBytes && !this.pausedSource) {
      this.pausedSource = true;
      this.source.pause();
    }
    this.kick();
  }

  private pump(): void {
    this.timer = null;
    if (this.disposed || this.faults.blackholed || this.faults.stalled) return;
    while (this.queue.length > 0) {
      if (this.dest.destroyed) return this.discard();
      const head = this.queue[0]!;
      const bytesPerSecond = this.faults.bytesPerSecond;
      // Past the allowance the lane holds its bytes like a stall, until restore() kicks it.
      const room = this.allowance();
      if (room <= 0) return this.resumeSourceIfRoom();
      let bytes = Math.min(head.data.length, room);
      let dueAtMs = head.readyAtMs;
      if (bytesPerSecond > 0) {
        // The slice goes out once the link has had time to carry it after the previous one.
        bytes = Math.min(bytes, Math.max(1, Math.floor((bytesPerSecond * bandwidthSliceMs) / 1000)));
        dueAtMs = Math.max(head.readyAtMs, this.linkFreeAtMs) + (bytes * 1000) / bytesPerSecond;
      }
      const nowMs = performance.now();
      if (dueAtMs > nowMs) {
        this.timer = setTimeout(() => this.pump(), Math.ceil(dueAtMs - nowMs));
        return this.resumeSourceIfRoom();
      }
      if (bytesPerSecond > 0) this.linkFreeAtMs = dueAtMs;
      const slice = head.data.subarray(0, bytes);
      head.data = head.data.subarray(bytes);
      if (head.data.length === 0) this.queue.shift();
      this.queuedBytes -= bytes;
      this.onForwarded(bytes);
      if (!this.dest.write(slice)) {
        this.waitingDrain = true;
        this.dest.once('drain', () => {
          this.waitingDrain = false;
          this.kick();
        });
        return this.resumeSourceIfRoom();
      }
    }
    this.resumeSourceIfRoom();
    // A FIN is passed on only after the delayed data before it (and not into a black hole).
    if (this.sourceEnded && !this.endSent && !this.dest.destroyed) {
      this.endSent = true;
      this.dest.end();
    }
  }

  private resumeSourceIfRoom(): void {
    if (this.pausedSource && this.queuedBytes <= maxQueuedBytes) {
      this.pausedSource = false;
      this.source.resume();
    }
  }
}

/** A client connection and its connection to the target, with a lane each way. */
class Connection {
  readonly lanes: Lane[];
  private openSockets = 2;

  constructor(private readonly client: net.Socket, private readonly target: net.Socket, faults: Faults,
    counters: BytesForwarded, toClientAllowance: Allowance, onClosed: (connection: Connection) => void) {
    const toTarget = new Lane(client, target, faults, (n) => (counters.toTarget += n));
    const toClient = new Lane(target, client, faults, (n) => (counters.toClient += n), toClientAllowance);
    this.lanes = [toTarget, toClient];
    const watch = (socket: net.Socket, other: net.Socket, laneInto: Lane): void => {
      socket.on('error', () => undefined); // reported as close(hadError) below
      socket.on('close', (hadError: boolean) => {
        laneInto.dispose();
        // A reset (or a failed connect to the target) is passed on as a reset; a clean close needs
        // nothing, the lanes have already passed its FIN on.
        if (hadError) sever(other);
        if (--this.openSockets === 0) {
          for (const lane of this.lanes) lane.dispose();
          onClosed(this);
        }
      });
    };
    watch(client, target, toClient);
    watch(target, client, toTarget);
  }

  /** Closes both sides: with RST (a cable pulled) or plainly. */
  close(reset: boolean): void {
    for (const lane of this.lanes) lane.dispose();
    for (const socket of [this.client, this.target]) {
      if (reset) sever(socket);
      else socket.destroy();
    }
  }
}

export class FaultProxy {
  private readonly faults = { delayMs: 0, bytesPerSecond: 0, blackholed: false, stalled: false };
  private readonly counters: BytesForwarded = { toTarget: 0, toClient: 0 };
  private readonly connections = new Set<Connection>();
  /** Total bytes to clients (counted since start) after which they are held; Infinity: none. */
  private toClientLimitBytes = Infinity;
  private cutActive = false;
  private closing: Promise<void> | null = null;

  private constructor(private readonly server: net.Server, readonly port: number, private readonly options: FaultProxyOptions) {
    server.on('connection', (socket: net.Socket) => this.accept(socket));
    server.on('error', () => undefined); // e.g. EMFILE on accept: the client just sees no proxy
  }

  static start(options: FaultProxyOptions): Promise<FaultProxy> {
    const server = net.createServer({ allowHalfOpen: true });
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(options.listenPort ?? 0, options.listenHost ?? '127.0.0.1', () => {
        server.off('error', reject);
        resolve(new FaultProxy(server, (server.address() as net.AddressInfo).port, options));
      });
    });
  }

  /** Live proxied connections. */
  get connectionCount(): number {
    return this.connections.size;
  }

  /** Bytes delivered to each side since start (black-holed bytes are not counted). */
  get bytesForwarded(): BytesForwarded {
    return { ...this.counters };
  }

  /** Resets every live connection and resets new ones on accept until restore(). */
  cut(): void {
    this.cutActive = true;
    for (const connection of this.connections) connection.close(true);
  }

  /** Keeps connections open but drops every byte either way (queued ones too) until restore(). */
  blackhole(): void {
    this.faults.blackholed = true;
    for (const connection of this.connections) for (const lane of connection.lanes) lane.discard();
  }

  /**
   * An outage as TCP lives it: connections stay open, bytes wait in the proxy (and, once it holds a
   * few MiB, in the senders' socket buffers) and are all delivered in order after restore().
   */
  stall(): void {
    this.faults.stalled = true;
  }

  /**
   * Delivers to clients until `bytesForwarded.toClient` reaches `totalBytes`, then holds the rest as
   * stall() does, until restore(): a transfer stopped at a known point, whatever the machine's speed.
   */
  stallAfterToClient(totalBytes: number): void {
    if (!Number.isSafeInteger(totalBytes) || totalBytes < 0) throw new RangeError(`totalBytes must be a whole number >= 0, got ${totalBytes}`);
    this.toClientLimitBytes = totalBytes;
  }

  /** Latency added to each chunk arriving from now on, both directions; 0 removes it. */
  setDelay(delayMs: number): void {
    if (!Number.isFinite(delayMs) || delayMs < 0) throw new RangeError(`delayMs must be >= 0, got ${delayMs}`);
    this.faults.delayMs = delayMs;
  }

  /** Throughput limit per direction; 0 = unlimited. */
  setBandwidth(bytesPerSecond: number): void {
    if (!Number.isFinite(bytesPerSecond) || bytesPerSecond < 0) throw new RangeError(`bytesPerSecond must be >= 0, got ${bytesPerSecond}`);
    this.faults.bytesPerSecond = bytesPerSecond;
  }

  /** Ends cut and black hole: new connections are proxied, black-holed ones flow again (cut ones stay dead). */
  restore(): void {
    this.cutActive = false;
    this.faults.blackholed = false;
    this.faults.stalled = false;
    this.toClientLimitBytes = Infinity;
    for (const connection of this.connections) for (const lane of connection.lanes) lane.kick();
  }

  close(): Promise<void> {
    this.closing ??= new Promise<void>((resolve) => {
      this.server.close(() => resolve());
      for (const connection of this.connections) connection.close(false);
    });
    return this.closing;
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    if (this.cutActive || this.closing) {
      sever(client);
      return;
    }
    const target = net.connect({ host: this.options.targetHost, port: this.options.targetPort, allowHalfOpen: true });
    client.setNoDelay(true);
    target.setNoDelay(true);
    this.connections.add(new Connection(client, target, this.faults, this.counters, () => this.toClientLimitBytes - this.counters.toClient, (c) => this.connections.delete(c)));
  }
}
