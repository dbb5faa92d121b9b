// The NBD server against hand-made bytes: every option, every command, malformed and hostile input.
// Each hostile case also checks that a well-behaved client on the same server keeps working.
import { systemClock } from '../../src/common/clock';
import { nodeDisk } from '../../src/common/disk';
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '../../src/common/log';
import { NbdClient, NbdClientError } from '../../src/nbd/client';
import * as codec from '../../src/nbd/codec';
import * as c from '../../src/nbd/constants';
import { NbdServer } from '../../src/nbd/server';
import { defaultNbdLimits, type ExportProvider, type NbdObserver, type NbdRefusal, type NbdServerLimits } from '../../src/nbd/types';
import type { BlockDevice } from '../../src/volume/block-device';
import { BlockDeviceError } from '../../src/volume/block-device';
import { VolumeStore } from '../../src/volume/store';
import { RawSocket } from '../support/raw-socket';
import { tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const volumeSize = 64 * MiB;
let dir: string;
let store: VolumeStore;
const servers: NbdServer[] = [];
const refusals: NbdRefusal[] = [];

const observer: NbdObserver = {
  requestCompleted: () => undefined,
  clientAttached: () => undefined,
  clientDetached: () => undefined,
  refused: (r) => refusals.push(r),
};

/** Waits for the next refusal after `count` and checks its reason (and that it is the only one). */
async function refusedWith(count: number, reason: NbdRefusal['reason'], dropped = true): Promise<NbdRefusal> {
  await waitFor(`refusal ${reason}`, () => refusals.length > count);
  assert.equal(refusals.length, count + 1, `one refusal, not ${JSON.stringify(refusals.slice(count))}`);
  const r = refusals[count]!;
  assert.equal(r.reason, reason, r.detail);
  assert.equal(r.dropped, dropped, `dropped: ${r.detail}`);
  assert.equal(r.client.address, '127.0.0.1');
  return r;
}

/** Exports: "v" (writable), "ro" (read-only view of v), "secret" (nobody admitted). */
function provider(): ExportProvider {
  const readOnly = (inner: BlockDevice): BlockDevice => ({
    name: 'ro', get sizeBytes() { return inner.sizeBytes; }, readOnly: true,
    read: (o, l) => inner.read(o, l),
    write: async () => { throw new BlockDeviceError('EPERM', 'read-only'); },
    writeZeroes: async () => { throw new BlockDeviceError('EPERM', 'read-only'); },
    trim: async () => { throw new BlockDeviceError('EPERM', 'read-only'); },
    flush: () => inner.flush(),
    extents: (o, l, m) => inner.extents(o, l, m),
  });
  return {
    lookup(name) {
      if (name === 'v') return { status: 'ok', export: { name, description: 'test volume', device: store.volume('v') } };
      if (name === 'ro') return { status: 'ok', export: { name, description: 'read-only', device: readOnly(store.volume('v')) } };
      if (name === 'secret') return { status: 'denied', message: 'not for you' };
      return { status: 'unknown', message: `no export ${name}` };
    },
    list: () => [{ name: 'v', description: 'test volume' }, { name: 'ro', description: 'read-only' }],
  };
}

async function startServer(limits: Partial<NbdServerLimits> = {}): Promise<number> {
  const server = new NbdServer({
    host: '127.0.0.1', port: 0, provider: provider(), observer, log: silentLogger(), tlsMode: 'off',
    limits: { ...defaultNbdLimits, handshakeTimeoutMs: 2000, ...limits },
  });
  servers.push(server);
  return server.listen();
}

let port: number;

before(async () => {
  dir = await tempDir('nbdproto');
  store = await VolumeStore.open(dir, { disk: nodeDisk, clock: systemClock }, silentLogger());
  await store.create({ name: 'v', sizeBytes: volumeSize });
  port = await startServer();
});

after(async () => {
  for (const s of servers) await s.close();
  await store.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function negotiate(flags = c.FLAG_C_FIXED_NEWSTYLE | c.FLAG_C_NO_ZEROES, serverPort = port): Promise<RawSocket> {
  const s = await RawSocket.connect(serverPort);
  const greeting = await s.read(18);
  assert.deepEqual(greeting, codec.encodeGreeting(c.FLAG_FIXED_NEWSTYLE | c.FLAG_NO_ZEROES));
  const f = Buffer.alloc(4);
  f.writeUInt32BE(flags, 0);
  s.send(f);
  return s;
}

async function option(s: RawSocket, opt: number, data: Buffer = Buffer.alloc(0)): Promise<codec.OptionReply[]> {
  s.send(codec.encodeOptionHeader(opt, data.length), data);
  const replies: codec.OptionReply[] = [];
  for (;;) {
    const header = await s.read(20);
    const body = await s.read(header.readUInt32BE(16));
    const decoded = codec.decodeOptionReply(Buffer.concat([header, body]));
    assert.ok(decoded.ok && decoded.value, 'option reply decodes');
    replies.push(decoded.value.reply);
    assert.equal(decoded.value.reply.option, opt, 'reply names the option');
    if (decoded.value.reply.replyType === c.REP_ACK || decoded.value.reply.replyType >= 0x80000000) return replies;
  }
}

const last = (r: codec.OptionReply[]): number => r.at(-1)!.replyType;

/** A healthy client round trip; proves the server still serves others. */
async function healthy(): Promise<void> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'v' });
  const data = randomBytes(4096);
  await client.write(MiB, data);
  assert.deepEqual(await client.read(MiB, 4096), data);
  await client.disconnect();
}

