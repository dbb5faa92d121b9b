// The catalogue of node-to-node messages and the codecs of their payloads. Control messages carry
// JSON validated against a schema when they arrive; data messages carry binary headers and data.
import Ajv, { type JSONSchemaType, type ValidateFunction } from 'ajv';
import { TricopyError, isErrorCode, type ErrorCode } from '../../common/errors';

export enum MessageType {
  // Handshake (before authentication nothing else is accepted).
  Hello = 1,
  HelloReply = 2,
  Auth = 3,
  AuthOk = 4,
  // Liveness.
  Ping = 10,
  // Pair control (JSON requests).
  PairsSync = 20,
  PairCreate = 21,
  PairUpdate = 22,
  PairDelete = 23,
  PairBitmap = 24,
  PairBitmapClear = 25,
  SwapPrepare = 26,
  RegionHashes = 27,
  // Quorum pairs (spec 004; handled by src/quorum/ through the replication service's extension point).
  QuorumRequest = 30,
  // Data path.
  Write = 40,
  Zero = 41,
  Flush = 42,
  Copy = 43,
  JournalBatch = 50,
  GroupProgress = 51,
  // Residual entries of a fast failover through a remote copy network (spec 002 §6.9, E-21): sent by
  // the node's edge on a link of its own, after the node's secondary saw its primary gone.
  ResidualWrite = 60,
  ResidualState = 61,
}

export const responseOk = 0;
export const responseError = 1;

// ------------------------------------------------------------------------------------------------
// JSON payloads

const ajv = new Ajv({ allErrors: false, strict: true });

export function jsonCodec<T>(schema: JSONSchemaType<T>): { encode(value: T): Buffer; decode(payload: Buffer): T } {
  const validate: ValidateFunction<T> = ajv.compile(schema);
  return {
    encode: (value: T) => Buffer.from(JSON.stringify(value), 'utf8'),
    decode: (payload: Buffer) => {
      let value: unknown;
      try {
        value = JSON.parse(payload.toString('utf8'));
      } catch {
        throw new TricopyError('invalid-argument', 'peer sent a message that is not JSON');
      }
      if (!validate(value)) {
        throw new TricopyError('invalid-argument', `peer sent a malformed message: ${ajv.errorsText(validate.errors)}`);
      }
      return value;
    },
  };
}

export interface HelloMessage {
  protocol: number;
  node: string;
  nonce: string;
  /**
   * The node the dialer expects to reach. A storage node ignores it (the proof names who answered);
   * a relay of a remote copy network answers as that node (a virtual storage, spec 002 §5.3).
   */
  expect?: string;
}
export const helloCodec = jsonCodec<HelloMessage>({
  type: 'object',
  additionalProperties: false,
  required: ['protocol', 'node', 'nonce'],
  properties: {
    protocol: { type: 'integer' }, node: { type: 'string', maxLength: 63 }, nonce: { type: 'string', maxLength: 128 },
    expect: { type: 'string', maxLength: 63, nullable: true },
  },
});

export interface HelloReplyMessage {
  node: string;
  nonce: string;
  proof: string;
}
export const helloReplyCodec = jsonCodec<HelloReplyMessage>({
  type: 'object',
  additionalProperties: false,
  required: ['node', 'nonce', 'proof'],
  properties: { node: { type: 'string', maxLength: 63 }, nonce: { type: 'string', maxLength: 128 }, proof: { type: 'string', maxLength: 128 } },
});

export interface AuthMessage {
  proof: string;
}
export const authCodec = jsonCodec<AuthMessage>({
  type: 'object',
  additionalProperties: false,
  required: ['proof'],
  properties: { proof: { type: 'string', maxLength: 128 } },
});

export interface ErrorPayload {
  code: string;
  message: string;
  hint?: string;
}
const errorPayloadCodec = jsonCodec<ErrorPayload>({
  type: 'object',
  additionalProperties: false,
  required: ['code', 'message'],
  properties: { code: { type: 'string' }, message: { type: 'string' }, hint: { type: 'string', nullable: true } },
});

