// Snapshots and changed-block bitmaps on a real node with real NBD clients: 20 snapshots under
// writes each equal to their instant (sha256 via nbdcopy), one instant across two volumes with
// ordered writes in flight, rollback, space freed on delete, `nbdinfo --map=qemu:dirty-bitmap:…`
// listing exactly the written extents, an incremental backup that copies only them and restores
// byte-equal, and bitmaps that survive SIGKILL.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import { HttpNodeClient } from '../../src/node/api-client';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { OrderedWorkload, readContents } from '../support/ordered-writes';
import { run, runOk, sha256Export, sha256File, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const KiB = 1024;
let dir: string;
let node: NodeProcess;
let api: HttpNodeClient;

before(async () => {
  dir = await tempDir('snapshots');
  node = await NodeProcess.start({ name: 'snap', dataDir: path.join(dir, 'data') });
  api = new HttpNodeClient(node.apiUrl);
});

after(async () => {
  await node.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

function connect(exportName: string): Promise<NbdClient> {
  return NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName });
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

test('20 snapshots under writes: each exported snapshot equals its instant (sha256 via nbdcopy)', async () => {
  const size = 8 * MiB;
  await api.createVolume({ name: 'db1', size });
  const client = await connect('db1');
  const model = Buffer.alloc(size);
  let seed = 1;
  const random = (): number => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff;
  const expected: string[] = [];
  // A writer keeps writing while snapshots are taken; each snapshot's instant is recorded as the
  // model between two writes (the writer pauses only for the snapshot command to return).
  for (let i = 0; i < 20; i++) {
    for (let w = 0; w < 8; w++) {
      const offset = Math.floor(random() * (size - 128 * KiB));
      const data = randomBytes(4 * KiB + Math.floor(random() * 124 * KiB));
      await client.write(offset, data);
      data.copy(model, offset);
    }
    await api.createSnapshot({ name: `s${i}`, volumes: ['db1'] });
    expected.push(sha(model));
  }
  await client.disconnect();
  for (let i = 0; i < 20; i++) assert.equal(await sha256Export(node.nbdUri(`db1@s${i}`), dir), expected[i], `db1@s${i}`);
  const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', node.nbdUri('db1@s7')])).stdout) as { 'virtual-size': number };
  assert.equal(info['virtual-size'], size);
  const list = await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${node.ports.nbdPort}`]);
  for (let i = 0; i < 20; i++) assert.ok(list.stdout.includes(`"db1@s${i}"`), `db1@s${i} listed`);
  // Read-only: a write through the export is refused.
  const write = await run('qemu-io', ['-f', 'raw', '-c', 'write 0 4k', node.nbdUri('db1@s3')]);
  assert.match(write.stdout + write.stderr, /read-only|not permitted|Permission denied/i);
});

test('a snapshot of two volumes is one instant across both, with ordered writes in flight', async () => {
  await api.createVolume({ name: 'data', size: 4 * MiB });
  await api.createVolume({ name: 'log', size: 4 * MiB });
  const clients = [await connect('data'), await connect('log')];
  const workload = new OrderedWorkload(clients, { blockSize: 4096, blockCount: 1024, queueDepth: 8, flushEvery: 0, seed: 5 });
  const running = workload.run();
  await waitFor('writes', () => workload.ackedCount > 1000);
  const taken = await cli(['--node', node.apiUrl, 'snapshot', 'create', 'data', 'log', '--name', 'both']);
  assert.equal(taken.code, 0, taken.stderr);
  await waitFor('more writes', () => workload.ackedCount > 2000);
  workload.stop();
  await running;
  for (const c of clients) await c.disconnect();
  const snaps = [await connect('data@both'), await connect('log@both')];
  const contents = await readContents(snaps, 4096, 1024);
  for (const c of snaps) await c.disconnect();
  const required = workload.checkCrashConsistent(contents);
  assert.ok(required > 500, `the snapshot holds ${required} writes`);
  const views = await api.listSnapshots();
  assert.deepEqual(views.filter((s) => s.name === 'both').map((s) => s.group), ['both', 'both']);
});

test('rollback with the CLI, and deleting snapshots frees their space', async () => {
  await api.createVolume({ name: 'app', size: 16 * MiB });
  const uri = node.nbdUri('app');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x10 0 8M', uri]);
  const env = { TRICOPY_NODE: node.apiUrl };
  assert.equal((await cli(['snapshot', 'create', 'app', '--name', 'pre-upgrade'], env)).code, 0);
  const good = await sha256Export(uri, dir);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x66 2M 12M', uri]);
  assert.equal((await cli(['snapshot', 'create', 'app', '--name', 'after'], env)).code, 0);
  const after = await sha256Export(uri, dir);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x77 0 16M', uri]);
  const rolled = await cli(['snapshot', 'rollback', 'app', '--to', 'pre-upgrade'], env);
  assert.equal(rolled.code, 0, rolled.stderr);
  assert.equal(await sha256Export(uri, dir), good);
  assert.equal(await sha256Export(node.nbdUri('app@after'), dir), after, 'a newer snapshot keeps its image');
  const snapshotDir = path.join(dir, 'data', 'replica', 'volumes', 'app');
  const held = async (): Promise<number> => {
    let bytes = 0;
    for (const f of await fsp.readdir(snapshotDir)) if (f.startsWith('snap-')) bytes += (await fsp.stat(path.join(snapshotDir, f))).blocks * 512;
    return bytes;
  };
  const before = await held();
  assert.ok(before >= 16 * MiB, `snapshots hold ${before} bytes`);
  assert.equal((await cli(['snapshot', 'delete', 'app', '--name', 'after'], env)).code, 0);
  assert.equal(await sha256Export(node.nbdUri('app@pre-upgrade'), dir), good);
  assert.equal((await cli(['snapshot', 'delete', 'app', '--name', 'pre-upgrade'], env)).code, 0);
  assert.ok((await held()) < before / 10, 'space freed');
  const listed = await cli(['snapshot', 'list', 'app'], env);
  assert.match(listed.stdout, /no snapshots/);
});

test('nbdinfo --map=qemu:dirty-bitmap:nightly lists exactly the written extents', async () => {
  await api.createVolume({ name: 'cbt', size: 64 * MiB });
  const uri = node.nbdUri('cbt');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 64M', uri]); // before the bitmap: not recorded
  const env = { TRICOPY_NODE: node.apiUrl };
  assert.equal((await cli(['volume', 'bitmap', 'add', 'cbt', '--name', 'nightly'], env)).code, 0);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 2 1M 64k', '-c', 'write -P 3 10M 100k', '-c', 'write -z 40M 1M', '-c', 'write -P 4 63M 4k', uri]);
  const map = JSON.parse((await runOk('nbdinfo', ['--map=qemu:dirty-bitmap:nightly', '--json', uri])).stdout) as Array<{ offset: number; length: number; type: number; description: string }>;
  const dirty = map.filter((e) => e.type === 1).map((e) => [e.offset, e.length]);
  assert.deepEqual(dirty, [[MiB, 64 * KiB], [10 * MiB, 128 * KiB], [40 * MiB, MiB], [63 * MiB, 64 * KiB]]);
  assert.ok(map.some((e) => e.description === 'dirty'));
  assert.equal(map.reduce((s, e) => s + e.length, 0), 64 * MiB);
  // base:allocation is still there beside it.
  const alloc = JSON.parse((await runOk('nbdinfo', ['--map', '--json', uri])).stdout) as Array<{ type: number }>;
  assert.ok(alloc.length > 0);
  const listing = await runOk('nbdinfo', ['--list', '--content', `nbd://127.0.0.1:${node.ports.nbdPort}`]);
  assert.match(listing.stdout, /qemu:dirty-bitmap:nightly/);
  const shown = await cli(['volume', 'bitmap', 'list', 'cbt', '--json'], env);
  assert.equal((JSON.parse(shown.stdout) as Array<{ dirtyBytes: number }>)[0]!.dirtyBytes, (1 + 2 + 16 + 1) * 64 * KiB);
});

test('incremental backup from the bitmap copies only the changed extents and restores byte-equal', async () => {
  await api.createVolume({ name: 'prod', size: 128 * MiB });
  const uri = node.nbdUri('prod');
  const seedFile = path.join(dir, 'prod-seed.img');
  await fsp.writeFile(seedFile, Buffer.concat([randomBytes(48 * MiB), Buffer.alloc(32 * MiB), randomBytes(48 * MiB)]));
  await runOk('nbdcopy', [seedFile, uri]);
  await api.addBitmap('prod', 'backup');
  // Full backup: a snapshot that freezes the bitmap (and clears the live one) at its instant.
  await api.createSnapshot({ name: 'full', volumes: ['prod'], bitmaps: ['backup'] });
  const backupFile = path.join(dir, 'prod-backup.img');
  await runOk('nbdcopy', [node.nbdUri('prod@full'), backupFile]);
  await api.deleteSnapshot('prod', 'full');
  // Changes, ~1 %.
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 5M 300k', '-c', 'write -P 0x22 60M 512k', '-c', 'write -z 100M 64k', '-c', 'write -P 0x23 127M 4k', uri]);
  await api.createSnapshot({ name: 'inc1', volumes: ['prod'], bitmaps: ['backup'] });
  const map = JSON.parse((await runOk('nbdinfo', ['--map=qemu:dirty-bitmap:backup', '--json', node.nbdUri('prod@inc1')])).stdout) as Array<{ offset: number; length: number; type: number }>;
  const changed = map.filter((e) => e.type === 1);
  const changedBytes = changed.reduce((s, e) => s + e.length, 0);
  assert.ok(changedBytes > 0 && changedBytes <= 0.02 * 128 * MiB, `incremental is ${changedBytes} bytes`);
  // Apply only the changed extents of the snapshot to the backup file.
  const snap = await connect('prod@inc1');
  const handle = await fsp.open(backupFile, 'r+');
  let copied = 0;
  try {
    for (const e of changed) {
      const data = await snap.read(e.offset, e.length);
      await handle.write(data, 0, data.length, e.offset);
      copied += data.length;
    }
  } finally {
    await handle.close();
    await snap.disconnect();
  }
  assert.equal(copied, changedBytes);
  assert.equal(await sha256File(backupFile), await sha256Export(node.nbdUri('prod@inc1'), dir), 'full + incremental = the snapshot');
  // Restore to a new volume: byte-equal.
  await api.createVolume({ name: 'prod-restored', size: 128 * MiB });
  await runOk('nbdcopy', [backupFile, node.nbdUri('prod-restored')]);
  assert.equal(await sha256Export(node.nbdUri('prod-restored'), dir), await sha256Export(node.nbdUri('prod@inc1'), dir));
  // qemu's own NBD client reads the bitmap too (x-dirty-bitmap turns it into the allocation map).
  const qmap = await runOk('qemu-img', ['map', '--output=json', '--image-opts',
    `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${node.ports.nbdPort},export=prod@inc1,x-dirty-bitmap=qemu:dirty-bitmap:backup`]);
  const entries = JSON.parse(qmap.stdout) as Array<{ start: number; length: number; data: boolean }>;
  // qemu reports dirty extents as "not data" (x-dirty-bitmap inverts the sense).
  assert.deepEqual(entries.filter((e) => !e.data).map((e) => [e.start, e.length]), changed.map((e) => [e.offset, e.length]));
});

test('a bitmap survives SIGKILL: every acknowledged write stays recorded', async () => {
  const local = await NodeProcess.start({ name: 'cbt-crash', dataDir: path.join(dir, 'crash', 'data') });
  let current = local;
  try {
    const a = new HttpNodeClient(local.apiUrl);
    await a.createVolume({ name: 'v', size: 16 * MiB });
    await a.addBitmap('v', 'b');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 9 3M 64k', '-c', 'write -P 9 9M 4k', local.nbdUri('v')]);
    await current.kill();
    current = await current.restart();
    const map = JSON.parse((await runOk('nbdinfo', ['--map=qemu:dirty-bitmap:b', '--json', current.nbdUri('v')])).stdout) as Array<{ offset: number; length: number; type: number }>;
    assert.deepEqual(map.filter((e) => e.type === 1).map((e) => [e.offset, e.length]), [[3 * MiB, 64 * KiB], [9 * MiB, 64 * KiB]]);
  } finally {
    await current.stop();
  }
});

test('SIGKILL while fio writes right after a snapshot: the snapshot keeps its instant, and every flushed write is on the volume', async () => {
  // First writes after a snapshot are answered before their copies are durable and reach the
  // volume after: a kill in between may lose only writes not yet flushed, never the snapshot's image.
  const local = await NodeProcess.start({ name: 'snap-crash', dataDir: path.join(dir, 'snap-crash', 'data') });
  let current = local;
  try {
    const a = new HttpNodeClient(local.apiUrl);
    await a.createVolume({ name: 'v', size: 32 * MiB });
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 0 32M', local.nbdUri('v')]);
    const atSnapshot = await sha256Export(local.nbdUri('v'), dir);
    await a.createSnapshot({ name: 's', volumes: ['v'] });
    // Flushed (qemu-io flushes as it closes): these must be there after the kill.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 4k', '-c', 'write -P 0x5b 20M 4k', local.nbdUri('v')]);
    // Not flushed: fio's random writes in the last 8 MiB, killed mid-run.
    const fio = run('fio', ['--name=storm', '--ioengine=nbd', `--uri=${local.nbdUri('v')}`, '--rw=randwrite', '--bs=4k', '--iodepth=32',
      '--offset=24M', '--size=8M', '--time_based', '--runtime=60', '--output-format=terse'], { cwd: dir });
    const used = async (): Promise<number> => (await a.listSnapshots('v')).find((s) => s.name === 's')?.usedBytes ?? 0;
    await waitFor('fio to make the snapshot preserve 2 MiB', async () => (await used()) >= 2 * MiB, { timeoutMs: 30_000 });
    await current.kill();
    await fio;
    current = await current.restart();
    assert.equal(await sha256Export(current.nbdUri('v@s'), dir), atSnapshot, 'the snapshot is the volume at its instant');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 1M 4k', '-c', 'read -P 0x5b 20M 4k', '-c', 'read -P 1 0 1M', '-c', `read -P 1 ${MiB + 4 * KiB} ${19 * MiB - 4 * KiB}`,
      '-c', `read -P 1 ${20 * MiB + 4 * KiB} ${4 * MiB - 4 * KiB}`,
      current.nbdUri('v')]);
    // The node goes on: new first writes after the restart, and the snapshot still exact.
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6c 2M 64k', current.nbdUri('v')]);
    assert.equal(await sha256Export(current.nbdUri('v@s'), dir), atSnapshot);
  } finally {
    await current.stop();
  }
});
