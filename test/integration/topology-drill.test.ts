// A DR drill without disruption (issue 12): PostgreSQL runs at tokyo on ext4 on a volume copied
// synchronously to osaka and asynchronously to sapporo, and keeps committing. `topology drill --at
// sapporo` exports a writable clone of sapporo's copy; PostgreSQL starts on the clone (crash
// recovery: the copy is a crash-consistent instant), passes its checks and writes, while the async
// copy stays duplex and keeps applying tokyo's writes. The clone survives a restart of sapporo's
// node. Ending the drill discards it; after draining, sapporo's copy equals tokyo's volume, untouched
// by the drill's writes; the node recorded the drill's start, end and duration as events.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { DrillView } from '../../src/contracts/clones';
import { NbdClient } from '../../src/nbd/client';
import { detachAllDevices } from '../support/blockdev';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { killAllPostgres } from '../support/postgres';
import { newPostgresHost, recoveredPostgresHost } from '../support/postgres-host';
import { sha256Export, tempDir } from '../support/tools';
import { groupLagEntries, sameEverywhere, topo } from '../support/topology';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;
let cluster: Cluster | undefined;
let writing = false;

before(async () => {
  dir = await tempDir('drill');
  await fsp.chmod(dir, 0o755); // the postgres user reaches its sockets and data below
});

