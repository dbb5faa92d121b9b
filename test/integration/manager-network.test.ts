// The manager's parts of a remote copy network (spec 002 §3.6, §6.12), with real processes on
// loopback: a manager, two storage nodes, two edges and a core. `network apply --manager` stores
// the file at the manager, which computes the routes and gives every relay and attached node the
// tables, so a pair created --via the network carries its writes to a byte-equal target; the
// manager collects the counters 732/733/734 (`network status --manager` shows them move) and the
// relays' events: a planned Suspend of the pair is an edge pair-state transition in the manager's
// history under the edge's name; the console's networks panel shows the same, in Chromium. A
// relay that lost its tables gets them again from the manager; while it is down, an alert names it.
// With two managers on etcd only the leader applies and collects: every relay event is in the
// history once, also across a change of leader. After the loss of the source site, `network failover
// --manager` has the target edge stop the order (§6.9) and the target takes over with every write.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import type { NetworkSample, NetworkStatusDocument } from '../../src/contracts/managed-network';
import type { RelayOrderStatus } from '../../src/contracts/network';
import { EtcdProcess, ManagerProcess, killAllManagers } from '../support/manager-process';
import { cli, killAllNodes, repoRoot } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;
let rcn: Rcn;
let manager: ManagerProcess;
let etcd: EtcdProcess | undefined;
let pairOfManagers: ManagerProcess[] = [];

before(async () => {
  dir = await tempDir('mnet');
  rcn = await Rcn.create(path.join(dir, 'rcn'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '500ms', max: '2s', giveUp: '60s' } } },
  });
  manager = await ManagerProcess.start({ name: 'm', dir, args: ['--sample-interval', '500ms'] });
});

after(async () => {
  await manager?.stop().catch(() => undefined);
  for (const m of pairOfManagers) await m.stop().catch(() => undefined);
  await etcd?.stop().catch(() => undefined);
  await rcn?.stopAll().catch(() => undefined);
  killAllManagers();
  killAllRelays();
  killAllNodes();
  if (!process.env.KEEP) await fsp.rm(dir, { recursive: true, force: true });
  else console.log('kept', dir);
});

/** The order at one edge as the manager last collected it. */
function collected(doc: NetworkStatusDocument, relay: string, side: 'source' | 'target'): RelayOrderStatus | undefined {
  return doc.relays.find((r) => r.name === relay)?.status?.orders.find((o) => o.id === 'erp' && o.side === side);
}

