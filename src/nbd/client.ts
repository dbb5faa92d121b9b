// A small NBD client (fixed newstyle, NBD_OPT_GO, structured replies, base:allocation, pipelining).
// Used by tools and tests that need precise control over requests, e.g. ordered-write checkers.
import * as net from 'node:net';
import { ByteQueue } from '../common/byte-queue';
import * as codec from './codec';
import * as c from './constants';

export class NbdClientError extends Error {
  constructor(message: string, readonly errno?: number) {
    super(message);
    this.name = 'NbdClientError';
  }
}

export interface NbdClientOptions {
  host: string;
  port: number;
  exportName: string;
  structuredReplies?: boolean;
  blockStatus?: boolean;
  /** Metadata contexts to select instead of base:allocation (e.g. qemu:dirty-bitmap:NAME); implies blockStatus. */
  metaContexts?: string[];
  connectTimeoutMs?: number;
  /** Source address to connect from (tests act as several hosts from loopback: 127.0.0.2 …). */
  localAddress?: string;
}

interface Pending {
  type: number;
  length: number;
  offset: number;
  resolve: (value: Buffer | codec.StatusDescriptor[] | undefined) => void;
  reject: (err: Error) => void;
  data?: Buffer;
  descriptors?: codec.StatusDescriptor[];
  error?: NbdClientError;
}

export class NbdClient {
  private readonly queue = new ByteQueue();
  private readonly pending = new Map<bigint, Pending>();
  private nextCookie = 1n;
  private wake: (() => void) | null = null;
  private closedError: Error | null = null;
  sizeBytes = 0;
  transmissionFlags = 0;
  structured = false;

