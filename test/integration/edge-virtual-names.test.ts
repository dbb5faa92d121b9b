// The Fig. 2 variant of a remote copy network (spec 002 §6.13, §9.56): virtual storages with names
// of their own. Each node pairs with a storage named by its edge; the edges translate: entries and
// pair rows hold the real names, each node sees its partner only under the virtual name, and the
// pair works both ways (a planned swap copies back under the order that leads back).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cli, killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { runOk, sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('edge-virtual-names');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('§9.56 Fig. 2 variant: virtual storages answer under names of their own; the edges translate both ways and the pair reverses', async () => {
  const rcn = await Rcn.create(path.join(dir, 'fig2'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' }, 'erp-back': { from: 'e-sapporo', to: 'e-tokyo' } },
    // V106 chosen in the file; e-sapporo's name for tokyo is allocated at apply.
    extra: { virtualStorages: 'own', virtualNames: { 'e-tokyo': { sapporo: 'V106' } } },
  });
  try {
    await rcn.apply();
    const storages = await cli(['network', 'storages', rcn.file]);
    assert.equal(storages.code, 0, storages.stderr);
    assert.match(storages.stdout, /e-tokyo\s+V106\s+sapporo\s+e-sapporo\s+tokyo\s+erp,erp-back/);
    assert.match(storages.stdout, /e-sapporo\s+tokyo\.e-sapporo\s+tokyo\s+e-tokyo\s+sapporo\s+erp,erp-back/);
    const answer = await rcn.relay('e-tokyo').api.virtualStorages();
    assert.equal(answer.variant, 'own-names');
    const query = await cli(['network', 'storages', rcn.file, '--edge', 'e-tokyo', '--storage', 'V106']);
    assert.equal(query.code, 0, query.stderr);
    assert.match(query.stdout, /virtual storage V106 at e-tokyo answers as sapporo \(attached to e-sapporo; Fig\. 2 variant: a name of its own\)/);
    const real = await cli(['network', 'storages', rcn.file, '--edge', 'e-tokyo', '--storage', 'sapporo']);
    assert.equal(real.code, 1, 'the partner\'s own name is no virtual storage of this edge');

    await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
    const seed = await rcn.cluster.client('tokyo', 'db1');
    await seed.write(0, randomBytes(MiB));
    await seed.disconnect();
    const out = await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    assert.match(out, /created pair db1-far: db1 on this node → db1 on V106/);
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 2M 3M', '-c', 'flush', rcn.cluster.node('tokyo').nbdUri('db1')]);
    await rcn.drained('erp');
    // Each node knows its partner only under the name its own edge presents (§6.13 (C), (D)).
    assert.equal((await rcn.cluster.pairStatus('tokyo', 'db1-far')).peer.node, 'V106');
    assert.equal((await rcn.cluster.pairStatus('sapporo', 'db1-far')).peer.node, 'tokyo.e-sapporo');
    // The network holds the real names (§6.13 recommendation; §9.56: logged with 801 = the real target).
    const edge = await rcn.status('e-tokyo');
    assert.deepEqual(edge.pairs.map((p) => [p.name, p.side, p.source, p.target]), [['db1-far', 'source', 'tokyo', 'sapporo']]);
    const target = await rcn.status('e-sapporo');
    assert.deepEqual(target.pairs.map((p) => [p.name, p.side, p.source, p.target]), [['db1-far', 'target', 'tokyo', 'sapporo']]);
    // The storage links: each edge answers its node as the virtual storage (§9.56: the frames' source port).
    const linked = (s: typeof edge): string[] => s.links.filter((l) => l.kind === 'storage' && l.up).map((l) => `${l.peer} as ${l.as}`);
    assert.deepEqual(linked(edge), ['tokyo as V106']);
    assert.deepEqual(linked(target), ['sapporo as tokyo.e-sapporo']);
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
    // Addressed under the partner's own name, the edge presents no such storage (its status says why).
    await rcn.cluster.volume('tokyo', 'db2', 4 * MiB);
    await assert.rejects(rcn.cluster.node('tokyo').api.createPair({
      name: 'db2-far', volume: 'db2', mode: 'sync', peer: { node: 'sapporo', host: '127.0.0.1', replPort: rcn.relay('e-tokyo').ports.listenPort },
    }), /not reachable/);
    const refusal = (await rcn.status('e-tokyo')).lastRefusal;
    assert.equal(refusal?.peer, 'tokyo');
    assert.match(refusal?.detail ?? '', /presents no virtual storage sapporo \(this edge presents sapporo as V106\)/);

    // A planned swap at sapporo: the swap request names the new primary, which tokyo must find as V106.
    const swap = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far']);
    assert.equal(swap.code, 0, swap.stderr);
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    assert.equal((await rcn.cluster.pairStatus('tokyo', 'db1-far')).role, 'secondary');
    const back = await rcn.cluster.client('sapporo', 'db1');
    for (let i = 0; i < 16; i++) await back.write(i * 262144, randomBytes(4096));
    await back.flush();
    await back.disconnect();
    await rcn.drained('erp-back');
    assert.ok((await rcn.order('e-sapporo', 'erp-back', 'source')).generated > 0, 'the writes went back through the order that leads back');
    assert.equal(await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir));
  } finally {
    await rcn.stopAll();
  }
});

test('Fig. 2 variant: an async pair survives a SIGKILL of its secondary; the reconciliation after the restart crosses the translation and the stream resumes', async () => {
  const rcn = await Rcn.create(path.join(dir, 'fig2-async'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } }, extra: { virtualStorages: 'own' },
  });
  const writeSome = async (count: number, from: number): Promise<void> => {
    const client = await rcn.cluster.client('tokyo', 'log1');
    for (let i = 0; i < count; i++) await client.write((from + i) * 65536, randomBytes(8192));
    await client.disconnect();
  };
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'log1', 16 * MiB);
    await rcn.pairVia({ name: 'log1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'log1', order: 'erp', mode: 'async' });
    await rcn.cluster.waitState('tokyo', 'log1-far', 'duplex');
    assert.equal((await rcn.cluster.pairStatus('tokyo', 'log1-far')).peer.node, 'sapporo.e-tokyo', 'allocated: PARTNER.EDGE');
    await writeSome(50, 0);
    await rcn.cluster.kill('sapporo');
    await writeSome(50, 50); // async: the host goes on; the primary's journal holds what sapporo lacks
    await rcn.cluster.restart('sapporo');
    await rcn.cluster.waitState('sapporo', 'log1-far', 'duplex', 60_000);
    await waitFor('the async lag to drain', async () => (await rcn.cluster.node('tokyo').api.getGroup('log1-far')).lag.entries === 0 ? true : undefined, { timeoutMs: 60_000 });
    await rcn.drained('erp');
    assert.equal((await rcn.cluster.pairStatus('sapporo', 'log1-far')).peer.node, 'tokyo.e-sapporo');
    const tokyo = await sha256Export(rcn.cluster.node('tokyo').nbdUri('log1'), dir);
    // Applied in order at sapporo: its image reaches tokyo's once the last batch is applied.
    await waitFor('sapporo to equal tokyo', async () => (await sha256Export(rcn.cluster.node('sapporo').nbdUri('log1'), dir)) === tokyo ? true : undefined, { timeoutMs: 30_000 });
  } finally {
    await rcn.stopAll();
  }
});