export function encodeErrorPayload(err: unknown): Buffer {
  if (err instanceof TricopyError) {
    return errorPayloadCodec.encode({ code: err.code, message: err.message, ...(err.hint ? { hint: err.hint } : {}) });
  }
  return errorPayloadCodec.encode({ code: 'internal', message: err instanceof Error ? err.message : String(err) });
}

export function decodeErrorPayload(payload: Buffer, peer: string): TricopyError {
  try {
    const p = errorPayloadCodec.decode(payload);
    const code: ErrorCode = isErrorCode(p.code) ? p.code : 'internal';
    return new TricopyError(code, `node ${peer}: ${p.message}`, p.hint);
  } catch {
    return new TricopyError('internal', `node ${peer} answered with an unreadable error`);
  }
}

// ------------------------------------------------------------------------------------------------
// Binary data payloads:
//   [u8 name length][name][u64 offset][u32 length][u8 flags]{delta tag if flags & tagged}[data]
// A delta tag: [u8 group length][group][u64 seq][u64 applied seq].

export const dataFlagFua = 1;
/** A delta tag follows the flags: the write's position in an async stream (delta resync, spec 001). */
export const dataFlagTagged = 2;
/** With a tag: both copies of the volume were in step when the write was sent. */
export const dataFlagInStep = 4;
const knownDataFlags = dataFlagFua | dataFlagTagged | dataFlagInStep;
const maxSeq = Number.MAX_SAFE_INTEGER;

/**
 * Where a write sits in the async stream of a consistency group: its entry sequence number, how far
 * the async secondary has applied the stream, and whether both copies were in step when it was sent.
 */
export interface DeltaTag {
  group: string;
  seq: number;
  appliedSeq: number;
  inStep: boolean;
}

export interface DataHeader {
  /** Pair name (sync data) or group name (journal batches). */
  name: string;
  offset: number;
  length: number;
  flags: number;
  tag?: DeltaTag | undefined;
}

