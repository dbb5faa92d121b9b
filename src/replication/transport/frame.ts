// The node-to-node frame: every message between storage nodes travels in one of these, with a
// crc32c over header and payload. Pure functions on bytes; the link owns sockets and state.
//
//   0  u32 magic "TCRP"        12  u32 request id, low 32 bits
//   4  u8  version (1)         16  u32 payload length
//   5  u8  kind                20  u32 status (responses; 0 = ok)
//   6  u16 message type        24  u32 crc32c of bytes 0..23 and the payload
//   8  u32 request id, high    28  u32 reserved, 0
import { crc32cOf } from '../../common/crc32c';

export const frameMagic = 0x54435250;
export const frameVersion = 1;
export const frameHeaderBytes = 32;
import { maxFramePayloadBytes, maxHandshakePayloadBytes } from '../limits';

/** Largest payload: the largest host write plus its addressing, or a journal batch (limits.ts). */
export { maxFramePayloadBytes, maxHandshakePayloadBytes };

export enum FrameKind {
  Request = 0,
  Response = 1,
  Message = 2,
}

export interface FrameHeader {
  kind: FrameKind;
  type: number;
  requestId: number;
  payloadLength: number;
  status: number;
}

/** Why a frame was refused: `oversized` for a payload over the limit, `malformed` for the rest. */
export type FrameFault = 'malformed' | 'oversized' | 'checksum';

export type FrameDecode =
  | { ok: true; header: FrameHeader; payload: Buffer; bytes: number }
  | { ok: true; header: null; bytes: 0 } // need more bytes
  | { ok: false; fault: FrameFault; error: string };

export type FrameHeaderDecode = { ok: true; header: FrameHeader } | { ok: false; fault: FrameFault; error: string };

/** Header bytes for a frame; the payload follows separately (never copied). */
export function encodeFrameHeader(h: FrameHeader, payload: Buffer | Buffer[]): Buffer {
  const b = Buffer.alloc(frameHeaderBytes);
  writeFrameHeader(b, 0, h, Array.isArray(payload) ? payload : [payload]);
  return b;
}

/** Writes a frame's header at `target[at..at+32)`, its checksum covering `payload` (sent after it). */
export function writeFrameHeader(target: Buffer, at: number, h: FrameHeader, payload: readonly Buffer[]): void {
  target.writeUInt32BE(frameMagic, at);
  target[at + 4] = frameVersion;
  target[at + 5] = h.kind;
  target.writeUInt16BE(h.type, at + 6);
  target.writeUInt32BE(Math.floor(h.requestId / 0x100000000), at + 8);
  target.writeUInt32BE(h.requestId >>> 0, at + 12);
  target.writeUInt32BE(h.payloadLength, at + 16);
  target.writeUInt32BE(h.status >>> 0, at + 20);
  target.writeUInt32BE(0, at + 28);
  const head = target.subarray(at, at + 24);
  const crc = payload.length === 0 ? crc32cOf([head]) : payload.length === 1 ? crc32cOf([head, payload[0]!]) : crc32cOf([head, ...payload]);
  target.writeUInt32BE(crc, at + 24);
}

export function encodeFrame(h: Omit<FrameHeader, 'payloadLength'>, payload: Buffer = Buffer.alloc(0)): Buffer {
  return Buffer.concat([encodeFrameHeader({ ...h, payloadLength: payload.length }, payload), payload]);
}

/** Validates a header on its own (before its payload has arrived). */
export function decodeFrameHeader(b: Buffer): FrameHeaderDecode {
  const malformed = (error: string): FrameHeaderDecode => ({ ok: false, fault: 'malformed', error });
  if (b.length < frameHeaderBytes) return malformed('frame header is 32 bytes');
  if (b.readUInt32BE(0) !== frameMagic) return malformed(`bad frame magic 0x${b.readUInt32BE(0).toString(16)}`);
  const version = b.readUInt8(4);
  if (version !== frameVersion) return malformed(`unsupported frame version ${version}`);
  const kind = b.readUInt8(5);
  if (kind > FrameKind.Message) return malformed(`unknown frame kind ${kind}`);
  const high = b.readUInt32BE(8);
  if (high >= 0x200000) return malformed('request id out of range');
  if (b.readUInt32BE(28) !== 0) return malformed('reserved frame field is not zero');
  const payloadLength = b.readUInt32BE(16);
  if (payloadLength > maxFramePayloadBytes) {
    return { ok: false, fault: 'oversized', error: `frame payload of ${payloadLength} bytes exceeds ${maxFramePayloadBytes}` };
  }
  return {
    ok: true,
    header: { kind, type: b.readUInt16BE(6), requestId: high * 0x100000000 + b.readUInt32BE(12), payloadLength, status: b.readUInt32BE(20) },
  };
}

/** Checks the crc of a complete frame (header bytes and payload). */
export function frameChecksumValid(header: Buffer, payload: Buffer): boolean {
  const expected = header.readUInt32BE(24);
  return crc32cOf([header.subarray(0, 24), payload]) === expected;
}

/** Decodes one whole frame at the start of `b` (used by tests and simple readers). */
export function decodeFrame(b: Buffer): FrameDecode {
  if (b.length < frameHeaderBytes) return { ok: true, header: null, bytes: 0 };
  const h = decodeFrameHeader(b);
  if (!h.ok) return h;
  const total = frameHeaderBytes + h.header.payloadLength;
  if (b.length < total) return { ok: true, header: null, bytes: 0 };
  const payload = b.subarray(frameHeaderBytes, total);
  if (!frameChecksumValid(b, payload)) return { ok: false, fault: 'checksum', error: 'frame checksum mismatch' };
  return { ok: true, header: h.header, payload, bytes: total };
}
