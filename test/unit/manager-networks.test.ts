// The networks the manager keeps, without relays: the PUT body is checked (schema, YAML, the network
// file's own validation, its name against the URL's) with errors that say what to fix; a network
// whose relays are down is kept with the reason it is not applied; only the leading manager
// collects, and a relay that stays unreachable is one event, not one per collection; removing a
// network removes what was collected with it. Over the embedded (level) store.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import Ajv from 'ajv';
import { systemClock } from '../../src/common/clock';
import { TricopyError } from '../../src/common/errors';
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

test('kept while its relays are down, collected only while leading, one event per relay that stops answering, removed with what was collected', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mnet-'));
  const kv = await LevelKv.open(path.join(dir, 'store'));
  try {
    const store = new ManagerStore(kv);
    const log = createLogger('silent');
    const history = new EventHistory(store, systemClock);
    const alerts = new AlertBook(store, systemClock);
    const model = new ClusterModel(store, systemClock);
    await history.load();
    const writer = new Writer(store, history, alerts, new Webhooks([], log), () => 'm', () => model.load());
    let leading = false;
    const leadership = { isLeader: () => leading };
    const ctx = { store, writer, history, model, clock: systemClock, log, leadership } as unknown as ManagerContext;
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

    await networks.remove('rcn');
    assert.deepEqual(await networks.list(), []);
    assert.equal(await store.getNetworkStatus('rcn'), undefined);
    assert.equal(await store.getRelayCursor('rcn', 'e-tokyo'), undefined);
  } finally {
    await kv.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