after(async () => {
  writing = false;
  await killAllPostgres();
  await detachAllDevices();
  await cluster?.stopAll();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a drill at the async site: PostgreSQL on a writable clone passes its checks while the copy stays duplex and applying; the end leaves the copy unchanged',
  { timeout: 300_000 }, async (t) => {
    const started = Date.now();
    const phase = (what: string): void => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
    // The nodes' default peer timeout, not the suite's 1 s: a sync copy with fence data refuses host
    // writes once its link times out, and on a loaded 2-core machine a node can stall for a second
    // (initdb at tokyo then failed with EIO). The SIGKILL below is seen at once either way.
    cluster = await Cluster.create(path.join(dir, 'cluster'), ['tokyo', 'osaka', 'sapporo'], []);
    const file = await cluster.topologyFile({ name: 'erp', volumes: { pg: '256MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    await topo(['apply', file, '--wait']);
    const tokyo = cluster.node('tokyo');
    const copyPair = 'erp.pg.sapporo.tokyo';
    phase('topology applied, every copy duplex');

    // The application at tokyo: a committed table to check, and writes that go on during the drill.
    const { device: deviceA, pg: pgA } = await newPostgresHost(tokyo.nbdUri('pg'), path.join(dir, 'tokyo-host'));
    await pgA.query('CREATE TABLE orders (id int PRIMARY KEY, note text)');
    await pgA.query("INSERT INTO orders SELECT g, 'order ' || g FROM generate_series(1, 5000) g");
    await pgA.query('CREATE TABLE ticks (id serial PRIMARY KEY, at timestamptz DEFAULT now())');
    writing = true;
    let ticks = 0;
    const writer = (async () => {
      while (writing) {
        await pgA.query('INSERT INTO ticks DEFAULT VALUES');
        ticks++;
      }
    })();
    await waitFor('tokyo committing', () => ticks >= 5, { timeoutMs: 60_000, intervalMs: 20 });
    await waitFor('the async copy caught up', async () => (await groupLagEntries(cluster!, 'tokyo', 'erp')) === 0, { timeoutMs: 60_000 });
    phase('postgres at tokyo committed 5000 orders and keeps inserting ticks');

    const atPrimary = await cli(['topology', 'drill', file, '--at', 'tokyo']);
    assert.equal(atPrimary.code, 1);
    assert.match(atPrimary.stderr, /tokyo holds no copy of erp to drill on: hosts write pg there/, 'no drill where the application writes');
    const out = await topo(['drill', file, '--at', 'sapporo', '--name', 'drill1']);
    assert.match(out, /DR drill "drill1" of erp at sapporo/);
    assert.match(out, /copy erp\.pg\.sapporo\.tokyo at sapporo is PAIR/);
    assert.match(out, /clone pg@drill1 \(writable, throwaway\)/);
    const sapporo = cluster.node('sapporo');
    const appliedAtStart = (await sapporo.api.getGroup('erp')).appliedSeq;
    phase(`drill started: ${out.trim().split('\n').at(-1)}`);

    // The operator's host at sapporo: the clone as a block device, PostgreSQL on it.
    // The copy holds tokyo's postmaster.pid, naming a process that runs on this same test machine;
    // on another host it would name nothing. Removing it is a write to the clone like any other.
    const { device: deviceB, pg: pgB, fsck } = await recoveredPostgresHost(sapporo.nbdUri('pg@drill1'), path.join(dir, 'sapporo-host'),
      (mnt) => fsp.rm(path.join(mnt, 'pgdata', 'postmaster.pid'), { force: true }));
    // e2fsck replayed ext4's journal: the clone takes writes.
    assert.ok(fsck.code === 0 || fsck.code === 1, `e2fsck on the clone (exit ${fsck.code}): ${fsck.output}`);
    assert.match(await pgB.logText(), /database system was not properly shut down; automatic recovery in progress/, 'postgres recovered the crash-consistent copy');
    const [[orders]] = await pgB.query('SELECT count(*) FROM orders') as [[string]];
    assert.equal(orders, '5000', 'the committed orders are on the clone');
    const [[ticksOnClone]] = await pgB.query('SELECT count(*) FROM ticks') as [[string]];
    await pgB.query('CREATE EXTENSION amcheck');
    const [[checked]] = await pgB.query("SELECT count(bt_index_check(c.oid, true)::text) FROM pg_class c WHERE c.relname IN ('orders_pkey', 'ticks_pkey')") as [[string]];
    assert.equal(checked, '2', 'amcheck passed on both indexes');
    // The drill's own writes: they stay on the clone.
    await pgB.query("UPDATE orders SET note = 'drill' WHERE id <= 2500");
    await pgB.query('CREATE TABLE drill_only AS SELECT g FROM generate_series(1, 100000) g');
    await pgB.query('CHECKPOINT');
    phase(`postgres on the clone: 5000 orders, ${ticksOnClone} ticks, amcheck passed, drill writes done`);

    // Meanwhile the copy stays duplex and keeps applying tokyo's writes.
    await waitFor('sapporo applies tokyo\'s writes during the drill', async () => (await sapporo.api.getGroup('erp')).appliedSeq > appliedAtStart + 10, { timeoutMs: 60_000 });
    assert.equal((await cluster.pairStatus('sapporo', copyPair)).code, 'PAIR', 'the async copy stays duplex during the drill');
    assert.equal((await cluster.pairStatus('tokyo', 'erp.pg.osaka.tokyo')).code, 'PAIR', 'the sync copy stays duplex during the drill');
    const status = JSON.parse(await topo(['drill', file, '--status', '--json'])) as { drills: DrillView[] };
    assert.deepEqual(status.drills.map((d) => `${d.site} ${d.name} ${d.clones.map((c) => c.exportName).join(',')}`), ['sapporo drill1 pg@drill1']);
    assert.equal(status.drills[0]!.pairsNow.find((p) => p.name === copyPair)?.code, 'PAIR');
    assert.ok(status.drills[0]!.clones[0]!.writtenBytes > 0, 'the clone holds what the drill wrote');

    await pgB.stop();
    await deviceB.detach();

    // A SIGKILL and restart of sapporo's node during the drill keeps the clone as it was (and the copy catches up).
    const marker = randomBytes(64 * 1024);
    const raw = await NbdClient.connect({ host: '127.0.0.1', port: sapporo.ports.nbdPort, exportName: 'pg@drill1' });
    await raw.write(255 * MiB, marker); // past the end of anything ext4 allocated in 256 MiB of which ~60 MiB are used
    await raw.flush();
    await raw.disconnect();
    const cloneBefore = await sha256Export(sapporo.nbdUri('pg@drill1'), dir);
    // Events live in the node's memory: read the start before the node dies.
    const startedEvent = (await sapporo.api.listEvents(0)).find((e) => e.kind === 'drill-started' && e.subject === 'drill1');
    assert.ok(startedEvent, 'sapporo recorded the drill\'s start');
    assert.equal(startedEvent.details?.topology, 'erp');
    assert.deepEqual(startedEvent.details?.pairs, [{ name: copyPair, code: 'PAIR' }]);
    await cluster.kill('sapporo');
    await cluster.restart('sapporo');
    const cloneAfter = await sha256Export(cluster.node('sapporo').nbdUri('pg@drill1'), dir);
    assert.equal(cloneAfter, cloneBefore, 'the clone is kept across a node restart, byte for byte');
    await cluster.waitCode('sapporo', copyPair, 'PAIR');
    phase('sapporo killed (SIGKILL) and restarted; the clone is intact and the copy is duplex again');

    const ended = await topo(['drill', file, '--end', '--result', 'passed', '--note', 'orders and indexes checked']);
    assert.match(ended, /sapporo: the drill "drill1" ended after [\d.]+ s: clones and snapshots discarded/);
    const after = JSON.parse(await topo(['drill', file, '--status', '--json'])) as { drills: DrillView[] };
    assert.deepEqual(after.drills, []);
    const again = await cli(['topology', 'drill', file, '--end']);
    assert.equal(again.code, 1);
    assert.match(again.stderr, /no drill of erp runs/);
    assert.deepEqual((await cluster.node('sapporo').api.listVolumes()).map((v) => v.name), ['pg']);

    // Tokyo stops writing; after the drain sapporo's copy equals tokyo's volume: the drill's writes never reached it.
    writing = false;
    await writer;
    await pgA.stop();
    await deviceA.detach();
    await waitFor('sapporo applied everything', async () => (await groupLagEntries(cluster!, 'tokyo', 'erp')) === 0, { timeoutMs: 60_000 });
    await waitFor('sapporo applied every entry', async () => {
      const g = await cluster!.node('sapporo').api.getGroup('erp');
      return g.appliedSeq === g.receivedSeq;
    }, { timeoutMs: 60_000 });
    await sameEverywhere(cluster, 'pg', ['tokyo', 'osaka', 'sapporo'], dir);
    phase(`tokyo committed ${ticks} ticks in all; every site equal after the drain`);

    const events = await cluster.node('sapporo').api.listEvents(0);
    const endedEvent = events.find((e) => e.kind === 'drill-ended' && e.subject === 'drill1');
    assert.ok(endedEvent, `drill-ended at sapporo: ${events.map((e) => e.kind).join(' ')}`);
    assert.equal(endedEvent.details?.result, 'passed');
    assert.equal(endedEvent.details?.startedAt, startedEvent.details?.at, 'the end names the drill\'s start');
    assert.ok(Number(endedEvent.details?.durationMs) > 0, `duration recorded: ${String(endedEvent.details?.durationMs)} ms`);
    t.diagnostic(`drill-ended: ${endedEvent.reason}`);
  });
