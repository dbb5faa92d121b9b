// The disaster cycle (issue 14): three real nodes and an application writing ordered blocks; round
// after round one disaster of docs/runbook.md strikes (a seeded order, every kind at least once),
// the runbook's commands for it run, and the topology returns to its layout. After every step each
// site's "loss if failed over here" is checked against what it holds (read back over NBD): what it
// lacks is within the claim. After every round every copy is duplex with both ends agreeing and all
// three sites are byte-equal; every failover's delta resync used the method status promised.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { NbdClient, NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { DisasterHarness, type SiteName, volumes } from '../support/disaster-harness';
import { cli, killAllNodes } from '../support/node-process';
import { tempDir } from '../support/tools';
import { topo } from '../support/topology';
import { waitFor } from '../support/wait';

const seed = Number(process.env.TOPOLOGY_DISASTER_SEED ?? '14');
let dir: string;

before(async () => {
  dir = await tempDir('3dc-disasters');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

type Round = (h: DisasterHarness, pick: () => number) => Promise<void>;

const disasters: Record<string, Round> = {
  'primary lost': primaryLost,
  'primary lost, run at the async site with the newest data': primaryLostNewestToAsync,
  'sync site lost': syncSiteLost,
  'async site lost': asyncSiteLost,
  'primary and sync site lost': primaryAndSyncLost,
  'a site back without its data': siteBackWithoutData,
  'link cut tokyo–osaka': linkCut,
};

const kinds = Object.keys(disasters);

test(`disaster cycle: ${kinds.length + 1} rounds of the ${kinds.length} runbook disasters in a seeded order (seed ${seed}), status's loss claims hold at every step`, async () => {
  const h = await DisasterHarness.create(dir, seed);
  let rng = seed;
  const pick = (): number => (rng = (rng * 1103515245 + 12345) & 0x7fffffff);
  // Every kind once, then one more: a disaster striking the layout a previous round restored.
  const order = shuffle(kinds, pick);
  order.push(kinds.filter((k) => k !== order[order.length - 1])[pick() % (kinds.length - 1)]!);
  const started = Date.now();
  try {
    await topo(['apply', h.file, '--wait']);
    await h.startApp('tokyo');
    await h.workload.progress(200, 30_000);
    await h.restored('applied');
    for (const [i, name] of order.entries()) {
      const roundStart = Date.now();
      await h.workload.progress(100, 30_000);
      await disasters[name]!(h, pick);
      process.stderr.write(`round ${i + 1} (${name}): ${Date.now() - roundStart} ms\n`);
    }
  } finally {
    process.stderr.write(`order: ${order.join(', ')}; ${h.workload.acknowledged} writes acknowledged; ${Date.now() - started} ms\n`);
    for (const line of h.headlines) process.stderr.write(`  ${line}\n`);
    for (const r of h.claims) process.stderr.write(`  ${r.step} | ${r.site} | ${r.kind} | lacks ${r.lacking ?? '-'} | ${r.text}\n`);
    await h.close();
  }
});

function shuffle<T>(items: T[], pick: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = pick() % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** Runbook "Primary site lost": fail over to the sync site (delta resync of the async site), then fail back. */
async function primaryLost(h: DisasterHarness): Promise<void> {
  await h.cluster.kill('tokyo');
  await h.appFailed();
  const lost = await h.check('primary lost: tokyo killed');
  assert.equal(siteClaim(lost, 'osaka').kind, 'none', 'fence data: osaka has every acknowledged write');
  const promised = lost.sites.find((s) => s.site === 'osaka')!.deltaResync;
  assert.ok(promised, 'status says how a failover to osaka would rebuild the async copy');
  await topo(['failover', h.file, '--to', 'osaka', '--wait']);
  h.appSite = 'osaka';
  await h.agreeing('failover to osaka');
  const moved = await h.check('primary lost: failed over to osaka');
  assert.ok(moved.missing.some((m) => m.what === 'no sync copy'), `headline names the missing sync copy: ${JSON.stringify(moved.missing)}`);
  for (const v of volumes) {
    const leg = await h.cluster.node('osaka').api.getPair(`erp.${v}.osaka.sapporo`);
    assert.equal(leg.deltaMethod, promised.method, `${v}: the delta resync used the method status promised (${promised.why}): ${leg.deltaNote}`);
  }
  await h.startApp('osaka');
  await h.workload.progress(100, 30_000);
  await h.check('primary lost: application at osaka');
  await h.cluster.restart('tokyo');
  await waitFor('tokyo learned it was taken over', async () =>
    (await h.cluster.node('tokyo').api.getPair('erp.db1.osaka.tokyo')).suspendCause === 'takeover-by-peer', { timeoutMs: 30_000 });
  await h.check('primary lost: tokyo back');
  await failBack(h, 'primary lost');
}

/** Runbook "Primary site lost", osaka alive but the application should run at sapporo: Fig. 14, nothing acknowledged lost. */
async function primaryLostNewestToAsync(h: DisasterHarness): Promise<void> {
  await h.cluster.kill('tokyo');
  await h.appFailed();
  const lost = await h.check('primary lost (Fig. 14): tokyo killed');
  const promised = lost.sites.find((s) => s.site === 'osaka')!.deltaResync;
  assert.ok(promised, 'status says how osaka would bring sapporo up to date');
  await topo(['failover', h.file, '--to', 'sapporo', '--newest-from', 'osaka', '--wait']);
  h.appSite = 'sapporo';
  await h.agreeing('failover to sapporo with the newest data');
  const moved = await h.check('primary lost (Fig. 14): failed over to sapporo with osaka\'s newest data');
  assert.equal(siteClaim(moved, 'osaka').kind === 'none' || siteClaim(moved, 'osaka').kind === 'bounded', true, siteClaim(moved, 'osaka').text);
  for (const v of volumes) {
    const leg = await h.cluster.node('osaka').api.getPair(`erp.${v}.osaka.sapporo`);
    assert.equal(leg.deltaMethod, promised.method, `${v}: osaka brought sapporo up to date by the method status promised (${promised.why}): ${leg.deltaNote}`);
  }
  await h.startApp('sapporo');
  await h.workload.progress(100, 30_000);
  await h.check('primary lost (Fig. 14): application at sapporo');
  await h.cluster.restart('tokyo');
  await h.check('primary lost (Fig. 14): tokyo back');
  await failBack(h, 'primary lost (Fig. 14)');
}

/** Stop the application, fail back to tokyo, restart the application there. */
async function failBack(h: DisasterHarness, round: string): Promise<void> {
  await h.workload.stop();
  await topo(['failback', h.file, '--to', 'tokyo', '--wait']);
  h.appSite = 'tokyo';
  await h.agreeing(`${round}: failback`);
  await h.restored(`${round}: failed back`);
}

/** Runbook "Sync site lost": fence data refuses writes; repair splits so writes go on; osaka returns; repair resyncs. */
async function syncSiteLost(h: DisasterHarness): Promise<void> {
  await h.cluster.kill('osaka');
  await h.appFailed();
  const fenced = await h.check('sync site lost: osaka killed');
  await fenceReadsTheSame(h, fenced);
  await topo(['repair', h.file]);
  await h.startApp('tokyo');
  await h.workload.progress(100, 30_000);
  const split = await h.check('sync site lost: split by repair, writing without osaka');
  assert.ok(split.missing.some((m) => m.what.startsWith('no sync copy')), JSON.stringify(split.missing));
  await h.cluster.restart('osaka');
  await waitFor('tokyo reaches osaka again', async () => (await h.cluster.node('tokyo').api.getPair('erp.db1.osaka.tokyo')).peer.connected, { timeoutMs: 30_000 });
  const back = await h.check('sync site lost: osaka back, still split');
  assert.equal(siteClaim(back, 'osaka').kind, 'bounded', `osaka lacks what was written since the split: ${siteClaim(back, 'osaka').text}`);
  await topo(['repair', h.file, '--wait']);
  await h.agreeing('sync site lost: repair');
  await h.restored('sync site lost: resynchronised');
}

/** A fence reads the same everywhere: status says so, attached and new clients alike see writes fail with EIO, reads work. */
async function fenceReadsTheSame(h: DisasterHarness, status: Awaited<ReturnType<DisasterHarness['status']>>): Promise<void> {
  const tokyo = status.sites.find((s) => s.site === 'tokyo')!;
  assert.ok(tokyo.fenced, 'status says tokyo is fenced');
  assert.ok(status.missing.some((m) => m.what === 'writes refused: tokyo is fenced'), JSON.stringify(status.missing));
  const fresh = await NbdClient.connect({ host: '127.0.0.1', port: h.cluster.node('tokyo').ports.nbdPort, exportName: 'db1' });
  try {
    assert.equal(fresh.transmissionFlags & c.TFLAG_READ_ONLY, 0, 'a client attaching to the fenced primary sees a writable export');
    await assert.rejects(fresh.write(0, Buffer.alloc(4096)), (e: NbdClientError) => e.errno === c.NBD_EIO, 'its write fails with EIO, as attached clients\' do');
    await fresh.read(0, 4096);
  } finally {
    fresh.destroy();
  }
}

/** Runbook "Async site lost": nothing to do; it catches up when it returns. */
async function asyncSiteLost(h: DisasterHarness): Promise<void> {
  await h.cluster.kill('sapporo');
  await h.workload.progress(100, 30_000);
  const away = await waitFor('status sees the async link down', async () => {
    const s = await h.status();
    return s.missing.some((m) => m.what.startsWith('async site sapporo unreachable')) ? s : undefined;
  }, { timeoutMs: 15_000, intervalMs: 200 });
  assert.equal(away.healthy, false);
  await h.check('async site lost: sapporo killed, writes go on');
  await h.cluster.restart('sapporo');
  await h.check('async site lost: sapporo back');
  await h.restored('async site lost: caught up');
}

/** Runbook "Primary and sync sites lost": Fig. 13 at sapporo with its own copy; both return; failback. */
async function primaryAndSyncLost(h: DisasterHarness): Promise<void> {
  await h.cluster.kill('tokyo');
  await h.cluster.kill('osaka');
  await h.appFailed();
  await h.check('primary and sync lost: tokyo and osaka killed');
  await topo(['failover', h.file, '--to', 'sapporo']);
  h.appSite = 'sapporo';
  await h.check('primary and sync lost: failed over to sapporo', { adopt: true });
  await h.startApp('sapporo');
  await h.workload.progress(100, 30_000);
  await h.check('primary and sync lost: application at sapporo');
  await h.cluster.restart('tokyo');
  await h.cluster.restart('osaka');
  const back = await waitFor('tokyo learned that sapporo went on without it', async () => {
    const s = await h.status();
    return s.sites.every((x) => x.reachable) && s.activeSite === 'sapporo' ? s : undefined;
  }, { timeoutMs: 30_000, intervalMs: 200 });
  for (const site of ['tokyo', 'osaka'] as SiteName[]) {
    assert.equal(siteClaim(back, site).kind, 'unbounded', `${site} lacks what was written at sapporo: ${siteClaim(back, site).text}`);
  }
  await h.check('primary and sync lost: tokyo and osaka back');
  const refused = await cli(['topology', 'failover', h.file, '--to', 'osaka']);
  assert.equal(refused.code, 1, refused.stdout + refused.stderr);
  assert.match(refused.stderr, /a failover to osaka would lose everything[\s\S]*hint: [\s\S]*failback/, 'the refusal names the command to run instead');
  await failBack(h, 'primary and sync lost');
}

let lastWithoutData: SiteName | undefined;

/** Runbook "A site back without its data": the site restarts on an empty data directory; repair copies it in full. */
async function siteBackWithoutData(h: DisasterHarness, pick: () => number): Promise<void> {
  // The sync or the async site, seeded; when it strikes again, the other one.
  const site: SiteName = lastWithoutData === 'osaka' ? 'sapporo' : lastWithoutData === 'sapporo' ? 'osaka' : pick() % 2 === 0 ? 'osaka' : 'sapporo';
  lastWithoutData = site;
  await h.cluster.node(site).stop();
  await h.loseData(site);
  await h.cluster.restart(site);
  const empty = await waitFor(`status sees that ${site} lost its data`, async () => {
    const s = await h.status();
    return s.sites.find((x) => x.site === site)?.reachable && s.pairs.some((p) => p.state === 'disagree') ? s : undefined;
  }, { timeoutMs: 30_000, intervalMs: 200 });
  assert.equal(siteClaim(empty, site).kind, 'unbounded', `${site}: ${siteClaim(empty, site).text}`);
  if (site === 'osaka') await h.appFailed();
  await h.check(`${site} back without its data`);
  await topo(['repair', h.file, '--wait']);
  await h.agreeing(`${site} back without its data: repair`);
  await h.restored(`${site} back without its data: copied again`);
}

/** Runbook "Link cut or slow", tokyo ↔ osaka: fence data refuses writes; wait; the copies resync when the link returns. */
async function linkCut(h: DisasterHarness): Promise<void> {
  h.proxies.get('tokyo')!.cut();
  h.proxies.get('osaka')!.cut();
  await h.appFailed();
  const cut = await waitFor('osaka sees the link down', async () => {
    const s = await h.status();
    return (await h.cluster.node('osaka').api.getPair('erp.db1.osaka.tokyo')).code === 'PSUE' ? s : undefined;
  }, { timeoutMs: 15_000, intervalMs: 200 });
  assert.ok(cut.sites.find((s) => s.site === 'tokyo')!.fenced, 'tokyo is fenced');
  const checked = await h.check('link cut tokyo–osaka');
  assert.equal(siteClaim(checked, 'osaka').kind, 'none', `fence data: ${siteClaim(checked, 'osaka').text}`);
  h.proxies.get('tokyo')!.restore();
  h.proxies.get('osaka')!.restore();
  await h.restored('link cut tokyo–osaka: link back, resynchronised by itself');
}

function siteClaim(s: Awaited<ReturnType<DisasterHarness['status']>>, site: string): { kind: string; text: string } {
  return s.sites.find((x) => x.site === site)!.atRisk;
}
