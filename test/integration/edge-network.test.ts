// A sync pair through a remote copy network of real processes on loopback (spec 002): two storage
// nodes, a source edge, a core and a target edge. Writes are acknowledged by the source edge, carried
// hop by hop and applied in order at the target; the secondary equals the primary once drained.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { cli, killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { runOk, sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('edge');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

const fast = { retransmit: { timeout: '500ms', max: '2s', giveUp: '60s' } };

test('a sync pair through edge, core and edge: writes acknowledged at the source edge, the secondary equals the primary once drained', async () => {
  const rcn = await Rcn.create(path.join(dir, 'basic'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', ...fast } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 64 * MiB);
    const seed = await rcn.cluster.client('tokyo', 'db1');
    await seed.write(0, randomBytes(MiB));
    await seed.disconnect();
    const out = await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    assert.match(out, /created pair db1-far/);
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    // A real NBD client writes through the pair (qemu-io), then the JS client.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 2M', '-c', 'flush', rcn.cluster.node('tokyo').nbdUri('db1')]);
    const client = await rcn.cluster.client('tokyo', 'db1');
    for (let i = 0; i < 200; i++) await client.write((i % 100) * 65536 + 4096, randomBytes(4096));
    await client.flush();
    await client.disconnect();
    const src = await rcn.drained('erp');
    assert.ok(src.generated > 200, `732 = ${src.generated}`);
    assert.equal(src.deleted, src.generated, '734 = 732 once drained');
    const tgt = await rcn.order('e-sapporo', 'erp', 'target');
    assert.equal(tgt.reflected, src.generated, '733 = 732 once drained');
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    const core = await rcn.status('c-1');
    assert.ok(core.counters.entriesForwarded > src.generated, `the core carried the entries and their answers (${core.counters.entriesForwarded})`);
    const edge = await rcn.status('e-tokyo');
    assert.deepEqual(edge.pairs.map((p) => [p.name, p.side, p.order, p.state]), [['db1-far', 'source', 'erp', 'duplex']]);
    const primary = await rcn.cluster.pairStatus('tokyo', 'db1-far');
    assert.equal(primary.peer.node, 'sapporo', 'the primary sees its peer, not the edge');
    assert.equal(primary.peer.replPort, rcn.relay('e-tokyo').ports.listenPort, 'and reaches it at its edge');
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
  } finally {
    await rcn.stopAll();
  }
});

test('network apply refuses a file with mistakes and says what to fix; network status shows every relay with its counters', async () => {
  const rcn = await Rcn.create(path.join(dir, 'cli'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } },
  });
  try {
    const bad = path.join(dir, 'bad.yaml');
    await fsp.writeFile(bad, 'name: rcn\nedges:\n  e-tokyo: { api: http://127.0.0.1:1 }\nlinks: [[e-tokyo, c-9]]\n');
    const refused = await cli(['network', 'apply', bad]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /error: .*bad\.yaml: link \[e-tokyo, c-9\]: "c-9" is neither an edge nor a core/);
    assert.match(refused.stderr, /hint: relays: e-tokyo/);
    // A relay that is not the one the file names is refused before anything is changed.
    const wrong = path.join(dir, 'wrong.yaml');
    await fsp.writeFile(wrong, (await fsp.readFile(await rcn.writeFile(), 'utf8')).replace('"e-sapporo": {', '"e-osaka": {').replace(/"e-sapporo"/g, '"e-osaka"'));
    const mismatch = await cli(['network', 'apply', wrong]);
    assert.equal(mismatch.code, 2, mismatch.stderr);
    assert.match(mismatch.stderr, /is named e-sapporo, but the network file calls it e-osaka/);
    await rcn.cluster.volume('sapporo', 'far1', 8 * MiB);
    await rcn.apply();
    // §9.50, §9.55: each edge presents the partner as a virtual storage under the partner's name, and
    // answers a configuration query with what the apply collected from the partner.
    const storages = await cli(['network', 'storages', rcn.file]);
    assert.equal(storages.code, 0, storages.stderr);
    assert.match(storages.stdout, /EDGE\s+VIRTUAL STORAGE \(WWN\)\s+PARTNER\s+PARTNER EDGE\s+FOR\s+ORDERS/);
    assert.match(storages.stdout, /e-tokyo\s+sapporo\s+sapporo\s+e-sapporo\s+tokyo\s+erp\s+tricopy \S+\s+1\s+8 ?MiB/);
    assert.match(storages.stdout, /e-sapporo\s+tokyo\s+tokyo\s+e-tokyo\s+sapporo\s+erp\s+tricopy \S+\s+0\s+0/);
    const query = await cli(['network', 'storages', rcn.file, '--edge', 'e-tokyo', '--storage', 'sapporo']);
    assert.equal(query.code, 0, query.stderr);
    assert.match(query.stdout, /virtual storage sapporo at e-tokyo answers as sapporo \(attached to e-sapporo; base variant\)/);
    assert.match(query.stdout, /far1\s+8 ?MiB/);
    const nobody = await cli(['network', 'storages', rcn.file, '--edge', 'e-tokyo', '--storage', 'tokyo']);
    assert.equal(nobody.code, 1, nobody.stderr);
    assert.match(nobody.stderr, /edge e-tokyo presents no virtual storage tokyo/);
    assert.match(nobody.stderr, /hint: it presents: sapporo/);
    assert.deepEqual((await rcn.relay('c-1').api.virtualStorages()).virtualStorages, [], 'a core presents none');
    await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex'); // the primary's last pair update is through
    await rcn.drained('erp');
    // Applied again, the tables hold what the nodes are now: sapporo has the pair's secondary volume too.
    await rcn.apply();
    const again = await rcn.relay('e-tokyo').api.virtualStorage('sapporo');
    assert.deepEqual(again.configuration?.volumes.map((v) => [v.name, v.sizeBytes]), [['db1', 16 * MiB], ['far1', 8 * MiB]]);
    assert.equal(again.configuration?.capacityBytes, 24 * MiB);
    const text = await cli(['network', 'status', rcn.file]);
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /edge e-tokyo \(network rcn/);
    assert.match(text.stdout, /core c-1/);
    assert.match(text.stdout, /ORDER\s+SIDE\s+FROM→TO\s+STATE\s+732\s+733\s+734/);
    assert.match(text.stdout, /erp\s+source\s+e-tokyo→e-sapporo\s+active\s+\d+\s+-\s+\d+\s+0/);
    assert.match(text.stdout, /db1-far\s+erp\s+source\s+tokyo→sapporo\s+duplex/);
    const json = await cli(['network', 'status', rcn.file, '--json']);
    const parsed = JSON.parse(json.stdout) as { relays: Array<{ name: string; orders: Array<{ id: string; side: string; generated: number; deleted: number; reflected: number }> }> };
    const src = parsed.relays.find((r) => r.name === 'e-tokyo')!.orders.find((o) => o.id === 'erp')!;
    const tgt = parsed.relays.find((r) => r.name === 'e-sapporo')!.orders.find((o) => o.id === 'erp')!;
    assert.ok(src.generated > 0 && src.generated === src.deleted && tgt.reflected === src.generated, '732 = 733 = 734 at rest');
    // The node knows the network it is attached to.
    const info = await cli(['--node', rcn.cluster.node('tokyo').apiUrl, 'pair', 'status', 'db1-far']);
    assert.match(info.stdout, /sapporo:db1/);
    const metrics = await rcn.relay('e-tokyo').api.metricsText();
    assert.match(metrics, new RegExp(`tricopy_rcn_generated\\{relay="e-tokyo",order="erp"\\} ${src.generated}`));
  } finally {
    await rcn.stopAll();
  }
});

