// One order-guarantee id at its source and target edges, in process with a fake network and fake
// attached storages (spec 002 §9): numbering, the local answer after the log write, acknowledgement
// and deletion, retransmission and its exhaustion, the ordering gate, duplicates, realignment,
// bitmap merging at resync, and the failover flush.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { systemClock } from '../../src/common/clock';
import { type Disk, type DiskFile, nodeDisk } from '../../src/common/disk';
import { EventJournal } from '../../src/common/events';
import { silentLogger } from '../../src/common/log';
import type { OrderConfig } from '../../src/contracts/network';
import { EntryKind, type RelayEntry, decodeEntry, entryFlagRealign, responseTo } from '../../src/edge/entry';
import { PositionFile } from '../../src/edge/position';
import { OrderSource, type SourceRequest } from '../../src/edge/source';
import { RelayState } from '../../src/edge/state';
import { OrderTarget, ackType } from '../../src/edge/target';
import { bitmapReplyCodec, pairNameCodec, pairUpdateCodec, residualStateCodec, swapPrepareCodec, swapPreparedCodec } from '../../src/replication/transport/control-messages';
import { MessageType, decodeResidualWrite, encodeDataHeader, encodeErrorPayload } from '../../src/replication/transport/messages';
import { TricopyError } from '../../src/common/errors';

const cfg: OrderConfig = { from: 'e-tokyo', to: 'e-sapporo', pairs: [], retransmitMs: 50, retransmitMaxMs: 100, giveUpMs: 400, logBytes: 64 * 1024 * 1024, fullTimeoutMs: 300, failoverTimeoutMs: 500 };
const log = silentLogger();

const scratchDirs: string[] = [];
after(async () => {
  for (const d of scratchDirs) await fsp.rm(d, { recursive: true, force: true });
});

async function scratch(): Promise<string> {
  const d = await fsp.mkdtemp(path.join(os.tmpdir(), 'edge-order-'));
  scratchDirs.push(d);
  return d;
}

function write(pair: string, offset: number, length = 4096, fill = 1): Buffer {
  return Buffer.concat([encodeDataHeader({ name: pair, offset, length, flags: 0 }), Buffer.alloc(length, fill)]);
}

function wr(seq: number, offset = seq * 4096, order = 'erp', pair = 'db1-far'): RelayEntry {
  return {
    kind: EntryKind.Request, flags: 0, target: { node: 'sapporo', pair }, source: { node: 'tokyo', pair }, order, ioTimeMs: Date.now() - 5, seq, corr: 0,
    rio: { type: MessageType.Write, status: 0, payload: write(pair, offset, 4096, seq & 0xff) },
  };
}

