// A three-site topology whose pairs go through a remote copy network (spec 001 over spec 002):
// the sync and async legs and the delta resync legs of a failover each take the order that leads
// from their source site's edge to their target site's; failover after the loss of the primary and
// failback end with the same data at every site.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { HttpNodeClient } from '../../src/node/api-client';
import { EtcdProcess } from '../support/manager-process';
import { killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { tempDir } from '../support/tools';
import { groupLagEntries, sameEverywhere, topo, topologyStatus } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('edge-topology');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

const sites = ['tokyo', 'osaka', 'sapporo'];
/** One order for every direction between the three sites' edges. */
const orders = Object.fromEntries(sites.flatMap((a) => sites.filter((b) => b !== a).map((b) => [`${a}-${b}`, { from: `e-${a}`, to: `e-${b}` }])));

/** Three sites, each node behind its own edge, one core between the edges, the link into osaka's edge behind a fault proxy. */
function threeSites(name: string): Promise<Rcn> {
  return Rcn.create(path.join(dir, name), {
    nodes: { tokyo: 'e-tokyo', osaka: 'e-osaka', sapporo: 'e-sapporo' }, cores: ['c-1'],
    links: [['e-tokyo', 'c-1'], ['c-1', 'e-osaka'], ['e-sapporo', 'c-1']], orders, proxied: [['c-1', 'e-osaka']],
  });
}

/** Applies the network and writes the topology file erp (db1 of 16 MiB, tokyo → osaka sync, → sapporo async) through it. */
async function topologyThroughNetwork(rcn: Rcn, more: Record<string, unknown> = {}): Promise<string> {
  await rcn.apply();
  const file = path.join(rcn.dir, 'erp.yaml');
  const site = (n: string): { site: string; node: string } => ({ site: n, node: rcn.cluster.node(n).apiUrl });
  await fsp.writeFile(file, JSON.stringify({
    name: 'erp', network: 'rcn', volumes: { db1: '16MiB' }, primary: site('tokyo'), sync: site('osaka'), async: site('sapporo'), ...more,
  }));
  return file;
}

/** Writes 16 blocks at tokyo while the link into osaka's edge is cut: tokyo's edge acknowledges and holds them. */
async function heldAtTokyosEdge(rcn: Rcn): Promise<Map<number, Buffer>> {
  rcn.proxy('c-1', 'e-osaka').cut();
  const held = new Map<number, Buffer>();
  const client = await rcn.cluster.client('tokyo', 'db1');
  for (let i = 0; i < 16; i++) {
    const data = randomBytes(4096);
    await client.write(8 * MiB + i * 65536, data);
    held.set(8 * MiB + i * 65536, data);
  }
  client.destroy();
  assert.ok((await rcn.order('e-tokyo', 'tokyo-osaka', 'source')).inFlight >= 16, 'held at tokyo\'s edge');
  return held;
}

async function atOsaka(rcn: Rcn, held: Map<number, Buffer>): Promise<void> {
  const reader = await rcn.cluster.client('osaka', 'db1');
  for (const [offset, data] of held) assert.deepEqual(await reader.read(offset, 4096), data, `the write at ${offset} acknowledged by tokyo's edge is at osaka`);
  await reader.disconnect();
}

test('a three-site topology through a network: apply, failover to the sync site after the primary is lost, failback; every site ends equal', async () => {
  const rcn = await threeSites('three');
  const { cluster } = rcn;
  try {
    const file = await topologyThroughNetwork(rcn);
    assert.match(await topo(['apply', file, '--wait']), /every copy is duplex/);
    const app = await cluster.client('tokyo', 'db1');
    for (let i = 0; i < 32; i++) await app.write(i * 256 * 1024, randomBytes(8192));
    await app.disconnect();
    await waitFor('the async leg caught up', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    await sameEverywhere(cluster, 'db1', sites, dir);
    assert.ok((await rcn.order('e-tokyo', 'tokyo-osaka', 'source')).generated > 32, 'the sync leg went through its order');
    assert.ok((await rcn.status('e-sapporo')).pairs.some((p) => p.name === 'erp.db1.sapporo.tokyo' && p.order === 'tokyo-sapporo'), 'the async leg through its order');

    // Writes tokyo's edge acknowledged are still inside the network when the primary site is lost.
    const held = await heldAtTokyosEdge(rcn);
    await cluster.kill('tokyo');
    rcn.proxy('c-1', 'e-osaka').restore();
    const out = await topo(['failover', file, '--to', 'osaka', '--wait']);
    assert.match(out, /failover of erp to the sync site osaka/);
    assert.match(out, /the network rcn delivers what tokyo's edge acknowledged[\s\S]*order tokyo-osaka stopped at e-osaka: .* 0 missing/);
    await atOsaka(rcn, held);
    const s = await topologyStatus(file);
    assert.equal(s.activeSite, 'osaka');
    const moved = await cluster.client('osaka', 'db1');
    for (let i = 0; i < 8; i++) await moved.write(i * MiB + 4096, randomBytes(4096));
    await moved.disconnect();
    await waitFor('osaka → sapporo caught up', async () => (await groupLagEntries(cluster, 'osaka', 'erp')) === 0);
    await sameEverywhere(cluster, 'db1', ['osaka', 'sapporo'], dir);
    assert.ok((await rcn.order('e-osaka', 'osaka-sapporo', 'source')).generated > 0 || (await rcn.status('e-sapporo')).pairs.some((p) => p.order === 'osaka-sapporo'),
      'the delta resync leg osaka → sapporo went through its order');

    await cluster.restart('tokyo');
    const back = await topo(['failback', file, '--to', 'tokyo', '--wait']);
    assert.match(back, /order tokyo-osaka at e-osaka: tokyo is reachable again through the network/);
    assert.match(back, /failback of erp to tokyo/);
    const final = await topologyStatus(file);
    assert.equal(final.activeSite, 'tokyo');
    assert.ok(final.healthy, `all legs duplex: ${JSON.stringify(final.legs.map((l) => `${l.pair} ${l.code}`))}`);
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster, 'tokyo', 'erp')) === 0);
    await sameEverywhere(cluster, 'db1', sites, dir);
  } finally {
    await rcn.stopAll();
  }
});