test('network apply --manager: the manager applies the network, a pair through it is byte-equal, its counters and a planned Suspend reach the manager', { timeout: 90_000 }, async () => {
  // A file the running relays contradict is refused, and nothing is kept.
  const wrong = path.join(dir, 'wrong.yaml');
  await fsp.writeFile(wrong, (await fsp.readFile(rcn.file, 'utf8')).replace(/"e-sapporo"/g, '"e-osaka"'));
  const refused = await cli(['--manager', manager.url, 'network', 'apply', wrong]);
  assert.equal(refused.code, 2, refused.stderr);
  assert.match(refused.stderr, /is named e-sapporo, but the network file calls it e-osaka/);
  assert.deepEqual(await manager.client.listNetworks(), []);

  const applied = await cli(['--manager', manager.url, 'network', 'apply', rcn.file]);
  assert.equal(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /network rcn applied \(version [0-9a-f]{16}\): 3 relays, 2 storage nodes, 1 order-guarantee ids/);
  assert.match(applied.stdout, /erp\s+e-tokyo\s+e-sapporo\s+e-tokyo → c-1 → e-sapporo/);
  const record = await manager.client.getNetwork('rcn');
  assert.equal(record.applyError, null);
  for (const r of ['e-tokyo', 'c-1', 'e-sapporo']) assert.equal((await rcn.relay(r).api.info()).configVersion, record.config!.version, `${r} runs the manager's tables`);

  // The nodes learnt their edge from the manager: pair create --via finds the network there.
  await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
  await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
  const client = await rcn.cluster.client('tokyo', 'db1');
  for (let i = 0; i < 100; i++) await client.write(i * 65536, randomBytes(4096));
  await client.flush();
  const first = await rcn.drained('erp');
  assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));

  // The manager collects 732/733/734: at rest they are equal, and they move with the writes.
  const atRest = await waitFor('the manager to collect the drained counters', async () => {
    const doc = await manager.client.networkStatus('rcn');
    const src = collected(doc, 'e-tokyo', 'source');
    const tgt = collected(doc, 'e-sapporo', 'target');
    return src && tgt && src.generated === first.generated && src.deleted === first.generated && tgt.reflected === first.generated ? doc : undefined;
  }, { timeoutMs: 15_000, intervalMs: 200 });
  assert.ok(atRest.relays.every((r) => r.reachable));
  const text = await cli(['--manager', manager.url, 'network', 'status', 'rcn']);
  assert.equal(text.code, 0, text.stderr);
  assert.match(text.stdout, new RegExp(`network rcn: version ${record.config!.version}, applied `));
  assert.match(text.stdout, new RegExp(`erp\\s+source\\s+e-tokyo→e-sapporo\\s+active\\s+${first.generated}\\s+-\\s+${first.generated}\\s+0`));
  assert.match(text.stdout, /db1-far\s+erp\s+source\s+tokyo→sapporo\s+duplex/);
  assert.match(text.stdout, /core c-1/);
  for (let i = 0; i < 50; i++) await client.write(i * 65536, randomBytes(4096));
  await client.flush();
  await client.disconnect();
  const moved = await waitFor('the counters to move at the manager', async () => {
    const r = await cli(['--manager', manager.url, 'network', 'status', rcn.file, '--json']);
    const doc = JSON.parse(r.stdout) as NetworkStatusDocument;
    const src = collected(doc, 'e-tokyo', 'source');
    return src && src.generated >= first.generated + 50 && src.deleted === src.generated ? src : undefined;
  }, { timeoutMs: 20_000, intervalMs: 300 });
  assert.ok(moved.generated > first.generated);
  // The manager keeps the history: the source edge's 732 as it grew, sample by sample.
  const kept = await cli(['--manager', manager.url, 'network', 'history', 'rcn', '--order', 'erp', '--since', '10m', '--json']);
  assert.equal(kept.code, 0, kept.stderr);
  const sampled = (JSON.parse(kept.stdout) as { samples: NetworkSample[] }).samples.filter((s) => s.edge === 'e-tokyo' && s.side === 'source');
  const generated = sampled.map((s) => s.generated);
  assert.deepEqual(generated, [...generated].sort((a, b) => a - b), 'oldest first, never going back');
  assert.ok(generated.includes(first.generated) && generated.at(-1)! >= moved.generated, `732 over time: ${generated.join(', ')}`);
  const historyText = await cli(['--manager', manager.url, 'network', 'history', rcn.file]);
  assert.match(historyText.stdout, new RegExp(`erp\\s+e-sapporo\\s+target\\s+active\\s+-\\s+${first.generated}\\s+-`));

  // A planned Suspend (pair split) is an edge pair-state transition, in the manager's history under the edge's name.
  const split = await cli(['--node', rcn.cluster.node('tokyo').apiUrl, 'pair', 'split', 'db1-far']);
  assert.equal(split.code, 0, split.stderr);
  const event = await manager.waitEvent('the source edge\'s pair-state transition', (e) =>
    e.kind === 'edge-pair-state' && e.node === 'e-tokyo' && e.subject === 'db1-far' && e.details?.to === 'suspended');
  assert.equal(event.details?.from, 'duplex');
  assert.equal(event.details?.network, 'rcn');
  const events = await manager.client.listEvents({ limit: 10_000 });
  assert.ok(events.some((e) => e.kind === 'network-added' && e.subject === 'rcn'));
  const applies = events.filter((e) => e.kind === 'network-applied' && e.node === 'c-1');
  assert.equal(applies.length, 1, 'each relay event is taken once, however often the manager collects');
  const history = await cli(['--manager', manager.url, 'manager', 'events']);
  assert.match(history.stdout, /e-tokyo\s+edge-pair-state\s+db1-far: /);
});

