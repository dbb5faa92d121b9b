// The log entry of the remote copy network (spec 002 §4.9, Fig. 8) and the frames that carry it
// between relays: pure functions on bytes. A storage node's message (the RIO: its type and payload,
// byte for byte) travels inside an entry that adds the target (801) and source (802) addressing,
// the order-guarantee id (803), the I/O time and sequential number (804).
//
// Entry layout (big-endian):
//    0 u8  version (1)            20 u32 correlation id (direct requests)
//    1 u8  kind                   24 u16 RIO message type
//    2 u8  flags                  26 u32 RIO status (responses; 0 = ok)
//    3 u8  path length N          30 u32 RIO payload length
//    4 u64 sequential number      34 N × str8 the carried path (relay names, edge to edge), then
//   12 u64 I/O time (ms)             str8 order id, str8 target node, str8 target pair,
//                                    str8 source node, str8 source pair, then the RIO payload
// (str8: one length byte, then that many UTF-8 bytes.)
//
// The carried path is chosen by the edge the entry leaves from (paths.ts) and followed by every
// relay (forwarder.ts); N = 0 means none, and relays then follow their route tables. The path
// sits right after the fixed fields so that the source edge can put one on an entry stored in
// its log area without decoding it (`withPath`): the payload is never copied.
import { TricopyError } from '../common/errors';

export const entryVersion = 1;
const fixedBytes = 34;

export enum EntryKind {
  /** A numbered request (a write, or pair control ordered with the writes): gated at the target edge. */
  Request = 1,
  /** The answer to a numbered request; it acknowledges its number and every number before it. */
  Response = 2,
  /** An un-numbered request (node-level control, or the reverse direction); answered by DirectResponse. */
  Direct = 3,
  DirectResponse = 4,
  /** Failover (§6.9): the target edge asks the source edge to flush and stop the order. */
  Suspend = 5,
  /** The source edge's answer to Suspend: `seq` carries its last assigned number (the high-water mark). */
  SuspendOk = 6,
  /** An edge declared Failure Suspend of the order (§6.10 (b)): the other edge stops it too. */
  FailNotice = 7,
  /**
   * A relay could not forward an entry on its carried path (the link to the next relay is down):
   * sent back along the path to the edge the entry came from, which then chooses a path around the
   * link and sends again. The payload names the link (`encodeDeadLink`); 803 and 804 are the entry's.
   */
  PathDown = 8,
}

/** The most relays a carried path may name (edges included), as many as a route may (api.ts): a longer one is refused. */
export const maxPathHops = 64;

/** A resynchronisation point (§5.9.4): the target edge sets its reflection counter to seq − 1 first. */
export const entryFlagRealign = 1;
const knownFlags = entryFlagRealign;

export interface Endpoint {
  /** The storage node (the WWN of the source). */
  node: string;
  /** The pair the message is about ('' for node-level messages; the LUN of the source). */
  pair: string;
}

export interface Rio {
  /** The node-to-node message type (replication/transport/messages.ts). */
  type: number;
  /** 0 = ok; otherwise the payload is the error (responses only). */
  status: number;
  payload: Buffer;
}

export interface RelayEntry {
  kind: EntryKind;
  flags: number;
  /** 801: where the RIO is delivered. */
  target: Endpoint;
  /** 802: where the RIO came from. */
  source: Endpoint;
  /** 803: '' for un-numbered entries. */
  order: string;
  /** 804: the source edge's clock when it received the RIO, and the number within the order (0: none). */
  ioTimeMs: number;
  seq: number;
  /** Correlates a direct request with its response (0 otherwise). */
  corr: number;
  /** 805 */
  rio: Rio;
  /** The carried path, from the edge the entry left to the edge it goes to; absent or empty: none. */
  path?: string[];
}

function str8(s: string, what: string): Buffer {
  const b = Buffer.from(s, 'utf8');
  if (b.length > 255) throw new TricopyError('invalid-argument', `${what} "${s}" is longer than 255 bytes`);
  return b;
}

