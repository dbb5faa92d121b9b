// Pairs through a remote copy network whose direction reverses (spec 002 E-22): a planned swap
// while both sites run, and a failback after a source-site failure and failover (§6.9), copy the
// other way through the network under the order that leads back, only the regions that differ.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cli, killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('edge-reverse');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

const orders = {
  erp: { from: 'e-tokyo', to: 'e-sapporo', failoverTimeout: '20s' },
  'erp-back': { from: 'e-sapporo', to: 'e-tokyo' },
};

async function network(name: string): Promise<Rcn> {
  const rcn = await Rcn.create(path.join(dir, name), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']], orders, proxied: [['c-1', 'e-sapporo']],
  });
  await rcn.apply();
  await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
  await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
  return rcn;
}

async function writeSome(rcn: Rcn, node: string, count: number, stride: number): Promise<void> {
  const client = await rcn.cluster.client(node, 'db1');
  for (let i = 0; i < count; i++) await client.write(i * stride, randomBytes(4096));
  await client.disconnect();
}

/** pair swap at `node` (the CLI runs it again while the old primary is busy with its own recovery). */
async function swapAt(rcn: Rcn, node: string, extra: string[] = []): Promise<void> {
  const swap = await cli(['--node', rcn.cluster.node(node).apiUrl, 'pair', 'swap', 'db1-far', ...extra, '--wait', '--timeout', '60']);
  assert.equal(swap.code, 0, swap.stderr);
}

async function sameData(rcn: Rcn): Promise<void> {
  assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
}

test('a planned swap through the network: the pair reverses, the new primary copies back through its own edge under the order that leads back (E-22)', async () => {
  const rcn = await network('swap');
  try {
    await writeSome(rcn, 'tokyo', 32, 65536);
    await rcn.drained('erp');
    const takeover = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far']);
    assert.equal(takeover.code, 0, takeover.stderr);
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    await writeSome(rcn, 'sapporo', 32, 131072);
    await rcn.drained('erp-back');
    await sameData(rcn);
    assert.ok((await rcn.order('e-sapporo', 'erp-back', 'source')).generated > 0, 'the writes went through the order that leads back');
  } finally {
    await rcn.stopAll();
  }
});