test('unknown options get ERR_UNSUP and negotiation continues', async () => {
  const s = await negotiate();
  assert.equal(last(await option(s, 99)), c.REP_ERR_UNSUP);
  assert.equal(last(await option(s, 4 /* withdrawn PEEK_EXPORT */)), c.REP_ERR_UNSUP);
  const list = await option(s, c.OPT_LIST);
  assert.equal(last(list), c.REP_ACK);
  const names = list.filter((r) => r.replyType === c.REP_SERVER).map((r) => r.data.toString('utf8', 4, 4 + r.data.readUInt32BE(0)));
  assert.deepEqual(names, ['v', 'ro']);
  assert.equal(last(await option(s, c.OPT_LIST, Buffer.from('x'))), c.REP_ERR_INVALID);
  assert.equal(last(await option(s, c.OPT_ABORT)), c.REP_ACK);
  assert.ok(await s.closesWithin(5000), 'ABORT ends the session');
});

test('STARTTLS on a node without TLS is refused by policy; with data it is invalid', async () => {
  const s = await negotiate();
  assert.equal(last(await option(s, c.OPT_STARTTLS)), c.REP_ERR_POLICY);
  assert.equal(last(await option(s, c.OPT_STARTTLS, Buffer.from('x'))), c.REP_ERR_INVALID);
  s.destroy();
});

test('INFO: unknown export, denied export, and full information for a good one', async () => {
  const s = await negotiate();
  const before = refusals.length;
  const unknown = await option(s, c.OPT_INFO, codec.encodeInfoRequest('nope', []));
  assert.equal(last(unknown), c.REP_ERR_UNKNOWN);
  assert.match(unknown.at(-1)!.data.toString(), /no export nope/);
  assert.equal((await refusedWith(before, 'unknown-export', false)).exportName, 'nope');
  assert.equal(last(await option(s, c.OPT_INFO, codec.encodeInfoRequest('secret', []))), c.REP_ERR_POLICY);
  assert.equal((await refusedWith(before + 1, 'access-denied', false)).exportName, 'secret');
  assert.equal(last(await option(s, c.OPT_GO, codec.encodeInfoRequest('secret', []))), c.REP_ERR_POLICY);
  assert.equal(refusals.length, before + 2, 'a client asking again on one connection is reported once');
  assert.equal(last(await option(s, c.OPT_INFO, Buffer.from([0, 0, 0, 9, 1]))), c.REP_ERR_INVALID);
  const info = await option(s, c.OPT_INFO, codec.encodeInfoRequest('v', [c.INFO_NAME, c.INFO_DESCRIPTION, c.INFO_BLOCK_SIZE]));
  assert.equal(last(info), c.REP_ACK);
  const byType = new Map(info.filter((r) => r.replyType === c.REP_INFO).map((r) => [r.data.readUInt16BE(0), r.data]));
  assert.equal(Number(byType.get(c.INFO_EXPORT)!.readBigUInt64BE(2)), volumeSize);
  const flags = byType.get(c.INFO_EXPORT)!.readUInt16BE(10);
  for (const f of [c.TFLAG_HAS_FLAGS, c.TFLAG_SEND_FLUSH, c.TFLAG_SEND_FUA, c.TFLAG_SEND_TRIM, c.TFLAG_SEND_WRITE_ZEROES,
    c.TFLAG_CAN_MULTI_CONN, c.TFLAG_SEND_CACHE, c.TFLAG_SEND_FAST_ZERO]) assert.ok(flags & f, `flag ${f} set`);
  assert.equal(flags & c.TFLAG_SEND_DF, 0, 'DF only with structured replies');
  assert.equal(flags & c.TFLAG_READ_ONLY, 0);
  assert.equal(byType.get(c.INFO_NAME)!.toString('utf8', 2), 'v');
  assert.equal(byType.get(c.INFO_DESCRIPTION)!.toString('utf8', 2), 'test volume');
  const bs = byType.get(c.INFO_BLOCK_SIZE)!;
  assert.deepEqual([bs.readUInt32BE(2), bs.readUInt32BE(6), bs.readUInt32BE(10)], [1, 4096, 32 * MiB]);
  // The read-only export says so.
  const ro = await option(s, c.OPT_INFO, codec.encodeInfoRequest('ro', []));
  const roFlags = ro.find((r) => r.replyType === c.REP_INFO && r.data.readUInt16BE(0) === c.INFO_EXPORT)!.data.readUInt16BE(10);
  assert.ok(roFlags & c.TFLAG_READ_ONLY);
  s.destroy();
});

