// One NBD client connection: fixed-newstyle handshake (with STARTTLS; the options themselves are
// negotiation.ts's), then the transmission phase with pipelined, out-of-order request handling. A
// misbehaving client only ever harms itself: bad options get error replies, bad requests get error
// replies or a hard disconnect of this socket. Every refusal is reported to the observer with one
// of a fixed set of reasons.
import * as net from 'node:net';
import { ByteQueue } from '../common/byte-queue';
import { ioBuffers } from '../common/buffer-pool';
import { adoptWithReceiveBuffer } from '../common/fast-socket';
import { SendBuffer } from '../common/send-buffer';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import { BlockDeviceError, type BlockDevice, type ContextRun } from '../volume/block-device';
import * as codec from './codec';
import * as c from './constants';
import { Negotiation } from './negotiation';
import { descriptorsFromRuns } from './meta-contexts';
import type { TlsUpgrader, UpgradedConnection } from './tls-upgrade';
import type {
  ExportProvider, NbdClientInfo, NbdCommandName, NbdExport, NbdObserver, NbdRefusalReason, NbdServerLimits, TlsMode,
} from './types';

export interface ConnectionContext {
  provider: ExportProvider;
  observer: NbdObserver;
  limits: NbdServerLimits;
  tlsMode: TlsMode;
  tls: TlsUpgrader | undefined;
  log: Logger;
  isShuttingDown(): boolean;
}

class ConnectionClosed extends Error {
  constructor() {
    super('connection closed');
  }
}

/** Payload remainders at least this large are read straight into the payload buffer. */
const directReadMinBytes = 64 * 1024;
/** Reply bytes queued for a slow reader before the server stops taking its requests. */
const maxBufferedReplyBytes = 64 * 1024 * 1024;
/** Distinct refusals (reason and export) one connection reports; a client looping over options adds no more. */
const maxRefusalsReportedPerConnection = 16;
const serverHandshakeFlags = c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES;
const commandNames: Record<number, NbdCommandName> = {
  [c.CMD_READ]: 'read',
  [c.CMD_WRITE]: 'write',
  [c.CMD_FLUSH]: 'flush',
  [c.CMD_TRIM]: 'trim',
  [c.CMD_CACHE]: 'cache',
  [c.CMD_WRITE_ZEROES]: 'write_zeroes',
  [c.CMD_BLOCK_STATUS]: 'block_status',
};
/** Flags each command accepts besides FUA (which every command may carry). */
const allowedFlags: Record<number, number> = {
  [c.CMD_READ]: c.CMD_FLAG_DF,
  [c.CMD_WRITE]: 0,
  [c.CMD_FLUSH]: 0,
  [c.CMD_TRIM]: 0,
  [c.CMD_CACHE]: 0,
  [c.CMD_WRITE_ZEROES]: c.CMD_FLAG_NO_HOLE | c.CMD_FLAG_FAST_ZERO,
  [c.CMD_BLOCK_STATUS]: c.CMD_FLAG_REQ_ONE,
};

// Shared option objects: devices only read them.
const withFua = Object.freeze({ fua: true });
const withoutFua = Object.freeze({ fua: false });

export class NbdConnection {
  readonly client: NbdClientInfo;
  private stream: net.Socket;
  private readonly queue = new ByteQueue();
  private wake: (() => void) | null = null;
  private closed = false;
  private handshakeTimer: NodeJS.Timeout | undefined;
  private readonly negotiation: Negotiation;
  private readonly refusalsReported = new Set<string>();

  // Transmission phase.
  private attached: NbdExport | undefined;
  private attachedReadOnly = false;
  private pendingHeader: codec.Request | undefined;
  private readonly headerScratch = Buffer.alloc(c.REQUEST_HEADER_BYTES);
  private headerFill = 0;
  private payload: Buffer | undefined;
  private payloadBuffer: Buffer | undefined;
  private payloadFill = 0;
  private inFlight = 0;
  private readingStopped = false;
  private pausedForInFlight = false;
  private pausedForBackpressure = false;
  private idleWaiters: Array<() => void> = [];
  private readonly onDataBound = (chunk: Buffer): void => this.onData(chunk);
  private discardInput = false;
  /** Replies of the transmission phase, gathered per event-loop turn (one socket write per turn). */
  private out: SendBuffer | undefined;

