// The NBD codec on bytes: every option, reply and command, and malformed input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as codec from '../../src/nbd/codec';
import * as c from '../../src/nbd/constants';

const hex = (b: Buffer): string => b.toString('hex');

test('greeting is NBDMAGIC, IHAVEOPT and the handshake flags', () => {
  const b = codec.encodeGreeting(c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES);
  assert.equal(hex(b), '4e42444d41474943' + '49484156454f5054' + '0003');
});

test('client flags: fixed newstyle and no zeroes accepted; unknown bits and unoffered NO_ZEROES refused', () => {
  assert.deepEqual(codec.decodeClientFlags(Buffer.from('00000003', 'hex'), 3), { ok: true, value: { fixedNewstyle: true, noZeroes: true } });
  assert.deepEqual(codec.decodeClientFlags(Buffer.from('00000000', 'hex'), 3), { ok: true, value: { fixedNewstyle: false, noZeroes: false } });
  assert.equal(codec.decodeClientFlags(Buffer.from('00000004', 'hex'), 3).ok, false);
  assert.equal(codec.decodeClientFlags(Buffer.from('00000002', 'hex'), 1).ok, false);
  assert.equal(codec.decodeClientFlags(Buffer.from('0000', 'hex'), 3).ok, false);
});

test('option header round trip and bad magic', () => {
  const b = codec.encodeOptionHeader(c.OPT_GO, 42);
  assert.equal(hex(b), '49484156454f5054' + '00000007' + '0000002a');
  assert.deepEqual(codec.decodeOptionHeader(b), { ok: true, value: { option: 7, length: 42 } });
  const broken = Buffer.from(b);
  broken[0] = 0;
  assert.equal(codec.decodeOptionHeader(broken).ok, false);
  assert.equal(codec.decodeOptionHeader(b.subarray(0, 15)).ok, false);
});

test('option replies: ACK, SERVER, INFO, META_CONTEXT and errors with messages', () => {
  assert.equal(hex(codec.encodeOptionReply(c.OPT_LIST, c.REP_ACK)), '0003e889045565a9' + '00000003' + '00000001' + '00000000');
  const server = codec.encodeOptionReply(c.OPT_LIST, c.REP_SERVER, codec.encodeRepServer('db1', 'desc'));
  assert.equal(hex(server.subarray(20)), '00000003' + Buffer.from('db1desc').toString('hex'));
  assert.equal(server.readUInt32BE(16), 4 + 3 + 4);
  const err = codec.encodeOptionError(c.OPT_GO, c.REP_ERR_UNKNOWN, 'no such export');
  assert.equal(err.readUInt32BE(12), 0x80000006);
  assert.equal(err.subarray(20).toString(), 'no such export');
  const decoded = codec.decodeOptionReply(err);
  assert.ok(decoded.ok && decoded.value);
  assert.equal(decoded.value.reply.replyType, c.REP_ERR_UNKNOWN);
  assert.equal(decoded.value.bytes, err.length);
  // An incomplete reply is "need more bytes", not an error.
  assert.deepEqual(codec.decodeOptionReply(err.subarray(0, 25)), { ok: true, value: null });
  const meta = codec.encodeRepMetaContext(1, 'base:allocation');
  assert.equal(hex(meta), '00000001' + Buffer.from('base:allocation').toString('hex'));
  // Error messages longer than the protocol's 4096-byte string limit are cut.
  assert.equal(codec.encodeOptionError(1, c.REP_ERR_INVALID, 'x'.repeat(5000)).length, 20 + 4096);
});

test('INFO_EXPORT, INFO_NAME, INFO_DESCRIPTION and INFO_BLOCK_SIZE payloads', () => {
  assert.equal(hex(codec.encodeInfoExport(0x123456789, 0x1ed)), '0000' + '0000000123456789' + '01ed');
  assert.equal(hex(codec.encodeInfoString(c.INFO_NAME, 'db1')), '0001' + Buffer.from('db1').toString('hex'));
  assert.equal(hex(codec.encodeInfoString(c.INFO_DESCRIPTION, 'd')), '0002' + '64');
  assert.equal(hex(codec.encodeInfoBlockSize(1, 4096, 33554432)), '0003' + '00000001' + '00001000' + '02000000');
});

test('INFO/GO request decoding, including every malformed shape', () => {
  const good = codec.encodeInfoRequest('db1', [c.INFO_BLOCK_SIZE, c.INFO_NAME]);
  assert.deepEqual(codec.decodeInfoRequest(good), { ok: true, value: { name: 'db1', infoTypes: [3, 1] } });
  assert.deepEqual(codec.decodeInfoRequest(codec.encodeInfoRequest('', [])), { ok: true, value: { name: '', infoTypes: [] } });
  assert.equal(codec.decodeInfoRequest(Buffer.alloc(5)).ok, false, 'too short');
  const nameTooLong = Buffer.from(good);
  nameTooLong.writeUInt32BE(1000, 0);
  assert.equal(codec.decodeInfoRequest(nameTooLong).ok, false, 'name past end');
  const countWrong = Buffer.from(good);
  countWrong.writeUInt16BE(5, 4 + 3);
  assert.equal(codec.decodeInfoRequest(countWrong).ok, false, 'request count disagrees with length');
  const badUtf8 = codec.encodeInfoRequest('abc', []);
  badUtf8[4] = 0xff;
  assert.equal(codec.decodeInfoRequest(badUtf8).ok, false, 'invalid UTF-8');
  const nul = codec.encodeInfoRequest('a\0b', []);
  assert.equal(codec.decodeInfoRequest(nul).ok, false, 'NUL in name');
});

