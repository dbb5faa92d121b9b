// NBD wire codec: pure functions from bytes to values and back. No I/O, no state; every decoder
// reports malformed input as a value instead of throwing, so callers decide between an error reply
// and a hard disconnect.
import * as c from './constants';

export type Decoded<T> = { ok: true; value: T } | { ok: false; error: string };

const ok = <T>(value: T): Decoded<T> => ({ ok: true, value });
const bad = <T>(error: string): Decoded<T> => ({ ok: false, error });

// ---------------------------------------------------------------------------------------------
// Handshake

export function encodeGreeting(handshakeFlags: number): Buffer {
  const b = Buffer.alloc(c.GREETING_BYTES);
  b.writeBigUInt64BE(c.NBDMAGIC, 0);
  b.writeBigUInt64BE(c.IHAVEOPT, 8);
  b.writeUInt16BE(handshakeFlags, 16);
  return b;
}

export interface ClientFlags {
  fixedNewstyle: boolean;
  noZeroes: boolean;
}

export function decodeClientFlags(b: Buffer, serverFlags: number): Decoded<ClientFlags> {
  if (b.length !== 4) return bad(`client flags are 4 bytes, got ${b.length}`);
  const flags = b.readUInt32BE(0);
  const known = c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES;
  if ((flags & ~known) !== 0) return bad(`client set unknown flags 0x${flags.toString(16)}`);
  if ((flags & c.FLAG_C_NO_ZEROES) !== 0 && (serverFlags & c.FLAG_NO_ZEROES) === 0) {
    return bad('client set NO_ZEROES which the server did not offer');
  }
  return ok({ fixedNewstyle: (flags & c.FLAG_C_FIXED_NEWSTYLE) !== 0, noZeroes: (flags & c.FLAG_C_NO_ZEROES) !== 0 });
}

export interface OptionHeader {
  option: number;
  length: number;
}

export function decodeOptionHeader(b: Buffer): Decoded<OptionHeader> {
  if (b.length !== c.OPTION_HEADER_BYTES) return bad(`option header is 16 bytes, got ${b.length}`);
  if (b.readBigUInt64BE(0) !== c.IHAVEOPT) return bad('option header has a bad magic');
  return ok({ option: b.readUInt32BE(8), length: b.readUInt32BE(12) });
}