test('automatic failover through a network: with etcd as the arbiter, the sync site takes over by itself after the primary is lost, with what tokyo\'s edge held', async () => {
  const rcn = await threeSites('automatic');
  const etcd = await EtcdProcess.start(path.join(rcn.dir, 'etcd'));
  const { cluster } = rcn;
  try {
    const file = await topologyThroughNetwork(rcn, { failover: 'automatic', arbiter: { etcd: [etcd.url] }, lease: '3s', renew: '500ms', 'fence-margin': '1s' });
    assert.match(await topo(['apply', file, '--wait']), /tokyo holds the arbiter/);
    const arbiter = async (n: string): Promise<string | undefined> =>
      (await new HttpNodeClient(cluster.node(n).apiUrl, undefined, 5000).failoverStatus()).find((x) => x.topology === 'erp')?.state;
    await waitFor('osaka standing by', async () => (await arbiter('osaka')) === 'standby', { timeoutMs: 30_000 });
    const held = await heldAtTokyosEdge(rcn);
    await cluster.kill('tokyo');
    const killedAt = Date.now();
    rcn.proxy('c-1', 'e-osaka').restore();
    await waitFor('osaka took over by itself', async () => (await arbiter('osaka')) === 'holding' && (await topologyStatus(file)).activeSite === 'osaka',
      { timeoutMs: 60_000, intervalMs: 250 });
    process.stderr.write(`automatic failover through the network took ${Date.now() - killedAt} ms after the kill\n`);
    await atOsaka(rcn, held);
    assert.equal((await rcn.order('e-osaka', 'tokyo-osaka', 'target')).state, 'failure-suspend', 'the order from the lost site was stopped at osaka\'s edge');
    await waitFor('osaka → sapporo caught up', async () => (await groupLagEntries(cluster, 'osaka', 'erp')) === 0, { timeoutMs: 60_000 });
    await sameEverywhere(cluster, 'db1', ['osaka', 'sapporo'], dir);
  } finally {
    await rcn.stopAll();
    await etcd.stop();
  }
});
