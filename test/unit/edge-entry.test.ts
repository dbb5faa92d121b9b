// The log entry of the remote copy network (spec 002 §4.9) and its frames, on bytes: fields 801–805,
// batches, responses (801/802 swapped, 803/804 kept), fragments (§5.7(7)), malformed input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EntryKind, type RelayEntry, Reassembly, decodeBatch, decodeDeadLink, decodeEntry, decodeFragment, encodeBatch, encodeDeadLink, encodeEntryBytes,
  encodeEntryHeader, entryFlagRealign, fragment, maxPathHops, responseTo, withPath,
} from '../../src/edge/entry';
import { MessageType, encodeDataHeader } from '../../src/replication/transport/messages';

function write(seq: number, data = Buffer.alloc(4096, seq & 0xff)): RelayEntry {
  const payload = Buffer.concat([encodeDataHeader({ name: 'db1-far', offset: seq * 4096, length: data.length, flags: 0 }), data]);
  return {
    kind: EntryKind.Request, flags: 0, target: { node: 'sapporo', pair: 'db1-far' }, source: { node: 'tokyo', pair: 'db1-far' }, order: 'erp',
    ioTimeMs: 1_700_000_000_123 + seq, seq, corr: 0, rio: { type: MessageType.Write, status: 0, payload },
  };
}

test('§9.1: an entry carries 801–805 and the RIO byte for byte', () => {
  const e = write(7);
  const bytes = encodeEntryBytes(e);
  assert.equal(bytes[0], 1, 'version');
  assert.equal(bytes[1], EntryKind.Request);
  assert.equal(bytes.readUInt32BE(8), 7, 'number (804)');
  const d = decodeEntry(bytes);
  assert.equal(d.bytes, bytes.length);
  assert.deepEqual({ ...d.entry, rio: { ...d.entry.rio, payload: undefined } }, { ...e, rio: { ...e.rio, payload: undefined } });
  assert.ok(d.entry.rio.payload.equals(e.rio.payload), '805 is the RIO, byte for byte (§9.28)');
  // The header alone is what precedes the payload: the payload is never copied into it.
  assert.equal(encodeEntryHeader(e).length + e.rio.payload.length, bytes.length);
});

test('numbers never wrap: 2^53 − 1 round trips; larger or negative numbers are refused', () => {
  const e = { ...write(1), seq: Number.MAX_SAFE_INTEGER };
  assert.equal(decodeEntry(encodeEntryBytes(e)).entry.seq, Number.MAX_SAFE_INTEGER);
  assert.throws(() => encodeEntryBytes({ ...e, seq: -1 }), /non-negative/);
  const bytes = encodeEntryBytes(write(1));
  bytes.writeUInt32BE(0x00200000, 4); // above 2^53
  assert.throws(() => decodeEntry(bytes), /out of range/);
});

test('§9.25: a response swaps 801 and 802 and keeps 803 and 804', () => {
  const e = write(42);
  const r = responseTo(e, EntryKind.Response, { type: MessageType.Write, status: 0, payload: Buffer.alloc(0) });
  assert.deepEqual(r.target, e.source);
  assert.deepEqual(r.source, e.target);
  assert.equal(r.order, e.order);
  assert.equal(r.seq, e.seq);
  assert.equal(r.ioTimeMs, e.ioTimeMs);
  assert.deepEqual(decodeEntry(encodeEntryBytes(r)).entry.target, e.source);
});

test('batches: entries back to back decode in order', () => {
  const entries = [write(1), { ...write(2), flags: entryFlagRealign }, { ...write(3), kind: EntryKind.Direct, order: '', seq: 0, corr: 99 }];
  const decoded = decodeBatch(Buffer.concat(encodeBatch(entries)));
  assert.deepEqual(decoded.map((e) => [e.kind, e.seq, e.flags, e.corr, e.order]), [[1, 1, 0, 0, 'erp'], [1, 2, 1, 0, 'erp'], [3, 0, 0, 99, '']]);
});

