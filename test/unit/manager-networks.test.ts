// The networks the manager keeps, without relays: the PUT body is checked (schema, YAML, the network
// file's own validation, its name against the URL's) with errors that say what to fix; a network
// whose relays are down is kept with the reason it is not applied; only the leading manager
// collects, and a relay that stays unreachable is one event, not one per collection; removing a
// network removes what was collected with it. Over the embedded (level) store.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import Ajv from 'ajv';
import { systemClock } from '../../src/common/clock';
import { TricopyError } from '../../src/common/errors';
import type { RelayOrderStatus } from '../../src/contracts/network';
import { createLogger } from '../../src/common/log';
import { AlertBook } from '../../src/manager/alerts';
import type { ManagerContext } from '../../src/manager/context';
import { EventHistory } from '../../src/manager/history';
import { ClusterModel } from '../../src/manager/model';
import { putNetworkBody } from '../../src/manager/network-api';
import { ManagerNetworks, networkFromRequest } from '../../src/manager/networks';
import { ManagerStore } from '../../src/manager/store/collections';
import { LevelKv } from '../../src/manager/store/level-kv';
import { Webhooks } from '../../src/manager/webhooks';
import { Writer } from '../../src/manager/writer';
import { freePort } from '../support/tools';

const fileText = (name: string, edgeA: string, edgeB: string, core: string): string => [
  `name: ${name}`,
  'edges:',
  `  e-tokyo: { api: ${edgeA} }`,
  `  e-sapporo: { api: ${edgeB} }`,
  'cores:',
  `  c-1: { api: ${core} }`,
  'links: [[e-tokyo, c-1], [c-1, e-sapporo]]',
  'orders:',
  '  erp: { from: e-tokyo, to: e-sapporo }',
  '',
].join('\n');

function failure(err: unknown, code: string, message: RegExp, hint?: RegExp): boolean {
  assert.ok(err instanceof TricopyError, `a TricopyError, not ${String(err)}`);
  assert.equal(err.code, code);
  assert.match(err.message, message);
  if (hint) assert.match(err.hint ?? '', hint);
  return true;
}

test('the PUT body: a JSON object with the file as text, nothing else', () => {
  const validate = new Ajv().compile(putNetworkBody);
  assert.equal(validate({ text: 'name: rcn' }), true);
  assert.equal(validate({}), false, 'text is required');
  assert.equal(validate({ text: '' }), false, 'an empty file is refused');
  assert.equal(validate({ text: 'name: rcn', apply: true }), false, 'unknown keys are refused');
  assert.equal(validate({ text: 42 }), false);
});

