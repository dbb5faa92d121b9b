// The catalogue of node-to-node messages and the codecs of their payloads. Control messages carry
// JSON validated against a schema when they arrive; data messages carry binary headers and data.
import Ajv, { type JSONSchemaType, type ValidateFunction } from 'ajv';
import { TricopyError, isErrorCode, type ErrorCode } from '../common/errors';

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
  // Data path.
  Write = 40,
  Zero = 41,
  Flush = 42,
  Copy = 43,
  JournalBatch = 50,
  GroupProgress = 51,
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
}
export const helloCodec = jsonCodec<HelloMessage>({
  type: 'object',
  additionalProperties: false,
  required: ['protocol', 'node', 'nonce'],
  properties: { protocol: { type: 'integer' }, node: { type: 'string', maxLength: 63 }, nonce: { type: 'string', maxLength: 128 } },
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
// Binary data payloads: [u8 name length][name][u64 offset][u32 length][u8 flags][data]

export const dataFlagFua = 1;

export interface DataHeader {
  /** Pair name (sync data) or group name (journal batches). */
  name: string;
  offset: number;
  length: number;
  flags: number;
}

export function encodeDataHeader(h: DataHeader): Buffer {
  const name = Buffer.from(h.name, 'utf8');
  if (name.length > 255) throw new TricopyError('invalid-argument', `name ${h.name} is too long`);
  const b = Buffer.alloc(1 + name.length + 13);
  b.writeUInt8(name.length, 0);
  name.copy(b, 1);
  let at = 1 + name.length;
  b.writeUInt32BE(Math.floor(h.offset / 0x100000000), at);
  b.writeUInt32BE(h.offset >>> 0, at + 4);
  b.writeUInt32BE(h.length, at + 8);
  b.writeUInt8(h.flags, at + 12);
  at += 13;
  return b;
}

export function decodeDataHeader(payload: Buffer): { header: DataHeader; data: Buffer } {
  if (payload.length < 1) throw new TricopyError('invalid-argument', 'data message is empty');
  const nameLength = payload.readUInt8(0);
  if (payload.length < 1 + nameLength + 13) throw new TricopyError('invalid-argument', 'data message header is truncated');
  const name = payload.toString('utf8', 1, 1 + nameLength);
  const at = 1 + nameLength;
  const high = payload.readUInt32BE(at);
  if (high >= 0x200000) throw new TricopyError('invalid-argument', 'data message offset out of range');
  const header = { name, offset: high * 0x100000000 + payload.readUInt32BE(at + 4), length: payload.readUInt32BE(at + 8), flags: payload.readUInt8(at + 12) };
  return { header, data: payload.subarray(at + 13) };
}