export function encodeOptionHeader(option: number, length: number): Buffer {
  const b = Buffer.alloc(c.OPTION_HEADER_BYTES);
  b.writeBigUInt64BE(c.IHAVEOPT, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(length, 12);
  return b;
}

export function encodeOptionReply(option: number, replyType: number, data: Buffer = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(c.OPTION_REPLY_HEADER_BYTES + data.length);
  b.writeBigUInt64BE(c.OPTION_REPLY_MAGIC, 0);
  b.writeUInt32BE(option, 8);
  b.writeUInt32BE(replyType >>> 0, 12);
  b.writeUInt32BE(data.length, 16);
  data.copy(b, c.OPTION_REPLY_HEADER_BYTES);
  return b;
}

export function encodeOptionError(option: number, replyType: number, message: string): Buffer {
  return encodeOptionReply(option, replyType, Buffer.from(truncateUtf8(message, c.maxStringBytes), 'utf8'));
}

export interface OptionReply {
  option: number;
  replyType: number;
  data: Buffer;
}

/** Client side (used by tests and tools): decodes one option reply if `b` holds a whole one. */
export function decodeOptionReply(b: Buffer): Decoded<{ reply: OptionReply; bytes: number } | null> {
  if (b.length < c.OPTION_REPLY_HEADER_BYTES) return ok(null);
  if (b.readBigUInt64BE(0) !== c.OPTION_REPLY_MAGIC) return bad('option reply has a bad magic');
  const length = b.readUInt32BE(16);
  if (b.length < c.OPTION_REPLY_HEADER_BYTES + length) return ok(null);
  return ok({
    reply: { option: b.readUInt32BE(8), replyType: b.readUInt32BE(12),
      data: b.subarray(c.OPTION_REPLY_HEADER_BYTES, c.OPTION_REPLY_HEADER_BYTES + length) },
    bytes: c.OPTION_REPLY_HEADER_BYTES + length,
  });
}

export function decodeExportName(payload: Buffer): Decoded<string> {
  if (payload.length > c.maxStringBytes) return bad(`export name is longer than ${c.maxStringBytes} bytes`);
  return decodeUtf8(payload, 'export name');
}

export interface InfoRequest {
  name: string;
  infoTypes: number[];
}

export function decodeInfoRequest(payload: Buffer): Decoded<InfoRequest> {
  if (payload.length < 6) return bad('INFO/GO data is shorter than 6 bytes');
  const nameLength = payload.readUInt32BE(0);
  if (nameLength > payload.length - 6) return bad('INFO/GO name length runs past the option data');
  if (nameLength > c.maxStringBytes) return bad(`export name is longer than ${c.maxStringBytes} bytes`);
  const name = decodeUtf8(payload.subarray(4, 4 + nameLength), 'export name');
  if (!name.ok) return name;
  let at = 4 + nameLength;
  const count = payload.readUInt16BE(at);
  at += 2;
  if (payload.length !== at + count * 2) return bad(`INFO/GO lists ${count} information requests but carries ${payload.length - at} bytes`);
  if (count > c.maxInfoRequests) return bad(`more than ${c.maxInfoRequests} information requests`);
  const infoTypes: number[] = [];
  for (let i = 0; i < count; i++) infoTypes.push(payload.readUInt16BE(at + i * 2));
  return ok({ name: name.value, infoTypes });
}

export function encodeInfoRequest(name: string, infoTypes: number[]): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + nameBytes.length + 2 + infoTypes.length * 2);
  b.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(b, 4);
  b.writeUInt16BE(infoTypes.length, 4 + nameBytes.length);
  infoTypes.forEach((t, i) => b.writeUInt16BE(t, 6 + nameBytes.length + i * 2));
  return b;
}

export interface MetaContextRequest {
  name: string;
  queries: string[];
}

export function decodeMetaContextRequest(payload: Buffer): Decoded<MetaContextRequest> {
  if (payload.length < 8) return bad('meta context data is shorter than 8 bytes');
  const nameLength = payload.readUInt32BE(0);
  if (nameLength > payload.length - 8) return bad('meta context export name runs past the option data');
  if (nameLength > c.maxStringBytes) return bad(`export name is longer than ${c.maxStringBytes} bytes`);
  const name = decodeUtf8(payload.subarray(4, 4 + nameLength), 'export name');
  if (!name.ok) return name;
  let at = 4 + nameLength;
  const count = payload.readUInt32BE(at);
  at += 4;
  if (count > c.maxMetaContextQueries) return bad(`more than ${c.maxMetaContextQueries} meta context queries`);
  const queries: string[] = [];
  for (let i = 0; i < count; i++) {
    if (at + 4 > payload.length) return bad(`meta context query ${i} length runs past the option data`);
    const length = payload.readUInt32BE(at);
    at += 4;
    if (length > payload.length - at) return bad(`meta context query ${i} runs past the option data`);
    if (length > c.maxStringBytes) return bad(`meta context query ${i} is longer than ${c.maxStringBytes} bytes`);
    const query = decodeUtf8(payload.subarray(at, at + length), 'meta context query');
    if (!query.ok) return query;
    queries.push(query.value);
    at += length;
  }
  if (at !== payload.length) return bad(`meta context data has ${payload.length - at} trailing bytes`);
  return ok({ name: name.value, queries });
}

export function encodeMetaContextRequest(name: string, queries: string[]): Buffer {
  const parts: Buffer[] = [];
  const nameBytes = Buffer.from(name, 'utf8');
  const head = Buffer.alloc(4);
  head.writeUInt32BE(nameBytes.length, 0);
  parts.push(head, nameBytes);
  const count = Buffer.alloc(4);
  count.writeUInt32BE(queries.length, 0);
  parts.push(count);
  for (const q of queries) {
    const qb = Buffer.from(q, 'utf8');
    const len = Buffer.alloc(4);
    len.writeUInt32BE(qb.length, 0);
    parts.push(len, qb);
  }
  return Buffer.concat(parts);
}

