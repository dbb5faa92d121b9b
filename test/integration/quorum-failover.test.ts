// Automatic failover with etcd as the arbiter, on three real nodes and Debian's etcd: the primary
// holds a leader key on a lease and fences itself when it cannot renew; the sync site takes over
// only after it holds the key. SIGKILL of the primary under load (every acknowledged write is at the
// sync site: fio verify_only there, and the workload's own check), SIGSTOP past the lease, partitions through fault proxies, and the arbiter lost for
// everyone; a checker records every acknowledged write with its site and time and proves that the
// sites' histories never overlap. Each test ends with the application back at tokyo (failback).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import { type FailoverCluster as FC, FailoverCluster, TwoSiteChecker, firstAcceptedWrite } from '../support/failover';
import { cli, killAllNodes } from '../support/node-process';
import { FioVerifyWriter } from '../support/fio-verify';
import { SiteWorkload, readSite } from '../support/site-workload';
import { tempDir } from '../support/tools';
import { topo } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const leaseMs = 3000;
const timings = { lease: '3s', renew: '500ms', fenceMargin: '1s' };
let dir: string;
let fc: FC;

before(async () => {
  dir = await tempDir('failover');
  fc = await FailoverCluster.start(dir, timings);
  const out = await topo(['apply', fc.file, '--wait']);
  assert.match(out, /automatic failover: every site's node takes part \(arbiter etcd .*; lease 3000 ms, renew 500 ms, fence margin 1000 ms; arbiter lost: fence\)/);
  assert.match(out, /tokyo holds the arbiter: writes are accepted there/);
});

after(async () => {
  await fc?.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function writeAt(site: 'tokyo' | 'osaka' | 'sapporo', volume: string): Promise<Error | undefined> {
  const c = await NbdClient.connect({ host: '127.0.0.1', port: fc.cluster.node(site).ports.nbdPort, exportName: volume });
  try {
    await c.write(24 * 1024 * 1024, Buffer.alloc(4096, 0x42));
    return undefined;
  } catch (err) {
    return err as Error;
  } finally {
    c.destroy();
  }
}

/** The application comes back to tokyo (stopped wherever it ran), and tokyo holds the arbiter again. */
async function backToTokyo(): Promise<void> {
  await topo(['failback', fc.file, '--to', 'tokyo', '--wait']);
  await fc.waitArbiter('tokyo', 'holding');
  await waitFor('osaka to stand by for tokyo', async () => (await fc.arbiter('osaka'))?.holder === 'tokyo' && (await fc.arbiter('osaka'))?.state === 'standby');
  assert.equal(await writeAt('tokyo', 'db1'), undefined, 'tokyo accepts writes again');
}

test('apply gives every node its part: tokyo holds the arbiter, osaka stands by, sapporo observes; bad timings are refused', async () => {
  const tokyo = await fc.waitArbiter('tokyo', 'holding');
  assert.deepEqual([tokyo.holder, tokyo.writesAllowed, tokyo.leaseMs, tokyo.renewMs, tokyo.fenceMarginMs], ['tokyo', true, 3000, 500, 1000]);
  await waitFor('osaka to stand by for tokyo', async () => (await fc.arbiter('osaka'))?.holder === 'tokyo' && (await fc.arbiter('osaka'))?.state === 'standby');
  assert.equal((await fc.arbiter('sapporo'))?.state, 'observer');
  const table = await topo(['arbiter', fc.file]);
  assert.match(table, /^SITE\s+ROLE\s+STATE\s+HOLDER\s+WRITES/);
  assert.match(table, /tokyo\s+primary\s+holding\s+tokyo\s+accepted/);
  assert.match(table, /osaka\s+sync\s+standby\s+tokyo\s+refused/);
  assert.equal(await writeAt('tokyo', 'db1'), undefined);
  const bad = path.join(dir, 'bad.json');
  const doc = JSON.parse(await fsp.readFile(fc.file, 'utf8')) as Record<string, unknown>;
  await fsp.writeFile(bad, JSON.stringify({ ...doc, lease: '2s', renew: '1s', 'fence-margin': '1s' }));
  const r = await cli(['topology', 'apply', bad]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, /lease \(2000 ms\) must be longer than renew \(1000 ms\) \+ fence-margin \(1000 ms\)/);
  await fsp.writeFile(bad, JSON.stringify({ ...doc, arbiter: undefined }));
  assert.match((await cli(['topology', 'apply', bad])).stderr, /failover: automatic needs an arbiter/);
});

test('SIGKILL of the primary under load: the sync site takes over by itself within seconds; every acknowledged write is there (fio verify_only)', async () => {
  const workload = new SiteWorkload({ volumes: ['db1', 'log1'], blockSize: 4096, blockCount: 256, writesPerSecond: 100, seed: 5 });
  // fio writes db1 from 2 MiB on (the workload keeps to the first MiB), paced so it still writes when tokyo dies.
  const fio = new FioVerifyWriter(dir, 'sigkill', { offsetBytes: 2 * MiB, sizeBytes: 20 * MiB, blockBytes: 64 * 1024, writeBytesPerSecond: 2 * MiB });
  let acknowledgedBeforeKill = 0;
  try {
    await workload.start(fc.cluster.node('tokyo').ports.nbdPort);
    fio.start(fc.cluster.node('tokyo').nbdUri('db1'));
    await workload.progress(200, 30_000);
    await waitFor('fio to see 4 MiB acknowledged at tokyo', () => fio.acknowledgedNowBytes() >= 4 * MiB, { timeoutMs: 30_000, intervalMs: 50 });
    acknowledgedBeforeKill = fio.acknowledgedNowBytes();
    await fc.cluster.kill('tokyo');
  } catch (err) {
    fio.stop();
    throw err;
  }
  const fioRun = await fio.ended();
  // The exact run from fio's completion log when it exited by itself; at least what its status said before the kill.
  const acknowledgedBytes = Math.max(acknowledgedBeforeKill, fioRun.interrupted ? 0 : await fio.acknowledgedPrefixBytes());
  assert.ok(acknowledgedBytes >= 4 * MiB && acknowledgedBytes < 20 * MiB, `fio saw ${acknowledgedBytes} bytes acknowledged in a row before tokyo died: ${fioRun.output}`);
  if (fioRun.interrupted) process.stderr.write('fio kept going after tokyo died and was killed: its status before the kill bounds what was acknowledged\n');
  const tookMs = await firstAcceptedWrite(fc, 'osaka', 'db1', 28 * 1024 * 1024, 30_000);
  await workload.stop();
  // fio itself checks osaka: the same job, verify_only, over every block it saw acknowledged at tokyo.
  const verify = await fio.verifyOnly(fc.cluster.node('osaka').nbdUri('db1'), acknowledgedBytes);
  assert.equal(verify.code, 0, `fio verify_only at osaka failed: ${verify.output}`);
  assert.equal(verify.readBytes, acknowledgedBytes, 'fio read back every acknowledged block at osaka');
  assert.ok(tookMs < leaseMs + 7000, `osaka accepted writes ${tookMs.toFixed(0)} ms after tokyo was killed (lease ${leaseMs} ms)`);
  const osaka = await fc.waitArbiter('osaka', 'holding');
  assert.match(osaka.reason, /failed over to osaka/);
  const contents = await readSite(fc.cluster.node('osaka').ports.nbdPort, ['db1', 'log1'], 4096, 256);
  assert.deepEqual(workload.lacking(contents), [], `osaka holds every write tokyo acknowledged (${workload.acknowledged})`);
  const events = (await fc.api('osaka').listEvents(0)).map((e) => e.kind);
  assert.ok(events.includes('failover-started') && events.includes('failover-finished'), events.join(' '));
  // tokyo returns: it finds it lost, stays fenced, and writes there are refused.
  await fc.cluster.restart('tokyo');
  await waitFor('tokyo to learn it lost the arbiter', async () => {
    const a = await fc.arbiter('tokyo');
    return a !== undefined && a.state !== 'holding' && a.holder === 'osaka';
  });
  assert.ok(await writeAt('tokyo', 'db1'), 'tokyo refuses host writes');
  await backToTokyo();
});

test('SIGSTOP of the primary past the lease, then SIGCONT: the sync site took over, the primary finds itself fenced, the histories never overlap', async () => {
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.cluster.freeze('tokyo');
    await fc.waitArbiter('osaka', 'holding');
    await waitFor('osaka to take writes', () => checker.ackedAt('osaka').length > 20);
    fc.cluster.thaw('tokyo');
    const thawed = performance.now();
    await waitFor('tokyo to learn it lost the arbiter', async () => (await fc.arbiter('tokyo'))?.holder === 'osaka');
    await new Promise((r) => setTimeout(r, 1000));
    await checker.stop();
    assert.deepEqual(checker.ackedAt('tokyo').filter((w) => w.ackedAt > thawed), [], 'no write acknowledged at tokyo after it resumed');
    checker.assertNoOverlap();
  } finally {
    fc.cluster.thaw('tokyo');
    await checker.stop();
  }
  await backToTokyo();
});

test('partition: tokyo cut from the arbiter only — it fences itself, the sync site takes over, never two writable sites', async () => {
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.etcdProxies.tokyo.blackhole();
    await fc.waitArbiter('osaka', 'holding');
    await waitFor('osaka to take writes', () => checker.ackedAt('osaka').length > 20);
    fc.etcdProxies.tokyo.restore();
    await waitFor('tokyo to learn it lost the arbiter', async () => (await fc.arbiter('tokyo'))?.holder === 'osaka');
    await checker.stop();
    checker.assertNoOverlap();
    const events = await fc.api('tokyo').listEvents(0);
    assert.ok(events.some((e) => e.kind === 'arbiter-fenced' || e.kind === 'arbiter-expired'), 'tokyo said why it stopped');
  } finally {
    fc.etcdProxies.tokyo.restore();
    await checker.stop();
  }
  await backToTokyo();
});

test('partition: the tokyo–osaka link cut while both reach the arbiter — tokyo keeps the arbiter (fence data refuses its writes), osaka never takes over', async () => {
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.tokyoToOsaka.cut();
    await new Promise((r) => setTimeout(r, 3 * leaseMs));
    assert.equal(checker.ackedAt('osaka').length, 0, 'osaka accepted no write');
    assert.equal((await fc.arbiter('osaka'))?.state, 'standby');
    assert.equal((await fc.arbiter('tokyo'))?.state, 'holding');
    fc.tokyoToOsaka.restore();
    await waitFor('the sync copies resync', async () => (await fc.api('tokyo').listPairs()).every((p) => p.state === 'duplex'), { timeoutMs: 60_000 });
    const before = checker.ackedAt('tokyo').length;
    await waitFor('tokyo takes writes again', () => checker.ackedAt('tokyo').length > before + 10);
    await checker.stop();
    checker.assertNoOverlap();
  } finally {
    fc.tokyoToOsaka.restore();
    await checker.stop();
  }
});