test('the network file in a PUT is checked like network apply checks it, and must carry the URL\'s name', () => {
  const ok = networkFromRequest('rcn', { text: fileText('rcn', 'http://127.0.0.1:7831', 'http://127.0.0.1:7851', 'http://127.0.0.1:7841') });
  assert.deepEqual(Object.keys(ok.edges), ['e-tokyo', 'e-sapporo']);
  assert.deepEqual(ok.links, [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']]);
  assert.throws(() => networkFromRequest('rcn', { text: 'name: [rcn' }), (err) => failure(err, 'invalid-argument', /network rcn: the file is not valid YAML/));
  assert.throws(() => networkFromRequest('other', { text: fileText('rcn', 'http://127.0.0.1:7831', 'http://127.0.0.1:7851', 'http://127.0.0.1:7841') }),
    (err) => failure(err, 'invalid-argument', /network other: the file is network rcn/, /send it as network rcn, or change its "name" to other/));
  const badLink = fileText('rcn', 'http://127.0.0.1:7831', 'http://127.0.0.1:7851', 'http://127.0.0.1:7841').replace('[c-1, e-sapporo]', '[c-9, e-sapporo]');
  assert.throws(() => networkFromRequest('rcn', { text: badLink }),
    (err) => failure(err, 'invalid-argument', /network rcn: link \[c-9, e-sapporo\]: "c-9" is neither an edge nor a core/, /relays: e-tokyo, e-sapporo, c-1/));
  const noPath = fileText('rcn', 'http://127.0.0.1:7831', 'http://127.0.0.1:7851', 'http://127.0.0.1:7841').replace('links: [[e-tokyo, c-1], [c-1, e-sapporo]]', 'links: [[e-tokyo, c-1]]');
  assert.throws(() => networkFromRequest('rcn', { text: noPath }), (err) => failure(err, 'invalid-argument', /order erp: no path from e-tokyo to e-sapporo/, /add links/));
  assert.throws(() => networkFromRequest('rcn', { text: 'name: rcn\nedges: {}\n' }), (err) => failure(err, 'invalid-argument', /"edges" is empty/));
});

/** The parts of a manager that ManagerNetworks uses, over a store; `leading` says whether it leads. */
async function managerContext(kv: LevelKv, leading: () => boolean, webhooks?: Webhooks): Promise<{
  ctx: ManagerContext; store: ManagerStore; history: EventHistory; alerts: AlertBook; writer: Writer;
}> {
  const store = new ManagerStore(kv);
  const log = createLogger('silent');
  const history = new EventHistory(store, systemClock);
  const alerts = new AlertBook(store, systemClock);
  const model = new ClusterModel(store, systemClock);
  await history.load();
  const writer = new Writer(store, history, alerts, webhooks ?? new Webhooks([], log), () => 'm', () => model.load());
  const ctx = { store, writer, history, model, alerts, clock: systemClock, log, leadership: { isLeader: leading } } as unknown as ManagerContext;
  return { ctx, store, history, alerts, writer };
}

test('kept while its relays are down, collected only while leading, one event per relay that stops answering, removed with what was collected', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mnet-'));
  const kv = await LevelKv.open(path.join(dir, 'store'));
  try {
    let leading = false;
    const { ctx, store, history, alerts } = await managerContext(kv, () => leading);
    const networks = new ManagerNetworks(ctx);
    const dead = await Promise.all([freePort(), freePort(), freePort()]).then((ports) => ports.map((p) => `http://127.0.0.1:${p}`));
    const text = fileText('rcn', dead[0]!, dead[1]!, dead[2]!);

    const record = await networks.put('rcn', { text });
    assert.equal(record.config, null, 'nothing could be applied');
    assert.match(record.applyError ?? '', /cannot reach relay at http:\/\/127\.0\.0\.1:\d+/);
    assert.equal((await networks.list()).length, 1, 'but the master copy is kept');
    assert.equal((await networks.get('rcn')).text, text);
    await assert.rejects(networks.get('nope'), (err) => failure(err, 'not-found', /keeps no network nope/, /network apply FILE --manager/));

    const before = await networks.status('rcn');
    assert.equal(before.collectedAt, null);
    assert.deepEqual(before.relays.map((r) => [r.name, r.role, r.reachable]), [['e-tokyo', 'edge', false], ['e-sapporo', 'edge', false], ['c-1', 'core', false]]);

    await networks.collectAll();
    assert.equal(await store.getNetworkStatus('rcn'), undefined, 'a manager that does not lead collects nothing');

    leading = true;
    await networks.collectAll();
    await networks.collectAll();
    const collected = await networks.status('rcn');
    assert.notEqual(collected.collectedAt, null);
    assert.ok(collected.relays.every((r) => !r.reachable && /cannot reach relay/.test(r.error ?? '')));
    const events = await history.query({});
    const unreachable = events.filter((e) => e.kind === 'relay-unreachable');
    assert.deepEqual(unreachable.map((e) => e.node).sort(), ['c-1', 'e-sapporo', 'e-tokyo'], 'one event per relay, under its name, not one per collection');
    assert.equal(events.filter((e) => e.kind === 'network-added' && e.subject === 'rcn').length, 1);
    const relayAlerts = alerts.activeAlerts().filter((a) => a.kind === 'relay-unreachable');
    assert.deepEqual(relayAlerts.map((a) => a.subject).sort(), ['c-1', 'e-sapporo', 'e-tokyo'], 'one alert per relay that does not answer, updated, not opened again');
    assert.ok(relayAlerts.every((a) => a.severity === 'critical' && /of network rcn does not answer the manager/.test(a.message)));

    await networks.remove('rcn');
    assert.deepEqual(alerts.activeAlerts(), [], 'a network no longer kept leaves no alert open');
    assert.deepEqual(await networks.list(), []);
    assert.equal(await store.getNetworkStatus('rcn'), undefined);
    assert.equal(await store.getRelayCursor('rcn', 'e-tokyo'), undefined);
  } finally {
    await kv.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

/** A relay that answers the manager's collection with a status the test sets. */
async function fakeRelay(name: string, role: 'edge' | 'core'): Promise<{ url: string; orders: RelayOrderStatus[]; down: boolean; close: () => Promise<void> }> {
  const relay = { url: '', orders: [] as RelayOrderStatus[], down: false, close: async (): Promise<void> => undefined };
  const server = http.createServer((req, res) => {
    if (relay.down) { req.socket.destroy(); return; }
    const info = { name, role, version: 'test', listen: { host: '127.0.0.1', port: 1 }, apiPort: 1, dataDir: '/x', startedAt: 'boot-1', network: 'rcn', configVersion: null };
    const status = { name, role, network: 'rcn', configVersion: null, links: [], orders: relay.orders, pairs: [], lastRefusal: null,
      counters: { entriesForwarded: 0, bytesForwarded: 0, bytesSent: 0, entriesDropped: 0, refusedConnections: 0, refusedRequests: 0 } };
    const body = req.url === '/v1/relay' ? info : req.url === '/v1/status' ? status : req.url?.startsWith('/v1/events') ? { events: [] } : null;
    res.writeHead(body === null ? 404 : 200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body ?? { error: { code: 'not-found', message: req.url } }));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  relay.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  relay.close = () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); });
  return relay;
}

function order(side: 'source' | 'target', state: RelayOrderStatus['state'], reason: string): RelayOrderStatus {
  return {
    id: 'erp', side, from: 'e-tokyo', to: 'e-sapporo', state, generated: 120, reflected: 100, deleted: 100, inFlight: 20,
    log: { entries: 0, bytes: 0, capacityBytes: 1 }, ackDelayMs: null, reflectionDelayMs: null, retransmissions: 7, delayedAcks: 0, reason,
  };
}

test('alerts from a collection: an order in Failure Suspend at an edge, and a relay that stops answering; each closed when it is healthy again', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mnet-alerts-'));
  const kv = await LevelKv.open(path.join(dir, 'store'));
  const relays = await Promise.all([fakeRelay('e-tokyo', 'edge'), fakeRelay('e-sapporo', 'edge'), fakeRelay('c-1', 'core')]);
  const [tokyo, sapporo, core] = relays as [Awaited<ReturnType<typeof fakeRelay>>, Awaited<ReturnType<typeof fakeRelay>>, Awaited<ReturnType<typeof fakeRelay>>];
  try {
    const notified: string[] = [];
    const webhooks = { notify: (n: { type: string; alert: { kind: string } }) => notified.push(`${n.type} ${n.alert.kind}`) } as unknown as Webhooks;
    const { ctx, store, writer, alerts } = await managerContext(kv, () => true, webhooks);
    const networks = new ManagerNetworks(ctx);
    const now = new Date().toISOString();
    // Stored as applied (by an earlier leader), so a collection only reads.
    await writer.run(async (tx) => {
      tx.ops.push(store.putNetwork({ name: 'rcn', text: fileText('rcn', tokyo.url, sapporo.url, core.url), storedAt: now, updatedAt: now, config: null, appliedAt: now, applyError: null }));
    });

    tokyo.orders = [order('source', 'active', '')];
    sapporo.orders = [order('target', 'active', '')];
    await networks.collectAll();
    assert.deepEqual(alerts.activeAlerts(), [], 'a healthy network opens no alert');

    tokyo.orders = [order('source', 'failure-suspend', 'no progress for 120 s (retransmission exhausted)')];
    await networks.collectAll();
    await networks.collectAll();
    const [suspended, ...more] = alerts.activeAlerts();
    assert.deepEqual(more, [], 'one alert per order, updated by the next collection');
    assert.equal(suspended!.kind, 'order-failure-suspend');
    assert.equal(suspended!.severity, 'critical');
    assert.equal(suspended!.reportedBy, 'e-tokyo');
    assert.match(suspended!.message, /^order erp of network rcn is in Failure Suspend at e-tokyo \(source: no progress for 120 s \(retransmission exhausted\)\); 20 entries not reflected, 120 numbered: .*resync/);

    sapporo.down = true;
    await networks.collectAll();
    assert.deepEqual(alerts.activeAlerts().map((a) => a.kind).sort(), ['order-failure-suspend', 'relay-unreachable']);
    assert.match(alerts.activeAlerts().find((a) => a.kind === 'relay-unreachable')!.message, /^edge e-sapporo of network rcn does not answer the manager/);

    tokyo.down = true;
    sapporo.down = false;
    sapporo.orders = [order('target', 'active', '')];
    tokyo.orders = [order('source', 'active', '')];
    await networks.collectAll();
    assert.deepEqual(alerts.activeAlerts().map((a) => `${a.kind} ${a.subject}`).sort(), ['order-failure-suspend erp', 'relay-unreachable e-tokyo'],
      'the order\'s alert stays while the edge that reported it does not answer; e-sapporo\'s is closed');

    tokyo.down = false;
    await networks.collectAll();
    assert.deepEqual(alerts.activeAlerts(), [], 'both closed once every edge answers and none reports Failure Suspend');
    // Every collection left a sample per order and edge that answered (kept: all are recent).
    const samples = await networks.samples('rcn', 'erp', 0);
    assert.deepEqual(samples.map((s) => `${s.edge}/${s.side}/${s.state}`), [
      'e-sapporo/target/active', 'e-sapporo/target/active', 'e-sapporo/target/active', 'e-sapporo/target/active', 'e-sapporo/target/active',
      'e-tokyo/source/active', 'e-tokyo/source/failure-suspend', 'e-tokyo/source/failure-suspend', 'e-tokyo/source/failure-suspend', 'e-tokyo/source/active',
    ], 'per edge and side, oldest first; none for a collection the edge did not answer');
    assert.equal(samples[5]!.generated, 120);
    assert.equal(samples[5]!.inFlight, 20);
    assert.deepEqual(await networks.samples('rcn', 'other', 0), []);
    await networks.remove('rcn');
    assert.deepEqual(await store.listNetworkSamples('rcn'), [], 'removed with the network');
    assert.deepEqual(notified, ['alert-opened order-failure-suspend', 'alert-updated order-failure-suspend',
      'alert-opened relay-unreachable', 'alert-updated order-failure-suspend', // e-sapporo down
      'alert-opened relay-unreachable', 'alert-closed relay-unreachable', // e-tokyo down, e-sapporo back
      'alert-closed relay-unreachable', 'alert-closed order-failure-suspend'], 'the webhooks hear each change once stored');
    const closed = (await store.listAlerts()).filter((a) => a.kind === 'order-failure-suspend');
    assert.deepEqual(closed.map((a) => a.state), ['closed']);
    assert.match(closed[0]!.message, /cleared: neither edge of order erp \(e-tokyo, e-sapporo\) reports Failure Suspend/);
  } finally {
    await Promise.all(relays.map((r) => r.close()));
    await kv.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