test('meta contexts: need structured replies; base:allocation selected; wildcards listed; unknown namespaces ignored', async () => {
  const s = await negotiate();
  assert.equal(last(await option(s, c.OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest('v', [c.BASE_ALLOCATION]))), c.REP_ERR_INVALID);
  assert.equal(last(await option(s, c.OPT_STRUCTURED_REPLY)), c.REP_ACK);
  assert.equal(last(await option(s, c.OPT_STRUCTURED_REPLY, Buffer.from('x'))), c.REP_ERR_INVALID);
  const listed = await option(s, c.OPT_LIST_META_CONTEXT, codec.encodeMetaContextRequest('v', ['base:']));
  assert.deepEqual(listed.map((r) => r.replyType), [c.REP_META_CONTEXT, c.REP_ACK]);
  assert.equal(listed[0]!.data.toString('utf8', 4), c.BASE_ALLOCATION);
  const all = await option(s, c.OPT_LIST_META_CONTEXT, codec.encodeMetaContextRequest('v', []));
  assert.deepEqual(all.map((r) => r.replyType), [c.REP_META_CONTEXT, c.REP_ACK]);
  const foreign = await option(s, c.OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest('v', ['qemu:dirty-bitmap:x']));
  assert.deepEqual(foreign.map((r) => r.replyType), [c.REP_ACK], 'unknown namespace selects nothing');
  assert.equal(last(await option(s, c.OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest('v', ['nocolon']))), c.REP_ERR_INVALID);
  assert.equal(last(await option(s, c.OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest('nope', [c.BASE_ALLOCATION]))), c.REP_ERR_UNKNOWN);
  assert.equal(last(await option(s, c.OPT_SET_META_CONTEXT, Buffer.from([0, 0]))), c.REP_ERR_INVALID);
  const selected = await option(s, c.OPT_SET_META_CONTEXT, codec.encodeMetaContextRequest('v', [c.BASE_ALLOCATION]));
  assert.deepEqual(selected.map((r) => r.replyType), [c.REP_META_CONTEXT, c.REP_ACK]);
  assert.equal(selected[0]!.data.readUInt32BE(0), c.BASE_ALLOCATION_CONTEXT_ID);
  // GO, then BLOCK_STATUS answers with that context id.
  assert.equal(last(await option(s, c.OPT_GO, codec.encodeInfoRequest('v', []))), c.REP_ACK);
  s.send(codec.encodeRequestHeader({ flags: c.CMD_FLAG_REQ_ONE, type: c.CMD_BLOCK_STATUS, cookie: 5n, offset: 0, length: 4096 }));
  const head = await s.read(20);
  assert.equal(head.readUInt16BE(6), c.REPLY_TYPE_BLOCK_STATUS);
  const payload = await s.read(head.readUInt32BE(16));
  assert.equal(payload.length, 12, 'REQ_ONE gives exactly one descriptor');
  assert.equal(payload.readUInt32BE(0), c.BASE_ALLOCATION_CONTEXT_ID);
  assert.ok(payload.readUInt32BE(4) <= 4096);
  s.destroy();
});