export function encodeInfoExport(sizeBytes: number, transmissionFlags: number): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(c.INFO_EXPORT, 0);
  b.writeBigUInt64BE(BigInt(sizeBytes), 2);
  b.writeUInt16BE(transmissionFlags, 10);
  return b;
}

export function encodeInfoString(infoType: typeof c.INFO_NAME | typeof c.INFO_DESCRIPTION, text: string): Buffer {
  const bytes = Buffer.from(truncateUtf8(text, c.maxStringBytes), 'utf8');
  const b = Buffer.alloc(2 + bytes.length);
  b.writeUInt16BE(infoType, 0);
  bytes.copy(b, 2);
  return b;
}

export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const b = Buffer.alloc(14);
  b.writeUInt16BE(c.INFO_BLOCK_SIZE, 0);
  b.writeUInt32BE(minimum, 2);
  b.writeUInt32BE(preferred, 6);
  b.writeUInt32BE(maximum, 10);
  return b;
}

export function encodeRepServer(name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const descBytes = Buffer.from(truncateUtf8(description, c.maxStringBytes), 'utf8');
  const b = Buffer.alloc(4 + nameBytes.length + descBytes.length);
  b.writeUInt32BE(nameBytes.length, 0);
  nameBytes.copy(b, 4);
  descBytes.copy(b, 4 + nameBytes.length);
  return b;
}

export function encodeRepMetaContext(contextId: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8');
  const b = Buffer.alloc(4 + nameBytes.length);
  b.writeUInt32BE(contextId, 0);
  nameBytes.copy(b, 4);
  return b;
}

/** The reply to NBD_OPT_EXPORT_NAME: size, flags and, unless NO_ZEROES was agreed, 124 zero bytes. */
export function encodeExportNameReply(sizeBytes: number, transmissionFlags: number, noZeroes: boolean): Buffer {
  const b = Buffer.alloc(10 + (noZeroes ? 0 : c.EXPORT_NAME_REPLY_ZEROES));
  b.writeBigUInt64BE(BigInt(sizeBytes), 0);
  b.writeUInt16BE(transmissionFlags, 8);
  return b;
}

// ---------------------------------------------------------------------------------------------
// Transmission

export interface RequestHeader {
  flags: number;
  type: number;
  cookie: bigint;
  /** Offsets beyond 2^53 cannot address any export; they decode as Infinity. */
  offset: number;
  length: number;
}

export function decodeRequestHeader(b: Buffer, at = 0): Decoded<RequestHeader> {
  if (b.length - at < c.REQUEST_HEADER_BYTES) return bad('request header is 28 bytes');
  const r = decodeRequest(b, at);
  if (!r) return bad(`request has bad magic 0x${b.readUInt32BE(at).toString(16)}`);
  return ok({ flags: r.flags, type: r.type, cookie: cookieOf(r), offset: r.offset, length: r.length });
}

/**
 * A request as the server handles it: the cookie as two 32-bit halves, copied back into the reply
 * as they came (no BigInt per request, which cost several allocations to read and to write).
 */
export interface Request {
  flags: number;
  type: number;
  cookieHi: number;
  cookieLo: number;
  /** Offsets beyond 2^53 cannot address any export; they decode as Infinity. */
  offset: number;
  length: number;
}

/** The request header at `b[at..at+28)`; undefined when its magic is wrong. */
export function decodeRequest(b: Buffer, at: number): Request | undefined {
  if (b.readUInt32BE(at) !== c.REQUEST_MAGIC) return undefined;
  const high = b.readUInt32BE(at + 16);
  const low = b.readUInt32BE(at + 20);
  return {
    flags: b.readUInt16BE(at + 4),
    type: b.readUInt16BE(at + 6),
    cookieHi: b.readUInt32BE(at + 8),
    cookieLo: b.readUInt32BE(at + 12),
    offset: high >= 0x200000 ? Number.POSITIVE_INFINITY : high * 0x100000000 + low,
    length: b.readUInt32BE(at + 24),
  };
}