test('meta context requests: queries decode; truncated or trailing data is refused', () => {
  const good = codec.encodeMetaContextRequest('db1', ['base:allocation', 'qemu:dirty-bitmap:x']);
  assert.deepEqual(codec.decodeMetaContextRequest(good), { ok: true, value: { name: 'db1', queries: ['base:allocation', 'qemu:dirty-bitmap:x'] } });
  assert.deepEqual(codec.decodeMetaContextRequest(codec.encodeMetaContextRequest('x', [])), { ok: true, value: { name: 'x', queries: [] } });
  assert.equal(codec.decodeMetaContextRequest(good.subarray(0, good.length - 1)).ok, false, 'truncated query');
  assert.equal(codec.decodeMetaContextRequest(Buffer.concat([good, Buffer.from([0])])).ok, false, 'trailing byte');
  const manyQueries = Buffer.from(codec.encodeMetaContextRequest('x', []));
  manyQueries.writeUInt32BE(1_000_000, 5);
  assert.equal(codec.decodeMetaContextRequest(manyQueries).ok, false, 'absurd query count');
  assert.equal(codec.decodeMetaContextRequest(Buffer.alloc(3)).ok, false, 'too short');
});

test('export name reply carries 124 zero bytes unless NO_ZEROES was agreed', () => {
  assert.equal(codec.encodeExportNameReply(1024, 1, false).length, 134);
  const short = codec.encodeExportNameReply(1024, 0x0103, true);
  assert.equal(hex(short), '0000000000000400' + '0103');
  assert.equal(codec.decodeExportName(Buffer.alloc(5000)).ok, false);
});

test('request header decoding: every command type round trips; bad magic and short headers refused', () => {
  for (const type of [c.CMD_READ, c.CMD_WRITE, c.CMD_DISC, c.CMD_FLUSH, c.CMD_TRIM, c.CMD_CACHE, c.CMD_WRITE_ZEROES, c.CMD_BLOCK_STATUS]) {
    const b = codec.encodeRequestHeader({ flags: c.CMD_FLAG_FUA, type, cookie: 0xdeadbeefcafef00dn, offset: 4096 * 7, length: 512 });
    assert.equal(b.length, 28);
    assert.deepEqual(codec.decodeRequestHeader(b), {
      ok: true, value: { flags: 1, type, cookie: 0xdeadbeefcafef00dn, offset: 28672, length: 512 },
    });
  }
  const b = codec.encodeRequestHeader({ flags: 0, type: 0, cookie: 1n, offset: 0, length: 0 });
  assert.equal(hex(b.subarray(0, 4)), '25609513');
  const bad = Buffer.from(b);
  bad.writeUInt32BE(0x12345678, 0);
  assert.equal(codec.decodeRequestHeader(bad).ok, false);
  assert.equal(codec.decodeRequestHeader(b.subarray(0, 27)).ok, false);
  // Offsets beyond 2^53 cannot be represented exactly; they decode as Infinity (always out of range).
  const huge = codec.encodeRequestHeader({ flags: 0, type: 0, cookie: 1n, offset: 0xffffffffffffffffn, length: 1 });
  const decoded = codec.decodeRequestHeader(huge);
  assert.ok(decoded.ok);
  assert.equal(decoded.value.offset, Number.POSITIVE_INFINITY);
});

test('simple and structured replies', () => {
  assert.equal(hex(codec.encodeSimpleReply(0, 7n)), '67446698' + '00000000' + '0000000000000007');
  assert.equal(hex(codec.encodeSimpleReply(c.NBD_EIO, 7n)).slice(8, 16), '00000005');
  assert.equal(hex(codec.encodeStructuredNone(9n)), '668e33ef' + '0001' + '0000' + '0000000000000009' + '00000000');
  const data = codec.encodeOffsetDataHeader(9n, 4096, 512, true);
  assert.equal(hex(data), '668e33ef' + '0001' + '0001' + '0000000000000009' + '00000208' + '0000000000001000');
  const hole = codec.encodeOffsetHole(9n, 8192, 65536, false);
  assert.equal(hex(hole), '668e33ef' + '0000' + '0002' + '0000000000000009' + '0000000c' + '0000000000002000' + '00010000');
  const err = codec.encodeStructuredError(9n, c.NBD_EINVAL, 'bad');
  assert.equal(hex(err), '668e33ef' + '0001' + '8001' + '0000000000000009' + '00000009' + '00000016' + '0003' + Buffer.from('bad').toString('hex'));
  const status = codec.encodeBlockStatus(9n, 1, [{ length: 65536, flags: 0 }, { length: 4096, flags: 3 }], true);
  assert.equal(hex(status), '668e33ef' + '0001' + '0005' + '0000000000000009' + '00000014' + '00000001' + '00010000' + '00000000' + '00001000' + '00000003');
});

test('reply decoding: complete, partial and garbage', () => {
  const simple = codec.encodeSimpleReply(0, 3n);
  assert.deepEqual(codec.decodeReply(simple), { ok: true, value: { kind: 'simple', error: 0, cookie: 3n, bytes: 16 } });
  assert.deepEqual(codec.decodeReply(simple.subarray(0, 10)), { ok: true, value: null });
  const structured = codec.encodeStructuredError(4n, 5, 'x');
  const r = codec.decodeReply(structured);
  assert.ok(r.ok && r.value && r.value.kind === 'structured');
  assert.equal(r.value.type, c.REPLY_TYPE_ERROR);
  assert.equal(r.value.bytes, structured.length);
  assert.equal(codec.decodeReply(Buffer.from('deadbeef', 'hex')).ok, false);
});