test('EXPORT_NAME: with and without the 124 zero bytes; unknown export ends the session', async () => {
  for (const noZeroes of [true, false]) {
    const s = await negotiate(c.FLAG_C_FIXED_NEWSTYLE | (noZeroes ? c.FLAG_C_NO_ZEROES : 0));
    s.send(codec.encodeOptionHeader(c.OPT_EXPORT_NAME, 1), Buffer.from('v'));
    const reply = await s.read(noZeroes ? 10 : 134);
    assert.equal(Number(reply.readBigUInt64BE(0)), volumeSize);
    s.send(codec.encodeRequestHeader({ flags: 0, type: c.CMD_FLUSH, cookie: 1n, offset: 0, length: 0 }));
    const flushReply = await s.read(16);
    assert.deepEqual(flushReply, codec.encodeSimpleReply(0, 1n));
    s.destroy();
  }
  const s = await negotiate();
  s.send(codec.encodeOptionHeader(c.OPT_EXPORT_NAME, 4), Buffer.from('nope'));
  const before = refusals.length;
  assert.ok(await s.closesWithin(5000));
  assert.equal((await refusedWith(before, 'unknown-export')).exportName, 'nope');
  const denied = await negotiate();
  denied.send(codec.encodeOptionHeader(c.OPT_EXPORT_NAME, 6), Buffer.from('secret'));
  assert.ok(await denied.closesWithin(5000));
  assert.equal((await refusedWith(before + 1, 'access-denied')).exportName, 'secret');
});

test('hostile handshakes are dropped without harming other clients, each refusal with its reason', async () => {
  // Random bytes instead of client flags.
  let count = refusals.length;
  const a = await RawSocket.connect(port);
  await a.read(18);
  a.send(Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), randomBytes(60)]));
  assert.ok(await a.closesWithin(5000), 'random bytes close the connection');
  await refusedWith(count++, 'bad-handshake');
  // Unknown client flag bits.
  const b = await negotiate(0xff);
  assert.ok(await b.closesWithin(5000));
  await refusedWith(count++, 'bad-handshake');
  // Bad option magic.
  const d = await negotiate();
  d.send(Buffer.concat([Buffer.from('XXXXXXXX'), randomBytes(8)]));
  assert.ok(await d.closesWithin(5000));
  await refusedWith(count++, 'bad-handshake');
  // Oversized option payload announced: dropped before the server reads 100 MB.
  const e = await negotiate();
  e.send(codec.encodeOptionHeader(c.OPT_GO, 100 * MiB));
  assert.ok(await e.closesWithin(5000));
  await refusedWith(count++, 'oversized-option');
  // Truncated option: header promises 50 bytes, sends 10, then goes away (nothing to refuse).
  const f = await negotiate();
  f.send(codec.encodeOptionHeader(c.OPT_GO, 50), Buffer.alloc(10));
  f.destroy();
  // Silence: the handshake deadline closes it.
  const g = await RawSocket.connect(port);
  assert.ok(await g.closesWithin(6000), 'silent client is closed by the handshake timeout');
  assert.match((await refusedWith(count++, 'handshake-timeout')).detail, /handshake not finished within 2000 ms/);
  await healthy();
  assert.equal(refusals.length, count, 'a healthy client is not refused');
});

