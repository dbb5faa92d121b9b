// A sync pair through a remote copy network of real processes on loopback (spec 002): two storage
// nodes, a source edge, a core and a target edge. Writes are acknowledged by the source edge, carried
// hop by hop and applied in order at the target; the secondary equals the primary once drained.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { sha256Export, tempDir } from '../support/tools';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('edge');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

const fast = { retransmit: { timeout: '500ms', max: '2s', giveUp: '60s' } };

test('a sync pair through edge, core and edge: writes acknowledged at the source edge, the secondary equals the primary once drained', async () => {
  const rcn = await Rcn.create(path.join(dir, 'basic'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', ...fast } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 64 * MiB);
    const seed = await rcn.cluster.client('tokyo', 'db1');
    await seed.write(0, randomBytes(MiB));
    await seed.disconnect();
    const out = await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    assert.match(out, /created pair db1-far/);
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    const client = await rcn.cluster.client('tokyo', 'db1');
    for (let i = 0; i < 200; i++) await client.write((i % 100) * 65536 + 4096, randomBytes(4096));
    await client.flush();
    await client.disconnect();
    const src = await rcn.drained('erp');
    assert.ok(src.generated > 200, `732 = ${src.generated}`);
    assert.equal(src.deleted, src.generated, '734 = 732 once drained');
    const tgt = await rcn.order('e-sapporo', 'erp', 'target');
    assert.equal(tgt.reflected, src.generated, '733 = 732 once drained');
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    const core = await rcn.status('c-1');
    assert.ok(core.counters.entriesForwarded > src.generated, `the core carried the entries and their answers (${core.counters.entriesForwarded})`);
    const edge = await rcn.status('e-tokyo');
    assert.deepEqual(edge.pairs.map((p) => [p.name, p.side, p.order, p.state]), [['db1-far', 'source', 'erp', 'duplex']]);
    const primary = await rcn.cluster.pairStatus('tokyo', 'db1-far');
    assert.equal(primary.peer.node, 'sapporo', 'the primary sees its peer, not the edge');
    assert.equal(primary.peer.replPort, rcn.relay('e-tokyo').ports.listenPort, 'and reaches it at its edge');
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
  } finally {
    await rcn.stopAll();
  }
});
