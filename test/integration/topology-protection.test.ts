// Three data centres: protection across the volumes of a topology when the primary–sync link is
// cut (spec 001 items 3, 6, 7, 11, 29), and the cascade layout losing and regaining its middle site.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { Cluster } from '../support/cluster';
import { FaultProxy } from '../support/fault-proxy';
import { killAllNodes } from '../support/node-process';
import { OrderedWorkload, readContents } from '../support/ordered-writes';
import { tempDir } from '../support/tools';
import { groupLagEntries, sameEverywhere, topo, topologyStatus } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('3dc-protect');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function refused(write: Promise<void>): Promise<void> {
  await assert.rejects(write, (e: NbdClientError) => e.errno === c.NBD_EIO, 'the write is refused with EIO');
}

/** Starts `site` again with its replication address advertised through a fault proxy in front of it. */
async function behindProxy(cluster: Cluster, site: string): Promise<FaultProxy> {
  await cluster.kill(site);
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: cluster.node(site).ports.replPort });
  cluster.proxies.push(proxy);
  await cluster.restart(site, ['--advertise-repl-port', String(proxy.port)]);
  return proxy;
}

test('protection: a cut primary–sync link stops writes to every volume of the topology; the sync site keeps every acknowledged write; the async site never gets ahead of it', async () => {
  const cluster = await Cluster.create(path.join(dir, 'protect'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const toOsaka = await behindProxy(cluster, 'osaka');
    const file = await cluster.topologyFile({ name: 'erp', volumes: { a: '8MiB', b: '8MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo', fence: 'data' });
    await topo(['apply', file, '--wait']);
    const a = await cluster.client('tokyo', 'a');
    const b = await cluster.client('tokyo', 'b');
    // Part 1: cut, every volume refuses (items 6, 7, 29), restore, everything resynchronises.
    const before = randomBytes(64 * 1024);
    await a.write(6 * MiB, before);
    await b.write(6 * MiB, before);
    toOsaka.cut();
    await refused(a.write(6 * MiB, randomBytes(64 * 1024)));
    await waitFor('both sync legs suspended by the failure', async () =>
      (await topologyStatus(file)).legs.filter((l) => l.mode === 'sync' && l.code === 'PSUE').length === 2);
    // b never failed a write itself: it is refused because a is (protection across the group).
    await refused(b.write(6 * MiB, randomBytes(64 * 1024)));
    await refused(a.write(6 * MiB + 4096, randomBytes(4096)));
    assert.deepEqual(await b.read(6 * MiB, 64 * 1024), before, 'a refused write leaves the primary volume unchanged (item 7)');
    assert.ok((await cluster.pairStatus('tokyo', 'erp.b.osaka.tokyo')).fenceGroup === 'erp');
    toOsaka.restore();
    await waitFor('sync legs duplex again without a command (auto-resync)', async () => (await topologyStatus(file)).healthy, { timeoutMs: 60_000 });
    const after = randomBytes(64 * 1024);
    await a.write(6 * MiB, after);
    await b.write(6 * MiB, after);
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);

    // Part 2 (item 11): the link fails under load, then the primary site is destroyed.
    const blockSize = 4096;
    const blockCount = 1024; // the first 4 MiB; part 1 wrote above
    const workload = new OrderedWorkload([a, b], { blockSize, blockCount, queueDepth: 8, flushEvery: 0, seed: 7 });
    const running = workload.run();
    await waitFor('writes', () => workload.ackedCount >= 1500, { timeoutMs: 60_000, intervalMs: 10 });
    toOsaka.cut();
    await running; // stops at the first refused write
    assert.ok(workload.failures > 0, 'writes were refused once the sync copy could not be updated');
    await cluster.kill('tokyo');
    toOsaka.restore();
    const atOsaka = [await cluster.client('osaka', 'a'), await cluster.client('osaka', 'b')];
    workload.checkAllAcknowledgedPresent(await readContents(atOsaka, blockSize, blockCount));
    for (const x of atOsaka) await x.disconnect();
    await topo(['failover', file, '--to', 'osaka', '--wait']);
    // Sapporo held only entries osaka confirmed, so making it equal to osaka sends next to nothing
    // beyond what was still in flight to it.
    for (const v of ['a', 'b']) {
      const leg = await cluster.node('osaka').api.getPair(`erp.${v}.osaka.sapporo`);
      assert.ok(leg.deltaBytes !== null, `${v}: the async leg was rebuilt by a delta copy`);
      assert.equal(leg.deltaMethod, 'sequence', `${v}: osaka knew from sapporo's applied position what to send: ${leg.deltaNote}`);
      await sameEverywhere(cluster, v, ['osaka', 'sapporo'], dir);
    }
    const atSapporo = [await cluster.client('sapporo', 'a'), await cluster.client('sapporo', 'b')];
    workload.checkAllAcknowledgedPresent(await readContents(atSapporo, blockSize, blockCount));
    for (const x of atSapporo) await x.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('cascade: the middle site forwards in order; losing it fences writes until repair sends to the far site directly; its return restores the cascade; failover to it and failback', async () => {
  const cluster = await Cluster.create(path.join(dir, 'cascade'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const file = await cluster.topologyFile({ name: 'chain', layout: 'cascade', volumes: { a: '16MiB', b: '16MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    await topo(['apply', file, '--wait']);
    const s0 = await topologyStatus(file);
    assert.deepEqual(s0.legs.map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort(),
      ['a osaka→sapporo async', 'a tokyo→osaka sync', 'b osaka→sapporo async', 'b tokyo→osaka sync']);
    const a = await cluster.client('tokyo', 'a');
    const b = await cluster.client('tokyo', 'b');
    const blockSize = 4096;
    const blockCount = 512;
    const w1 = new OrderedWorkload([a, b], { blockSize, blockCount, queueDepth: 8, flushEvery: 0, seed: 3 });
    await w1.run(3000);
    assert.equal(w1.failures, 0);
    await waitFor('osaka forwarded everything to sapporo', async () => (await groupLagEntries(cluster, 'osaka', 'chain')) === 0);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);

    // The middle site is lost: fence data stops writes at tokyo (no copy anywhere would have them).
    await cluster.kill('osaka');
    await refused(a.write(12 * MiB, randomBytes(4096)));
    const repaired = await topo(['repair', file, '--wait']);
    assert.match(repaired, /osaka is lost: suspend the sync copies by operator decision/);
    assert.match(repaired, /sapporo stops waiting for osaka and receives from tokyo directly/);
    const direct = await topologyStatus(file);
    assert.deepEqual(direct.legs.filter((l) => l.code === 'PAIR').map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort(),
      ['a tokyo→sapporo async', 'b tokyo→sapporo async']);
    const directLeg = await cluster.pairStatus('tokyo', 'chain.a.sapporo.tokyo');
    assert.ok(directLeg.deltaBytes !== null && directLeg.deltaBytes < MiB, `sapporo was in step: the direct copy sent ${directLeg.deltaBytes} bytes`);
    assert.equal(directLeg.deltaMethod, 'sequence', `tokyo knew osaka's sequence numbers of its writes: ${directLeg.deltaNote}`);
    await a.write(12 * MiB, Buffer.alloc(4096, 1)); // writes flow again
    const w2 = new OrderedWorkload([a, b], { blockSize, blockCount, queueDepth: 8, flushEvery: 0, seed: 4 });
    await w2.run(1500);
    assert.equal(w2.failures, 0);
    await waitFor('sapporo applied the direct copy', async () => (await groupLagEntries(cluster, 'tokyo', 'chain')) === 0);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'sapporo'], dir);

    // Osaka returns: repair restores the cascade (only what changed travels).
    await cluster.restart('osaka');
    await topo(['repair', file, '--wait']);
    const restored = await topologyStatus(file);
    assert.ok(restored.healthy, JSON.stringify(restored.legs.map((l) => `${l.pair} ${l.from}→${l.to} ${l.code}`)));
    assert.deepEqual(restored.legs.map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort(), s0.legs.map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort());
    await a.write(12 * MiB, Buffer.alloc(4096, 2));
    await waitFor('osaka forwarded everything', async () => (await groupLagEntries(cluster, 'osaka', 'chain')) === 0);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);

    // Tokyo is lost: the application moves to the middle site, which keeps feeding the far site.
    await a.disconnect();
    await b.disconnect();
    await cluster.kill('tokyo');
    await topo(['failover', file, '--to', 'osaka']);
    assert.equal((await topologyStatus(file)).activeSite, 'osaka');
    const atOsaka = await cluster.client('osaka', 'a');
    const last = randomBytes(MiB);
    await atOsaka.write(14 * MiB, last);
    await atOsaka.disconnect();
    await waitFor('sapporo has the writes made at osaka', async () => (await groupLagEntries(cluster, 'osaka', 'chain')) === 0);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['osaka', 'sapporo'], dir);

    // Tokyo returns: failback restores tokyo → osaka → sapporo with the writes made at osaka.
    await cluster.restart('tokyo');
    await topo(['failback', file, '--to', 'tokyo', '--wait']);
    const back = await topologyStatus(file);
    assert.equal(back.activeSite, 'tokyo');
    assert.ok(back.healthy, JSON.stringify(back.legs.map((l) => `${l.pair} ${l.from}→${l.to} ${l.code}`)));
    assert.deepEqual(back.legs.map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort(), s0.legs.map((l) => `${l.volume} ${l.from}→${l.to} ${l.mode}`).sort());
    const atTokyo = await cluster.client('tokyo', 'a');
    assert.deepEqual(await atTokyo.read(14 * MiB, MiB), last, 'the write made at osaka is at tokyo');
    await atTokyo.disconnect();
    await waitFor('osaka forwarded everything', async () => (await groupLagEntries(cluster, 'osaka', 'chain')) === 0);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);
  } finally {
    await cluster.stopAll();
  }
});