test('malformed entries are refused with a reason, never half-read', () => {
  const good = encodeEntryBytes(write(5));
  const cases: Array<[string, (b: Buffer) => Buffer, RegExp]> = [
    ['truncated header', (b) => b.subarray(0, 20), /truncated header/],
    ['truncated payload', (b) => b.subarray(0, b.length - 1), /truncated payload/],
    ['version', (b) => ((b[0] = 9), b), /unsupported version/],
    ['kind', (b) => ((b[1] = 200), b), /unknown kind/],
    ['flags', (b) => ((b[2] = 0x80), b), /unknown flags/],
    ['path too long', (b) => ((b[3] = maxPathHops + 1), b), new RegExp(`carried path of ${maxPathHops + 1} relays`)],
    ['path eats the addressing', (b) => ((b[3] = 6), b), /truncated/],
  ];
  for (const [what, mangle, error] of cases) assert.throws(() => decodeEntry(mangle(Buffer.from(good))), error, what);
  assert.throws(() => encodeEntryBytes({ ...write(1), target: { node: 'x'.repeat(256), pair: '' } }), /longer than 255/);
  assert.throws(() => decodeBatch(Buffer.concat([good, Buffer.from([1, 2, 3])])), /truncated/);
});

test('§9.13: an entry larger than a frame is split and reassembled identical', () => {
  const e = write(9, Buffer.alloc(3 * 1024 * 1024 + 17, 0x5a));
  const bytes = encodeEntryBytes(e);
  const frames = fragment(77, bytes, 1024 * 1024);
  assert.equal(frames.length, 4);
  const r = new Reassembly(64 * 1024 * 1024);
  let whole: Buffer | undefined;
  for (const [i, f] of frames.entries()) {
    whole = r.add(decodeFragment(Buffer.concat(f)));
    if (i < frames.length - 1) assert.equal(whole, undefined);
  }
  assert.ok(whole?.equals(bytes), 'reassembled byte for byte');
  assert.equal(r.pendingEntries, 0);
  // A fragment out of order, or one claiming more than the limit, is refused.
  assert.throws(() => new Reassembly(1024).add(decodeFragment(Buffer.concat(frames[0]!))), /exceeds/);
  assert.throws(() => new Reassembly(64 * 1024 * 1024).add(decodeFragment(Buffer.concat(frames[1]!))), /before its first/);
  const r2 = new Reassembly(64 * 1024 * 1024);
  r2.add(decodeFragment(Buffer.concat(frames[0]!)));
  assert.throws(() => r2.add(decodeFragment(Buffer.concat(frames[2]!))), /does not continue/);
  assert.throws(() => decodeFragment(Buffer.alloc(5)), /truncated/);
});

const path = ['e-tokyo', 'c-2', 'e-sapporo'];

test('a carried path: its length at byte 3, its relays right after the fixed fields, round trip', () => {
  const e = { ...write(3), path };
  const bytes = encodeEntryBytes(e);
  assert.equal(bytes[3], 3, 'path length');
  assert.equal(bytes[34], 'e-tokyo'.length);
  assert.equal(bytes.toString('utf8', 35, 42), 'e-tokyo');
  assert.equal(bytes[42], 'c-2'.length);
  const d = decodeEntry(bytes);
  assert.deepEqual(d.entry.path, path);
  assert.equal(d.bytes, bytes.length);
  assert.ok(d.entry.rio.payload.equals(e.rio.payload));
  // No path: byte 3 is 0 and the entry decodes without one (relays then use their route tables).
  const plain = encodeEntryBytes(write(3));
  assert.equal(plain[3], 0);
  assert.equal(decodeEntry(plain).entry.path, undefined);
  assert.equal(plain.length + 3 + path.join('').length, bytes.length);
});