  readonly socket: net.Socket;

  constructor(
    socket: net.Socket,
    id: number,
    private readonly ctx: ConnectionContext,
    private readonly onClosed: (conn: NbdConnection) => void,
  ) {
    this.client = { id, address: socket.remoteAddress ?? 'unknown', port: socket.remotePort ?? 0, tls: false };
    this.negotiation = new Negotiation({
      client: this.client, ctx,
      isClosed: () => this.closed,
      write: (data) => this.write(data),
      drop: (reason, detail, exportName) => this.drop(reason, detail, exportName),
      refuse: (reason, detail, exportName) => this.refuse(reason, detail, exportName),
      upgradeToTls: (option) => this.upgradeToTls(option),
      enterTransmission: (exp) => this.enterTransmission(exp),
      endGracefully: () => this.endGracefully(),
    });
    // Plain TCP reads into a fixed buffer; TLS needs the ordinary socket it can wrap after STARTTLS.
    const adopted = ctx.tlsMode === 'off'
      ? adoptWithReceiveBuffer(socket, (view) => this.onReceive(view), undefined, {
        next: () => this.directTarget(),
        filled: (n) => this.directFilled(n),
        awaiting: () => this.directBytesAwaited(),
      })
      : undefined;
    this.socket = adopted ?? socket;
    this.stream = this.socket;
    this.socket.setNoDelay(true);
    this.socket.setKeepAlive(true, 30_000);
    this.attachStream(this.socket);
    if (!adopted) socket.resume();
    this.handshakeTimer = setTimeout(() => {
      this.drop('handshake-timeout', `handshake not finished within ${ctx.limits.handshakeTimeoutMs} ms`);
    }, ctx.limits.handshakeTimeoutMs);
    this.handshakeTimer.unref();
  }

  get exportName(): string | undefined {
    return this.attached?.name;
  }

  start(): void {
    this.handshake().catch((err: unknown) => {
      if (!(err instanceof ConnectionClosed)) this.drop('bad-handshake', errorMessage(err));
    });
  }

  /** Stops taking requests, lets in-flight ones finish (up to the grace period), then closes. */
  async shutdown(graceMs: number): Promise<void> {
    if (this.closed) return;
    if (!this.attached) {
      this.destroy();
      return;
    }
    this.stopReading();
    await Promise.race([this.waitIdle(), new Promise((r) => setTimeout(r, graceMs).unref())]);
    this.endGracefully();
  }

  /** Immediate hard disconnect (operator forced a delete, or the client broke the protocol). */
  destroy(): void {
    if (this.closed) return;
    this.stream.destroy();
    this.socket.destroy();
    this.finish();
  }

  // -------------------------------------------------------------------------------------------
  // Socket plumbing

  private attachStream(stream: net.Socket): void {
    stream.on('data', this.onDataBound);
    stream.on('error', (err) => {
      this.ctx.log.debug({ client: this.client, err: errorMessage(err) }, 'nbd client socket error');
      this.destroy();
    });
    stream.on('close', () => this.finish());
    stream.on('drain', () => {
      if (this.pausedForBackpressure) {
        this.pausedForBackpressure = false;
        this.resumeIfAllowed();
      }
    });
  }

  /**
   * Where the next socket read should land: the rest of a large write payload being received, so
   * it is not copied from the receive buffer (undefined: the receive buffer).
   */
  private directTarget(): Buffer | undefined {
    return this.directBytesAwaited() > 0 ? this.payload!.subarray(this.payloadFill) : undefined;
  }

  /** The rest of the payload being received when the socket reads it straight in; else 0. */
  private directBytesAwaited(): number {
    const payload = this.payload;
    if (!payload || this.queue.length > 0 || this.discardInput || this.closed) return 0;
    const missing = payload.length - this.payloadFill;
    return missing >= directReadMinBytes ? missing : 0;
  }

  /** `n` bytes of the payload arrived where directTarget() said. */
  private directFilled(n: number): void {
    if (this.closed || this.discardInput || !this.payload) return;
    this.payloadFill += n;
    if (this.payloadFill < this.payload.length) return;
    const payload = this.payload;
    const pooled = this.payloadBuffer;
    this.payload = undefined;
    this.payloadBuffer = undefined;
    this.dispatch(this.pendingHeader!, payload, pooled);
  }

