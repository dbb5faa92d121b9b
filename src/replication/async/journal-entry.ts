// The ordered journal entry of an async consistency group (spec 001 §4.4, spec 002 §4.9): one
// encoding for the journal files on disk and for batches on the wire. Pure functions on bytes.
//
// Layout (big-endian): crc32c of the rest (4) | entry length (4) | seq (8) | time ms (8) | op (1) |
// pair-name length n (1) | pair name (n) | volume offset (8) | data length (4) | data
import { crc32c } from '../../common/crc32c';

export enum JournalOp {
  /** A host write; carries its data. */
  Write = 1,
  /** A host write-zeroes; no data. */
  Zero = 2,
  /** Copy of a region for initial copy or resync: on disk a marker, data read when shipped. */
  CopyRegion = 3,
  /** A CopyRegion on the wire: carries the data read at ship time. */
  CopyData = 4,
}

export interface JournalEntry {
  seq: number;
  timeMs: number;
  op: JournalOp;
  pair: string;
  offset: number;
  /** Bytes of the volume range the entry covers. */
  length: number;
  /** Present for Write and CopyData. */
  data?: Buffer | undefined;
}

const fixedBytes = 4 + 4 + 8 + 8 + 1 + 1 + 8 + 4;
export const maxJournalEntryBytes = 40 * 1024 * 1024;

function carriesData(op: JournalOp): boolean {
  return op === JournalOp.Write || op === JournalOp.CopyData;
}

/** The header bytes; for data-carrying ops the data follows (written separately, never copied). */
export function encodeEntryHeader(e: JournalEntry): Buffer {
  const name = Buffer.from(e.pair, 'utf8');
  const dataLength = carriesData(e.op) ? e.length : 0;
  if (carriesData(e.op) && (!e.data || e.data.length !== e.length)) throw new Error('journal entry data does not match its length');
  const headerLength = fixedBytes + name.length;
  const h = Buffer.alloc(headerLength);
  h.writeUInt32BE(headerLength + dataLength, 4);
  writeU64(h, 8, e.seq);
  writeU64(h, 16, e.timeMs);
  h.writeUInt8(e.op, 24);
  h.writeUInt8(name.length, 25);
  name.copy(h, 26);
  let at = 26 + name.length;
  writeU64(h, at, e.offset);
  at += 8;
  h.writeUInt32BE(e.length, at);
  let crc = crc32c(h.subarray(4));
  if (dataLength > 0) crc = crc32c(e.data!, crc);
  h.writeUInt32BE(crc, 0);
  return h;
}

export function encodedEntryBytes(e: Pick<JournalEntry, 'pair' | 'op' | 'length'>): number {
  return fixedBytes + Buffer.byteLength(e.pair, 'utf8') + (carriesData(e.op) ? e.length : 0);
}

export type EntryDecode =
  | { ok: true; entry: JournalEntry; bytes: number }
  | { ok: false; error: string; incomplete: boolean };

/**
 * Decodes the entry at `at`. `incomplete` means the bytes end inside it (a torn tail). `verify`
 * false skips the checksum when a frame checksum already covered these bytes.
 */
export function decodeEntry(b: Buffer, at = 0, verify = true): EntryDecode {
  if (b.length - at < 8) return { ok: false, error: 'truncated entry header', incomplete: true };
  const length = b.readUInt32BE(at + 4);
  if (length === 0 && b.readUInt32BE(at) === 0) return { ok: false, error: 'zero bytes (unwritten space)', incomplete: true };
  if (length < fixedBytes || length > maxJournalEntryBytes) return { ok: false, error: `bad entry length ${length}`, incomplete: false };
  if (b.length - at < length) return { ok: false, error: 'truncated entry', incomplete: true };
  if (verify && crc32c(b.subarray(at + 4, at + length)) !== b.readUInt32BE(at)) {
    return { ok: false, error: 'entry checksum mismatch', incomplete: false };
  }
  const op = b.readUInt8(at + 24) as JournalOp;
  if (!(op in JournalOp)) return { ok: false, error: `unknown journal op ${op}`, incomplete: false };
  const nameLength = b.readUInt8(at + 25);
  let p = at + 26;
  const pair = b.toString('utf8', p, p + nameLength);
  p += nameLength;
  const offset = readU64(b, p);
  const dataLength = b.readUInt32BE(p + 8);
  p += 12;
  const expectedLength = fixedBytes + nameLength + (carriesData(op) ? dataLength : 0);
  if (expectedLength !== length) return { ok: false, error: 'entry length disagrees with its fields', incomplete: false };
  const entry: JournalEntry = { seq: readU64(b, at + 8), timeMs: readU64(b, at + 16), op, pair, offset, length: dataLength };
  if (carriesData(op)) entry.data = b.subarray(p, p + dataLength);
  return { ok: true, entry, bytes: length };
}

/** Encodes many entries back to back (a batch on the wire) as pieces for writev/socket. */
export function encodeEntries(entries: JournalEntry[]): Buffer[] {
  const out: Buffer[] = [];
  for (const e of entries) {
    out.push(encodeEntryHeader(e));
    if (carriesData(e.op) && e.length > 0) out.push(e.data!);
  }
  return out;
}

export function decodeEntries(b: Buffer, verify = true): JournalEntry[] {
  return decodeEntriesWithBytes(b, verify).map((x) => x.entry);
}

/** Entries of a batch with their encoded bytes (stored as they are, without encoding again). */
export function decodeEntriesWithBytes(b: Buffer, verify = true): Array<{ entry: JournalEntry; encoded: Buffer }> {
  const out: Array<{ entry: JournalEntry; encoded: Buffer }> = [];
  let at = 0;
  while (at < b.length) {
    const d = decodeEntry(b, at, verify);
    if (!d.ok) throw new Error(`journal batch: ${d.error} at byte ${at}`);
    out.push({ entry: d.entry, encoded: b.subarray(at, at + d.bytes) });
    at += d.bytes;
  }
  return out;
}

/** The encoded bytes of one entry as pieces (header, then its data if any). */
export function encodeEntry(e: JournalEntry): Buffer[] {
  const header = encodeEntryHeader(e);
  return carriesData(e.op) && e.length > 0 ? [header, e.data!] : [header];
}

function writeU64(b: Buffer, at: number, value: number): void {
  b.writeUInt32BE(Math.floor(value / 0x100000000), at);
  b.writeUInt32BE(value >>> 0, at + 4);
}

function readU64(b: Buffer, at: number): number {
  return b.readUInt32BE(at) * 0x100000000 + b.readUInt32BE(at + 4);
}
