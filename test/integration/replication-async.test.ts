// Asynchronous pairs and consistency groups between two real nodes: the secondary always holds an
// exact prefix of the primary's write history across the volumes of a group, survives its own
// crash without losing or reordering entries, and falls back to bitmaps when the journal is full.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { GroupStatus } from '../../src/contracts/pairs';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { OrderedWorkload, readContents } from '../support/ordered-writes';
import { fetchMetrics, metricValue, sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const blockSize = 4096;
const blockCount = 1024;
let dir: string;

before(async () => {
  dir = await tempDir('async');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function groupOf(cluster: Cluster, node: string, group: string): Promise<GroupStatus> {
  return cluster.node(node).api.getGroup(group);
}

test('async write order: primary killed mid-stream, takeover; the secondary holds an exact prefix across both volumes of the group', async () => {
  const cluster = await Cluster.create(path.join(dir, 'order'), ['tokyo', 'sapporo']);
  try {
    for (const v of ['data', 'log']) {
      await cluster.volume('tokyo', v, blockSize * blockCount);
    }
    const a = await cluster.pair({ name: 'data', primary: 'tokyo', secondary: 'sapporo', volume: 'data', mode: 'async', group: 'erp', viaProxy: true });
    const b = await cluster.pair({ name: 'log', primary: 'tokyo', secondary: 'sapporo', volume: 'log', mode: 'async', group: 'erp', viaProxy: true });
    await cluster.waitState('tokyo', 'data', 'duplex');
    await cluster.waitState('tokyo', 'log', 'duplex');
    // A slow link keeps the secondary behind, so the cut falls in the middle of the history.
    for (const p of [...a.proxies, ...b.proxies]) p.setDelay(15);
    const clients = [await cluster.client('tokyo', 'data'), await cluster.client('tokyo', 'log')];
    const workload = new OrderedWorkload(clients, { blockSize, blockCount, queueDepth: 16, flushEvery: 0, seed: 7 });
    const running = workload.run();
    await waitFor('3000 acknowledged writes', () => workload.ackedCount >= 3000, { timeoutMs: 120_000, intervalMs: 10 });
    await cluster.kill('tokyo');
    await running;
    const takeover = await cli(['--node', cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'data']);
    assert.equal(takeover.code, 0, takeover.stderr);
    assert.match(takeover.stdout, /pair data: secondary secondary-writable \(SSWS\)/);
    assert.match(takeover.stdout, /pair log: secondary secondary-writable \(SSWS\)/, 'the whole group is taken over together');
    const secondaries = [await cluster.client('sapporo', 'data'), await cluster.client('sapporo', 'log')];
    const contents = await readContents(secondaries, blockSize, blockCount);
    const k = workload.checkCrashConsistent(contents);
    assert.ok(k > 0, `the secondary holds a consistent image containing at least ${k} writes`);
    assert.ok(k <= workload.history.length);
    for (const s of secondaries) await s.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('secondary killed and restarted under async load: it resumes from its apply position; nothing lost or reordered', async () => {
  const cluster = await Cluster.create(path.join(dir, 'restart'), ['p', 's']);
  try {
    await cluster.volume('p', 'v', blockSize * blockCount);
    await cluster.volume('p', 'w', blockSize * blockCount);
    await cluster.pair({ name: 'v', primary: 'p', secondary: 's', volume: 'v', mode: 'async', group: 'g' });
    await cluster.pair({ name: 'w', primary: 'p', secondary: 's', volume: 'w', mode: 'async', group: 'g' });
    await cluster.waitState('p', 'v', 'duplex');
    await cluster.waitState('p', 'w', 'duplex');
    const clients = [await cluster.client('p', 'v'), await cluster.client('p', 'w')];
    const workload = new OrderedWorkload(clients, { blockSize, blockCount, queueDepth: 8, flushEvery: 0, seed: 3 });
    const running = workload.run();
    await waitFor('1500 writes', () => workload.ackedCount >= 1500, { timeoutMs: 60_000, intervalMs: 10 });
    await cluster.kill('s');
    const whileDown = workload.ackedCount;
    await waitFor('writes go on while the secondary is down', () => workload.ackedCount >= whileDown + 1000, { timeoutMs: 60_000, intervalMs: 10 });
    assert.ok((await groupOf(cluster, 'p', 'g')).lag.entries > 0, 'lag grows while the secondary is down');
    await cluster.restart('s');
    const afterRestart = workload.ackedCount;
    await waitFor('more writes after the restart', () => workload.ackedCount >= afterRestart + 1000, { timeoutMs: 60_000, intervalMs: 10 });
    workload.stop();
    await running;
    assert.equal(workload.failures, 0, 'the primary never failed a write');
    const last = workload.history.length;
    await waitFor('the secondary applied everything', async () => {
      const g = await groupOf(cluster, 'p', 'g');
      return g.appliedSeq === g.lastSeq && g.lag.entries === 0;
    }, { timeoutMs: 60_000 });
    const secondary = [await cluster.client('s', 'v'), await cluster.client('s', 'w')];
    const contents = await readContents(secondary, blockSize, blockCount);
    workload.checkAllAcknowledgedPresent(contents);
    workload.checkCrashConsistent(contents);
    assert.deepEqual(contents, await readContents(clients, blockSize, blockCount), `the secondary equals the primary after all ${last} writes`);
    const sGroup = await groupOf(cluster, 's', 'g');
    assert.equal(sGroup.role, 'secondary');
    assert.equal(sGroup.appliedSeq, (await groupOf(cluster, 'p', 'g')).lastSeq);
  } finally {
    await cluster.stopAll();
  }
});

test('journal full with policy suspend: the group falls back to bitmaps, writes go on, resync makes both equal; lag is reported', async () => {
  const cluster = await Cluster.create(path.join(dir, 'full'), ['jp', 'js'], ['--peer-timeout', '1s', '--journal-size', '64MiB', '--journal-full', 'suspend']);
  try {
    await cluster.volume('jp', 'v', 128 * MiB);
    const { proxies } = await cluster.pair({ name: 'v', primary: 'jp', secondary: 'js', volume: 'v', mode: 'async', group: 'small', viaProxy: true });
    await cluster.waitState('jp', 'v', 'duplex');
    for (const p of proxies) p.stall();
    const client = await cluster.client('jp', 'v');
    for (let i = 0; i < 8; i++) await client.write(i * MiB, Buffer.alloc(MiB, i + 1));
    const lagging = await groupOf(cluster, 'jp', 'small');
    assert.ok(lagging.lag.entries > 0 && lagging.lag.bytes >= 8 * MiB, `lag reported: ${JSON.stringify(lagging.lag)}`);
    const metrics = await fetchMetrics(cluster.node('jp').apiUrl);
    assert.ok(metricValue(metrics, 'tricopy_group_lag_bytes', { group: 'small' }) >= 8 * MiB, 'lag is a metric');
    for (let i = 8; i < 110; i++) await client.write(i * MiB, Buffer.alloc(MiB, i + 1)); // far over the journal
    const suspended = await cluster.waitCode('jp', 'v', 'PSUE');
    assert.equal(suspended.suspendCause, 'journal-full');
    assert.match(suspended.reason, /journal of group small is full/);
    assert.ok(suspended.differentialBytes >= 32 * MiB, 'undelivered writes became recorded regions');
    for (const p of proxies) p.restore();
    await cluster.waitState('jp', 'v', 'duplex', 60_000);
    await waitFor('lag back to zero', async () => (await groupOf(cluster, 'jp', 'small')).lag.entries === 0, { timeoutMs: 30_000 });
    assert.equal(await sha256Export(cluster.node('js').nbdUri('v'), dir), await sha256Export(cluster.node('jp').nbdUri('v'), dir));
    await client.disconnect();
  } finally {
    await cluster.stopAll();
  }
});
