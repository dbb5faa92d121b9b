// Node-to-node frames, data headers and journal entries on bytes, including malformed input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { crc32c } from '../../src/common/crc32c';
import {
  FrameKind, decodeFrame, decodeFrameHeader, encodeFrame, frameHeaderBytes, maxFramePayloadBytes, maxHandshakePayloadBytes,
} from '../../src/replication/transport/frame';
import { defaultLinkTimings, largestHandshakePayloadBytes } from '../../src/replication/transport/link';
import { assertLinkLimits } from '../../src/replication/transport/peers';
import { JournalOp, decodeEntries, decodeEntry, encodeEntries, encodeEntryHeader, encodedEntryBytes } from '../../src/replication/async/journal-entry';
import { MessageType, decodeDataHeader, decodeDeltaTagReply, encodeDataHeader, encodeDeltaTagReply, helloCodec } from '../../src/replication/transport/messages';
import { pairCreateCodec } from '../../src/replication/transport/control-messages';

test('crc32c matches the standard check value', () => {
  assert.equal(crc32c(Buffer.from('123456789')).toString(16), 'e3069283');
  assert.equal(crc32c(Buffer.from('6789'), crc32c(Buffer.from('12345'))), crc32c(Buffer.from('123456789')), 'chains');
});

test('frames round trip with their checksum; every field is checked', () => {
  const payload = Buffer.from('hello');
  const frame = encodeFrame({ kind: FrameKind.Request, type: MessageType.Write, requestId: 2 ** 40 + 7, status: 0 }, payload);
  assert.equal(frame.length, frameHeaderBytes + 5);
  assert.equal(frame.toString('hex', 0, 8), '5443525001' + '00' + '0028');
  const d = decodeFrame(frame);
  assert.ok(d.ok && d.header);
  assert.deepEqual(d.header, { kind: FrameKind.Request, type: MessageType.Write, requestId: 2 ** 40 + 7, payloadLength: 5, status: 0 });
  assert.equal(d.payload.toString(), 'hello');
  // Partial input asks for more.
  assert.deepEqual(decodeFrame(frame.subarray(0, 20)), { ok: true, header: null, bytes: 0 });
  assert.deepEqual(decodeFrame(frame.subarray(0, frame.length - 1)), { ok: true, header: null, bytes: 0 });
  const corrupt = (at: number, value: number): Buffer => {
    const b = Buffer.from(frame);
    b[at] = value;
    return b;
  };
  assert.deepEqual(decodeFrame(corrupt(0, 0)), { ok: false, fault: 'malformed', error: 'bad frame magic 0x435250' });
  assert.match(String((decodeFrame(corrupt(4, 9)) as { error: string }).error), /version/);
  assert.match(String((decodeFrame(corrupt(5, 7)) as { error: string }).error), /kind/);
  assert.match(String((decodeFrame(corrupt(28, 1)) as { error: string }).error), /reserved/);
  assert.match(String((decodeFrame(corrupt(frame.length - 1, 0x41)) as { error: string }).error), /checksum/);
  assert.match(String((decodeFrame(corrupt(7, 0x29)) as { error: string }).error), /checksum/, 'a changed type breaks the crc');
  const huge = Buffer.from(frame);
  huge.writeUInt32BE(maxFramePayloadBytes + 1, 16);
  assert.deepEqual(decodeFrameHeader(huge), { ok: false, fault: 'oversized', error: `frame payload of ${maxFramePayloadBytes + 1} bytes exceeds ${maxFramePayloadBytes}` });
  assert.equal((decodeFrame(corrupt(frame.length - 1, 0x41)) as { fault: string }).fault, 'checksum');
});

test('link limits: every handshake message fits the pre-authentication limit, far below the data frame limit', () => {
  const largest = largestHandshakePayloadBytes();
  assert.ok(largest > 1000 && largest <= maxHandshakePayloadBytes, `largest handshake payload ${largest} bytes`);
  assert.ok(maxHandshakePayloadBytes * 1024 < maxFramePayloadBytes);
  assertLinkLimits(defaultLinkTimings);
  assert.throws(() => assertLinkLimits({ ...defaultLinkTimings, handshakeTimeoutMs: 0 }), /handshake timeout/);
});

test('data headers carry name, offset beyond 4 GiB, length and flags', () => {
  const h = encodeDataHeader({ name: 'db1-dc2', offset: 5 * 2 ** 32 + 12345, length: 65536, flags: 1 });
  const { header, data } = decodeDataHeader(Buffer.concat([h, Buffer.from('xyz')]));
  assert.deepEqual(header, { name: 'db1-dc2', offset: 5 * 2 ** 32 + 12345, length: 65536, flags: 1 });
  assert.equal(data.toString(), 'xyz');
  assert.throws(() => decodeDataHeader(h.subarray(0, 5)), /truncated/);
  assert.throws(() => decodeDataHeader(Buffer.alloc(0)), /empty/);
});