test('failback through the network after a source-site failure: failover, takeover, writes at the target, then swap copies back only what differs, and the pair returns (E-22)', async () => {
  const rcn = await network('failback');
  try {
    await writeSome(rcn, 'tokyo', 32, 65536);
    await rcn.drained('erp');
    await rcn.cluster.kill('tokyo');
    const failover = await cli(['network', 'failover', rcn.file, '--order', 'erp', '--json']);
    assert.equal(failover.code, 0, failover.stderr);
    await waitFor('takeover', async () => (await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far'])).code === 0);
    await writeSome(rcn, 'sapporo', 16, 262144);
    await rcn.cluster.restart('tokyo');
    // The old primary's first message through its edge resumes the order (a resynchronisation point);
    // the target edge lets the two storages see each other again and the returning one learns it was taken over.
    const fenced = await waitFor('tokyo learns it was taken over', async () => {
      const p = await rcn.cluster.pairStatus('tokyo', 'db1-far');
      return p.suspendCause === 'takeover-by-peer' ? p : undefined;
    }, { timeoutMs: 30_000 });
    assert.equal(fenced.code, 'PSUE');
    const failback = await cli(['network', 'failback', rcn.file, '--order', 'erp']);
    assert.equal(failback.code, 0, failback.stderr);
    assert.match(failback.stdout, /order erp had not failed over at e-sapporo/, 'the returning primary resumed the order by itself');
    const far = rcn.proxy('c-1', 'e-sapporo');
    const before = far.bytesForwarded.toClient + far.bytesForwarded.toTarget;
    await swapAt(rcn, 'sapporo');
    await rcn.drained('erp-back');
    await sameData(rcn);
    const copied = far.bytesForwarded.toClient + far.bytesForwarded.toTarget - before;
    assert.ok(copied < 8 * MiB, `the swap moved ${copied} bytes over the far link for a 16 MiB volume: a delta, not a full copy`);
    // And back to where it started: a planned swap to tokyo, writes flow through erp again.
    const home = await cli(['--node', rcn.cluster.node('tokyo').apiUrl, 'pair', 'takeover', 'db1-far']);
    assert.equal(home.code, 0, home.stderr);
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    await writeSome(rcn, 'tokyo', 8, 524288);
    await rcn.drained('erp');
    await sameData(rcn);
    assert.equal((await rcn.order('e-tokyo', 'erp', 'source')).state, 'active');
  } finally {
    await rcn.stopAll();
  }
});

test('failback when the network lost writes the old primary had acknowledged: the swap names the split brain, --discard copies them over (E-22, 727)', async () => {
  const rcn = await network('lost');
  try {
    await writeSome(rcn, 'tokyo', 8, 65536);
    await rcn.drained('erp');
    // Writes acknowledged by the source edge that never leave it: the far link is cut.
    rcn.proxy('c-1', 'e-sapporo').cut();
    await writeSome(rcn, 'tokyo', 8, 1024 * 1024);
    await rcn.cluster.kill('tokyo');
    const failover = await rcn.relay('e-sapporo').api.failover('erp', 1000);
    assert.equal(failover.highWaterMark, null, 'the source edge could not answer');
    await waitFor('takeover', async () => (await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far'])).code === 0);
    await writeSome(rcn, 'sapporo', 4, 262144);
    // The link is back: the source edge learns the order stopped and keeps what it held as 727.
    rcn.proxy('c-1', 'e-sapporo').restore();
    await waitFor('727 at the source edge', async () => {
      const p = (await rcn.status('e-tokyo')).pairs.find((x) => x.name === 'db1-far');
      return p && p.differentialBytes === 8 * 65536 ? p : undefined;
    }, { timeoutMs: 30_000 });
    await rcn.cluster.restart('tokyo');
    await waitFor('tokyo learns it was taken over', async () => (await rcn.cluster.pairStatus('tokyo', 'db1-far')).suspendCause === 'takeover-by-peer', { timeoutMs: 30_000 });
    const refused = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'swap', 'db1-far']);
    assert.equal(refused.code, 1, refused.stdout);
    assert.match(refused.stderr, /split brain: \S+ of writes to pair db1-far that tokyo had acknowledged never reached sapporo/);
    assert.match(refused.stderr, /--discard tokyo/);
    await swapAt(rcn, 'sapporo', ['--discard', 'tokyo']);
    await rcn.drained('erp-back');
    await sameData(rcn);
    assert.equal((await rcn.status('e-tokyo')).pairs.find((x) => x.name === 'db1-far')?.differentialBytes, 0);
  } finally {
    await rcn.stopAll();
  }
});

test('§9.60: a storage that is the source of one pair and the target of another through the same edge replicates both ways at once', async () => {
  const rcn = await network('both-ways');
  try {
    await rcn.cluster.volume('sapporo', 'crm1', 16 * MiB);
    await rcn.pairVia({ name: 'crm1-far', primary: 'sapporo', secondary: 'tokyo', volume: 'crm1', order: 'erp-back' });
    await rcn.cluster.waitState('sapporo', 'crm1-far', 'duplex');
    const db1 = await rcn.cluster.client('tokyo', 'db1');
    const crm1 = await rcn.cluster.client('sapporo', 'crm1');
    await Promise.all([0, 1].map(async (side) => {
      const client = side === 0 ? db1 : crm1;
      for (let i = 0; i < 64; i++) await client.write(i * 131072, randomBytes(8192));
    }));
    await db1.disconnect();
    await crm1.disconnect();
    await rcn.drained('erp');
    await rcn.drained('erp-back');
    await sameData(rcn);
    assert.equal(await sha256Export(rcn.cluster.node('tokyo').nbdUri('crm1'), dir), await sha256Export(rcn.cluster.node('sapporo').nbdUri('crm1'), dir));
    const tokyoEdge = await rcn.status('e-tokyo');
    assert.deepEqual(tokyoEdge.pairs.map((p) => [p.name, p.order, p.side]), [['crm1-far', 'erp-back', 'target'], ['db1-far', 'erp', 'source']]);
  } finally {
    await rcn.stopAll();
  }
});
