// `tricopy clone` on a real node with real NBD clients: a writable clone of a volume that has a
// snapshot, written over NBD, leaves the volume and the snapshot byte-equal (sha256 via nbdcopy);
// delete is refused while a client is attached, then discards the clone and frees its space; a
// clone of an older snapshot (--snapshot) reads that snapshot's image, takes writes, and leaves the
// volume and the snapshot as they were (the snapshot cannot be deleted while the clone reads it and
// stays after it); the errors a user meets say what to do.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { CloneSetView } from '../../src/contracts/clones';
import { NbdClient } from '../../src/nbd/client';
import { HttpNodeClient } from '../../src/node/api-client';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { sha256Export, tempDir } from '../support/tools';

const MiB = 1024 * 1024;
let dir: string;
let node: NodeProcess;

before(async () => {
  dir = await tempDir('clone-cli');
  node = await NodeProcess.start({ name: 'clone', dataDir: path.join(dir, 'data') });
});

after(async () => {
  await node.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function tricopy(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return cli(['--node', node.apiUrl, ...args]);
}

function connect(exportName: string): Promise<NbdClient> {
  return NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName });
}

/** Bytes the files under a directory really hold (sparse files hold less than their size). */
async function allocatedUnder(root: string): Promise<number> {
  let total = 0;
  for (const entry of await fsp.readdir(root, { withFileTypes: true, recursive: true })) {
    if (entry.isFile()) total += (await fsp.stat(path.join(entry.parentPath, entry.name))).blocks * 512;
  }
  return total;
}

test('a writable clone: writes over NBD reach only the clone; the volume and its snapshot stay byte-equal; delete discards it', async () => {
  await node.api.createVolume({ name: 'db1', size: 8 * MiB });
  const writer = await connect('db1');
  await writer.write(0, randomBytes(4 * MiB));
  await writer.flush();
  await writer.disconnect();
  const snap = await tricopy('snapshot', 'create', 'db1', '--name', 'before');
  assert.equal(snap.code, 0, snap.stderr);
  const volumeSha = await sha256Export(node.nbdUri('db1'), dir);
  const snapshotSha = await sha256Export(node.nbdUri('db1@before'), dir);
  const overlayDir = path.join(dir, 'data', 'replica', 'clones', 'test1');
  const snapshotsDir = path.join(dir, 'data', 'replica', 'volumes', 'db1');
  const snapshotSpaceBefore = await allocatedUnder(snapshotsDir);

  const created = await tricopy('clone', 'create', 'test1', '--volume', 'db1');
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /clone db1@test1 of db1 as of .*nbd:\/\/127\.0\.0\.1:\d+\/db1@test1 \(read-write\)/);
  assert.equal(await sha256Export(node.nbdUri('db1@test1'), dir), volumeSha, 'the clone starts as the volume');

  const clone = await connect('db1@test1');
  const written = randomBytes(3 * MiB);
  await clone.write(2 * MiB + 4096, written); // over data and beyond it, not region-aligned
  await clone.flush();
  assert.ok((await clone.read(2 * MiB + 4096, written.length)).equals(written), 'the clone reads what was written to it');
  assert.equal(await sha256Export(node.nbdUri('db1'), dir), volumeSha, 'the volume is unchanged');
  assert.equal(await sha256Export(node.nbdUri('db1@before'), dir), snapshotSha, 'the snapshot is unchanged');

  const listed = await tricopy('--json', 'clone', 'list');
  assert.equal(listed.code, 0, listed.stderr);
  const sets = JSON.parse(listed.stdout) as CloneSetView[];
  assert.deepEqual(sets.map((s) => [s.name, s.state, s.clones.map((c) => c.exportName)]), [['test1', 'active', ['db1@test1']]]);
  assert.ok(sets[0]!.clones[0]!.writtenBytes >= written.length, 'the clone holds what it wrote');
  assert.equal(sets[0]!.clones[0]!.clients, 1);
  const human = await tricopy('clone', 'list');
  assert.match(human.stdout, /^EXPORT\s+SET\s+STATE/m);
  assert.match(human.stdout, /db1@test1\s+test1\s+active/);
  assert.ok(await allocatedUnder(overlayDir) >= written.length, 'the overlay holds the writes');

  const busy = await tricopy('clone', 'delete', 'test1');
  assert.notEqual(busy.code, 0);
  assert.match(busy.stderr, /1 attached client.*--force/s);
  await clone.disconnect();
  const deleted = await tricopy('clone', 'delete', 'test1');
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.match(deleted.stdout, /deleted clone set test1 after [\d.]+ s/);

  await assert.rejects(fsp.stat(overlayDir), 'the overlay is gone');
  assert.equal(await allocatedUnder(snapshotsDir), snapshotSpaceBefore, 'the clone\'s snapshot files are gone');
  const empty = await tricopy('clone', 'list');
  assert.match(empty.stdout, /no clones; make one with: tricopy clone create NAME --volume VOLUME/);
  const snapshots = await new HttpNodeClient(node.apiUrl).listSnapshots('db1');
  assert.deepEqual(snapshots.map((s) => s.name), ['before'], 'the clone\'s own snapshot is gone; the user\'s stays');
  await assert.rejects(connect('db1@test1'), 'the clone export is gone');
  assert.equal(await sha256Export(node.nbdUri('db1'), dir), volumeSha);
  assert.equal(await sha256Export(node.nbdUri('db1@before'), dir), snapshotSha);
});

