// Three data centres: a site that comes back without its data (a rebuilt node, a new disk). The
// primary must not mistake it for a site that took over; `topology repair` copies it again in full.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { Cluster } from '../support/cluster';
import { killAllNodes } from '../support/node-process';
import { tempDir } from '../support/tools';
import { groupLagEntries, sameEverywhere, topo, topologyStatus } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('3dc-rebuild');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** SIGKILL the site, destroy its data directory, start it empty on the same ports. */
async function loseData(cluster: Cluster, site: string): Promise<void> {
  await cluster.kill(site);
  await fsp.rm(path.join(cluster.dir, site), { recursive: true, force: true });
  await cluster.restart(site);
}

test('a site back without its data: the primary keeps its role (async site: writes go on; sync site: fenced), repair copies it again, all equal', async () => {
  const cluster = await Cluster.create(path.join(dir, 'c'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const file = await cluster.topologyFile({ name: 'erp', volumes: { a: '16MiB', b: '8MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo', fence: 'data' });
    await topo(['apply', file, '--wait']);
    const a = await cluster.client('tokyo', 'a');
    const b = await cluster.client('tokyo', 'b');
    await a.write(0, randomBytes(4 * MiB));
    await b.write(MiB, randomBytes(2 * MiB));

    // The async site loses its data: the primary stays writable, the async copies are suspended.
    await loseData(cluster, 'sapporo');
    await waitFor('the async copies at tokyo say sapporo lost its data', async () => {
      const legs = (await topologyStatus(file)).legs.filter((l) => l.mode === 'async');
      return legs.length === 2 && legs.every((l) => l.code === 'PSUE' && /lost its data/.test(l.reason));
    });
    const status = await topologyStatus(file);
    assert.equal(status.activeSite, 'tokyo', 'tokyo is still where the application runs');
    await a.write(8 * MiB, randomBytes(MiB)); // accepted: only the async copy is missing
    await topo(['repair', file, '--wait']);
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    assert.ok((await topologyStatus(file)).healthy, 'every copy duplex after repair');
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);

    // The sync site loses its data: with fence data the primary refuses writes until repair.
    await loseData(cluster, 'osaka');
    await waitFor('the sync copies at tokyo say osaka lost its data', async () => {
      const legs = (await topologyStatus(file)).legs.filter((l) => l.mode === 'sync');
      return legs.length === 2 && legs.every((l) => l.code === 'PSUE' && /lost its data/.test(l.reason));
    });
    await assert.rejects(b.write(0, randomBytes(4096)), (e: NbdClientError) => e.errno === c.NBD_EIO, 'fence data: refused while the sync copy cannot be updated');
    // No automatic resync against a node that has no such pair: the state stays put.
    assert.equal((await cluster.pairStatus('tokyo', 'erp.a.osaka.tokyo')).code, 'PSUE');
    await topo(['repair', file, '--wait']);
    await b.write(0, randomBytes(4096)); // accepted again
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    assert.ok((await topologyStatus(file)).healthy);
    for (const v of ['a', 'b']) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);
  } finally {
    await cluster.stopAll();
  }
});

test('the primary site back without its data after a failover to the sync site: failback rebuilds it with a full copy', async () => {
  const cluster = await Cluster.create(path.join(dir, 'p'), ['tokyo', 'osaka', 'sapporo']);
  try {
    const file = await cluster.topologyFile({ name: 'erp', volumes: { a: '16MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo', fence: 'data' });
    await topo(['apply', file, '--wait']);
    const a = await cluster.client('tokyo', 'a');
    await a.write(0, randomBytes(4 * MiB));
    await a.disconnect();
    await cluster.kill('tokyo');
    await topo(['failover', file, '--to', 'osaka', '--wait']);
    const app = await cluster.client('osaka', 'a');
    await app.write(8 * MiB, randomBytes(MiB));
    await app.disconnect();
    await fsp.rm(path.join(cluster.dir, 'tokyo'), { recursive: true, force: true });
    await cluster.restart('tokyo');
    const out = await topo(['failback', file, '--to', 'tokyo', '--wait']);
    assert.match(out, /tokyo has no such pair \(it lost its data\)/);
    const s = await topologyStatus(file);
    assert.equal(s.activeSite, 'tokyo');
    assert.ok(s.healthy, `all legs duplex: ${JSON.stringify(s.legs.map((l) => `${l.pair} ${l.code}`))}`);
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    await sameEverywhere(cluster, 'a', ['tokyo', 'osaka', 'sapporo'], dir);
  } finally {
    await cluster.stopAll();
  }
});
