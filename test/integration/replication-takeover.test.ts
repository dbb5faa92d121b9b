// Takeover and swap: a planned role reversal copies nothing; after an unplanned takeover the old
// primary is fenced when it returns, and swapping back copies only what differs. A primary that
// crashes in the middle of sync writes resynchronises the regions it may have left different.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import type { NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { OrderedWorkload, readContents } from '../support/ordered-writes';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('takeover');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('planned takeover with the primary reachable swaps roles without copying data (sync and async)', async () => {
  const cluster = await Cluster.create(path.join(dir, 'planned'), ['tokyo', 'osaka']);
  try {
    await cluster.volume('tokyo', 's', 64 * MiB);
    await cluster.volume('tokyo', 'a', 64 * MiB);
    const sync = await cluster.pair({ name: 's', primary: 'tokyo', secondary: 'osaka', volume: 's', mode: 'sync', viaProxy: true });
    const asyncPair = await cluster.pair({ name: 'a', primary: 'tokyo', secondary: 'osaka', volume: 'a', mode: 'async', group: 'g', viaProxy: true });
    await cluster.waitState('tokyo', 's', 'duplex');
    await cluster.waitState('tokyo', 'a', 'duplex');
    for (const v of ['s', 'a']) {
      const client = await cluster.client('tokyo', v);
      for (let i = 0; i < 16; i++) await client.write(i * MiB, randomBytes(MiB));
      await client.disconnect();
    }
    const sentBefore = [...sync.proxies, ...asyncPair.proxies].reduce((n, p) => n + p.bytesForwarded.toTarget, 0);
    for (const v of ['s', 'a']) {
      const r = await cli(['--node', cluster.node('osaka').apiUrl, 'pair', 'takeover', v, '--json']);
      assert.equal(r.code, 0, r.stderr);
      const [status] = JSON.parse(r.stdout) as Array<{ role: string; code: string }>;
      assert.deepEqual([status!.role, status!.code], ['primary', 'PAIR'], `${v}: osaka is the primary, duplex`);
      assert.deepEqual([(await cluster.pairStatus('tokyo', v)).role, (await cluster.pairStatus('tokyo', v)).code], ['secondary', 'PAIR']);
    }
    const sentAfter = [...sync.proxies, ...asyncPair.proxies].reduce((n, p) => n + p.bytesForwarded.toTarget, 0);
    // The async journal had drained the 16 MiB before the swap; only control messages remain.
    assert.ok(sentAfter - sentBefore < 20 * MiB, `the swaps moved no volume data (${sentAfter - sentBefore} bytes, 32 MiB written)`);
    // The direction is reversed: writes at osaka reach tokyo; tokyo refuses host writes.
    for (const v of ['s', 'a']) {
      const writer = await cluster.client('osaka', v);
      await writer.write(40 * MiB, Buffer.alloc(4096, 0x5a));
      await writer.flush();
      await writer.disconnect();
      const old = await cluster.client('tokyo', v);
      await assert.rejects(old.write(0, Buffer.alloc(512)), (e: NbdClientError) => e.errno === c.NBD_EPERM);
      await old.disconnect();
    }
    await waitFor('async group drained', async () => (await cluster.node('osaka').api.getGroup('g')).lag.entries === 0);
    for (const v of ['s', 'a']) {
      assert.equal(await sha256Export(cluster.node('tokyo').nbdUri(v), dir), await sha256Export(cluster.node('osaka').nbdUri(v), dir), `${v} equal`);
    }
  } finally {
    await cluster.stopAll();
  }
});