export function cookieOf(r: Pick<Request, 'cookieHi' | 'cookieLo'>): bigint {
  return (BigInt(r.cookieHi) << 32n) | BigInt(r.cookieLo);
}

/** A simple reply written at `target[at..at+16)`. */
export function writeSimpleReply(target: Buffer, at: number, error: number, r: Pick<Request, 'cookieHi' | 'cookieLo'>): void {
  target.writeUInt32BE(c.SIMPLE_REPLY_MAGIC, at);
  target.writeUInt32BE(error, at + 4);
  target.writeUInt32BE(r.cookieHi, at + 8);
  target.writeUInt32BE(r.cookieLo, at + 12);
}

/** The header of an OFFSET_DATA chunk written at `target[at..at+28)`; the data follows. */
export function writeOffsetDataHeader(target: Buffer, at: number, r: Pick<Request, 'cookieHi' | 'cookieLo'>, offset: number, dataLength: number,
  done: boolean): void {
  target.writeUInt32BE(c.STRUCTURED_REPLY_MAGIC, at);
  target.writeUInt16BE(done ? c.REPLY_FLAG_DONE : 0, at + 4);
  target.writeUInt16BE(c.REPLY_TYPE_OFFSET_DATA, at + 6);
  target.writeUInt32BE(r.cookieHi, at + 8);
  target.writeUInt32BE(r.cookieLo, at + 12);
  target.writeUInt32BE(8 + dataLength, at + 16);
  target.writeUInt32BE(Math.floor(offset / 0x100000000), at + 20);
  target.writeUInt32BE(offset >>> 0, at + 24);
}

export function encodeRequestHeader(h: { flags: number; type: number; cookie: bigint; offset: number | bigint; length: number }): Buffer {
  const b = Buffer.alloc(c.REQUEST_HEADER_BYTES);
  b.writeUInt32BE(c.REQUEST_MAGIC, 0);
  b.writeUInt16BE(h.flags, 4);
  b.writeUInt16BE(h.type, 6);
  b.writeBigUInt64BE(h.cookie, 8);
  b.writeBigUInt64BE(BigInt(h.offset), 16);
  b.writeUInt32BE(h.length >>> 0, 24);
  return b;
}

export function encodeSimpleReply(error: number, cookie: bigint): Buffer {
  const b = Buffer.allocUnsafe(c.SIMPLE_REPLY_BYTES);
  writeSimpleReply(b, 0, error, { cookieHi: Number(cookie >> 32n), cookieLo: Number(cookie & 0xffffffffn) });
  return b;
}

export function encodeStructuredHeader(flags: number, type: number, cookie: bigint, length: number, extra = 0): Buffer {
  const b = Buffer.allocUnsafe(c.STRUCTURED_REPLY_HEADER_BYTES + extra);
  b.writeUInt32BE(c.STRUCTURED_REPLY_MAGIC, 0);
  b.writeUInt16BE(flags, 4);
  b.writeUInt16BE(type, 6);
  b.writeBigUInt64BE(cookie, 8);
  b.writeUInt32BE(length, 16);
  return b;
}

/** Header of an OFFSET_DATA chunk; the data follows separately so it is never copied. */
export function encodeOffsetDataHeader(cookie: bigint, offset: number, dataLength: number, done: boolean): Buffer {
  const b = Buffer.allocUnsafe(c.STRUCTURED_REPLY_HEADER_BYTES + 8);
  writeOffsetDataHeader(b, 0, { cookieHi: Number(cookie >> 32n), cookieLo: Number(cookie & 0xffffffffn) }, offset, dataLength, done);
  return b;
}