test('a clone of an older snapshot reads its image, takes writes, and leaves the volume and the snapshot unchanged', async () => {
  await node.api.createVolume({ name: 'db2', size: 8 * MiB });
  const imageA = randomBytes(2 * MiB);
  const writer = await connect('db2');
  await writer.write(MiB, imageA);
  await writer.flush();
  const s1 = await tricopy('snapshot', 'create', 'db2', '--name', 's1');
  assert.equal(s1.code, 0, s1.stderr);
  await writer.write(MiB, randomBytes(3 * MiB)); // B, after the snapshot, over A and beyond it
  await writer.flush();
  await writer.disconnect();
  const volumeSha = await sha256Export(node.nbdUri('db2'), dir);
  const s1Sha = await sha256Export(node.nbdUri('db2@s1'), dir);
  assert.notEqual(volumeSha, s1Sha, 'the volume moved on after s1');

  const created = await tricopy('clone', 'create', 'old', '--volume', 'db2', '--snapshot', 's1');
  assert.equal(created.code, 0, created.stderr);
  assert.match(created.stdout, /clone db2@old of db2 as of .* \(snapshot s1\); export nbd:\/\/127\.0\.0\.1:\d+\/db2@old \(read-write\)/);
  assert.equal(await sha256Export(node.nbdUri('db2@old'), dir), s1Sha, 'the clone reads the snapshot\'s image');
  const [set] = (JSON.parse((await tricopy('--json', 'clone', 'list')).stdout) as CloneSetView[]).filter((s) => s.name === 'old');
  const snapshots = await new HttpNodeClient(node.apiUrl).listSnapshots('db2');
  assert.equal(set!.createdAt, snapshots.find((s) => s.name === 's1')!.createdAt, 'the clone shows the snapshot\'s instant');
  assert.equal(set!.clones[0]!.snapshot, 'db2@s1');
  assert.deepEqual(snapshots.map((s) => s.name), ['s1'], 'no snapshot of its own');

  const clone = await connect('db2@old');
  const written = randomBytes(MiB + 512);
  await clone.write(2 * MiB + 512, written);
  await clone.flush();
  assert.ok((await clone.read(2 * MiB + 512, written.length)).equals(written), 'the clone takes writes');
  assert.ok((await clone.read(MiB, MiB)).equals(imageA.subarray(0, MiB)), 'and reads A where it did not write');
  await clone.disconnect();
  assert.equal(await sha256Export(node.nbdUri('db2'), dir), volumeSha, 'the volume is unchanged');
  assert.equal(await sha256Export(node.nbdUri('db2@s1'), dir), s1Sha, 'the snapshot is unchanged');

  const inUse = await tricopy('snapshot', 'delete', 'db2', '--name', 's1');
  assert.notEqual(inUse.code, 0);
  assert.match(inUse.stderr, /in use: clone db2@old reads it.*tricopy clone delete old/s);
  const deleted = await tricopy('clone', 'delete', 'old');
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.deepEqual((await new HttpNodeClient(node.apiUrl).listSnapshots('db2')).map((s) => s.name), ['s1'], 'the snapshot stays after the clone');
  assert.equal(await sha256Export(node.nbdUri('db2@s1'), dir), s1Sha);
});

test('clone errors say what to do', async () => {
  const noVolume = await tricopy('clone', 'create', 'x1');
  assert.notEqual(noVolume.code, 0);
  assert.match(noVolume.stderr, /--volume/);
  const missing = await tricopy('clone', 'create', 'x1', '--volume', 'nosuch');
  assert.notEqual(missing.code, 0);
  assert.match(missing.stderr, /volume nosuch does not exist on this node/);
  const badName = await tricopy('clone', 'create', 'bad name', '--volume', 'db1');
  assert.notEqual(badName.code, 0);
  assert.match(badName.stderr, /not a valid clone set name/);
  const noSnapshot = await tricopy('clone', 'create', 'x1', '--volume', 'db1', '--snapshot', 'nosuch');
  assert.notEqual(noSnapshot.code, 0);
  assert.match(noSnapshot.stderr, /volume db1 has no snapshot named nosuch.*tricopy snapshot list db1/s);
  assert.match((await tricopy('clone', 'list')).stdout, /no clones/, 'nothing is left of the refused set');
  const unknown = await tricopy('clone', 'delete', 'nosuch');
  assert.notEqual(unknown.code, 0);
  assert.match(unknown.stderr, /no clone set named nosuch.*tricopy clone list/s);
  const help = await tricopy('clone', 'create', '--help');
  assert.equal(help.code, 0);
  assert.match(help.stdout, /writable over NBD as VOLUME@NAME/);
});