test('unplanned takeover: the returning old primary is fenced; swap back copies only the differences (split brain named)', async () => {
  const cluster = await Cluster.create(path.join(dir, 'failback'), ['tokyo', 'sapporo']);
  try {
    const blockSize = 4096;
    const workloadBytes = 4 * MiB; // the ordered workload's blocks; the rest of the volume is seeded
    const size = 64 * MiB;
    await cluster.volume('tokyo', 'db', size);
    const seed = await cluster.client('tokyo', 'db');
    for (let off = workloadBytes; off < size; off += 4 * MiB) await seed.write(off, randomBytes(4 * MiB)); // allocated
    await seed.disconnect();
    const { proxies } = await cluster.pair({ name: 'db', primary: 'tokyo', secondary: 'sapporo', volume: 'db', mode: 'async', group: 'erp', viaProxy: true });
    await cluster.waitState('tokyo', 'db', 'duplex', 60_000);
    for (const p of proxies) p.setDelay(20);
    const client = await cluster.client('tokyo', 'db');
    const workload = new OrderedWorkload([client], { blockSize, blockCount: workloadBytes / blockSize, queueDepth: 8, flushEvery: 0 });
    const running = workload.run();
    await waitFor('writes flowing', () => workload.ackedCount >= 1000, { timeoutMs: 60_000, intervalMs: 10 });
    // A backlog made deterministically: writes acknowledged at tokyo after the link drops every byte
    // never reach sapporo (a delay alone let sapporo receive every acknowledged write in some runs,
    // and then there was no split brain to name).
    for (const p of proxies) p.blackhole();
    const ackedBeforeCut = workload.ackedCount;
    await waitFor('writes acknowledged that sapporo cannot receive', () => workload.ackedCount >= ackedBeforeCut + 200, { timeoutMs: 60_000, intervalMs: 10 });
    await cluster.kill('tokyo');
    await running;
    for (const p of proxies) { p.setDelay(0); p.restore(); }
    const takeover = await cli(['--node', cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db']);
    assert.equal(takeover.code, 0, takeover.stderr);
    assert.match(takeover.stdout, /SSWS/);
    // The application runs at sapporo now and changes a few regions.
    const app = await cluster.client('sapporo', 'db');
    for (let i = 0; i < 8; i++) await app.write((32 + i) * MiB, Buffer.alloc(64 * 1024, 0xc0 + i));
    // Tokyo comes back: it learns it was taken over and refuses writes.
    await cluster.restart('tokyo');
    const fenced = await cluster.waitCode('tokyo', 'db', 'PSUE', 30_000);
    assert.equal(fenced.suspendCause, 'takeover-by-peer');
    const stale = await cluster.client('tokyo', 'db');
    await assert.rejects(stale.write(0, Buffer.alloc(512)), (e: NbdClientError) => e.errno === c.NBD_EPERM);
    await stale.disconnect();
    // Tokyo had acknowledged writes sapporo never received (the async lag): a swap must name them.
    const refused = await cli(['--node', cluster.node('sapporo').apiUrl, 'pair', 'swap', 'db']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /split brain[\s\S]*--discard tokyo/);
    const before = proxies[0]!.bytesForwarded.toClient + proxies[1]!.bytesForwarded.toTarget;
    const swap = await cli(['--node', cluster.node('sapporo').apiUrl, 'pair', 'swap', 'db', '--discard', 'tokyo', '--wait']);
    assert.equal(swap.code, 0, swap.stderr);
    assert.match(swap.stdout, /pair db: primary duplex \(PAIR\)/);
    const copied = proxies[0]!.bytesForwarded.toClient + proxies[1]!.bytesForwarded.toTarget - before;
    assert.ok(copied < size / 2, `the swap copied ${copied} bytes of a ${size}-byte volume: a delta, not a full copy`);
    const tokyoStatus = await cluster.pairStatus('tokyo', 'db');
    assert.deepEqual([tokyoStatus.role, tokyoStatus.code], ['secondary', 'PAIR']);
    await app.flush();
    await waitFor('sapporo applied everything at tokyo', async () =>
      (await cluster.node('sapporo').api.getGroup('erp')).lag.entries === 0);
    assert.equal(await sha256Export(cluster.node('tokyo').nbdUri('db'), dir), await sha256Export(cluster.node('sapporo').nbdUri('db'), dir));
    const contents = await readContents([app], blockSize, workloadBytes / blockSize);
    workload.checkCrashConsistent(contents);
    await app.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('a sync primary killed during writes resynchronises, after restart, every region that may differ', async () => {
  const cluster = await Cluster.create(path.join(dir, 'al'), ['p', 's']);
  try {
    await cluster.volume('p', 'v', 64 * MiB);
    await cluster.pair({ name: 'v', primary: 'p', secondary: 's', volume: 'v', mode: 'sync', fence: 'data' });
    await cluster.waitState('p', 'v', 'duplex');
    const client = await cluster.client('p', 'v');
    const writes: Array<Promise<unknown>> = [];
    for (let i = 0; i < 64; i++) writes.push(client.write(i * MiB, randomBytes(MiB)).catch(() => undefined));
    await waitFor('some writes done', async () => (await cluster.pairStatus('p', 'v')).state === 'duplex');
    await cluster.kill('p');
    await Promise.all(writes);
    await cluster.restart('p');
    // Regions of writes in flight at the crash are recorded and copied again, by themselves.
    await cluster.waitState('p', 'v', 'duplex', 60_000);
    const events = await cli(['--node', cluster.node('p').apiUrl, 'events']);
    assert.match(events.stdout, /pair-state\s+v: node restarted with \d+ region\(s\) of writes in flight; they will be resynchronised/);
    assert.match(events.stdout, /pair-state\s+v: resync: [\d.]+MiB of changed regions to copy/);
    assert.match(events.stdout, /pair-state\s+v: resync finished/);
    assert.equal(await sha256Export(cluster.node('s').nbdUri('v'), dir), await sha256Export(cluster.node('p').nbdUri('v'), dir));
  } finally {
    await cluster.stopAll();
  }
});