test('partition: tokyo cut from everything (arbiter, control API, link to osaka) — the sync site takes over, never two writable sites', async () => {
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.etcdProxies.tokyo.blackhole();
    fc.tokyoApi.cut();
    fc.tokyoToOsaka.cut();
    await fc.waitArbiter('osaka', 'holding');
    await waitFor('osaka to take writes', () => checker.ackedAt('osaka').length > 20);
    fc.etcdProxies.tokyo.restore();
    fc.tokyoApi.restore();
    fc.tokyoToOsaka.restore();
    await waitFor('tokyo to learn it lost the arbiter', async () => (await fc.arbiter('tokyo'))?.holder === 'osaka');
    await checker.stop();
    checker.assertNoOverlap();
  } finally {
    for (const p of [fc.etcdProxies.tokyo, fc.tokyoApi, fc.tokyoToOsaka]) p.restore();
    await checker.stop();
  }
  await backToTokyo();
});

test('the arbiter lost for everyone: nothing fails over; the primary stops writing (arbiter-lost: fence) or goes on (continue), and says so', async () => {
  for (const mode of ['fence', 'continue'] as const) {
    await fc.writeTopology({ ...timings, arbiterLost: mode });
    assert.match(await topo(['apply', fc.file, '--wait']), new RegExp(`arbiter lost: ${mode}`));
    await fc.waitArbiter('tokyo', 'holding');
    const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
    checker.start();
    try {
      await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
      for (const p of Object.values(fc.etcdProxies)) p.blackhole();
      const cutAt = performance.now();
      await new Promise((r) => setTimeout(r, 2 * leaseMs));
      const tokyo = await fc.arbiter('tokyo');
      assert.equal((await fc.arbiter('osaka'))?.state, 'unreachable', 'osaka decides nothing without the arbiter');
      assert.equal(checker.ackedAt('osaka').length, 0, 'nothing failed over');
      const lateAcks = checker.ackedAt('tokyo').filter((w) => w.issuedAt > cutAt + leaseMs);
      if (mode === 'fence') {
        assert.equal(tokyo?.state, 'fenced', tokyo?.reason);
        assert.equal(lateAcks.length, 0, 'tokyo stopped writing once the lease could have passed');
        assert.match(tokyo!.reason, /could not be renewed within the lease/);
      } else {
        assert.equal(tokyo?.state, 'holding', tokyo?.reason);
        assert.ok(lateAcks.length > 10, 'tokyo went on writing as configured');
        assert.match(tokyo!.reason, /writes go on as configured/);
      }
      for (const p of Object.values(fc.etcdProxies)) p.restore();
      await fc.waitArbiter('tokyo', 'holding');
      const before = checker.ackedAt('tokyo').length;
      await waitFor('tokyo takes writes again', () => checker.ackedAt('tokyo').length > before + 10);
      await checker.stop();
      assert.equal(checker.ackedAt('osaka').length, 0, 'osaka never took writes');
      await waitFor('osaka to see tokyo hold the arbiter again', async () => (await fc.arbiter('osaka'))?.holder === 'tokyo');
    } finally {
      for (const p of Object.values(fc.etcdProxies)) p.restore();
      await checker.stop();
    }
  }
});
