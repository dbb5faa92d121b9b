// Three data centres, multi-target (spec 001): failover to the sync site after the primary is
// killed, to the async site alone and with the sync site's newest data, and failback; each with real
// failures, real NBD clients and content checks on every site.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { OrderedWorkload, readContents } from '../support/ordered-writes';
import { parseFioJson, run, tempDir } from '../support/tools';
import { failbackToTokyo, groupLagEntries, interruptedTopo, sameEverywhere, topo, topologyStatus } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('3dc');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

const blockSize = 4096;
const blockCount = 1024;

/** Topology over volumes a and b; ordered writes at tokyo until tokyo is killed mid-stream. */
async function loseTokyoUnderOrderedLoad(cluster: Cluster, seed?: number): Promise<{ file: string; workload: OrderedWorkload }> {
  const file = await cluster.topologyFile({ name: 'erp', volumes: { a: '8MiB', b: '8MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
  await topo(['apply', file, '--wait']);
  const clients = [await cluster.client('tokyo', 'a'), await cluster.client('tokyo', 'b')];
  const workload = new OrderedWorkload(clients, { blockSize, blockCount, queueDepth: 16, flushEvery: 0, ...(seed === undefined ? {} : { seed }) });
  const running = workload.run();
  await waitFor('writes', () => workload.ackedCount >= 2000, { timeoutMs: 60_000, intervalMs: 10 });
  await cluster.kill('tokyo');
  await running;
  return { file, workload };
}

test('failover to the sync site after SIGKILL of the primary loses nothing; the async leg sends only the backlog; failback by delta', async () => {
  const cluster = await Cluster.create(path.join(dir, 'fig10'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const file = await cluster.topologyFile({ name: 'erp', volumes: { db1: '128MiB', log1: '16MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    assert.match(await topo(['apply', file, '--wait']), /every copy is duplex/);
    const base = await cluster.client('tokyo', 'db1');
    for (let off = 0; off < 32 * MiB; off += 4 * MiB) await base.write(off, randomBytes(4 * MiB));
    await base.disconnect();
    await waitFor('async copy caught up', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    // The async site stalls: everything fio writes now is backlog at the moment of the disaster.
    cluster.freeze('sapporo');
    const job = ['--name=erp', '--ioengine=nbd', '--rw=randwrite', '--bs=4k', '--iodepth=16', '--offset=64m', '--size=8m', '--verify=crc32c',
      '--norandommap', '--randrepeat=1', '--verify_state_save=0'];
    const written = await run('fio', [...job, `--uri=${cluster.node('tokyo').nbdUri('db1')}`, '--do_verify=0', '--output-format=json'], { cwd: dir });
    assert.equal(written.code, 0, written.stderr);
    assert.equal(parseFioJson<{ jobs: Array<{ write: { io_bytes: number } }> }>(written.stdout).jobs[0]!.write.io_bytes, 8 * MiB);
    const backlog = (await cluster.node('tokyo').api.getGroup('erp')).lag.bytes;
    assert.ok(backlog >= 8 * MiB, `backlog of ${backlog} bytes at the async site`);
    await cluster.kill('tokyo');
    cluster.thaw('sapporo');
    const started = Date.now();
    const out = await topo(['failover', file, '--to', 'osaka', '--wait']);
    assert.match(out, /failover of erp to the sync site osaka \(spec 001 Fig\. 10\)/);
    assert.match(out, /steps 1005–1007: async copy osaka → sapporo, sending only what sapporo is missing/);
    const s = await topologyStatus(file);
    assert.equal(s.activeSite, 'osaka');
    assert.deepEqual(s.legs.filter((l) => l.from === 'osaka').map((l) => `${l.pair} ${l.code}`).sort(),
      ['erp.db1.osaka.sapporo PAIR', 'erp.log1.osaka.sapporo PAIR'], 'osaka → sapporo duplex');
    assert.ok(s.legs.some((l) => l.pair === 'erp.db1.osaka.tokyo' && l.code === 'SSWS'), 'osaka keeps the taken-over pair to record its changes');
    assert.equal(s.healthy, false, 'without the sync site the topology is not fully protected');
    // No acknowledged write lost: fio verifies at osaka.
    const verify = await run('fio', [...job, `--uri=${cluster.node('osaka').nbdUri('db1')}`, '--verify_only=1', '--verify_fatal=1', '--output-format=json'], { cwd: dir });
    assert.equal(verify.code, 0, `verify at osaka: ${verify.stdout.slice(-1500)} ${verify.stderr}`);
    // The async leg sent about the backlog, not the volume.
    const leg = await cluster.node('osaka').api.getPair('erp.db1.osaka.sapporo');
    assert.ok(leg.deltaBytes !== null && leg.deltaBytes >= backlog * 0.5 && leg.deltaBytes <= backlog * 1.2 + 256 * 1024,
      `delta resync sent ${leg.deltaBytes} bytes for a backlog of ${backlog} (volume: 128 MiB, 40 MiB written)`);
    assert.equal(leg.deltaMethod, 'sequence', `sapporo's applied position told osaka what to send: ${leg.deltaNote}`);
    await sameEverywhere(cluster, 'db1', ['osaka', 'sapporo'], dir);
    process.stderr.write(`failover to osaka took ${Date.now() - started} ms\n`);
    // The application runs at osaka for a while.
    const app = await cluster.client('osaka', 'db1');
    await app.write(96 * MiB, randomBytes(4 * MiB));
    await app.disconnect();
    // Tokyo returns with its data; failback copies what changed on either side and restores the layout.
    await cluster.restart('tokyo');
    await waitFor('tokyo learned it was taken over', async () =>
      (await cluster.node('tokyo').api.getPair('erp.db1.osaka.tokyo')).suspendCause === 'takeover-by-peer');
    const changedAtOsaka = (await cluster.node('osaka').api.getPair('erp.db1.osaka.tokyo')).differentialBytes;
    const unsentAtTokyo = (await cluster.node('tokyo').api.getPair('erp.db1.osaka.tokyo')).differentialBytes;
    // Tokyo's part is what its activity log held as in flight when it was killed: the extents
    // written recently (40 MiB here), coarse but bounded, like DRBD's activity log.
    assert.ok(changedAtOsaka >= 4 * MiB && changedAtOsaka + unsentAtTokyo <= 48 * MiB,
      `the failback copies the regions changed at osaka (${changedAtOsaka}) and those tokyo may not have sent (${unsentAtTokyo}), not 128 MiB`);
    const back = await topo(['failback', file, '--to', 'tokyo', '--wait']);
    assert.match(back, /failback of erp to tokyo/);
    assert.match(back, /erp\.db1\.osaka\.tokyo: swapped, osaka is the primary/, 'the kept pair is swapped, not rebuilt');
    const final = await topologyStatus(file);
    assert.equal(final.activeSite, 'tokyo');
    assert.ok(final.healthy, `all legs duplex: ${JSON.stringify(final.legs.map((l) => `${l.pair} ${l.code}`))}`);
    assert.deepEqual(final.legs.map((l) => `${l.from}→${l.to} ${l.mode}`).sort(),
      ['tokyo→osaka sync', 'tokyo→osaka sync', 'tokyo→sapporo async', 'tokyo→sapporo async']);
    const rebuilt = await cluster.node('tokyo').api.getPair('erp.db1.sapporo.tokyo');
    assert.equal(rebuilt.deltaMethod, 'sequence', `tokyo learned osaka's stream while it caught up, so sapporo's position told what to send: ${rebuilt.deltaNote}`);
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    await sameEverywhere(cluster, 'db1', ['tokyo', 'osaka', 'sapporo'], dir);
    await sameEverywhere(cluster, 'log1', ['tokyo', 'osaka', 'sapporo'], dir);
  } finally {
    await cluster.stopAll();
  }
});

test('failover to the async site alone gives a consistent prefix; with --newest-from the sync site nothing is lost; failback; reruns converge', async () => {
  const cluster = await Cluster.create(path.join(dir, 'fig13'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const { file, workload } = await loseTokyoUnderOrderedLoad(cluster);
    // --newest-from refuses while the sync site cannot be reached.
    cluster.freeze('osaka');
    const refused = await cli(['topology', 'failover', file, '--to', 'sapporo', '--newest-from', 'osaka']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /cannot take the newest data from osaka: it is not reachable[\s\S]*--to sapporo/);
    cluster.thaw('osaka');
    await waitFor('osaka answers', async () => (await cli(['--node', cluster.node('osaka').apiUrl, 'node', 'info'])).code === 0);
    // Interrupt the failover midway (kill the CLI), then run it again: it converges.
    await interruptedTopo(['failover', file, '--to', 'sapporo', '--newest-from', 'osaka'], '[3]');
    const rerun = await topo(['failover', file, '--to', 'sapporo', '--newest-from', 'osaka']);
    assert.match(rerun, /Fig\. 14/);
    assert.match(rerun, /already (dissolved|the primary)|exists/, 'steps done before the interruption are skipped');
    const s = await topologyStatus(file);
    assert.equal(s.activeSite, 'sapporo');
    const atSapporo = [await cluster.client('sapporo', 'a'), await cluster.client('sapporo', 'b')];
    const contents = await readContents(atSapporo, blockSize, blockCount);
    workload.checkAllAcknowledgedPresent(contents);
    workload.checkCrashConsistent(contents);
    for (const c of atSapporo) await c.disconnect();
    const leg = s.legs.find((l) => l.pair === 'erp.a.osaka.sapporo');
    assert.deepEqual([leg?.from, leg?.to, leg?.mode], ['sapporo', 'osaka', 'async'], 'step 1405: async sapporo → osaka');
    // Failback from the async site.
    await failbackToTokyo(cluster, file, 'erp', ['a', 'b'], dir);
  } finally {
    await cluster.stopAll();
  }
});

test('failover to the async site with its own copy only (Fig. 13): a consistent image; failback restores all', async () => {
  const cluster = await Cluster.create(path.join(dir, 'own'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const { file, workload } = await loseTokyoUnderOrderedLoad(cluster, 99);
    await interruptedTopo(['failover', file, '--to', 'sapporo'], '[1]');
    const out = await topo(['failover', file, '--to', 'sapporo']);
    assert.match(out, /Fig\. 13/);
    assert.equal((await topologyStatus(file)).activeSite, 'sapporo');
    const atSapporo = [await cluster.client('sapporo', 'a'), await cluster.client('sapporo', 'b')];
    workload.checkCrashConsistent(await readContents(atSapporo, blockSize, blockCount));
    const appWrite = Buffer.alloc(blockSize, 0xab);
    await atSapporo[0]!.write(0, appWrite); // the application writes at sapporo
    for (const c of atSapporo) await c.disconnect();
    // Now taking osaka's newest data (Fig. 14) would overwrite what the application wrote at sapporo.
    const late = await cli(['topology', 'failover', file, '--to', 'sapporo', '--newest-from', 'osaka']);
    assert.equal(late.code, 1, late.stdout + late.stderr);
    assert.match(late.stderr, /sapporo already runs on its own copy \(Fig\. 13\)[\s\S]*would discard the writes made at sapporo/);
    // The failback is interrupted once too, after it started copying sapporo → tokyo.
    const back = await failbackToTokyo(cluster, file, 'erp', ['a', 'b'], dir, '[2]');
    // Figs. 15, 16: the copy back from sapporo is async in the group, so its swap is the async leg.
    assert.match(back, /erp\.a\.sapporo\.tokyo: tokyo → sapporo async exists \(PAIR\)/, back);
    const atTokyo = await cluster.client('tokyo', 'a');
    assert.deepEqual(await atTokyo.read(0, blockSize), appWrite, 'what the application wrote at sapporo came back to tokyo');
    await atTokyo.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('log/data layout: logs go to both sites, data to the sync site only; failover reconciles the logs by their missing tail', async () => {
  const cluster = await Cluster.create(path.join(dir, 'log'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const file = await cluster.topologyFile({ name: 'db', volumes: { data: { size: '32MiB', role: 'data' }, wal: { size: '16MiB', role: 'log' } },
      primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    await topo(['apply', file, '--wait']);
    const s0 = await topologyStatus(file);
    assert.deepEqual(s0.legs.map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort(),
      ['data tokyo→osaka sync', 'wal tokyo→osaka sync', 'wal tokyo→sapporo async']);
    const data = await cluster.client('tokyo', 'data');
    const wal = await cluster.client('tokyo', 'wal');
    await wal.write(0, randomBytes(2 * MiB));
    await data.write(0, randomBytes(2 * MiB));
    await waitFor('the async site applied the log so far', async () => (await groupLagEntries(cluster, 'tokyo', 'db')) === 0);
    await cluster.kill('sapporo'); // the log tail stays behind at the async site
    const tail = randomBytes(MiB);
    await wal.write(2 * MiB, tail);
    await data.write(2 * MiB, randomBytes(MiB));
    await cluster.kill('tokyo');
    await cluster.restart('sapporo');
    // Interrupted once the application may start at osaka (step 1003), before the async leg exists:
    // the rerun finds osaka active and still creates osaka → sapporo.
    await interruptedTopo(['failover', file, '--to', 'osaka', '--wait'], 'step 1003');
    assert.match(await topo(['failover', file, '--to', 'osaka', '--wait']), /already runs at osaka: checking/);
    await sameEverywhere(cluster, 'wal', ['osaka', 'sapporo'], dir);
    const leg = await cluster.node('osaka').api.getPair('db.wal.osaka.sapporo');
    assert.ok(leg.deltaBytes !== null && leg.deltaBytes >= MiB && leg.deltaBytes <= 1.2 * MiB, `only the log tail was shipped (${leg.deltaBytes} bytes)`);
    assert.equal(leg.deltaMethod, 'sequence', `the log tail was found from sapporo's applied position: ${leg.deltaNote}`);
    const osakaWal = await cluster.client('osaka', 'wal');
    assert.deepEqual(await osakaWal.read(2 * MiB, MiB), tail, 'the committed log tail is at the sync site');
    await osakaWal.disconnect();
    const volumesAtSapporo = (await cluster.node('sapporo').api.listVolumes()).map((v) => v.name);
    assert.deepEqual(volumesAtSapporo, ['wal'], 'data volumes never went to the async site');
  } finally {
    await cluster.stopAll();
  }
});