  /** Data from the fixed receive buffer: valid only during this call. */
  private onReceive(view: Buffer): void {
    if (this.discardInput) return;
    if (this.attached) {
      this.feed(view, true);
      return;
    }
    this.onData(Buffer.from(view));
  }

  private onData(chunk: Buffer): void {
    if (this.discardInput) return;
    if (this.attached) {
      this.feed(chunk, false);
      return;
    }
    this.queue.push(chunk);
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.handshakeTimer);
    if (this.wake) {
      const wake = this.wake;
      this.wake = null;
      wake();
    }
    if (this.attached) this.ctx.observer.clientDetached(this.attached.name, this.client);
    for (const waiter of this.idleWaiters.splice(0)) waiter();
    this.onClosed(this);
  }

  /** Closes the connection for a protocol violation or policy, and reports why. */
  private drop(reason: NbdRefusalReason, detail: string, exportName?: string): void {
    if (this.closed) return;
    // Per connection at debug only: the observer turns refusals into metrics and rate-limited events.
    this.ctx.log.debug({ client: this.client, reason, detail }, 'nbd client dropped');
    this.ctx.observer.refused({ reason, client: this.client, exportName, dropped: true, detail });
    this.destroy();
  }

  /** Reports an option refused by policy (the client got an error reply and may go on). */
  private refuse(reason: NbdRefusalReason, detail: string, exportName?: string): void {
    const key = `${reason}\0${exportName ?? ''}`;
    if (this.refusalsReported.has(key) || this.refusalsReported.size >= maxRefusalsReportedPerConnection) return;
    this.refusalsReported.add(key);
    this.ctx.observer.refused({ reason, client: this.client, exportName, dropped: false, detail });
  }

  private write(data: Buffer, onWritten?: () => void): void {
    if (this.closed) return;
    if (!this.out) {
      if (onWritten) this.stream.write(data, onWritten);
      else this.stream.write(data);
      return;
    }
    // Replies completed in one event-loop turn leave in one socket write (send-buffer.ts).
    this.out.append(data, onWritten);
    this.checkBackpressure();
  }

  /** Room for a reply the caller writes in place: `n` bytes at `at` of `buffer`. */
  private reserveReply(n: number): { buffer: Buffer; at: number } {
    // Reserve first: it may start a new buffer.
    const at = this.out!.reserve(n);
    this.checkBackpressure();
    return { buffer: this.out!.slab, at };
  }

  private writeSimpleReply(error: number, h: codec.Request): void {
    const r = this.reserveReply(c.SIMPLE_REPLY_BYTES);
    codec.writeSimpleReply(r.buffer, r.at, error, h);
  }

  private checkBackpressure(): void {
    if (this.stream.writableLength > maxBufferedReplyBytes && !this.pausedForBackpressure) {
      // The client is not reading its replies: stop taking its requests until it catches up.
      this.pausedForBackpressure = true;
      this.stream.pause();
    }
  }

  /** Sends pooled read data; the buffer returns to the pool once nothing refers to it. */
  private writeAndRelease(data: Buffer, pooled: Buffer): void {
    if (this.closed) return ioBuffers.release(pooled);
    this.write(data, () => ioBuffers.release(pooled));
  }

  private async readBytes(n: number): Promise<Buffer> {
    while (this.queue.length < n) {
      if (this.closed) throw new ConnectionClosed();
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    return this.queue.take(n);
  }

  // -------------------------------------------------------------------------------------------
  // Handshake

  private async handshake(): Promise<void> {
    this.write(codec.encodeGreeting(serverHandshakeFlags));
    const flags = codec.decodeClientFlags(await this.readBytes(4), serverHandshakeFlags);
    if (!flags.ok) return this.drop('bad-handshake', flags.error);
    const noZeroes = flags.value.noZeroes;
    for (;;) {
      const header = codec.decodeOptionHeader(await this.readBytes(c.OPTION_HEADER_BYTES));
      if (!header.ok) return this.drop('bad-handshake', header.error);
      const { option, length } = header.value;
      if (length > c.maxOptionPayloadBytes) {
        return this.drop('oversized-option', `option ${option} carries ${length} bytes, more than ${c.maxOptionPayloadBytes}`);
      }
      const payload = Buffer.from(await this.readBytes(length));
      const done = await this.negotiation.handleOption(option, payload, noZeroes);
      if (done) return;
    }
  }

  private async upgradeToTls(option: number): Promise<void> {
    if (this.queue.length > 0) {
      this.drop('bad-handshake', 'client sent data after STARTTLS before the TLS handshake');
      return;
    }
    const raw = this.socket;
    raw.removeListener('data', this.onDataBound);
    raw.pause();
    await new Promise<void>((resolve) => raw.write(codec.encodeOptionReply(option, c.REP_ACK), () => resolve()));
    if (this.closed) return;
    let upgraded: UpgradedConnection;
    try {
      upgraded = await this.ctx.tls!.upgrade(raw);
    } catch (err) {
      this.drop('tls-failed', `TLS handshake failed: ${errorMessage(err)}`);
      return;
    }
    this.stream = upgraded.socket;
    this.client.tls = true;
    this.client.tlsIdentity = upgraded.identity;
    this.negotiation.reset();
    this.attachStream(upgraded.socket);
  }

  // -------------------------------------------------------------------------------------------
  // Transmission

  private enterTransmission(exp: NbdExport): void {
    clearTimeout(this.handshakeTimer);
    this.handshakeTimer = undefined;
    this.attached = exp;
    this.attachedReadOnly = exp.device.readOnly;
    this.out = new SendBuffer(this.stream);
    this.negotiation.attachedTo(exp.name);
    this.ctx.observer.clientAttached(exp.name, this.client);
    this.ctx.log.debug({ client: this.client, export: exp.name }, 'nbd client attached');
    this.pump();
  }

  /**
   * Parses transmission-phase bytes. `reusable` buffers (the socket's fixed receive buffer) are
   * copied where kept; fresh buffers are sliced. Whatever cannot be taken now (paused) is queued.
   */
  private feed(buf: Buffer, reusable: boolean): boolean {
    if (this.queue.length > 0 || !this.canTakeRequests()) {
      this.queue.push(reusable ? Buffer.from(buf) : buf);
      this.pump();
      return this.canTakeRequests();
    }
    const rest = this.parse(buf, 0, reusable);
    if (rest < buf.length) this.queue.push(reusable ? Buffer.from(buf.subarray(rest)) : buf.subarray(rest));
    return this.canTakeRequests();
  }

  /** Drains queued bytes once requests may be taken again. */
  private pump(): void {
    while (this.queue.length > 0 && this.canTakeRequests()) {
      const chunk = this.queue.take(this.queue.length);
      const rest = this.parse(chunk, 0, false);
      if (rest < chunk.length) this.queue.push(chunk.subarray(rest));
    }
  }

  private canTakeRequests(): boolean {
    return !this.closed && !this.readingStopped && !this.pausedForInFlight && !this.pausedForBackpressure;
  }

  /** Consumes requests from buf[at..]; returns where it stopped (end, or where taking must pause). */
  private parse(buf: Buffer, start: number, reusable: boolean): number {
    let at = start;
    while (at < buf.length && this.canTakeRequests()) {
      if (this.payload) {
        const n = Math.min(buf.length - at, this.payload.length - this.payloadFill);
        buf.copy(this.payload, this.payloadFill, at, at + n);
        this.payloadFill += n;
        at += n;
        if (this.payloadFill < this.payload.length) return at;
        const payload = this.payload;
        const pooled = this.payloadBuffer;
        this.payload = undefined;
        this.payloadBuffer = undefined;
        this.dispatch(this.pendingHeader!, payload, pooled);
        continue;
      }
      // The header is read where it lies, or from the scratch buffer when it arrived in parts.
      let headerSource: Buffer;
      let headerAt: number;
      if (this.headerFill > 0 || buf.length - at < c.REQUEST_HEADER_BYTES) {
        const n = Math.min(buf.length - at, c.REQUEST_HEADER_BYTES - this.headerFill);
        buf.copy(this.headerScratch, this.headerFill, at, at + n);
        this.headerFill += n;
        at += n;
        if (this.headerFill < c.REQUEST_HEADER_BYTES) return at;
        this.headerFill = 0;
        headerSource = this.headerScratch;
        headerAt = 0;
      } else {
        headerSource = buf;
        headerAt = at;
        at += c.REQUEST_HEADER_BYTES;
      }
      const header = codec.decodeRequest(headerSource, headerAt);
      if (!header) {
        this.drop('bad-request', `request has bad magic 0x${headerSource.readUInt32BE(headerAt).toString(16)}`);
        return buf.length;
      }
      if (header.type !== c.CMD_WRITE || header.length === 0) {
        this.dispatch(header, header.type === c.CMD_WRITE ? Buffer.alloc(0) : undefined);
        continue;
      }
      if (header.length > c.maxPayloadBytes) {
        this.drop('oversized-request', `write of ${header.length} bytes exceeds the ${c.maxPayloadBytes}-byte payload limit`);
        return buf.length;
      }
      if (!reusable && buf.length - at >= header.length) {
        // The whole payload is in a buffer nobody reuses: hand it on without copying.
        const payload = buf.subarray(at, at + header.length);
        at += header.length;
        this.dispatch(header, payload);
        continue;
      }
      this.pendingHeader = header;
      this.payloadBuffer = ioBuffers.acquire(header.length);
      this.payload = this.payloadBuffer.subarray(0, header.length);
      this.payloadFill = 0;
    }
    return at;
  }

  private dispatch(header: codec.Request, payload: Buffer | undefined, pooled?: Buffer): void {
    this.pendingHeader = undefined;
    if (header.type === c.CMD_DISC) {
      this.stopReading();
      void this.waitIdle().then(() => this.endGracefully());
      return;
    }
    this.inFlight++;
    if (this.inFlight >= this.ctx.limits.maxInFlightPerConnection) {
      this.pausedForInFlight = true;
      this.stream.pause();
    }
    void this.execute(header, payload, pooled);
  }

  private stopReading(): void {
    this.readingStopped = true;
    this.stream.pause();
  }

  private resumeIfAllowed(): void {
    if (this.closed || this.readingStopped || this.pausedForInFlight || this.pausedForBackpressure) return;
    this.stream.resume();
    this.pump();
  }

  private waitIdle(): Promise<void> {
    if (this.inFlight === 0 || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  private endGracefully(): void {
    if (this.closed) return;
    // Keep reading (and discarding) so the client's own FIN is seen and the socket closes promptly.
    this.readingStopped = true;
    this.discardInput = true;
    this.queue.skip(this.queue.length);
    this.stream.resume();
    this.out?.flush(); // replies gathered this turn go before the FIN
    this.stream.end();
    // A client that never closes its side must not pin the connection.
    setTimeout(() => this.destroy(), 5_000).unref();
  }

  /** `pooled` (the payload's buffer) goes back to the pool once the device is done with it. */
  private async execute(h: codec.Request, payload: Buffer | undefined, pooled: Buffer | undefined): Promise<void> {
    const exp = this.attached!;
    const device = exp.device;
    const started = performance.now();
    const command = commandNames[h.type];
    let errno = 0;
    let bytes = 0;
    try {
      errno = this.validate(h, device);
      if (errno !== 0) {
        this.replyError(h, errno, this.validationMessage(h, errno, device));
      } else {
        const fua = (h.flags & c.CMD_FLAG_FUA) !== 0 ? withFua : withoutFua;
        switch (h.type) {
          case c.CMD_READ:
            bytes = h.length;
            await this.executeRead(h, device);
            break;
          case c.CMD_WRITE:
            bytes = h.length;
            await device.write(h.offset, payload!, fua);
            this.replyOk(h);
            break;
          case c.CMD_FLUSH:
            await device.flush();
            this.replyOk(h);
            break;
          case c.CMD_TRIM:
            await device.trim(h.offset, h.length, fua);
            this.replyOk(h);
            break;
          case c.CMD_WRITE_ZEROES:
            bytes = h.length;
            await device.writeZeroes(h.offset, h.length, {
              ...fua,
              noHole: (h.flags & c.CMD_FLAG_NO_HOLE) !== 0,
              fastOnly: (h.flags & c.CMD_FLAG_FAST_ZERO) !== 0,
            });
            this.replyOk(h);
            break;
          case c.CMD_CACHE:
            // Advisory: the page cache already holds what was read recently.
            this.replyOk(h);
            break;
          case c.CMD_BLOCK_STATUS:
            this.executeBlockStatus(h, device);
            break;
        }
      }
    } catch (err) {
      if (err instanceof BlockDeviceError) {
        errno = c.nbdErrnoByName[err.errno];
        if (err.errno !== 'ENOTSUP') this.ctx.log.warn({ client: this.client, export: exp.name, err: err.message }, 'nbd request failed');
        this.replyError(h, errno, err.message);
      } else {
        errno = c.NBD_EIO;
        this.ctx.log.error({ client: this.client, export: exp.name, err }, 'nbd request failed unexpectedly');
        this.replyError(h, errno, 'internal error');
      }
    } finally {
      // The last request in flight: the replies gathered leave now, not at the end of the turn
      // (nothing more to gather them with, and the client waits). Measured at QD1: 206 -> 88 µs
      // mean latency, 139 -> 75 µs of CPU per write; at QD32 no worse.
      if (this.inFlight === 1) this.out?.flush();
      // The device is done with the payload once its write settled (BlockDevice contract).
      if (pooled) ioBuffers.release(pooled);
      if (command) this.ctx.observer.requestCompleted(exp.name, command, bytes, (performance.now() - started) / 1000, errno);
      this.inFlight--;
      if (this.pausedForInFlight && this.inFlight < this.ctx.limits.maxInFlightPerConnection / 2) {
        this.pausedForInFlight = false;
        this.resumeIfAllowed();
      }
      if (this.inFlight === 0) for (const waiter of this.idleWaiters.splice(0)) waiter();
    }
  }

  /** Returns 0 or the NBD errno the request deserves before touching the device. */
  private validate(h: codec.Request, device: BlockDevice): number {
    const command = commandNames[h.type];
    if (command === undefined) return c.NBD_EINVAL;
    if ((h.flags & ~(c.CMD_FLAG_FUA | allowedFlags[h.type]!)) !== 0) return c.NBD_EINVAL;
    if ((h.flags & c.CMD_FLAG_DF) !== 0 && !this.negotiation.structuredReplies) return c.NBD_EINVAL;
    if (h.type === c.CMD_FLUSH) return h.offset === 0 && h.length === 0 ? 0 : c.NBD_EINVAL;
    const writes = h.type === c.CMD_WRITE || h.type === c.CMD_WRITE_ZEROES || h.type === c.CMD_TRIM;
    // As advertised at attach time; a device that refuses writes later says why itself.
    if (writes && this.attachedReadOnly) return c.NBD_EPERM;
    if (h.offset + h.length > device.sizeBytes) {
      return h.type === c.CMD_WRITE || h.type === c.CMD_WRITE_ZEROES ? c.NBD_ENOSPC : c.NBD_EINVAL;
    }
    const min = this.ctx.limits.minBlockBytes;
    if (min > 1 && h.type !== c.CMD_BLOCK_STATUS && (h.offset % min !== 0 || h.length % min !== 0)) return c.NBD_EINVAL;
    if (h.type === c.CMD_READ && h.length > c.maxPayloadBytes) {
      return this.negotiation.structuredReplies ? c.NBD_EOVERFLOW : c.NBD_EINVAL;
    }
    if (h.type === c.CMD_BLOCK_STATUS && this.negotiation.metaContextExport !== this.attached!.name) return c.NBD_EINVAL;
    return 0;
  }

  private validationMessage(h: codec.Request, errno: number, device: BlockDevice): string {
    if (commandNames[h.type] === undefined) return `unknown command ${h.type}`;
    if (errno === c.NBD_EPERM) return `export ${device.name} is read-only`;
    if (h.offset + h.length > device.sizeBytes) return `request ${h.offset}+${h.length} is past the end of the export (${device.sizeBytes} bytes)`;
    if (errno === c.NBD_EOVERFLOW || (h.type === c.CMD_READ && h.length > c.maxPayloadBytes)) {
      return `read of ${h.length} bytes exceeds the ${c.maxPayloadBytes}-byte limit`;
    }
    if (h.type === c.CMD_BLOCK_STATUS && this.negotiation.metaContextExport === undefined) return 'no meta context was selected';
    if ((h.flags & ~(c.CMD_FLAG_FUA | (allowedFlags[h.type] ?? 0))) !== 0) return `flags 0x${h.flags.toString(16)} are not valid for this command`;
    return 'request is misaligned or malformed';
  }

  private async executeRead(h: codec.Request, device: BlockDevice): Promise<void> {
    if (!this.negotiation.structuredReplies) {
      const pooled = ioBuffers.acquire(h.length);
      let data: Buffer;
      try {
        data = await device.read(h.offset, h.length, pooled);
      } catch (err) {
        ioBuffers.release(pooled);
        throw err;
      }
      if (this.closed) return ioBuffers.release(pooled);
      this.writeSimpleReply(0, h);
      this.writeAndRelease(data, pooled);
      return;
    }
    // A range that is wholly a hole needs no disk read and no data on the wire.
    if (h.length > 0) {
      const extents = device.extents(h.offset, h.length, 2);
      const first = extents[0];
      if (first && first.zero && first.offset === h.offset && first.length >= h.length) {
        this.write(codec.encodeOffsetHole(codec.cookieOf(h), h.offset, h.length, true));
        return;
      }
    }
    if (h.length === 0) {
      this.write(codec.encodeStructuredNone(codec.cookieOf(h)));
      return;
    }
    const pooled = ioBuffers.acquire(h.length);
    let data: Buffer;
    try {
      data = await device.read(h.offset, h.length, pooled);
    } catch (err) {
      ioBuffers.release(pooled);
      throw err;
    }
    if (this.closed) return ioBuffers.release(pooled);
    const r = this.reserveReply(c.STRUCTURED_REPLY_HEADER_BYTES + 8);
    codec.writeOffsetDataHeader(r.buffer, r.at, h, h.offset, data.length, true);
    this.writeAndRelease(data, pooled);
  }

  private executeBlockStatus(h: codec.Request, device: BlockDevice): void {
    const reqOne = (h.flags & c.CMD_FLAG_REQ_ONE) !== 0;
    const length = Math.min(Math.max(1, h.length), device.sizeBytes - h.offset);
    if (length <= 0) {
      // Zero-length query at the very end of the export: nothing to describe. Report the error politely.
      this.replyError(h, c.NBD_EINVAL, 'block status of an empty range');
      return;
    }
    const max = reqOne ? 1 : c.maxBlockStatusExtents;
    // One chunk per selected context (proto.md); all are computed before any is sent, so a context
    // the device no longer offers fails the whole request cleanly.
    const chunks: Array<{ id: number; descriptors: codec.StatusDescriptor[] }> = [];
    for (const context of this.negotiation.metaContexts) {
      let runs: ContextRun[] | undefined;
      if (context.name === c.BASE_ALLOCATION) {
        runs = device.extents(h.offset, length, max).map((e) => ({ length: e.length, flags: (e.allocated ? 0 : c.STATE_HOLE) | (e.zero ? c.STATE_ZERO : 0) }));
      } else {
        runs = device.contextRuns?.(context.name, h.offset, length, max);
      }
      if (runs === undefined) {
        this.replyError(h, c.NBD_EINVAL, `export ${device.name} no longer offers the metadata context ${context.name}`);
        return;
      }
      const descriptors = descriptorsFromRuns(runs, Math.max(1, h.length), reqOne, max);
      if (descriptors.length === 0) {
        this.replyError(h, c.NBD_EINVAL, `no status for ${context.name} at ${h.offset}`);
        return;
      }
      chunks.push({ id: context.id, descriptors });
    }
    chunks.forEach((chunk, i) => this.write(codec.encodeBlockStatus(codec.cookieOf(h), chunk.id, chunk.descriptors, i === chunks.length - 1)));
  }

  private replyOk(h: codec.Request): void {
    if (this.closed) return;
    this.writeSimpleReply(0, h);
  }

  private replyError(h: codec.Request, errno: number, message: string): void {
    if (this.closed) return;
    if (this.negotiation.structuredReplies) this.write(codec.encodeStructuredError(codec.cookieOf(h), errno, message));
    else this.writeSimpleReply(errno, h);
  }
}