  private constructor(private readonly socket: net.Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.queue.push(chunk);
      if (this.wake) {
        const w = this.wake;
        this.wake = null;
        w();
      } else this.drainReplies();
    });
    const onEnd = (err?: Error): void => {
      this.closedError ??= err ?? new NbdClientError('connection closed by server');
      for (const p of this.pending.values()) p.reject(this.closedError);
      this.pending.clear();
      if (this.wake) {
        const w = this.wake;
        this.wake = null;
        w();
      }
    };
    socket.on('error', onEnd);
    socket.on('close', () => onEnd());
  }

  static async connect(options: NbdClientOptions): Promise<NbdClient> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.connect({ host: options.host, port: options.port, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
      const timer = setTimeout(() => {
        s.destroy();
        reject(new NbdClientError(`connect to ${options.host}:${options.port} timed out`));
      }, options.connectTimeoutMs ?? 10_000);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    const client = new NbdClient(socket);
    try {
      await client.handshake(options);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    return client;
  }

  get closed(): boolean {
    return this.closedError !== null;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.send(c.CMD_READ, 0, offset, length) as Promise<Buffer>;
  }

  write(offset: number, data: Buffer, options: { fua?: boolean } = {}): Promise<void> {
    return this.send(c.CMD_WRITE, options.fua ? c.CMD_FLAG_FUA : 0, offset, data.length, data) as Promise<void>;
  }

  writeZeroes(offset: number, length: number, flags = 0): Promise<void> {
    return this.send(c.CMD_WRITE_ZEROES, flags, offset, length) as Promise<void>;
  }

  trim(offset: number, length: number): Promise<void> {
    return this.send(c.CMD_TRIM, 0, offset, length) as Promise<void>;
  }

  flush(): Promise<void> {
    return this.send(c.CMD_FLUSH, 0, 0, 0) as Promise<void>;
  }

  blockStatus(offset: number, length: number, flags = 0): Promise<codec.StatusDescriptor[]> {
    return this.send(c.CMD_BLOCK_STATUS, flags, offset, length) as Promise<codec.StatusDescriptor[]>;
  }

  /** Sends any request, including invalid ones (tests use this to probe the server). */
  send(type: number, flags: number, offset: number, length: number, payload?: Buffer): Promise<Buffer | codec.StatusDescriptor[] | undefined> {
    if (this.closedError) return Promise.reject(this.closedError);
    const cookie = this.nextCookie++;
    return new Promise((resolve, reject) => {
      this.pending.set(cookie, { type, length, offset, resolve, reject });
      this.socket.write(codec.encodeRequestHeader({ flags, type, cookie, offset, length }));
      if (payload) this.socket.write(payload);
    });
  }

  /** Polite disconnect: NBD_CMD_DISC, then wait for the server to close. */
  async disconnect(): Promise<void> {
    if (this.closedError) return;
    this.socket.write(codec.encodeRequestHeader({ flags: 0, type: c.CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
    await new Promise<void>((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      this.socket.end();
    });
  }

  destroy(): void {
    this.socket.destroy();
  }

  private async readBytes(n: number): Promise<Buffer> {
    while (this.queue.length < n) {
      if (this.closedError) throw this.closedError;
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
    return this.queue.take(n);
  }

  private async option(option: number, data: Buffer): Promise<codec.OptionReply[]> {
    this.socket.write(Buffer.concat([codec.encodeOptionHeader(option, data.length), data]));
    const replies: codec.OptionReply[] = [];
    for (;;) {
      const header = await this.readBytes(c.OPTION_REPLY_HEADER_BYTES);
      const length = header.readUInt32BE(16);
      const body = Buffer.from(await this.readBytes(length));
      const decoded = codec.decodeOptionReply(Buffer.concat([header, body]));
      if (!decoded.ok || !decoded.value) throw new NbdClientError(decoded.ok ? 'short option reply' : decoded.error);
      const reply = decoded.value.reply;
      replies.push(reply);
      if (reply.replyType === c.REP_ACK || reply.replyType >= 0x80000000) return replies;
    }
  }

  private async handshake(options: NbdClientOptions): Promise<void> {
    const greeting = await this.readBytes(c.GREETING_BYTES);
    if (greeting.readBigUInt64BE(0) !== c.NBDMAGIC || greeting.readBigUInt64BE(8) !== c.IHAVEOPT) {
      throw new NbdClientError('server is not a newstyle NBD server');
    }
    const flags = Buffer.alloc(4);
    flags.writeUInt32BE(c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES, 0);
    this.socket.write(flags);
    if (options.structuredReplies ?? true) {
      const r = await this.option(c.OPT_STRUCTURED_REPLY, Buffer.alloc(0));
      this.structured = r.at(-1)!.replyType === c.REP_ACK;
    }
    const contexts = options.metaContexts ?? (options.blockStatus ? [c.BASE_ALLOCATION] : []);
    if (this.structured && contexts.length > 0) {
      const r = await this.option(c.OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest(options.exportName, contexts));
      if (r.at(-1)!.replyType !== c.REP_ACK) throw optionError('SET_META_CONTEXT', r.at(-1)!);
    }
    const replies = await this.option(c.OPT_GO, codec.encodeInfoRequest(options.exportName, [c.INFO_BLOCK_SIZE]));
    const last = replies.at(-1)!;
    if (last.replyType !== c.REP_ACK) throw optionError('GO', last);
    for (const r of replies) {
      if (r.replyType === c.REP_INFO && r.data.readUInt16BE(0) === c.INFO_EXPORT) {
        this.sizeBytes = Number(r.data.readBigUInt64BE(2));
        this.transmissionFlags = r.data.readUInt16BE(10);
      }
    }
    this.drainReplies();
  }

  private drainReplies(): void {
    while (this.queue.length >= 4) {
      const magic = this.queue.peek(4).readUInt32BE(0);
      if (magic === c.SIMPLE_REPLY_MAGIC) {
        if (this.queue.length < c.SIMPLE_REPLY_BYTES) return;
        const head = this.queue.peek(c.SIMPLE_REPLY_BYTES);
        const error = head.readUInt32BE(4);
        const cookie = head.readBigUInt64BE(8);
        const p = this.pending.get(cookie);
        if (!p) return this.fail(`reply for unknown cookie ${cookie}`);
        const dataLength = p.type === c.CMD_READ && error === 0 ? p.length : 0;
        if (this.queue.length < c.SIMPLE_REPLY_BYTES + dataLength) return;
        this.queue.skip(c.SIMPLE_REPLY_BYTES);
        const data = Buffer.from(this.queue.take(dataLength));
        this.pending.delete(cookie);
        if (error !== 0) p.reject(new NbdClientError(`server returned error ${error}`, error));
        else p.resolve(p.type === c.CMD_READ ? data : undefined);
        continue;
      }
      if (magic !== c.STRUCTURED_REPLY_MAGIC) return this.fail(`bad reply magic 0x${magic.toString(16)}`);
      if (this.queue.length < c.STRUCTURED_REPLY_HEADER_BYTES) return;
      const head = this.queue.peek(c.STRUCTURED_REPLY_HEADER_BYTES);
      const length = head.readUInt32BE(16);
      if (this.queue.length < c.STRUCTURED_REPLY_HEADER_BYTES + length) return;
      const flags = head.readUInt16BE(4);
      const type = head.readUInt16BE(6);
      const cookie = head.readBigUInt64BE(8);
      this.queue.skip(c.STRUCTURED_REPLY_HEADER_BYTES);
      const payload = this.queue.take(length);
      const p = this.pending.get(cookie);
      if (!p) return this.fail(`structured reply for unknown cookie ${cookie}`);
      this.applyChunk(p, type, payload);
      if (flags & c.REPLY_FLAG_DONE) {
        this.pending.delete(cookie);
        if (p.error) p.reject(p.error);
        else if (p.type === c.CMD_READ) p.resolve(p.data ?? Buffer.alloc(p.length));
        else if (p.type === c.CMD_BLOCK_STATUS) p.resolve(p.descriptors ?? []);
        else p.resolve(undefined);
      }
    }
  }

  private applyChunk(p: Pending, type: number, payload: Buffer): void {
    if (p.type === c.CMD_READ && !p.data) p.data = Buffer.alloc(p.length);
    if (type === c.REPLY_TYPE_OFFSET_DATA) {
      const offset = Number(payload.readBigUInt64BE(0));
      payload.copy(p.data!, offset - p.offset, 8);
    } else if (type === c.REPLY_TYPE_OFFSET_HOLE) {
      const offset = Number(payload.readBigUInt64BE(0));
      p.data!.fill(0, offset - p.offset, offset - p.offset + payload.readUInt32BE(8));
    } else if (type === c.REPLY_TYPE_BLOCK_STATUS) {
      p.descriptors = [];
      for (let at = 4; at + 8 <= payload.length; at += 8) {
        p.descriptors.push({ length: payload.readUInt32BE(at), flags: payload.readUInt32BE(at + 4) });
      }
    } else if (type >= 0x8000) {
      const error = payload.readUInt32BE(0);
      const messageLength = payload.readUInt16BE(4);
      p.error = new NbdClientError(`server returned error ${error}: ${payload.toString('utf8', 6, 6 + messageLength)}`, error);
    }
  }

  private fail(reason: string): void {
    this.closedError = new NbdClientError(reason);
    this.socket.destroy();
  }
}

function optionError(what: string, reply: codec.OptionReply): NbdClientError {
  return new NbdClientError(`${what} refused with 0x${reply.replyType.toString(16)}: ${reply.data.toString('utf8')}`, reply.replyType);
}