function writeU64(b: Buffer, value: number, at: number): void {
  b.writeUInt32BE(Math.floor(value / 0x100000000), at);
  b.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(b: Buffer, at: number, what: string): number {
  const high = b.readUInt32BE(at);
  if (high >= 0x200000) throw new TricopyError('invalid-argument', `${what} out of range`);
  return high * 0x100000000 + b.readUInt32BE(at + 4);
}

function encodedName(name: string, what: string): Buffer {
  const b = Buffer.from(name, 'utf8');
  if (b.length > 255) throw new TricopyError('invalid-argument', `${what} ${name} is too long`);
  return b;
}

export function encodeDataHeader(h: DataHeader): Buffer {
  const name = encodedName(h.name, 'name');
  const group = h.tag ? encodedName(h.tag.group, 'group') : undefined;
  const flags = (h.flags & dataFlagFua) | (h.tag ? dataFlagTagged | (h.tag.inStep ? dataFlagInStep : 0) : 0);
  const b = Buffer.alloc(1 + name.length + 13 + (group ? 1 + group.length + 16 : 0));
  b.writeUInt8(name.length, 0);
  name.copy(b, 1);
  let at = 1 + name.length;
  writeU64(b, h.offset, at);
  b.writeUInt32BE(h.length, at + 8);
  b.writeUInt8(flags, at + 12);
  at += 13;
  if (h.tag && group) encodeTagAt(b, at, group, h.tag);
  return b;
}

function encodeTagAt(b: Buffer, at: number, group: Buffer, tag: DeltaTag): void {
  if (!Number.isSafeInteger(tag.seq) || tag.seq < 1 || !Number.isSafeInteger(tag.appliedSeq) || tag.appliedSeq < 0) {
    throw new TricopyError('invalid-argument', 'delta tag sequence numbers must be non-negative integers (seq at least 1)');
  }
  b.writeUInt8(group.length, at);
  group.copy(b, at + 1);
  writeU64(b, tag.seq, at + 1 + group.length);
  writeU64(b, tag.appliedSeq, at + 9 + group.length);
}

function decodeTagAt(payload: Buffer, at: number, inStep: boolean): { tag: DeltaTag; end: number } {
  if (payload.length < at + 1) throw new TricopyError('invalid-argument', 'delta tag is truncated');
  const groupLength = payload.readUInt8(at);
  if (groupLength === 0 || payload.length < at + 1 + groupLength + 16) throw new TricopyError('invalid-argument', 'delta tag is truncated');
  const group = payload.toString('utf8', at + 1, at + 1 + groupLength);
  const seq = readU64(payload, at + 1 + groupLength, 'delta tag sequence number');
  const appliedSeq = readU64(payload, at + 9 + groupLength, 'delta tag applied sequence number');
  if (seq < 1 || seq > maxSeq) throw new TricopyError('invalid-argument', 'delta tag sequence number out of range');
  return { tag: { group, seq, appliedSeq, inStep }, end: at + 17 + groupLength };
}

export function decodeDataHeader(payload: Buffer): { header: DataHeader; data: Buffer } {
  if (payload.length < 1) throw new TricopyError('invalid-argument', 'data message is empty');
  const nameLength = payload.readUInt8(0);
  if (payload.length < 1 + nameLength + 13) throw new TricopyError('invalid-argument', 'data message header is truncated');
  const name = payload.toString('utf8', 1, 1 + nameLength);
  let at = 1 + nameLength;
  const offset = readU64(payload, at, 'data message offset');
  const length = payload.readUInt32BE(at + 8);
  const flags = payload.readUInt8(at + 12);
  if ((flags & ~knownDataFlags) !== 0) throw new TricopyError('invalid-argument', `data message has unknown flags 0x${flags.toString(16)}`);
  at += 13;
  const header: DataHeader = { name, offset, length, flags: flags & dataFlagFua };
  if (flags & dataFlagTagged) {
    const { tag, end } = decodeTagAt(payload, at, (flags & dataFlagInStep) !== 0);
    header.tag = tag;
    at = end;
  } else if (flags & dataFlagInStep) {
    throw new TricopyError('invalid-argument', 'data message is marked in step without a delta tag');
  }
  return { header, data: payload.subarray(at) };
}

/** The reply to a forwarded write at a cascade intermediate: the tag it journaled the write under (or nothing). */
export function encodeDeltaTagReply(tag: DeltaTag | undefined): Buffer {
  if (!tag) return Buffer.alloc(0);
  const group = encodedName(tag.group, 'group');
  const b = Buffer.alloc(1 + 1 + group.length + 16);
  b.writeUInt8(tag.inStep ? 1 : 0, 0);
  encodeTagAt(b, 1, group, tag);
  return b;
}

export function decodeDeltaTagReply(payload: Buffer): DeltaTag | undefined {
  if (payload.length === 0) return undefined;
  const inStep = payload.readUInt8(0);
  if (inStep > 1) throw new TricopyError('invalid-argument', 'delta tag reply has an unknown in-step value');
  const { tag, end } = decodeTagAt(payload, 1, inStep === 1);
  if (end !== payload.length) throw new TricopyError('invalid-argument', 'delta tag reply has trailing bytes');
  return tag;
}

// ------------------------------------------------------------------------------------------------
// Residual writes: a plain write (spec 002 ¶0087: "SCSI WR") carrying the data message the network
// still held, unchanged: one byte of its type, then its payload.

export function encodeResidualWrite(type: MessageType, payload: Buffer): Buffer[] {
  const head = Buffer.alloc(1);
  head.writeUInt8(type, 0);
  return [head, payload];
}

export function decodeResidualWrite(payload: Buffer): { type: MessageType; payload: Buffer } {
  if (payload.length < 1) throw new TricopyError('invalid-argument', 'residual write is empty');
  const type = payload.readUInt8(0) as MessageType;
  if (type !== MessageType.Write && type !== MessageType.Zero && type !== MessageType.Copy && type !== MessageType.Flush) {
    throw new TricopyError('invalid-argument', `a residual write carries a write, a zero, a copy or a flush, not message type ${type}`);
  }
  return { type, payload: payload.subarray(1) };
}