test('two order-guarantee ids progress independently: one stalls at its target storage, the other drains (§9.23)', async () => {
  const rcn = await Rcn.create(path.join(dir, 'two'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo', kushiro: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' }, crm: { from: 'e-tokyo', to: 'e-sapporo' } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
    await rcn.cluster.volume('tokyo', 'crm1', 16 * MiB);
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.pairVia({ name: 'crm1-far', primary: 'tokyo', secondary: 'kushiro', volume: 'crm1', order: 'crm' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    await rcn.cluster.waitState('tokyo', 'crm1-far', 'duplex');
    await rcn.drained('erp');
    await rcn.drained('crm');
    await rcn.cluster.kill('kushiro');
    const db1 = await rcn.cluster.client('tokyo', 'db1');
    const crm1 = await rcn.cluster.client('tokyo', 'crm1');
    for (let i = 0; i < 50; i++) {
      await db1.write(i * 65536, randomBytes(4096));
      await crm1.write(i * 65536, randomBytes(4096));
    }
    const erp = await rcn.drained('erp');
    const crm = await rcn.order('e-tokyo', 'crm', 'source');
    assert.ok(crm.inFlight >= 50, `crm waits for its storage (${crm.inFlight} in flight) while erp drained (${erp.generated})`);
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
    await rcn.cluster.restart('kushiro');
    await rcn.drained('crm');
    await db1.disconnect();
    await crm1.disconnect();
    assert.equal(await sha256Export(rcn.cluster.node('kushiro').nbdUri('crm1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('crm1'), dir));
    const numbers = (await rcn.status('e-tokyo')).orders.filter((o) => o.side === 'source').map((o) => [o.id, o.generated > 50]);
    assert.deepEqual(numbers, [['crm', true], ['erp', true]], 'each id numbers its own entries');
  } finally {
    await rcn.stopAll();
  }
});

test('source-site failure (§6.9): the target edge has the source edge flush, applies up to its high-water mark, and the target takes over with every acknowledged write', async () => {
  const rcn = await Rcn.create(path.join(dir, 'failover'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']], proxied: [['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '30s', max: '30s', giveUp: '300s' }, failoverTimeout: '20s' } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    await rcn.drained('erp');
    // Writes the host saw acknowledged are still inside the network when the source site is lost.
    rcn.proxy('c-1', 'e-sapporo').cut();
    const client = await rcn.cluster.client('tokyo', 'db1');
    const written = new Map<number, Buffer>();
    for (let i = 0; i < 64; i++) {
      const data = randomBytes(4096);
      await client.write(i * 65536, data);
      written.set(i * 65536, data);
    }
    const held = await rcn.order('e-tokyo', 'erp', 'source');
    assert.ok(held.inFlight >= 64);
    await rcn.cluster.kill('tokyo');
    rcn.proxy('c-1', 'e-sapporo').restore();
    const failover = await cli(['network', 'failover', rcn.file, '--order', 'erp', '--json']);
    assert.equal(failover.code, 0, failover.stderr);
    const result = JSON.parse(failover.stdout) as { highWaterMark: number | null; reflected: number; missing: number };
    assert.equal(result.highWaterMark, held.generated, 'the SOK carries the source edge\'s last number');
    assert.equal(result.reflected, held.generated);
    assert.equal(result.missing, 0);
    assert.equal((await rcn.order('e-sapporo', 'erp', 'target')).state, 'failure-suspend');
    assert.equal((await rcn.order('e-tokyo', 'erp', 'source')).state, 'failure-suspend');
    const takeover = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far']);
    assert.equal(takeover.code, 0, takeover.stderr);
    const reader = await rcn.cluster.client('sapporo', 'db1');
    for (const [offset, data] of written) assert.deepEqual(await reader.read(offset, 4096), data, `the write at ${offset} is at the target`);
    await reader.write(0, Buffer.alloc(4096, 1)); // the target is writable now
    await reader.disconnect();
    // Once stopped, a second failover just reports where the order stopped.
    const again = await rcn.relay('e-sapporo').api.failover('erp', 1000);
    assert.equal(again.reflected, held.generated);
  } finally {
    await rcn.stopAll();
  }
});

test('failover when the source edge is unreachable: the target stops at the timeout and reports what it reflected (§9.42, E-20)', async () => {
  const rcn = await Rcn.create(path.join(dir, 'failover-lost'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    // The secondary is duplex too: the primary's last pair update has gone through the network.
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    const drained = await rcn.drained('erp');
    await rcn.cluster.kill('tokyo');
    await rcn.killRelay('e-tokyo');
    const t0 = Date.now();
    const result = await rcn.relay('e-sapporo').api.failover('erp', 2000);
    assert.ok(Date.now() - t0 >= 1900, 'it waited for the timeout');
    assert.equal(result.highWaterMark, null);
    assert.equal(result.reflected, drained.generated);
    assert.match(result.reason, /did not answer within 2000 ms/);
    await waitFor('takeover', async () => (await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'takeover', 'db1-far'])).code === 0);
  } finally {
    await rcn.stopAll();
  }
});

test('an async pair through the network: its journal batches are carried unnumbered (the primary orders them), the secondary catches up', async () => {
  const rcn = await Rcn.create(path.join(dir, 'async'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'log1', 16 * MiB);
    await rcn.pairVia({ name: 'log1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'log1', order: 'erp', mode: 'async' });
    await rcn.cluster.waitState('tokyo', 'log1-far', 'duplex');
    const client = await rcn.cluster.client('tokyo', 'log1');
    for (let i = 0; i < 100; i++) await client.write(i * 65536, randomBytes(8192));
    await client.disconnect();
    await waitFor('the async lag to drain', async () => (await rcn.cluster.node('tokyo').api.getGroup('log1-far')).lag.entries === 0 ? true : undefined, { timeoutMs: 60_000 });
    await rcn.drained('erp');
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('log1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('log1'), dir));
  } finally {
    await rcn.stopAll();
  }
});

test('a WAN link compressed with zstd and limited in bandwidth: the limit holds, compressible writes cross in a fraction of their bytes, the secondary equals the primary', async () => {
  const rcn = await Rcn.create(path.join(dir, 'shaped'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    linkExtra: { 'e-tokyo>c-1': { compress: 3, bandwidth: '16Mbit' } },
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', ...fast } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 64 * MiB);
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    await rcn.drained('erp');
    const client = await rcn.cluster.client('tokyo', 'db1');
    // Incompressible data: the link's 16 Mbit/s (2 MiB/s) is the ceiling, past one 256 KiB burst.
    const t0 = Date.now();
    for (let i = 0; i < 128; i++) await client.write(i * 65536, randomBytes(65536));
    await client.flush();
    await rcn.drained('erp');
    const randomMs = Date.now() - t0;
    assert.ok(randomMs >= 3000, `8 MiB of random data crossed a 16 Mbit/s link in ${randomMs} ms: the limit did not hold`);
    // Compressible data (rows of a table): zstd sends a fraction of it.
    const before = (await rcn.status('e-tokyo')).counters;
    const row = (i: number): string => `INSERT INTO orders (id, customer, state) VALUES (${i}, 'customer-${i % 97}', 'pending');\n`;
    const t1 = Date.now();
    for (let i = 0; i < 256; i++) {
      let text = '';
      for (let r = 0; text.length < 65536; r++) text += row(i * 1000 + r);
      await client.write(8 * MiB + i * 65536, Buffer.from(text.slice(0, 65536)));
    }
    await client.flush();
    await client.disconnect();
    await rcn.drained('erp');
    const textMs = Date.now() - t1;
    const after = (await rcn.status('e-tokyo')).counters;
    const forwarded = after.bytesForwarded - before.bytesForwarded;
    const sent = after.bytesSent - before.bytesSent;
    assert.ok(forwarded >= 16 * MiB, `the edge forwarded the 16 MiB written (${forwarded})`);
    assert.ok(sent < forwarded / 4, `compressed to ${sent} bytes of ${forwarded}`);
    console.log(`# shaped link: 8 MiB random in ${randomMs} ms; 16 MiB of table rows in ${textMs} ms, sent as ${(sent / MiB).toFixed(2)} MiB`);
    const status = await cli(['network', 'status', rcn.file]);
    assert.match(status.stdout, /sent compressed/);
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
  } finally {
    await rcn.stopAll();
  }
});