test('data headers carry a delta tag (the place of the write in the async stream); malformed tags are refused', () => {
  const tag = { group: 'erp', seq: 2 ** 40 + 3, appliedSeq: 2 ** 40, inStep: true };
  const h = encodeDataHeader({ name: 'erp.db1.osaka.tokyo', offset: 8192, length: 4, flags: 1, tag });
  const nameEnd = 1 + 'erp.db1.osaka.tokyo'.length;
  assert.equal(h[nameEnd + 12], 1 | 2 | 4, 'flags: fua, tagged, in step');
  const { header, data } = decodeDataHeader(Buffer.concat([h, Buffer.from('abcd')]));
  assert.deepEqual(header, { name: 'erp.db1.osaka.tokyo', offset: 8192, length: 4, flags: 1, tag });
  assert.equal(data.toString(), 'abcd', 'the data follows the tag');
  const notInStep = decodeDataHeader(encodeDataHeader({ name: 'p', offset: 0, length: 0, flags: 0, tag: { ...tag, inStep: false } })).header;
  assert.equal(notInStep.tag?.inStep, false);
  assert.equal(decodeDataHeader(encodeDataHeader({ name: 'p', offset: 0, length: 0, flags: 0 })).header.tag, undefined, 'untagged');
  // Truncated tag, unknown flags, in-step without a tag, out-of-range numbers.
  assert.throws(() => decodeDataHeader(h.subarray(0, h.length - 3)), /delta tag is truncated/);
  const unknownFlag = Buffer.from(h);
  unknownFlag[nameEnd + 12] = 0x81;
  assert.throws(() => decodeDataHeader(unknownFlag), /unknown flags/);
  const bare = encodeDataHeader({ name: 'p', offset: 0, length: 0, flags: 0 });
  bare[1 + 1 + 12] = 4;
  assert.throws(() => decodeDataHeader(bare), /in step without a delta tag/);
  const huge = Buffer.from(h);
  huge.writeUInt32BE(0xffffffff, nameEnd + 13 + 1 + 3);
  assert.throws(() => decodeDataHeader(huge), /out of range/);
  assert.throws(() => encodeDataHeader({ name: 'p', offset: 0, length: 0, flags: 0, tag: { ...tag, seq: 0 } }), /seq at least 1/);
  // The cascade answer: the tag the intermediate journaled a forwarded write under.
  assert.deepEqual(decodeDeltaTagReply(encodeDeltaTagReply(tag)), tag);
  assert.equal(decodeDeltaTagReply(encodeDeltaTagReply(undefined)), undefined);
  assert.throws(() => decodeDeltaTagReply(Buffer.concat([encodeDeltaTagReply(tag), Buffer.from([0])])), /trailing/);
  assert.throws(() => decodeDeltaTagReply(Buffer.from([7, 3, 0x61, 0x62, 0x63])), /in-step value/);
});

test('journal entries: every op round trips; torn, corrupt and inconsistent entries are refused', () => {
  const entries = [
    { seq: 1, timeMs: 1_700_000_000_123, op: JournalOp.Write, pair: 'a', offset: 4096, length: 5, data: Buffer.from('12345') },
    { seq: 2, timeMs: 1_700_000_000_124, op: JournalOp.Zero, pair: 'b', offset: 2 ** 33, length: 1 << 20 },
    { seq: 3, timeMs: 1_700_000_000_125, op: JournalOp.CopyRegion, pair: 'a', offset: 0, length: 65536 },
    { seq: 4, timeMs: 1_700_000_000_126, op: JournalOp.CopyData, pair: 'a', offset: 0, length: 3, data: Buffer.from('abc') },
  ];
  const bytes = Buffer.concat(encodeEntries(entries));
  assert.equal(bytes.length, entries.reduce((s, e) => s + encodedEntryBytes(e), 0));
  const back = decodeEntries(bytes);
  assert.deepEqual(back.map((e) => ({ ...e, data: e.data ? Buffer.from(e.data) : undefined })), entries.map((e) => ({ ...e, data: e.data })));
  const first = decodeEntry(bytes);
  assert.ok(first.ok);
  const torn = decodeEntry(bytes.subarray(0, first.bytes - 1));
  assert.deepEqual([torn.ok, (torn as { incomplete: boolean }).incomplete], [false, true]);
  const flipped = Buffer.from(bytes);
  flipped[first.bytes - 2] ^= 1;
  assert.match((decodeEntry(flipped) as { error: string }).error, /checksum/);
  assert.deepEqual(decodeEntry(Buffer.alloc(64)), { ok: false, error: 'zero bytes (unwritten space)', incomplete: true });
  assert.throws(() => encodeEntryHeader({ seq: 9, timeMs: 0, op: JournalOp.Write, pair: 'a', offset: 0, length: 4, data: Buffer.alloc(3) }), /does not match/);
  assert.throws(() => decodeEntries(bytes.subarray(0, bytes.length - 1)), /journal batch/);
});

test('control messages are validated against their schema', () => {
  const hello = helloCodec.encode({ protocol: 1, node: 'dc1', nonce: 'ab' });
  assert.deepEqual(helloCodec.decode(hello), { protocol: 1, node: 'dc1', nonce: 'ab' });
  assert.throws(() => helloCodec.decode(Buffer.from('{"protocol":1}')), /malformed message/);
  assert.throws(() => helloCodec.decode(Buffer.from('not json')), /not JSON/);
  assert.throws(() => helloCodec.decode(Buffer.from('{"protocol":1,"node":"x","nonce":"y","extra":1}')), /malformed/);
  assert.throws(() => pairCreateCodec.decode(Buffer.from(JSON.stringify({ name: 'p', volume: 'v', mode: 'sideways' }))), /malformed/);
});