function writeU64(b: Buffer, at: number, value: number): void {
  if (!Number.isSafeInteger(value) || value < 0) throw new TricopyError('invalid-argument', `${value} is not a non-negative integer`);
  b.writeUInt32BE(Math.floor(value / 0x100000000), at);
  b.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(b: Buffer, at: number, what: string): number {
  const high = b.readUInt32BE(at);
  if (high >= 0x200000) throw new TricopyError('invalid-argument', `${what} out of range`);
  return high * 0x100000000 + b.readUInt32BE(at + 4);
}

/** The entry's header (everything before the RIO payload); the payload follows it, never copied. */
export function encodeEntryHeader(e: RelayEntry): Buffer {
  if (!(e.kind in EntryKind)) throw new TricopyError('invalid-argument', `unknown entry kind ${e.kind}`);
  if ((e.flags & ~knownFlags) !== 0) throw new TricopyError('invalid-argument', `unknown entry flags 0x${e.flags.toString(16)}`);
  const path = e.path ?? [];
  checkPath(path);
  const strings = [...path.map((h) => str8(h, 'relay')), str8(e.order, 'order id'), str8(e.target.node, 'node'), str8(e.target.pair, 'pair'), str8(e.source.node, 'node'), str8(e.source.pair, 'pair')];
  const b = Buffer.alloc(fixedBytes + strings.reduce((n, s) => n + 1 + s.length, 0));
  b.writeUInt8(entryVersion, 0);
  b.writeUInt8(e.kind, 1);
  b.writeUInt8(e.flags, 2);
  b.writeUInt8(path.length, 3);
  writeU64(b, 4, e.seq);
  writeU64(b, 12, e.ioTimeMs);
  b.writeUInt32BE(e.corr >>> 0, 20);
  b.writeUInt16BE(e.rio.type, 24);
  b.writeUInt32BE(e.rio.status >>> 0, 26);
  b.writeUInt32BE(e.rio.payload.length, 30);
  let at = fixedBytes;
  for (const s of strings) {
    b.writeUInt8(s.length, at);
    s.copy(b, at + 1);
    at += 1 + s.length;
  }
  return b;
}

/** The entry as pieces: its header and the RIO payload. */
export function encodeEntry(e: RelayEntry): Buffer[] {
  const header = encodeEntryHeader(e);
  return e.rio.payload.length > 0 ? [header, e.rio.payload] : [header];
}

/** The entry as one buffer (what the log area stores). */
export function encodeEntryBytes(e: RelayEntry): Buffer {
  return Buffer.concat(encodeEntry(e));
}

export type EntryDecode = { entry: RelayEntry; bytes: number };

/** Decodes the entry at `at`; the payload is a view of `b` (not copied). Throws on malformed bytes. */
export function decodeEntry(b: Buffer, at = 0): EntryDecode {
  const bad = (why: string): never => {
    throw new TricopyError('invalid-argument', `relay entry at byte ${at}: ${why}`);
  };
  if (b.length - at < fixedBytes) bad('truncated header');
  if (b.readUInt8(at) !== entryVersion) bad(`unsupported version ${b.readUInt8(at)}`);
  const kind = b.readUInt8(at + 1);
  if (!(kind in EntryKind)) bad(`unknown kind ${kind}`);
  const flags = b.readUInt8(at + 2);
  if ((flags & ~knownFlags) !== 0) bad(`unknown flags 0x${flags.toString(16)}`);
  const hops = b.readUInt8(at + 3);
  if (hops > maxPathHops) bad(`a carried path of ${hops} relays (at most ${maxPathHops})`);
  const seq = readU64(b, at + 4, 'sequential number');
  const ioTimeMs = readU64(b, at + 12, 'I/O time');
  const corr = b.readUInt32BE(at + 20);
  const type = b.readUInt16BE(at + 24);
  const status = b.readUInt32BE(at + 26);
  const payloadLength = b.readUInt32BE(at + 30);
  let p = at + fixedBytes;
  const strings: string[] = [];
  for (let i = 0; i < hops + 5; i++) {
    if (p >= b.length) bad(i < hops ? 'truncated path' : 'truncated addressing');
    const n = b.readUInt8(p);
    if (p + 1 + n > b.length) bad(i < hops ? 'truncated path' : 'truncated addressing');
    strings.push(b.toString('utf8', p + 1, p + 1 + n));
    p += 1 + n;
  }
  if (b.length - p < payloadLength) bad('truncated payload');
  const payload = b.subarray(p, p + payloadLength);
  const path = strings.slice(0, hops);
  const [order, tNode, tPair, sNode, sPair] = strings.slice(hops) as [string, string, string, string, string];
  if (tNode === '' || sNode === '') bad('an entry names its source and target nodes');
  const pathProblem = pathError(path);
  if (pathProblem) bad(pathProblem);
  const entry: RelayEntry = { kind, flags, target: { node: tNode, pair: tPair }, source: { node: sNode, pair: sPair }, order, ioTimeMs, seq, corr, rio: { type, status, payload } };
  if (hops > 0) entry.path = path;
  return { entry, bytes: p + payloadLength - at };
}

/** Why a carried path is unusable, or undefined: no empty names, no relay twice, not too long. */
function pathError(path: readonly string[]): string | undefined {
  if (path.length > maxPathHops) return `a carried path of ${path.length} relays (at most ${maxPathHops})`;
  if (path.some((h) => h === '')) return 'a carried path names an empty relay';
  if (new Set(path).size !== path.length) return `the carried path ${path.join(' → ')} visits a relay twice`;
  return undefined;
}

function checkPath(path: readonly string[]): void {
  const problem = pathError(path);
  if (problem) throw new TricopyError('invalid-argument', problem);
}

/**
 * The encoded entry `bytes` (one whole entry, e.g. from the log area) carrying `path` instead of
 * the one it carries: the pieces to send, the payload a view of `bytes`, never copied.
 */
export function withPath(bytes: Buffer, path: readonly string[]): Buffer[] {
  checkPath(path);
  if (bytes.length < fixedBytes || bytes.readUInt8(0) !== entryVersion) throw new TricopyError('invalid-argument', 'relay entry: truncated header or unsupported version');
  let p = fixedBytes;
  for (let i = bytes.readUInt8(3); i > 0; i--) {
    if (p >= bytes.length || p + 1 + bytes.readUInt8(p) > bytes.length) throw new TricopyError('invalid-argument', 'relay entry: truncated path');
    p += 1 + bytes.readUInt8(p);
  }
  const fixed = Buffer.from(bytes.subarray(0, fixedBytes));
  fixed.writeUInt8(path.length, 3);
  const hops = path.map((h) => str8(h, 'relay'));
  const pathBytes = Buffer.alloc(hops.reduce((n, h) => n + 1 + h.length, 0));
  let at = 0;
  for (const h of hops) {
    pathBytes.writeUInt8(h.length, at);
    h.copy(pathBytes, at + 1);
    at += 1 + h.length;
  }
  return [fixed, pathBytes, bytes.subarray(p)];
}

/** The link a PathDown entry names: `from` could not reach its neighbour `to`. */
export interface DeadLink {
  from: string;
  to: string;
}

export function encodeDeadLink(l: DeadLink): Buffer {
  const from = str8(l.from, 'relay');
  const to = str8(l.to, 'relay');
  if (from.length === 0 || to.length === 0 || l.from === l.to) throw new TricopyError('invalid-argument', `a dead link joins two different relays (got "${l.from}", "${l.to}")`);
  return Buffer.concat([Buffer.from([from.length]), from, Buffer.from([to.length]), to]);
}

export function decodeDeadLink(b: Buffer): DeadLink {
  const bad = (why: string): never => {
    throw new TricopyError('invalid-argument', `dead link notice: ${why}`);
  };
  const names: string[] = [];
  let p = 0;
  for (let i = 0; i < 2; i++) {
    if (p >= b.length || p + 1 + b.readUInt8(p) > b.length) bad('truncated');
    names.push(b.toString('utf8', p + 1, p + 1 + b.readUInt8(p)));
    p += 1 + b.readUInt8(p);
  }
  if (p !== b.length) bad(`${b.length - p} bytes after the link`);
  const [from, to] = names as [string, string];
  if (from === '' || to === '' || from === to) bad(`a dead link joins two different relays (got "${from}", "${to}")`);
  return { from, to };
}

/** A frame of entries: the entries back to back. */
export function encodeBatch(entries: RelayEntry[]): Buffer[] {
  return entries.flatMap(encodeEntry);
}

export function decodeBatch(b: Buffer): RelayEntry[] {
  const out: RelayEntry[] = [];
  let at = 0;
  while (at < b.length) {
    const d = decodeEntry(b, at);
    out.push(d.entry);
    at += d.bytes;
  }
  return out;
}

/** The entry of a numbered request's answer (§4.9: 801 and 802 swapped, 803 and 804 kept). */
export function responseTo(e: RelayEntry, kind: EntryKind, rio: Rio): RelayEntry {
  const r: RelayEntry = { kind, flags: 0, target: e.source, source: e.target, order: e.order, ioTimeMs: e.ioTimeMs, seq: e.seq, corr: e.corr, rio };
  // Back the way the request came (a path it just crossed); the answering edge may choose another.
  if (e.path && e.path.length > 0) r.path = [...e.path].reverse();
  return r;
}

// ------------------------------------------------------------------------------------------------
// Fragments (§5.7(7)): an entry larger than a frame allows crosses a link in pieces and is
// reassembled at the next hop. Layout: u64 fragment id | u16 index | u16 count | u32 total bytes | bytes.

const fragmentHeaderBytes = 16;

export interface Fragment {
  id: number;
  index: number;
  count: number;
  totalBytes: number;
  bytes: Buffer;
}

/** Splits encoded entry bytes into fragments of at most `maxBytes` each. */
export function fragment(id: number, bytes: Buffer, maxBytes: number): Buffer[][] {
  if (maxBytes < 1) throw new TricopyError('invalid-argument', 'fragment size must be positive');
  const count = Math.max(1, Math.ceil(bytes.length / maxBytes));
  if (count > 0xffff) throw new TricopyError('invalid-argument', `an entry of ${bytes.length} bytes needs more than 65535 fragments`);
  const out: Buffer[][] = [];
  for (let i = 0; i < count; i++) {
    const h = Buffer.alloc(fragmentHeaderBytes);
    writeU64(h, 0, id);
    h.writeUInt16BE(i, 8);
    h.writeUInt16BE(count, 10);
    h.writeUInt32BE(bytes.length, 12);
    out.push([h, bytes.subarray(i * maxBytes, Math.min(bytes.length, (i + 1) * maxBytes))]);
  }
  return out;
}

export function decodeFragment(b: Buffer): Fragment {
  if (b.length < fragmentHeaderBytes) throw new TricopyError('invalid-argument', 'fragment is truncated');
  const f: Fragment = {
    id: readU64(b, 0, 'fragment id'), index: b.readUInt16BE(8), count: b.readUInt16BE(10), totalBytes: b.readUInt32BE(12), bytes: b.subarray(fragmentHeaderBytes),
  };
  if (f.count === 0 || f.index >= f.count) throw new TricopyError('invalid-argument', `fragment ${f.index} of ${f.count}`);
  return f;
}

/**
 * Reassembles fragments arriving on one link (in order, as TCP delivers them). Bounded: at most
 * `maxPending` entries at once and `maxBytes` per entry; anything else is refused.
 */
export class Reassembly {
  private readonly pending = new Map<number, { parts: Buffer[]; count: number; totalBytes: number; received: number }>();

  constructor(private readonly maxBytes: number, private readonly maxPending = 64) {}

  /** The whole entry bytes once the last fragment arrived, else undefined. */
  add(f: Fragment): Buffer | undefined {
    if (f.totalBytes > this.maxBytes) throw new TricopyError('invalid-argument', `a fragmented entry of ${f.totalBytes} bytes exceeds ${this.maxBytes}`);
    let p = this.pending.get(f.id);
    if (!p) {
      if (f.index !== 0) throw new TricopyError('invalid-argument', `fragment ${f.index} of entry ${f.id} arrived before its first`);
      if (this.pending.size >= this.maxPending) throw new TricopyError('invalid-argument', 'too many fragmented entries at once');
      p = { parts: [], count: f.count, totalBytes: f.totalBytes, received: 0 };
      this.pending.set(f.id, p);
    }
    if (f.count !== p.count || f.totalBytes !== p.totalBytes || f.index !== p.parts.length) {
      this.pending.delete(f.id);
      throw new TricopyError('invalid-argument', `fragment ${f.index} of entry ${f.id} does not continue it`);
    }
    p.parts.push(f.bytes);
    p.received += f.bytes.length;
    if (p.received > p.totalBytes) {
      this.pending.delete(f.id);
      throw new TricopyError('invalid-argument', `fragments of entry ${f.id} exceed its size`);
    }
    if (p.parts.length < p.count) return undefined;
    this.pending.delete(f.id);
    if (p.received !== p.totalBytes) throw new TricopyError('invalid-argument', `fragments of entry ${f.id} fall short of its size`);
    return Buffer.concat(p.parts, p.totalBytes);
  }

  get pendingEntries(): number {
    return this.pending.size;
  }
}