test('transmission: every command, flags, errors for bad requests, and the session goes on', async () => {
  const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'v', blockStatus: true });
  assert.ok(client.structured);
  assert.ok(client.transmissionFlags & c.TFLAG_SEND_DF);
  const data = randomBytes(10_000);
  await client.write(333, data, { fua: true });
  assert.deepEqual(await client.read(333, data.length), data);
  await client.flush();
  await client.trim(0, 256); // advisory: contents of 0..256 are undefined now
  await client.send(c.CMD_CACHE, 0, 0, 4096);
  await client.write(20_000, Buffer.alloc(300, 0xaa));
  await client.writeZeroes(20_100, 100, c.CMD_FLAG_NO_HOLE);
  const zeroed = await client.read(20_000, 300);
  assert.deepEqual(zeroed.subarray(100, 200), Buffer.alloc(100));
  assert.deepEqual(zeroed.subarray(200), Buffer.alloc(100, 0xaa));
  await assert.rejects(client.writeZeroes(0, 4096, c.CMD_FLAG_FAST_ZERO), (e: NbdClientError) => e.errno === c.NBD_ENOTSUP);
  await client.writeZeroes(4 * MiB, MiB, c.CMD_FLAG_FAST_ZERO);
  const holes = await client.read(5 * MiB, 64 * 1024);
  assert.deepEqual(holes, Buffer.alloc(64 * 1024), 'a hole reads as zeroes (sent as OFFSET_HOLE)');
  const status = await client.blockStatus(0, volumeSize);
  assert.equal(status[0]!.flags, 0, 'first chunk holds data');
  assert.ok(status.some((d) => d.flags === (c.STATE_HOLE | c.STATE_ZERO)), 'holes are reported');
  assert.equal(status.reduce((s, d) => s + d.length, 0), volumeSize);
  await client.send(c.CMD_READ, c.CMD_FLAG_DF, 0, 100);
  // Errors that leave the session usable.
  const expectErrno = async (p: Promise<unknown>, errno: number, what: string): Promise<void> => {
    await assert.rejects(p, (e: NbdClientError) => e.errno === errno, what);
  };
  await expectErrno(client.read(volumeSize - 10, 20), c.NBD_EINVAL, 'read past the end');
  await expectErrno(client.write(volumeSize - 10, Buffer.alloc(20)), c.NBD_ENOSPC, 'write past the end');
  await expectErrno(client.writeZeroes(volumeSize, 1), c.NBD_ENOSPC, 'zero past the end');
  await expectErrno(client.trim(volumeSize, 1), c.NBD_EINVAL, 'trim past the end');
  await expectErrno(client.send(42, 0, 0, 0), c.NBD_EINVAL, 'unknown command');
  await expectErrno(client.send(c.CMD_READ, c.CMD_FLAG_NO_HOLE, 0, 10), c.NBD_EINVAL, 'flag not valid for READ');
  await expectErrno(client.send(c.CMD_WRITE_ZEROES, c.CMD_FLAG_REQ_ONE, 0, 10), c.NBD_EINVAL, 'flag not valid for WRITE_ZEROES');
  await expectErrno(client.send(c.CMD_FLUSH, 0, 5, 0), c.NBD_EINVAL, 'flush with an offset');
  await expectErrno(client.read(0, 33 * MiB), c.NBD_EOVERFLOW, 'read over the payload limit');
  await expectErrno(client.send(c.CMD_READ, 0, Number.MAX_SAFE_INTEGER, 1), c.NBD_EINVAL, 'absurd offset');
  assert.deepEqual(await client.read(333, data.length), data, 'still serving after errors');
  await client.disconnect();
});

test('block status without a selected meta context is EINVAL; DF without structured replies is EINVAL', async () => {
  const plain = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'v', structuredReplies: false });
  await assert.rejects(plain.send(c.CMD_READ, c.CMD_FLAG_DF, 0, 10), (e: NbdClientError) => e.errno === c.NBD_EINVAL);
  await assert.rejects(plain.blockStatus(0, 10), (e: NbdClientError) => e.errno === c.NBD_EINVAL);
  const simpleData = randomBytes(777);
  await plain.write(2 * MiB, simpleData);
  assert.deepEqual(await plain.read(2 * MiB, 777), simpleData, 'simple replies carry read data');
  await plain.disconnect();
  const structured = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'v' });
  await assert.rejects(structured.blockStatus(0, 10), (e: NbdClientError) => e.errno === c.NBD_EINVAL);
  await structured.disconnect();
});

test('read-only exports refuse writes with EPERM', async () => {
  const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'ro' });
  assert.ok(client.transmissionFlags & c.TFLAG_READ_ONLY);
  await assert.rejects(client.write(0, Buffer.alloc(10)), (e: NbdClientError) => e.errno === c.NBD_EPERM);
  await assert.rejects(client.writeZeroes(0, 10), (e: NbdClientError) => e.errno === c.NBD_EPERM);
  await client.read(0, 10);
  await client.disconnect();
});