const tick = (ms = 5): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until(what: string, probe: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out: ${what}`);
    await tick();
  }
}

// ------------------------------------------------------------------------------------------------
// Source edge

interface SourceRig {
  source: OrderSource;
  state: RelayState;
  sent: RelayEntry[];
  dropped: string[];
  reopen(): Promise<SourceRig>;
}

async function sourceRig(dir?: string, link = { up: true }, disk: Disk = nodeDisk): Promise<SourceRig> {
  const dataDir = dir ?? await scratch();
  const state = await RelayState.load(dataDir, nodeDisk);
  const sent: RelayEntry[] = [];
  const dropped: string[] = [];
  const source = new OrderSource('erp', cfg, {
    edge: 'e-tokyo', dataDir, disk, clock: systemClock, state, log, events: new EventJournal(log),
    send: (e) => (sent.push(e), true),
    sendLogged: (_to, bytes) => {
      if (!link.up) return false;
      sent.push(decodeEntry(bytes).entry);
      return true;
    },
    canSend: () => link.up,
    dropStorageLinks: (node, as) => dropped.push(`${node}>${as}`),
  });
  await source.open();
  const rig: SourceRig = { source, state, sent, dropped, reopen: async () => {
    await source.close();
    const again = await sourceRig(dataDir, link);
    again.source.pump(); // as the relay does once its orders are open
    return again;
  } };
  return rig;
}

function req(kind: 'data' | 'control', type: number, payload: Buffer, pair = 'db1-far'): SourceRequest {
  return { kind, source: { node: 'tokyo', pair }, target: { node: 'sapporo', pair }, type, payload, fua: false };
}

test('§9.6/§9.4: numbers start at 1 and follow the order requests arrive in, even concurrently; the entry leaves only after the answer', async () => {
  const { source, sent } = await sourceRig();
  let answered = 0;
  const all = Array.from({ length: 50 }, (_, i) => source.request(req('data', MessageType.Write, write('db1-far', i * 4096))).then(() => {
    answered++;
    // Sent on a later turn than the answer (claims 1 and 11): nothing numbered after this one is out yet.
    assert.ok(!sent.some((e) => e.seq > answered), 'no entry goes out before its write is answered');
  }));
  await Promise.all(all);
  await until('all sent', () => sent.length === 50);
  assert.deepEqual(sent.map((e) => e.seq), Array.from({ length: 50 }, (_, i) => i + 1));
  assert.equal(sent[7]!.rio.payload.readUInt8(0), 'db1-far'.length, '805 is the RIO as the storage sent it');
  assert.equal(source.status().generated, 50, '732 is the last number assigned');
  await source.close();
});

test('§9.9/§9.14/§9.15: control requests are numbered too; a response acknowledges its number and those before; one for nothing changes nothing', async () => {
  const { source, sent } = await sourceRig();
  await source.request(req('data', MessageType.Write, write('db1-far', 0)));
  const answer = source.request(req('control', MessageType.PairUpdate, Buffer.from('{"name":"db1-far"}')));
  await source.request(req('data', MessageType.Write, write('db1-far', 4096)));
  await until('sent', () => sent.length === 3);
  assert.equal(source.status().generated, 3);
  source.onResponse(responseTo(sent[0]!, EntryKind.Response, { type: ackType, status: 0, payload: Buffer.alloc(0) }));
  assert.equal(source.status().deleted, 1);
  source.onResponse(responseTo(sent[1]!, EntryKind.Response, { type: MessageType.PairUpdate, status: 0, payload: Buffer.from('ok') }));
  assert.equal((await answer)!.payload.toString(), 'ok', 'the storage gets the target storage\'s answer');
  assert.equal(source.status().deleted, 2);
  assert.equal(source.status().generated, 3, 'responses never change 732');
  source.onResponse({ ...responseTo(sent[2]!, EntryKind.Response, { type: ackType, status: 0, payload: Buffer.alloc(0) }), seq: 1, order: 'erp' });
  assert.equal(source.status().deleted, 2, 'a stale response changes nothing');
  source.onResponse(responseTo(sent[2]!, EntryKind.Response, { type: ackType, status: 0, payload: Buffer.alloc(0) }));
  assert.deepEqual([source.status().deleted, source.status().inFlight, source.status().log.entries], [3, 0, 0]);
  await source.close();
});

test('§9.17/§9.18: no answer: the identical entry is sent again; retransmission exhausted: Failure Suspend, 727 gains the held blocks, 734 := 732', async () => {
  const { source, sent, state, dropped } = await sourceRig();
  state.data.pairs['db1-far'] = { order: 'erp', side: 'source', source: 'tokyo', target: 'sapporo', state: 'duplex', diff: [] };
  await source.request(req('data', MessageType.Write, write('db1-far', 0)));
  await source.request(req('data', MessageType.Write, write('db1-far', 10 * 65536 + 100, 65536)));
  await until('sent', () => sent.length === 2);
  const first = sent[0]!;
  await until('resent', () => {
    source.tick();
    return sent.filter((e) => e.kind === EntryKind.Request && e.seq === 1).length >= 2;
  });
  const again = sent.filter((e) => e.seq === 1)[1]!;
  assert.deepEqual({ ...again, rio: undefined }, { ...first, rio: undefined }, 'same 803 and 804');
  assert.ok(again.rio.payload.equals(first.rio.payload), 'same 805');
  await until('Failure Suspend', () => {
    source.tick();
    return source.state === 'failure-suspend';
  });
  await until('the primary told', () => dropped.length > 0);
  const s = source.status();
  assert.deepEqual([s.generated, s.deleted, s.log.entries], [2, 2, 0]);
  assert.deepEqual(state.data.pairs['db1-far']!.diff, [[0, 1], [10, 12]], 'exactly the regions of the writes held');
  assert.equal(state.data.pairs['db1-far']!.state, 'failure-suspend');
  assert.deepEqual(dropped, ['tokyo>sapporo'], 'the primary is told by losing its link');
  assert.ok(sent.some((e) => e.kind === EntryKind.FailNotice), 'the target edge is told');
  await assert.rejects(source.request(req('data', MessageType.Write, write('db1-far', 0))), /Failure Suspend/);
  // The next control request is a resynchronisation point; a PairBitmap answer carries 727 (1209 = 1213 ∪ 727).
  const bitmapAnswer = source.request(req('control', MessageType.PairBitmap, pairNameCodec.encode({ name: 'db1-far' })));
  await until('sent', () => sent.some((e) => e.seq === 3));
  const resync = sent.find((e) => e.seq === 3)!;
  assert.ok(resync.flags & entryFlagRealign, 'realign flag');
  const targetBits = Buffer.alloc(4);
  targetBits[3] = 0x80; // region 31, set only at the target (1213)
  source.onResponse(responseTo(resync, EntryKind.Response, { type: MessageType.PairBitmap, status: 0, payload: bitmapReplyCodec.encode({ bitmap: targetBits.toString('base64'), hostWritesRecorded: false }) }));
  const merged = Buffer.from(bitmapReplyCodec.decode((await bitmapAnswer)!.payload).bitmap, 'base64');
  assert.deepEqual([...merged], [0b00000001, 0b00001100, 0, 0x80], 'regions 0, 10, 11 from 727 and 31 from 1213');
  const clear = source.request(req('control', MessageType.PairBitmapClear, pairNameCodec.encode({ name: 'db1-far' })));
  await until('sent', () => sent.some((e) => e.seq === 4));
  source.onResponse(responseTo(sent.find((e) => e.seq === 4)!, EntryKind.Response, { type: MessageType.PairBitmapClear, status: 0, payload: Buffer.alloc(0) }));
  await clear;
  assert.deepEqual(state.data.pairs['db1-far']!.diff, [], '727 cleared');
  assert.equal(source.state, 'active');
  await source.close();
});

test('§9.59/E-12: a restarted source edge sends every unacknowledged entry again, and goes on numbering', async () => {
  const rig = await sourceRig();
  for (let i = 0; i < 5; i++) await rig.source.request(req('data', MessageType.Write, write('db1-far', i * 4096)));
  await until('sent', () => rig.sent.length === 5);
  rig.source.onResponse(responseTo(rig.sent[1]!, EntryKind.Response, { type: ackType, status: 0, payload: Buffer.alloc(0) }));
  await rig.state.save();
  const again = await rig.reopen();
  await until('resent', () => again.sent.length === 3);
  assert.deepEqual(again.sent.map((e) => e.seq), [3, 4, 5]);
  assert.ok(again.sent[0]!.rio.payload.equals(rig.sent[2]!.rio.payload));
  await again.source.request(req('data', MessageType.Write, write('db1-far', 0)));
  await until('sent', () => again.sent.length === 4);
  assert.equal(again.sent[3]!.seq, 6, 'numbers never repeat across a restart');
  await again.source.close();
});

test('E-6: a full log area holds the answer back until acknowledgements free room; full too long: Failure Suspend', async () => {
  const rig = await sourceRig(undefined, { up: true });
  const small = { ...cfg, logBytes: 3 * 5000, giveUpMs: 60_000 };
  rig.source.cfg = small;
  for (let i = 0; i < 3; i++) await rig.source.request(req('data', MessageType.Write, write('db1-far', i * 4096)));
  let done = false;
  const held = rig.source.request(req('data', MessageType.Write, write('db1-far', 3 * 4096))).then(() => (done = true));
  await tick(30);
  assert.equal(done, false, 'the fourth write waits');
  assert.equal(rig.source.status().delayedAcks, 1);
  await until('sent', () => rig.sent.length === 3);
  rig.source.onResponse(responseTo(rig.sent[0]!, EntryKind.Response, { type: ackType, status: 0, payload: Buffer.alloc(0) }));
  await held;
  const stuck = rig.source.request(req('data', MessageType.Write, write('db1-far', 4 * 4096))).catch((e: Error) => e);
  await until('Failure Suspend', () => {
    rig.source.tick();
    return rig.source.state === 'failure-suspend';
  });
  assert.match(String(await stuck), /Failure Suspend/);
  await rig.source.close();
});

test('§9.40: a Suspend instruction: every retained entry again in number order, then the SOK with the high-water mark, then Failure Suspend', async () => {
  const rig = await sourceRig();
  for (let i = 0; i < 4; i++) await rig.source.request(req('data', MessageType.Write, write('db1-far', i * 4096)));
  await until('sent', () => rig.sent.length === 4);
  rig.source.onResponse(responseTo(rig.sent[0]!, EntryKind.Response, { type: ackType, status: 0, payload: Buffer.alloc(0) }));
  rig.sent.length = 0;
  await rig.source.onSuspend({ ...wr(0), kind: EntryKind.Suspend, target: { node: 'tokyo', pair: '' }, source: { node: 'sapporo', pair: '' } });
  assert.deepEqual(rig.sent.map((e) => [e.kind, e.seq]), [[EntryKind.Request, 2], [EntryKind.Request, 3], [EntryKind.Request, 4], [EntryKind.SuspendOk, 4]]);
  assert.equal(rig.source.state, 'failure-suspend');
  await rig.source.close();
});

// ------------------------------------------------------------------------------------------------
// Target edge

interface Delivered {
  type: number;
  payload: Buffer;
  /** The name the edge answered as on the storage's link. */
  as: string;
}

async function targetRig(opts: { refuse?: boolean } = {}): Promise<{ target: OrderTarget; delivered: Delivered[]; sent: RelayEntry[]; state: RelayState; dropped: string[]; released: string[]; maxOutstanding: () => number; position: () => Promise<number>; dataDir: string }> {
  const dataDir = await scratch();
  const state = await RelayState.load(dataDir, nodeDisk);
  const delivered: Delivered[] = [];
  const sent: RelayEntry[] = [];
  const dropped: string[] = [];
  const released: string[] = [];
  let outstanding = 0;
  let max = 0;
  const target = new OrderTarget('erp', cfg, {
    edge: 'e-sapporo', clock: systemClock, state, log, events: new EventJournal(log),
    send: (e) => (sent.push(e), true),
    deliver: async (_node, as, type, payload) => {
      outstanding++;
      max = Math.max(max, outstanding);
      await tick(1);
      outstanding--;
      if (opts.refuse && type === MessageType.Write) throw new TricopyError('conflict', 'pair db1-far is primary: it does not accept replication writes');
      if (type !== MessageType.Flush) delivered.push({ type, payload, as });
      if (type === MessageType.SwapPrepare) return swapPreparedCodec.encode({ bitmap: Buffer.from([0b10, 0, 0, 0]).toString('base64'), clean: true });
      return Buffer.from(type === MessageType.PairUpdate ? 'updated' : '');
    },
    dropStorageLinks: (node, as, _reason, hold) => dropped.push(`${node}>${as}${hold ? ' held' : ''}`),
    releaseStorageLink: (node, as) => released.push(`${node}>${as}`),
  }, await PositionFile.open(dataDir, 'erp', nodeDisk));
  return {
    target, delivered, sent, state, dropped, released, dataDir, maxOutstanding: () => max,
    position: async () => {
      const p = await PositionFile.open(dataDir, 'erp', nodeDisk);
      const v = p.stored;
      await p.close();
      return v;
    },
  };
}

const seqOf = (d: Delivered): number => d.payload.readUInt8(d.payload.length - 1);

test('§9.19–§9.22: only 733 + 1 is reflected; later numbers wait for a gap; one request at a time', async () => {
  const t = await targetRig();
  t.target.onRequest(wr(3));
  t.target.onRequest(wr(2));
  await tick(30);
  assert.equal(t.delivered.length, 0, 'nothing while 1 is missing');
  t.target.onRequest(wr(1));
  await until('three reflected', () => t.delivered.length === 3);
  assert.deepEqual(t.delivered.map(seqOf), [1, 2, 3]);
  assert.equal(t.maxOutstanding(), 1, 'at most one RIO outstanding');
  await until('acknowledged', () => t.sent.some((e) => e.kind === EntryKind.Response && e.seq === 3));
  const ack = t.sent.find((e) => e.seq === 3)!;
  assert.deepEqual([ack.target, ack.source, ack.order], [{ node: 'tokyo', pair: 'db1-far' }, { node: 'sapporo', pair: 'db1-far' }, 'erp'], '§9.25: 801/802 swapped, 803 kept');
  const s = t.target.status();
  assert.deepEqual([s.reflected, s.inFlight], [3, 0], '§9.24, §9.26: 733 = 3 and nothing left buffered');
  assert.ok(s.reflectionDelayMs !== null && s.reflectionDelayMs >= 5, '735 = completion − I/O time');
  assert.equal(await t.position(), 3, '733 is durable before the acknowledgement');
  t.target.close();
});

test('§9.44 fast variant (TE8): the storage\'s hold first, its links held down at once, later entries as plain writes on the edge\'s own link, the hold ended at the high-water mark', async () => {
  const t = await targetRig();
  t.target.onRequest(wr(1));
  await until('1 reflected', () => t.delivered.length === 1);
  const result = await t.target.failover(10_000, true);
  assert.equal(result.highWaterMark, null, 'answered without waiting for the source edge');
  assert.equal(result.residual, 1, 'a positive residual count while the high-water mark is unknown');
  const hold = t.delivered[1]!;
  assert.deepEqual([hold.type, hold.as], [MessageType.ResidualState, 'e-sapporo'], 'the hold goes first, on the edge\'s own link');
  assert.deepEqual(residualStateCodec.decode(hold.payload), { order: 'erp', pairs: ['db1-far'], remaining: null, done: false, reason: 'fast failover of order erp at e-sapporo' });
  assert.deepEqual(t.dropped, ['sapporo>tokyo held'], 'RIO(SOK) at once: the links answering as the source are held down');
  assert.ok(t.sent.some((e) => e.kind === EntryKind.Suspend), 'the Suspend instruction still went to the source edge');
  assert.equal(t.target.status().residual, 1);
  t.target.onRequest(wr(2));
  await until('2 applied as a plain write', () => t.delivered.some((d) => d.type === MessageType.ResidualWrite));
  const plain = t.delivered.find((d) => d.type === MessageType.ResidualWrite)!;
  assert.equal(plain.as, 'e-sapporo');
  const inner = decodeResidualWrite(plain.payload);
  assert.equal(inner.type, MessageType.Write);
  assert.deepEqual(inner.payload, wr(2).rio.payload, 'the storage\'s message, unchanged');
  t.target.onSuspendOk({ ...wr(0), kind: EntryKind.SuspendOk, seq: 2 });
  await until('the hold ends', () => t.delivered.some((d) => d.type === MessageType.ResidualState && residualStateCodec.decode(d.payload).done));
  assert.equal(t.target.status().residual, 0, '0 once drained');
  assert.equal(t.target.state, 'failure-suspend');
  assert.equal(t.target.status().reflected, 2);
  assert.deepEqual(t.released, ['sapporo>e-sapporo'], 'the edge\'s own link is let go');
  t.target.close();
});

test('§9.27: an entry already reflected is not reflected again; it is answered', async () => {
  const t = await targetRig();
  for (const n of [1, 2]) t.target.onRequest(wr(n));
  await until('acknowledged', () => t.sent.some((e) => e.seq === 2));
  t.sent.length = 0;
  t.target.onRequest(wr(1));
  t.target.onRequest(wr(2));
  await tick(20);
  assert.equal(t.delivered.length, 2, 'no second delivery');
  assert.ok(t.sent.length >= 1 && t.sent.every((e) => e.kind === EntryKind.Response && e.seq === 2), 'answered with 733');
  t.target.close();
});

test('§9.23: a gap in one id does not delay another', async () => {
  const g1 = await targetRig();
  const g2 = await targetRig();
  g1.target.onRequest(wr(2));
  g2.target.onRequest(wr(1));
  await until('g2 reflected', () => g2.delivered.length === 1);
  assert.equal(g1.delivered.length, 0);
  g1.target.close();
  g2.target.close();
});

test('733 is made durable before a write overlapping one reflected since is reflected (a restart never replays overlapping writes)', async () => {
  const t = await targetRig();
  t.target.onRequest(wr(1, 0));
  t.target.onRequest(wr(2, 8192));
  t.target.onRequest(wr(3, 0)); // overlaps 1
  await until('reflected', () => t.delivered.length === 3);
  // Before 3 went out, 2 was made durable (a checkpoint); the batch's end makes 3 durable too.
  await until('acknowledged', () => t.sent.some((e) => e.seq === 3));
  assert.equal(await t.position(), 3);
  t.target.close();
});

test('§9.34/§5.5(5): control entries are gated like writes and answered with the storage\'s answer', async () => {
  const t = await targetRig();
  const update: RelayEntry = { ...wr(2), rio: { type: MessageType.PairUpdate, status: 0, payload: Buffer.from('{"name":"db1-far"}') } };
  t.target.onRequest(update);
  await tick(20);
  assert.equal(t.delivered.length, 0, 'the update waits for the write numbered before it');
  t.target.onRequest(wr(1));
  await until('both', () => t.delivered.length === 2);
  assert.deepEqual(t.delivered.map((d) => d.type), [MessageType.Write, MessageType.PairUpdate]);
  await until('answered', () => t.sent.some((e) => e.seq === 2));
  const answer = t.sent.find((e) => e.seq === 2)!;
  assert.equal(answer.rio.payload.toString(), 'updated');
  t.target.close();
});

test('§9.39: a resynchronisation point realigns the gate past entries lost to a Failure Suspend', async () => {
  const t = await targetRig();
  t.target.onRequest(wr(1));
  await until('1', () => t.delivered.length === 1);
  t.target.onFailNotice({ ...wr(0), kind: EntryKind.FailNotice, rio: { type: 0, status: 0, payload: Buffer.from('retransmission exhausted') } });
  assert.equal(t.target.state, 'failure-suspend');
  assert.deepEqual(t.dropped, ['sapporo>tokyo'], '§9.18: the target storage is told too (its link to the source goes down once)');
  t.target.onRequest(wr(9));
  await tick(20);
  assert.equal(t.delivered.length, 1, 'nothing is reflected in Failure Suspend');
  assert.ok(t.sent.some((e) => e.kind === EntryKind.FailNotice), 'the source is told again');
  t.target.onRequest({ ...wr(7), flags: entryFlagRealign, rio: { type: MessageType.PairBitmap, status: 0, payload: pairNameCodec.encode({ name: 'db1-far' }) } });
  t.target.onRequest(wr(8));
  await until('realigned', () => t.delivered.length === 3);
  assert.deepEqual(t.delivered.map((d) => d.type), [MessageType.Write, MessageType.PairBitmap, MessageType.Write]);
  assert.equal(t.target.state, 'active');
  t.target.close();
});

test('a storage that keeps refusing writes puts the id in Failure Suspend and tells the source edge', async () => {
  const t = await targetRig({ refuse: true });
  t.target.onRequest(wr(1));
  await until('the source edge told', () => t.sent.some((e) => e.kind === EntryKind.FailNotice), 10_000);
  assert.equal(t.target.state, 'failure-suspend');
  t.target.close();
});

test('an error answer to a control request goes back as the answer (it is not a failure)', async () => {
  const dataDir = await scratch();
  const state = await RelayState.load(dataDir, nodeDisk);
  const sent: RelayEntry[] = [];
  const target = new OrderTarget('erp', cfg, {
    edge: 'e-sapporo', clock: systemClock, state, log, events: new EventJournal(log), send: (e) => (sent.push(e), true),
    deliver: async () => {
      throw new TricopyError('already-exists', 'node sapporo: pair db1-far already exists on sapporo');
    },
    dropStorageLinks: () => undefined,
    releaseStorageLink: () => undefined,
  }, await PositionFile.open(dataDir, 'erp', nodeDisk));
  target.onRequest({ ...wr(1), rio: { type: MessageType.PairCreate, status: 0, payload: Buffer.from('{}') } });
  await until('answered', () => sent.length === 1);
  assert.equal(sent[0]!.rio.status, 1);
  assert.deepEqual(sent[0]!.rio.payload, encodeErrorPayload(new TricopyError('already-exists', 'pair db1-far already exists on sapporo')));
  assert.equal(target.status().reflected, 1);
  target.close();
});

test('E-22: Failure Suspend names the host writes the network lost apart from copies; they stay named until the pair is duplex again', async () => {
  const { source, sent, state } = await sourceRig();
  state.data.pairs['db1-far'] = { order: 'erp', side: 'source', source: 'tokyo', target: 'sapporo', state: 'duplex', diff: [] };
  await source.request(req('data', MessageType.Write, write('db1-far', 0)));
  await source.request(req('data', MessageType.Copy, write('db1-far', 20 * 65536)));
  await until('sent', () => sent.length === 2);
  await source.failureSuspend('the link is gone', false);
  const row = state.data.pairs['db1-far']!;
  assert.deepEqual(row.diff, [[0, 1], [20, 21]], '727: every held write');
  assert.deepEqual(row.written, [[0, 1]], 'the host write, not the copy');
  const answer = async (type: number, payload: Buffer): Promise<void> => {
    const seq = sent.filter((e) => e.kind === EntryKind.Request).length + 1;
    const done = source.request(req('control', type, payload));
    await until(`${MessageType[type]} sent`, () => sent.some((e) => e.seq === seq));
    const entry = sent.find((e) => e.seq === seq)!;
    const rio = type === MessageType.PairBitmap ? bitmapReplyCodec.encode({ bitmap: Buffer.alloc(4).toString('base64'), hostWritesRecorded: false }) : Buffer.alloc(0);
    source.onResponse(responseTo(entry, EntryKind.Response, { type, status: 0, payload: rio }));
    await done;
  };
  await answer(MessageType.PairBitmap, pairNameCodec.encode({ name: 'db1-far' }));
  await answer(MessageType.PairBitmapClear, pairNameCodec.encode({ name: 'db1-far' }));
  assert.deepEqual(row.diff, [], '727 went into the primary\'s record');
  assert.deepEqual(row.written, [[0, 1]], 'the lost host writes stay named while the pair is not duplex');
  const update = (st: string): Buffer => pairUpdateCodec.encode({ name: 'db1-far', role: 'primary', state: st as never, suspendCause: null, reason: 'r', generation: 1, secondaryWritable: false, copyTotal: 0, copyDone: 0 });
  await answer(MessageType.PairUpdate, update('duplex-pending'));
  assert.deepEqual(row.written, [[0, 1]]);
  await answer(MessageType.PairUpdate, update('duplex'));
  assert.equal(row.written, undefined, 'duplex again: the secondary has them');
  await source.close();
});

test('E-22: a swap through the target edge over host writes the network lost is a split brain unless discarded; discarded, they are copied', async () => {
  const t = await targetRig();
  // The pair reverses: this edge was its source (727 and the lost host writes are kept) and is now its target.
  t.state.data.pairs['db1-far'] = { order: 'erp-old', side: 'source', source: 'sapporo', target: 'tokyo', state: 'failure-suspend', diff: [[0, 1], [9, 10]], written: [[9, 10]] };
  const swap = (seq: number, discard: boolean): RelayEntry => ({
    ...wr(seq), rio: { type: MessageType.SwapPrepare, status: 0, payload: swapPrepareCodec.encode({
      name: 'db1-far', newPrimary: 'tokyo', generation: 3, senderHasChanges: true, receivedSeqAtTakeover: null, discardReceiverChanges: discard,
    }) },
  });
  t.target.onRequest(swap(1, false));
  await until('answered', () => t.sent.some((e) => e.seq === 1));
  const refused = t.sent.find((e) => e.seq === 1)!;
  assert.equal(refused.rio.status, 1);
  assert.match(refused.rio.payload.toString(), /split brain: 64KiB of writes to pair db1-far that sapporo had acknowledged never reached tokyo/);
  assert.equal(t.delivered.length, 0, 'the old primary is not asked to step down');
  const row = t.state.data.pairs['db1-far']!;
  assert.deepEqual([row.order, row.side], ['erp', 'target'], 'the row follows the new direction');
  t.target.onRequest(swap(2, true));
  await until('answered', () => t.sent.some((e) => e.seq === 2));
  const answer = swapPreparedCodec.decode(t.sent.find((e) => e.seq === 2)!.rio.payload);
  assert.deepEqual([...Buffer.from(answer.bitmap, 'base64')], [0b11, 0b10, 0, 0], 'region 1 from the storage, 0 and 9 that the network lost');
  assert.equal(answer.clean, false);
  assert.deepEqual([row.diff, row.written], [[], undefined], 'handed over to the swap');
  t.target.close();
});

test('a Failure Suspend while a control request still waits for its log write fails that request, and nothing else (it once killed the relay)', async () => {
  // Log writes wait at a gate while it is closed.
  let open = true;
  let waiting: Array<() => void> = [];
  const gated: Disk = {
    ...nodeDisk,
    open: async (file, flags) => {
      const f = await nodeDisk.open(file, flags);
      const wrapped: DiskFile = {
        read: (...a) => f.read(...a), datasync: () => f.datasync(), truncate: (n) => f.truncate(n), sizeBytes: () => f.sizeBytes(), close: () => f.close(),
        writev: async (pieces, position) => {
          if (!open) await new Promise<void>((r) => waiting.push(r));
          return f.writev(pieces, position);
        },
      };
      return wrapped;
    },
  };
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown): void => void unhandled.push(err);
  process.on('unhandledRejection', onUnhandled);
  try {
    const { source } = await sourceRig(undefined, { up: true }, gated);
    open = false;
    const refused = assert.rejects(source.request(req('control', MessageType.PairUpdate, pairNameCodec.encode({ name: 'db1-far' }))),
      /order-guarantee id erp entered Failure Suspend/);
    await until('the log write waits', () => waiting.length > 0);
    // It rejects the request's answer at once; emptying the log area waits for the gate too.
    const suspended = source.failureSuspend('the target edge declared Failure Suspend', false);
    await new Promise((r) => setImmediate(r));
    open = true;
    for (const w of waiting.splice(0)) w();
    await suspended;
    await refused;
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(unhandled, [], 'no rejection left unhandled');
    await source.close();
  } finally {
    process.off('unhandledRejection', onUnhandled);
  }
});
