// A real application through the loss of its site: PostgreSQL on ext4 on a sync-paired volume
// (fence data), attached with nbdfuse and a loop device, pgbench committing from several clients.
// The database server and the primary storage node are SIGKILLed together; after `pair takeover`
// the secondary's copy is attached the same way, and PostgreSQL recovers there with every
// transaction its clients saw commit and pgbench's balance invariants intact.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { detachAllDevices } from '../support/blockdev';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { PgbenchRun, bankState, clientRecord, pgbenchInit } from '../support/pgbench';
import { PostgresServer, killAllPostgres } from '../support/postgres';
import { newPostgresHost, recoveredPostgresHost } from '../support/postgres-host';
import { fetchMetrics, metricValue, run, tempDir } from '../support/tools';
import { waitFor, within } from '../support/wait';

const MiB = 1024 * 1024;
const clients = 4;
let dir: string;
let cluster: Cluster | undefined;
let bench: PgbenchRun | undefined;

before(async () => {
  dir = await tempDir('postgres');
  await fsp.chmod(dir, 0o755); // the postgres user reaches its sockets and data below
});

after(async () => {
  bench?.kill();
  await killAllPostgres();
  await detachAllDevices();
  await cluster?.stopAll();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Mounts and loop devices that still refer to this test's directory. */
async function leftovers(): Promise<string[]> {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').map((l) => l.split(' ')[4] ?? '').filter((m) => m.startsWith(dir));
  const loops = (await run('losetup', ['--list', '--noheadings', '--output', 'NAME,BACK-FILE'])).stdout.split('\n').filter((l) => l.includes(dir));
  return [...mounts, ...loops];
}

test('PostgreSQL on a sync pair: site lost under pgbench, takeover, recovery with every committed transaction', { timeout: 240_000 }, async (t) => {
  const started = Date.now();
  const phase = (what: string): void => t.diagnostic(`${((Date.now() - started) / 1000).toFixed(1)} s: ${what}`);
  cluster = await Cluster.create(path.join(dir, 'cluster'), ['tokyo', 'osaka']);
  await cluster.volume('tokyo', 'pg', 512 * MiB);
  await cluster.pair({ name: 'pg', primary: 'tokyo', secondary: 'osaka', volume: 'pg', mode: 'sync', fence: 'data' });
  await cluster.waitState('tokyo', 'pg', 'duplex');
  const tokyo = cluster.node('tokyo');
  const osaka = cluster.node('osaka');
  phase('sync pair duplex');

  // Site tokyo: the volume as a block device, ext4, a database cluster, pgbench.
  const { device: deviceA, pg: pgA } = await newPostgresHost(tokyo.nbdUri('pg'), path.join(dir, 'tokyo-host'));
  await pgbenchInit(pgA, 1, { record: true });
  phase(`ext4 on ${deviceA.loopDevice}, initdb and pgbench -i done`);
  const recordDir = path.join(dir, 'client');
  await fsp.mkdir(recordDir);
  const flushes = async (): Promise<number> =>
    metricValue(await fetchMetrics(tokyo.apiUrl), 'tricopy_nbd_requests_total', { volume: 'pg', op: 'flush', result: 'ok' });
  const flushesBefore = await flushes();
  bench = await PgbenchRun.start(pgA, { clients, seconds: 600, recordDir });
  await waitFor('pgbench committing for 3 s', () => {
    const p = bench!.progress();
    return p !== undefined && p.seconds >= 3 && p.tps > 0;
  }, { timeoutMs: 60_000, intervalMs: 20 });
  // The commits went through the whole chain: fsync → ext4 → loop → FUSE → NBD FLUSH at tokyo.
  const commitFlushes = (await flushes()) - flushesBefore;
  assert.ok(commitFlushes > 0, 'PostgreSQL commits reach tricopy as NBD flushes');
  assert.equal((await cluster.pairStatus('tokyo', 'pg')).code, 'PAIR', 'the pair is duplex while pgbench runs');

  // The site is lost: the database server and the storage node die together, mid-transaction.
  const pgPids = pgA.kill();
  tokyo.child.kill('SIGKILL');
  phase(`SIGKILL of postgres (${pgPids.length} processes) and of node tokyo at ${bench.progress()!.seconds} s of pgbench (${commitFlushes} NBD flushes so far)`);
  await within('node tokyo to die', tokyo.exit, 30_000);
  await PostgresServer.waitGone(pgPids);
  const outcome = await within('pgbench to end', bench.done, 60_000);
  assert.match(outcome.output, /aborted/, 'pgbench lost its server');
  // Tokyo's host cleans up what is left of the mounted filesystem.
  await deviceA.detach({ lazy: true });

  const takeover = await cli(['--node', osaka.apiUrl, 'pair', 'takeover', 'pg']);
  assert.equal(takeover.code, 0, takeover.stderr);
  assert.match(takeover.stdout, /SSWS/);
  phase(`takeover at osaka: ${takeover.stdout.trim()}`);

  // Site osaka: the same volume, checked and mounted; PostgreSQL recovers from its WAL.
  const { device: deviceB, pg: pgB, fsck } = await recoveredPostgresHost(osaka.nbdUri('pg'), path.join(dir, 'osaka-host'));
  t.diagnostic(`e2fsck -f -p exited ${fsck.code}: ${fsck.output.replace(/\n/g, ' | ')}`);
  assert.ok(fsck.code === 0 || fsck.code === 1, `e2fsck found nothing it could not fix unattended (exit ${fsck.code}): ${fsck.output}`);
  const recoveryLog = await pgB.logText();
  for (const line of recoveryLog.split('\n').filter((l) => /LOG: .*(recovery|redo|interrupted|ready to accept)/.test(l))) {
    t.diagnostic(`postgres: ${line.replace(/^.*LOG: +/, '')}`);
  }
  assert.match(recoveryLog, /database system was not properly shut down; automatic recovery in progress/, 'postgres ran crash recovery');
  phase('postgres recovered at osaka');

  const seen = await clientRecord(recordDir);
  const state = await bankState(pgB);
  const committedCount = [...seen.committed.values()].reduce((n, list) => n + list.length, 0);
  assert.ok(committedCount >= 20, `pgbench committed ${committedCount} transactions before the crash`);
  const missing: string[] = [];
  const invented: string[] = [];
  for (const [client, list] of seen.committed) {
    for (const n of list) if (!state.recorded.get(client)?.has(n)) missing.push(`${client}:${n}`);
  }
  // Beyond what clients saw commit, a client's transaction in flight at the crash may have committed.
  for (const [client, set] of state.recorded) {
    const committed = new Set(seen.committed.get(client) ?? []);
    for (const n of set) if (!committed.has(n) && n !== (seen.ended.get(client) ?? 0) + 1) invented.push(`${client}:${n}`);
  }
  assert.equal(missing.length, 0, `every transaction a client saw commit is in the recovered database; missing (client:n): ${missing.slice(0, 20).join(' ')}`);
  assert.equal(invented.length, 0, `the database holds no transaction that no client was running; found (client:n): ${invented.slice(0, 20).join(' ')}`);
  const recordedCount = [...state.recorded.values()].reduce((n, s) => n + s.size, 0);
  t.diagnostic(`${committedCount} transactions committed at the client; ${recordedCount} in the recovered database; ${state.historyRows} history rows`);
  assert.equal(state.branches, state.accounts, 'sum(bbalance) = sum(abalance)');
  assert.equal(state.tellers, state.accounts, 'sum(tbalance) = sum(abalance)');
  assert.equal(state.history, state.accounts, 'sum(delta) of history = sum(abalance)');
  assert.ok(state.historyRows >= committedCount, `${state.historyRows} history rows ≥ ${committedCount} committed transactions`);
  assert.equal(state.historyRows, recordedCount, 'each transaction wrote its history row and its record together');
  // The indexes agree with their tables (no torn or lost page).
  await pgB.query('CREATE EXTENSION amcheck');
  const [[checked]] = await pgB.query(`SELECT count(bt_index_check(c.oid, true)::text) FROM pg_class c
    WHERE c.relname IN ('pgbench_accounts_pkey', 'pgbench_branches_pkey', 'pgbench_tellers_pkey', 'tricopy_commits_pkey')`) as [[string]];
  assert.equal(checked, '4', 'amcheck checked the four indexes against their tables');
  // The application goes on at osaka.
  await pgB.query('INSERT INTO tricopy_commits VALUES (-1, 1)');
  await pgB.query('CHECKPOINT');
  await pgB.stop();
  await deviceB.detach();
  // Tokyo's filesystem was detached lazily: the kernel lets go of it and its loop device shortly.
  await waitFor('no mount or loop device of the test left', async () => (await leftovers()).length === 0, { timeoutMs: 30_000 })
    .catch(async (err: Error) => assert.fail(`${err.message}: ${(await leftovers()).join(', ')}`));
  phase('done');
});