test('hostile transmission frames: bad magic, oversized write, truncated payload; others unaffected', async () => {
  const go = async (): Promise<RawSocket> => {
    const s = await negotiate();
    assert.equal(last(await option(s, c.OPT_GO, codec.encodeInfoRequest('v', []))), c.REP_ACK);
    return s;
  };
  const count = refusals.length;
  const a = await go();
  a.send(Buffer.concat([Buffer.from('XXXX'), randomBytes(24)]));
  assert.ok(await a.closesWithin(5000), 'garbage request header closes');
  await refusedWith(count, 'bad-request');
  const b = await go();
  b.send(codec.encodeRequestHeader({ flags: 0, type: c.CMD_WRITE, cookie: 1n, offset: 0, length: 64 * MiB }));
  assert.ok(await b.closesWithin(5000), 'write over 32 MiB closes');
  await refusedWith(count + 1, 'oversized-request');
  const d = await go();
  d.send(codec.encodeRequestHeader({ flags: 0, type: c.CMD_WRITE, cookie: 1n, offset: 0, length: 4096 }), Buffer.alloc(100));
  d.destroy();
  // Pipelining: 64 requests in one burst, answered by cookie (in any order).
  const e = await go();
  const burst: Buffer[] = [];
  for (let i = 0; i < 64; i++) {
    burst.push(codec.encodeRequestHeader({ flags: 0, type: c.CMD_WRITE, cookie: BigInt(1000 + i), offset: i * 512, length: 512 }), Buffer.alloc(512, i));
  }
  e.send(Buffer.concat(burst));
  const cookies = new Set<bigint>();
  for (let i = 0; i < 64; i++) {
    const r = await e.read(16);
    assert.equal(r.readUInt32BE(4), 0);
    cookies.add(r.readBigUInt64BE(8));
  }
  assert.equal(cookies.size, 64);
  e.send(codec.encodeRequestHeader({ flags: 0, type: c.CMD_DISC, cookie: 0n, offset: 0, length: 0 }));
  assert.ok(await e.closesWithin(5000), 'DISC closes after in-flight requests');
  await healthy();
  const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'v' });
  assert.deepEqual(await client.read(63 * 512, 512), Buffer.alloc(512, 63));
  await client.disconnect();
});

test('large writes whose payload trickles in, or is followed by a small request in the same burst, are all answered', async () => {
  // The server waits for the rest of a large payload with the socket's low-water mark raised: it
  // must never ask for more than is still to come, nor keep a small request that follows waiting.
  const s = await negotiate();
  assert.equal(last(await option(s, c.OPT_GO, codec.encodeInfoRequest('v', []))), c.REP_ACK);
  const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));
  const big = randomBytes(3 * MiB / 2);
  s.send(codec.encodeRequestHeader({ flags: 0, type: c.CMD_WRITE, cookie: 1n, offset: 8 * MiB, length: big.length }), big.subarray(0, 1000));
  for (const [from, to] of [[1000, 200_000], [200_000, 700_000], [700_000, big.length - 10], [big.length - 10, big.length]] as const) {
    await yieldToLoop();
    s.send(big.subarray(from, to));
  }
  let reply = await s.read(16);
  assert.deepEqual([reply.readUInt32BE(4), reply.readBigUInt64BE(8)], [0, 1n], 'the trickled write is acknowledged');
  const small = Buffer.alloc(4096, 7);
  s.send(codec.encodeRequestHeader({ flags: 0, type: c.CMD_WRITE, cookie: 2n, offset: 12 * MiB, length: MiB }), big.subarray(0, MiB),
    codec.encodeRequestHeader({ flags: 0, type: c.CMD_WRITE, cookie: 3n, offset: 14 * MiB, length: small.length }), small);
  const cookies = new Set<bigint>();
  for (let i = 0; i < 2; i++) {
    reply = await s.read(16);
    assert.equal(reply.readUInt32BE(4), 0);
    cookies.add(reply.readBigUInt64BE(8));
  }
  assert.deepEqual([...cookies].sort(), [2n, 3n], 'both writes of the burst are acknowledged');
  s.destroy();
  const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName: 'v' });
  assert.deepEqual(await client.read(8 * MiB, big.length), big);
  assert.deepEqual(await client.read(12 * MiB, MiB), big.subarray(0, MiB));
  assert.deepEqual(await client.read(14 * MiB, small.length), small);
  await client.disconnect();
});

test('connection limit and minimum block size are enforced', async () => {
  const limitedPort = await startServer({ maxConnections: 2, minBlockBytes: 512 });
  const one = await NbdClient.connect({ host: '127.0.0.1', port: limitedPort, exportName: 'v' });
  const two = await RawSocket.connect(limitedPort);
  await two.read(18);
  const count = refusals.length;
  const three = await RawSocket.connect(limitedPort);
  assert.ok(await three.closesWithin(5000), 'connection over the limit is closed');
  await refusedWith(count, 'too-many-connections');
  await assert.rejects(one.read(1, 512), (e: NbdClientError) => e.errno === c.NBD_EINVAL, 'misaligned offset');
  await assert.rejects(one.read(0, 100), (e: NbdClientError) => e.errno === c.NBD_EINVAL, 'misaligned length');
  await one.read(512, 1024);
  two.destroy();
  await one.disconnect();
  await waitFor('connections released', () => servers.at(-1)!.connectionCount === 0);
});