export function encodeOffsetHole(cookie: bigint, offset: number, holeLength: number, done: boolean): Buffer {
  const b = encodeStructuredHeader(done ? c.REPLY_FLAG_DONE : 0, c.REPLY_TYPE_OFFSET_HOLE, cookie, 12, 12);
  b.writeBigUInt64BE(BigInt(offset), 20);
  b.writeUInt32BE(holeLength, 28);
  return b;
}

export function encodeStructuredNone(cookie: bigint): Buffer {
  return encodeStructuredHeader(c.REPLY_FLAG_DONE, c.REPLY_TYPE_NONE, cookie, 0);
}

export function encodeStructuredError(cookie: bigint, error: number, message: string): Buffer {
  const text = Buffer.from(truncateUtf8(message, c.maxStringBytes), 'utf8');
  const b = encodeStructuredHeader(c.REPLY_FLAG_DONE, c.REPLY_TYPE_ERROR, cookie, 6 + text.length, 6 + text.length);
  b.writeUInt32BE(error, 20);
  b.writeUInt16BE(text.length, 24);
  text.copy(b, 26);
  return b;
}

export interface StatusDescriptor {
  length: number;
  flags: number;
}

export function encodeBlockStatus(cookie: bigint, contextId: number, descriptors: StatusDescriptor[], done: boolean): Buffer {
  const payload = 4 + descriptors.length * 8;
  const b = encodeStructuredHeader(done ? c.REPLY_FLAG_DONE : 0, c.REPLY_TYPE_BLOCK_STATUS, cookie, payload, payload);
  b.writeUInt32BE(contextId, 20);
  descriptors.forEach((d, i) => {
    b.writeUInt32BE(d.length, 24 + i * 8);
    b.writeUInt32BE(d.flags, 28 + i * 8);
  });
  return b;
}

/** One reply message as a client sees it (tests and tools decode server output with this). */
export type ReplyMessage =
  | { kind: 'simple'; error: number; cookie: bigint; bytes: number }
  | { kind: 'structured'; flags: number; type: number; cookie: bigint; payload: Buffer; bytes: number };

/** Decodes one reply at the start of `b`; simple replies carry no data here (callers know read sizes). */
export function decodeReply(b: Buffer): Decoded<ReplyMessage | null> {
  if (b.length < 4) return ok(null);
  const magic = b.readUInt32BE(0);
  if (magic === c.SIMPLE_REPLY_MAGIC) {
    if (b.length < c.SIMPLE_REPLY_BYTES) return ok(null);
    return ok({ kind: 'simple', error: b.readUInt32BE(4), cookie: b.readBigUInt64BE(8), bytes: c.SIMPLE_REPLY_BYTES });
  }
  if (magic === c.STRUCTURED_REPLY_MAGIC) {
    if (b.length < c.STRUCTURED_REPLY_HEADER_BYTES) return ok(null);
    const length = b.readUInt32BE(16);
    if (b.length < c.STRUCTURED_REPLY_HEADER_BYTES + length) return ok(null);
    return ok({
      kind: 'structured', flags: b.readUInt16BE(4), type: b.readUInt16BE(6), cookie: b.readBigUInt64BE(8),
      payload: b.subarray(c.STRUCTURED_REPLY_HEADER_BYTES, c.STRUCTURED_REPLY_HEADER_BYTES + length),
      bytes: c.STRUCTURED_REPLY_HEADER_BYTES + length,
    });
  }
  return bad(`reply has bad magic 0x${magic.toString(16)}`);
}

// ---------------------------------------------------------------------------------------------

function decodeUtf8(b: Buffer, what: string): Decoded<string> {
  const text = b.toString('utf8');
  if (!Buffer.from(text, 'utf8').equals(b)) return bad(`${what} is not valid UTF-8`);
  if (text.includes('\0')) return bad(`${what} contains a NUL character`);
  return ok(text);
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, 'utf8');
  if (bytes.length <= maxBytes) return text;
  return bytes.subarray(0, maxBytes).toString('utf8').replace(/\uFFFD$/, '');
}