test('the console shows the network: its relays, the counters of each order, their history and the pairs at the edges', { timeout: 60_000 }, async () => {
  const browser = await chromium.launch({ executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium', args: ['--no-sandbox', '--disable-gpu'] });
  try {
    const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    const pageErrors: string[] = [];
    page.on('pageerror', (err) => pageErrors.push(err.message));
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });
    await page.goto(manager.url);
    const src = (await manager.client.networkStatus('rcn')).relays.find((r) => r.name === 'e-tokyo')!.status!.orders.find((o) => o.id === 'erp')!;
    const row = page.locator('#network-orders tbody tr', { hasText: 'e-tokyo' }).filter({ hasText: 'source' });
    await row.waitFor({ timeout: 15_000 });
    const cells = await row.locator('td').allTextContents();
    assert.deepEqual(cells.slice(0, 6), ['rcn', 'e-tokyo', 'erp', 'source', 'e-tokyo → e-sapporo', 'active']);
    assert.equal(cells[6], String(src.generated), '732 as collected');
    assert.equal(cells[8], String(src.deleted), '734 as collected');
    await page.locator('#network-pairs tbody tr', { hasText: 'db1-far' }).filter({ hasText: 'e-tokyo' }).filter({ hasText: 'suspended' }).waitFor({ timeout: 15_000 });
    assert.equal(await page.locator('#network-relays tbody tr').count(), 3);
    assert.equal(await page.locator('#networks-empty').isHidden(), true);
    await page.locator('#events li[data-kind="edge-pair-state"]').first().waitFor({ timeout: 15_000 });
    // The history the manager kept, drawn: the source edge's backlog and the target edge's reflection delay.
    await page.locator('#network-charts .chart .title', { hasText: 'in flight erp at e-tokyo (rcn): 0.00 entries' }).waitFor({ timeout: 15_000 });
    await page.locator('#network-charts .chart .title', { hasText: 'reflection delay erp at e-sapporo (rcn)' }).waitFor({ timeout: 15_000 });
    assert.ok(Number(await page.locator('#network-charts .chart polyline').first().evaluate((e) => e.getAttribute('points')?.split(' ').length)) >= 2, 'a line of several samples');
    await fsp.mkdir(path.join(repoRoot, 'var', 'test-output'), { recursive: true });
    await page.locator('#networks-section').screenshot({ path: path.join(repoRoot, 'var', 'test-output', 'manager-console-networks.png') });
    assert.deepEqual(pageErrors, []);
  } finally {
    await browser.close();
  }
});

test('a relay that lost its tables gets them from the manager again; while it is down an alert names it', { timeout: 60_000 }, async () => {
  const record = await manager.client.getNetwork('rcn');
  const core = rcn.relay('c-1');
  await core.kill();
  const down = await manager.waitAlert('an alert for the dead core', (a) => a.kind === 'relay-unreachable' && a.subject === 'c-1');
  assert.equal(down.severity, 'critical');
  assert.match(down.message, /^core c-1 of network rcn does not answer the manager/);
  const listedAlerts = await cli(['--manager', manager.url, 'manager', 'alerts']);
  assert.match(listedAlerts.stdout, /relay-unreachable/);
  await fsp.rm(core.spec.dataDir, { recursive: true, force: true });
  await rcn.restartRelay('c-1');
  await waitFor('the core\'s alert closed', async () => (await manager.client.listAlerts()).every((a) => a.subject !== 'c-1'), { timeoutMs: 20_000, intervalMs: 200 });
  await waitFor('the manager to apply the network to the restarted core', async () =>
    (await rcn.relay('c-1').api.info()).configVersion === record.config!.version, { timeoutMs: 20_000, intervalMs: 200 });
  const reapplied = await manager.waitEvent('the re-apply in the history', (e) => e.kind === 'network-reapplied' && e.subject === 'rcn');
  assert.match(reapplied.reason, /c-1 ran another version/);
  // The relay's new process is read from its first event on.
  await waitFor('the restarted core\'s start in the history', async () =>
    (await manager.client.listEvents({ limit: 10_000 })).filter((e) => e.kind === 'relay-started' && e.node === 'c-1').length === 2, { timeoutMs: 10_000, intervalMs: 200 });
  const listed = await cli(['--manager', manager.url, 'network', 'list']);
  assert.match(listed.stdout, new RegExp(`rcn\\s+${record.config!.version}\\s+3\\s+1`));
});

