// Residual entries of a fast failover at the storage node (spec 002 §6.9, E-21): the ResidualWrite
// codec on bytes, and the holds: host writes wait while one covers their volume, residual writes
// land only from the node's own edge and only for pairs it holds, and a hold survives a reload.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { EventJournal } from '../../src/common/events';
import { nodeDisk } from '../../src/common/disk';
import { silentLogger } from '../../src/common/log';
import { ResidualHolds } from '../../src/replication/control/residual';
import type { PairRegistry } from '../../src/replication/pairs/registry';
import { residualStateCodec } from '../../src/replication/transport/control-messages';
import { MessageType, decodeResidualWrite, encodeDataHeader, encodeResidualWrite } from '../../src/replication/transport/messages';

test('a residual write carries the data message unchanged after one byte of its type; only data messages and flushes', () => {
  const rio = Buffer.concat([encodeDataHeader({ name: 'db1-far', offset: 4096, length: 3, flags: 0 }), Buffer.from('abc')]);
  const bytes = Buffer.concat(encodeResidualWrite(MessageType.Write, rio));
  assert.equal(bytes[0], MessageType.Write);
  assert.deepEqual(bytes.subarray(1), rio);
  const back = decodeResidualWrite(bytes);
  assert.equal(back.type, MessageType.Write);
  assert.deepEqual(back.payload, rio);
  assert.throws(() => decodeResidualWrite(Buffer.alloc(0)), /residual write is empty/);
  assert.throws(() => decodeResidualWrite(Buffer.from([MessageType.PairUpdate, 1, 2])), /carries a write, a zero, a copy or a flush, not message type 22/);
  assert.throws(() => residualStateCodec.decode(Buffer.from('{"order":"erp","pairs":[],"remaining":-1,"done":false,"reason":""}')), /malformed/);
});

interface Written { volume: string; kind: string; offset: number; data: string }

function fixture(dir: string): { holds: ResidualHolds; written: Written[]; events: EventJournal } {
  const written: Written[] = [];
  const pairs: Record<string, { record: { role: string; volume: string } }> = {
    'db1-far': { record: { role: 'secondary', volume: 'db1' } },
    'mine': { record: { role: 'primary', volume: 'db9' } },
  };
  const registry = { get: (name: string) => pairs[name] } as unknown as PairRegistry;
  const clock = { now: () => 0, setTimer: () => ({ unref: () => undefined }), clearTimer: () => undefined, defer: (fn: () => void) => fn(), sleep: async () => undefined };
  const events = new EventJournal(silentLogger(), clock);
  const holds = new ResidualHolds({
    dataDir: dir, disk: nodeDisk, registry, events, log: silentLogger(), now: () => '2026-12-03T00:00:00.000Z',
    apply: async (volume, op) => {
      written.push({ volume, kind: op.kind, offset: op.offset, data: op.data.toString() });
    },
  });
  holds.isNetworkEdge = (peer) => peer === 'e-sapporo';
  return { holds, written, events };
}

const state = (done: boolean, pairs = ['db1-far']): Buffer => residualStateCodec.encode({ order: 'erp', pairs, remaining: done ? 0 : null, done, reason: 'test' });
const residualWrite = (pair: string, offset: number, text: string): Buffer =>
  Buffer.concat(encodeResidualWrite(MessageType.Write, Buffer.concat([encodeDataHeader({ name: pair, offset, length: text.length, flags: 0 }), Buffer.from(text)])));

test('host writes wait while a hold covers their volume; residual writes land only from the node\'s edge, for held pairs; the hold survives a reload', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-residual-'));
  try {
    const { holds, written } = fixture(dir);
    assert.equal(holds.waitFor('db1'), undefined, 'no hold: writes go at once');
    await assert.rejects(holds.onWrite(residualWrite('db1-far', 0, 'old'), 'e-sapporo'), /awaits no residual entries from e-sapporo/);
    await assert.rejects(holds.onState(state(false), 'c-1'), /c-1 is not the edge of a network this node is attached to/);
    await assert.rejects(holds.onState(state(false, ['mine']), 'e-sapporo'), /pair mine has no secondary on this node/);
    await holds.onState(state(false), 'e-sapporo');
    let hostWent = false;
    const host = holds.waitFor('db1')!.then(() => {
      hostWent = true;
    });
    assert.ok(host);
    assert.equal(holds.viewOf('db1')?.waitingWrites, 1);
    assert.equal(holds.list()[0]?.waitingWrites, 1, 'the node\'s list of holds counts it too');
    assert.equal(holds.waitFor('db2'), undefined, 'other volumes are not held');
    await holds.onWrite(residualWrite('db1-far', 512, 'old'), 'e-sapporo');
    assert.deepEqual(written, [{ volume: 'db1', kind: 'write', offset: 512, data: 'old' }]);
    await assert.rejects(holds.onWrite(residualWrite('db1-far', 0, 'x'), 'e-tokyo'), /not the edge/);
    // A restarted node reads the hold back before it serves hosts.
    const reloaded = fixture(dir).holds;
    await reloaded.load();
    assert.equal(reloaded.viewOf('db1')?.order, 'erp');
    await new Promise((r) => setImmediate(r));
    assert.equal(hostWent, false, 'the host write still waits');
    await holds.onState(state(true), 'e-sapporo');
    await host;
    assert.equal(hostWent, true);
    assert.equal(holds.viewOf('db1'), undefined);
    assert.deepEqual(await reloaded.release('erp', undefined, 'operator'), [{ order: 'erp', edge: 'e-sapporo', remaining: null, since: '2026-12-03T00:00:00.000Z', waitingWrites: 0 }]);
    assert.deepEqual(await reloaded.release('erp', undefined, 'operator'), [], 'nothing left to release');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('a damaged holds file fails the load instead of letting hosts write early', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'residual-damaged-'));
  try {
    for (const text of ['{"order":"erp"}', '[{"order":"erp","edge":"e-sapporo"}]', '[{"order":"erp","edge":"e-sapporo","pairs":"db1-far","volumes":[],"remaining":null,"since":"x","reason":""}]', 'not json']) {
      await fsp.writeFile(path.join(dir, 'residual-holds.json'), text);
      await assert.rejects(fixture(dir).holds.load(), /residual holds file .* is malformed|JSON/, text);
    }
    await fsp.writeFile(path.join(dir, 'residual-holds.json'),
      '[{"order":"erp","edge":"e-sapporo","pairs":["db1-far"],"volumes":["db1"],"remaining":null,"since":"x","reason":"r"}]');
    const { holds } = fixture(dir);
    await holds.load();
    assert.equal(holds.viewOf('db1')?.order, 'erp', 'a well-formed hold is kept');
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