test('withPath puts a path on a stored entry without copying its payload, or replaces the one it carries', () => {
  const e = write(11);
  const stored = encodeEntryBytes(e);
  const pieces = withPath(stored, path);
  assert.ok(Buffer.concat(pieces).equals(encodeEntryBytes({ ...e, path })), 'the same bytes as encoding the entry with the path');
  assert.equal(pieces.at(-1)!.buffer, stored.buffer, 'the addressing and payload are a view of the stored bytes');
  const other = ['e-tokyo', 'c-1', 'e-sapporo'];
  assert.ok(Buffer.concat(withPath(Buffer.concat(pieces), other)).equals(encodeEntryBytes({ ...e, path: other })), 'a path replaced');
  assert.ok(Buffer.concat(withPath(Buffer.concat(pieces), [])).equals(stored), 'a path removed');
  assert.throws(() => withPath(stored.subarray(0, 10), path), /truncated header/);
  const cut = Buffer.concat(pieces).subarray(0, 40);
  assert.throws(() => withPath(cut, other), /truncated path/);
  assert.throws(() => withPath(stored, ['e-tokyo', 'c-1', 'e-tokyo']), /visits a relay twice/);
});

test('an answer goes back along the reversed path of its request; notices too', () => {
  const r = responseTo({ ...write(4), path }, EntryKind.Response, { type: MessageType.Write, status: 0, payload: Buffer.alloc(0) });
  assert.deepEqual(r.path, ['e-sapporo', 'c-2', 'e-tokyo']);
  assert.deepEqual(decodeEntry(encodeEntryBytes(r)).entry.path, ['e-sapporo', 'c-2', 'e-tokyo']);
  assert.equal(responseTo(write(4), EntryKind.Response, { type: 0, status: 0, payload: Buffer.alloc(0) }).path, undefined);
});

test('malformed carried paths are refused with a reason, encoding and decoding', () => {
  assert.throws(() => encodeEntryBytes({ ...write(1), path: ['e-tokyo', 'c-1', 'e-tokyo'] }), /visits a relay twice/);
  assert.throws(() => encodeEntryBytes({ ...write(1), path: ['e-tokyo', '', 'e-sapporo'] }), /empty relay/);
  assert.throws(() => encodeEntryBytes({ ...write(1), path: Array.from({ length: maxPathHops + 1 }, (_, i) => `r${i}`) }), new RegExp(`at most ${maxPathHops}`));
  assert.throws(() => encodeEntryBytes({ ...write(1), path: ['x'.repeat(256)] }), /longer than 255/);
  const twice = encodeEntryBytes({ ...write(1), path: ['c-1', 'c-2', 'c-3'] });
  assert.equal(twice.toString('utf8', 43, 46), 'c-3');
  twice.write('c-1', 43, 'utf8');
  assert.throws(() => decodeEntry(twice), /relay entry at byte 0: the carried path c-1 → c-2 → c-1 visits a relay twice/);
  const tiny = Buffer.alloc(35);
  tiny.writeUInt8(1, 0);
  tiny.writeUInt8(EntryKind.Request, 1);
  tiny.writeUInt8(1, 3);
  tiny.writeUInt8(9, 34);
  assert.throws(() => decodeEntry(tiny), /truncated path/);
});

test('a dead-link notice names the two ends of the link, on bytes', () => {
  const b = encodeDeadLink({ from: 'c-1', to: 'e-sapporo' });
  assert.ok(b.equals(Buffer.from([3, ...Buffer.from('c-1'), 9, ...Buffer.from('e-sapporo')])));
  assert.deepEqual(decodeDeadLink(b), { from: 'c-1', to: 'e-sapporo' });
  assert.throws(() => decodeDeadLink(b.subarray(0, 6)), /dead link notice: truncated/);
  assert.throws(() => decodeDeadLink(Buffer.concat([b, Buffer.from([0])])), /1 bytes after the link/);
  assert.throws(() => decodeDeadLink(Buffer.from([1, 0x61, 1, 0x61])), /two different relays/);
  assert.throws(() => decodeDeadLink(Buffer.from([0, 1, 0x61])), /two different relays/);
  assert.throws(() => encodeDeadLink({ from: 'c-1', to: 'c-1' }), /two different relays/);
  // A PathDown entry carries it as its RIO payload, back along the path.
  const notice: RelayEntry = { ...write(2), kind: EntryKind.PathDown, rio: { type: 0, status: 0, payload: b }, path: ['c-1', 'e-tokyo'] };
  assert.deepEqual(decodeDeadLink(decodeEntry(encodeEntryBytes(notice)).entry.rio.payload), { from: 'c-1', to: 'e-sapporo' });
});