/** Relay events in the history, by relay, process and id: each must be there once. */
function duplicateRelayEvents(events: Array<{ details?: Record<string, unknown> }>): string[] {
  const seen = new Map<string, number>();
  for (const e of events) {
    if (e.details?.relayEventId === undefined) continue;
    const key = `${String(e.details.relay)}/${String(e.details.relayTime)}/${String(e.details.relayEventId)}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return [...seen].filter(([, n]) => n > 1).map(([k]) => k);
}

test('two managers on etcd: only the leader applies and collects, and a new leader goes on without taking an event twice', { timeout: 90_000 }, async () => {
  await manager.stop(); // the embedded manager of the tests above collects no more
  etcd = await EtcdProcess.start(path.join(dir, 'etcd'));
  const args = ['--store', 'etcd', '--etcd', etcd.url, '--leader-ttl', '3', '--sample-interval', '500ms'];
  pairOfManagers = [await ManagerProcess.start({ name: 'm1', dir, args }), await ManagerProcess.start({ name: 'm2', dir, args })];
  const leaderOf = async (): Promise<ManagerProcess | undefined> => {
    const infos = await Promise.all(pairOfManagers.map((m) => m.client.info().catch(() => undefined)));
    const leaders = pairOfManagers.filter((_, i) => infos[i]?.leader === true);
    return leaders.length === 1 ? leaders[0] : undefined;
  };
  const leader = await waitFor('one leader', leaderOf, { timeoutMs: 20_000, intervalMs: 100 });
  const follower = pairOfManagers.find((m) => m !== leader)!;
  // Given to the follower: forwarded to the leader, which applies it.
  const applied = await cli(['--manager', follower.url, 'network', 'apply', rcn.file]);
  assert.equal(applied.code, 0, applied.stderr);
  assert.ok((await leader.client.listEvents({ limit: 10_000 })).some((e) => e.kind === 'network-added' && e.subject === 'rcn'));
  // The follower reads what the leader collected from the store.
  const collectedOnce = await waitFor('the leader\'s collection, read at the follower', async () => {
    const doc = await follower.client.networkStatus('rcn');
    return doc.collectedAt !== null && doc.relays.every((r) => r.reachable) ? doc : undefined;
  }, { timeoutMs: 15_000, intervalMs: 200 });
  await waitFor('two more collections', async () => {
    const doc = await follower.client.networkStatus('rcn');
    return Date.parse(doc.collectedAt!) > Date.parse(collectedOnce.collectedAt!) + 1000;
  }, { timeoutMs: 15_000, intervalMs: 200 });
  const before = await follower.client.listEvents({ limit: 10_000 });
  assert.ok(before.some((e) => e.kind === 'relay-started' && e.node === 'e-tokyo'), 'the relays\' events were taken');
  assert.deepEqual(duplicateRelayEvents(before), []);
  // A follower that tried to collect would fail to write (etcd takes only the leader's writes) and log it.
  assert.doesNotMatch(await fsp.readFile(follower.logFile, 'utf8'), /collecting the network failed/);

  await leader.kill();
  await waitFor('the other manager to lead', async () => (await follower.client.info()).leader, { timeoutMs: 15_000, intervalMs: 100 });
  const resync = await cli(['--node', rcn.cluster.node('tokyo').apiUrl, 'pair', 'resync', 'db1-far']);
  assert.equal(resync.code, 0, resync.stderr);
  await follower.waitEvent('the resync\'s transition at the edge, collected by the new leader', (e) =>
    e.kind === 'edge-pair-state' && e.node === 'e-tokyo' && e.subject === 'db1-far' && e.details?.from === 'suspended');
  const afterLead = await follower.client.networkStatus('rcn');
  await waitFor('another collection by the new leader', async () =>
    Date.parse((await follower.client.networkStatus('rcn')).collectedAt!) > Date.parse(afterLead.collectedAt!), { timeoutMs: 15_000, intervalMs: 200 });
  assert.deepEqual(duplicateRelayEvents(await follower.client.listEvents({ limit: 10_000 })), [], 'no relay event twice across the change of leader');
});

test('network failover --manager (§6.9): the manager asks the order\'s target edge, the outcome is in its history, and the target takes over with every acknowledged write', { timeout: 90_000 }, async () => {
  // The manager on etcd that leads since the test above.
  const leader = await waitFor('the leading manager', async () => {
    for (const m of pairOfManagers) if ((await m.client.info().catch(() => undefined))?.leader === true) return m;
    return undefined;
  }, { timeoutMs: 15_000, intervalMs: 100 });
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
  const client = await rcn.cluster.client('tokyo', 'db1');
  const written = new Map<number, Buffer>();
  for (let i = 0; i < 32; i++) {
    const data = randomBytes(4096);
    await client.write(i * 65536, data);
    written.set(i * 65536, data);
  }
  await client.flush();
  const held = await rcn.order('e-tokyo', 'erp', 'source');
  await rcn.cluster.kill('tokyo');

  const unknown = await cli(['--manager', leader.url, 'network', 'failover', 'rcn', '--order', 'nope']);
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stderr, /network rcn has no order nope/);
  assert.match(unknown.stderr, /its orders: erp/);

  const failover = await cli(['--manager', leader.url, 'network', 'failover', 'rcn', '--order', 'erp', '--timeout', '20s', '--json']);
  assert.equal(failover.code, 0, failover.stderr);
  const result = JSON.parse(failover.stdout) as { network: string; edge: string; highWaterMark: number | null; reflected: number; missing: number };
  assert.equal(result.network, 'rcn');
  assert.equal(result.edge, 'e-sapporo');
  assert.equal(result.highWaterMark, held.generated, 'the source edge answered with its last number');
  assert.equal(result.reflected, held.generated);
  assert.equal(result.missing, 0);
  const event = await leader.waitEvent('the failover in the history', (e) => e.kind === 'network-failover' && e.subject === 'erp');
  assert.equal(event.node, 'e-sapporo');
  assert.match(event.reason, new RegExp(`order erp of network rcn stopped at e-sapporo \\(§6\\.9\\): reflected through ${held.generated}; high-water mark ${held.generated}, 0 missing`));

  const takeover = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far']);
  assert.equal(takeover.code, 0, takeover.stderr);
  const reader = await rcn.cluster.client('sapporo', 'db1');
  for (const [offset, data] of written) assert.deepEqual(await reader.read(offset, 4096), data, `the write at ${offset} is at the target`);
  await reader.disconnect();

  // Failback through the manager (E-22): the target edge lets sapporo reach tokyo again; recorded once.
  const failback = await cli(['--manager', leader.url, 'network', 'failback', 'rcn', '--order', 'erp', '--json']);
  assert.equal(failback.code, 0, failback.stderr);
  assert.deepEqual(JSON.parse(failback.stdout), { order: 'erp', edge: 'e-sapporo', released: true, pairs: ['db1-far'], network: 'rcn' });
  const back = await leader.waitEvent('the failback in the history', (e) => e.kind === 'network-failback' && e.subject === 'erp');
  assert.match(back.reason, /order erp of network rcn: the storages behind e-sapporo reach e-tokyo's again \(pairs db1-far\)/);
  const again = await cli(['--manager', leader.url, 'network', 'failback', 'rcn', '--order', 'erp']);
  assert.match(again.stdout, /order erp had not failed over at e-sapporo/);
});
