// Automatic failback (failback: automatic, failback-delay) on three real nodes and Debian's etcd:
// SIGKILL of the primary → automatic failover to the sync site → the application writes there →
// the old primary returns, stays fenced, and once it has been back for the delay the sync site's
// node (the arbiter's holder) fails back by itself: the application is at tokyo again, tokyo holds
// the arbiter, every copy is duplex and the volumes are equal at all three sites. With failback:
// manual the topology stays where the failover put it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { type FailoverCluster as FC, FailoverCluster, firstAcceptedWrite } from '../support/failover';
import { killAllNodes } from '../support/node-process';
import { tempDir } from '../support/tools';
import { groupLagEntries, sameEverywhere, topo, topologyStatus } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const timings = { lease: '3s', renew: '500ms', fenceMargin: '1s' };
const failbackDelayMs = 6000;
let dir: string;
let fc: FC;

before(async () => {
  dir = await tempDir('failback');
  fc = await FailoverCluster.start(dir, timings);
});

after(async () => {
  await fc?.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** tokyo's node is killed with writes behind it; osaka takes over by itself; the application writes at osaka. */
async function loseTokyo(): Promise<Buffer> {
  await fc.writeRandom('tokyo', 'db1', 0, 2 * MiB);
  await fc.writeRandom('tokyo', 'log1', 0, MiB);
  await fc.cluster.kill('tokyo');
  await firstAcceptedWrite(fc, 'osaka', 'db1', 28 * MiB, 30_000);
  const osaka = await fc.waitArbiter('osaka', 'holding');
  assert.match(osaka.reason, /failed over to osaka/);
  const atOsaka = await fc.writeRandom('osaka', 'db1', 4 * MiB, 2 * MiB);
  await fc.writeRandom('osaka', 'log1', 2 * MiB, MiB);
  return atOsaka;
}

async function eventsAt(site: 'tokyo' | 'osaka'): Promise<Array<{ kind: string; time: string; reason: string }>> {
  return (await fc.api(site).listEvents(0)).filter((e) => e.subject === 'erp');
}

test('failback: manual — the returning primary stays fenced and the application stays at the sync site', async () => {
  assert.match(await topo(['apply', fc.file, '--wait']), /tokyo holds the arbiter: writes are accepted there/);
  assert.equal((await fc.arbiter('osaka'))?.failback.mode, 'manual');
  await loseTokyo();
  await fc.cluster.restart('tokyo');
  await waitFor('tokyo to learn it lost the arbiter', async () => (await fc.arbiter('tokyo'))?.holder === 'osaka');
  // Nothing may happen: wait twice the delay the automatic test uses, then look.
  await new Promise((r) => setTimeout(r, 2 * failbackDelayMs));
  assert.equal((await fc.arbiter('osaka'))?.state, 'holding');
  assert.notEqual((await fc.arbiter('tokyo'))?.state, 'holding');
  assert.equal((await topologyStatus(fc.file)).activeSite, 'osaka');
  assert.deepEqual((await eventsAt('osaka')).filter((e) => e.kind.startsWith('failback-')), [], 'osaka never started a failback');
  await topo(['failback', fc.file, '--to', 'tokyo', '--wait']);
  await fc.waitArbiter('tokyo', 'holding');
});

test('failback: automatic — once tokyo has been back for the delay, osaka fails back by itself; all three sites equal', async () => {
  await fc.writeTopology({ ...timings, failbackDelay: `${failbackDelayMs}ms` });
  assert.match(await topo(['apply', fc.file, '--wait']), /tokyo holds the arbiter: writes are accepted there/);
  const settings = (await fc.arbiter('osaka'))!.failback;
  assert.deepEqual([settings.mode, settings.delayMs], ['automatic', failbackDelayMs]);
  const writtenAtOsaka = await loseTokyo();
  await waitFor('osaka to wait for tokyo', async () => (await fc.arbiter('osaka'))?.failback.state === 'watching');
  await fc.cluster.restart('tokyo');
  const restartedAt = performance.now();
  await waitFor('tokyo to learn it lost the arbiter', async () => (await fc.arbiter('tokyo'))?.holder === 'osaka');
  await waitFor('osaka to see tokyo back', async () => (await fc.arbiter('osaka'))?.failback.state === 'returned', { timeoutMs: 10_000 });
  assert.match(await topo(['arbiter', fc.file]), /osaka\s+sync\s+holding\s+osaka\s+accepted\s+\S+\s+automatic: (returned|failing-back)\s/);
  const tokyo = await fc.waitArbiter('tokyo', 'holding', 120_000);
  assert.ok(performance.now() - restartedAt >= failbackDelayMs, 'the application did not move before tokyo had been back for the delay');
  assert.equal(tokyo.writesAllowed, true);
  await waitFor('osaka to stand by for tokyo', async () => (await fc.arbiter('osaka'))?.state === 'standby' && (await fc.arbiter('osaka'))?.holder === 'tokyo');
  // Every decision is an event with its reason, the failback only after the whole delay. The
  // procedure reports its end after the last step, which may come after tokyo took the arbiter.
  await waitFor('osaka to report the failback finished', async () => (await eventsAt('osaka')).some((e) => e.kind === 'failback-finished'), { timeoutMs: 60_000 });
  const events = await eventsAt('osaka');
  const at = (kind: string): { time: string; reason: string } => {
    const e = events.find((x) => x.kind === kind);
    assert.ok(e, `osaka reported ${kind}: ${events.map((x) => x.kind).join(' ')}`);
    return e;
  };
  assert.match(at('failback-waiting').reason, /tokyo is not back/);
  assert.match(at('failback-pending').reason, /tokyo is back and sees osaka hold the arbiter/);
  assert.match(at('failback-started').reason, /failing back to tokyo/);
  assert.match(at('failback-finished').reason, /failed back to tokyo in .* s/);
  assert.ok(Date.parse(at('failback-started').time) - Date.parse(at('failback-pending').time) >= failbackDelayMs - 50, 'the failback waited for the delay');
  // The original layout, every copy duplex, and the same data everywhere, with osaka's writes.
  const s = await topologyStatus(fc.file);
  assert.equal(s.activeSite, 'tokyo');
  await waitFor('every copy duplex', async () => (await topologyStatus(fc.file)).healthy, { timeoutMs: 60_000 });
  assert.deepEqual(await fc.readAt('tokyo', 'db1', 4 * MiB, 2 * MiB), writtenAtOsaka, 'tokyo has what the application wrote at osaka');
  await waitFor('the async site applied everything', async () => (await groupLagEntries(fc.cluster, 'tokyo', 'erp')) === 0);
  for (const v of ['db1', 'log1']) await sameEverywhere(fc.cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);
  // Writes go to tokyo again; osaka refuses them.
  await fc.writeRandom('tokyo', 'db1', 8 * MiB, 64 * 1024);
  await assert.rejects(fc.writeRandom('osaka', 'db1', 8 * MiB, 4096));
});
