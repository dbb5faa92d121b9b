// Managed backup on a real node through the `tricopy backup` CLI: a full backup, writes, an
// incremental that copies exactly the changed regions, restores of each to new volumes that equal
// the volume at each backup's instant; writes go on during a backup; two jobs against a repository
// with one drive run one after the other, in arrival order.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { DriveQueue } from '../../src/backup/drives';
import type { BackupResult } from '../../src/backup/engine';
import type { JobRecord } from '../../src/backup/repository';
import { Repository } from '../../src/backup/repository';
import { NbdClient } from '../../src/nbd/client';
import { HttpNodeClient } from '../../src/node/api-client';
import { NodeProcess, cli, killAllNodes, startCli } from '../support/node-process';
import { contentDigest, runOk, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const KiB = 1024;
let dir: string;
let node: NodeProcess;
let api: HttpNodeClient;
let env: NodeJS.ProcessEnv;

before(async () => {
  dir = await tempDir('backup');
  node = await NodeProcess.start({ name: 'bk', dataDir: path.join(dir, 'data') });
  api = new HttpNodeClient(node.apiUrl);
  env = { TRICOPY_NODE: node.apiUrl, TRICOPY_BACKUP_CATALOG: path.join(dir, 'catalog.json') };
});

after(async () => {
  await node.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function tricopy(args: string[]): Promise<string> {
  const r = await cli(args, env);
  assert.equal(r.code, 0, `tricopy ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

test('full, then incremental of only the changed regions; each restores byte-equal to its instant', async () => {
  await tricopy(['backup', 'repo', 'add', 'tape1', '--path', path.join(dir, 'tape1'), '--drives', '2']);
  await api.createVolume({ name: 'db1', size: 64 * MiB });
  const uri = node.nbdUri('db1');
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 8M', '-c', 'write -P 0x12 30M 1M', uri]);
  const atFull = await contentDigest(node.ports.nbdPort, 'db1');

  const full = JSON.parse(await tricopy(['--json', 'backup', 'run', '--volume', 'db1', '--repo', 'tape1', '--incremental'])) as BackupResult;
  assert.equal(full.manifest.kind, 'full', 'the first backup is a full one');
  assert.match(full.fellBackToFull ?? '', /no complete backup/);
  assert.equal(full.manifest.dataBytes, 9 * MiB, 'a full backup copies the allocated extents');

  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 5M 300k', '-c', 'write -P 0x22 40M 4k', uri]);
  const atInc = await contentDigest(node.ports.nbdPort, 'db1');
  const inc = JSON.parse(await tricopy(['--json', 'backup', 'run', '--volume', 'db1', '--repo', 'tape1', '--incremental'])) as BackupResult;
  assert.equal(inc.manifest.kind, 'incremental');
  assert.equal(inc.manifest.parentId, full.manifest.id);
  // 300 KiB from 5 MiB touches five 64 KiB regions, 4 KiB at 40 MiB one.
  assert.deepEqual(inc.manifest.extents, [{ offset: 5 * MiB, length: 320 * KiB }, { offset: 40 * MiB, length: 64 * KiB }]);

  // The snapshots the jobs took are gone; the volume still has the repository's bitmap.
  assert.deepEqual((await api.listSnapshots('db1')).map((s) => s.name), []);
  assert.deepEqual((await api.listBitmaps('db1')).map((b) => b.name), ['backup-tape1']);

  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 1M', uri]); // after both: in neither restore
  await tricopy(['backup', 'restore', 'db1', '--from', full.manifest.id, '--to', 'db1-full']);
  await tricopy(['backup', 'restore', 'db1', '--from', inc.manifest.id, '--to', 'db1-inc']);
  assert.equal(await contentDigest(node.ports.nbdPort, 'db1-full'), atFull, 'the full backup restores the volume at its instant');
  assert.equal(await contentDigest(node.ports.nbdPort, 'db1-inc'), atInc, 'full + incremental restore the volume at the incremental\'s instant');

  const listed = JSON.parse(await tricopy(['--json', 'backup', 'list', '--volume', 'db1'])) as Array<{ id: string }>;
  assert.deepEqual(listed.map((m) => m.id), [full.manifest.id, inc.manifest.id]);

  // Restoring over an existing volume needs --force.
  const refused = await cli(['backup', 'restore', 'db1', '--from', inc.manifest.id, '--to', 'db1-full'], env);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /exists/);

  // Verification reads every data file back; a changed byte fails its image and the restore of it.
  const verified = JSON.parse(await tricopy(['--json', 'backup', 'verify', inc.manifest.id])) as Array<{ id: string; ok: boolean }>;
  assert.deepEqual(verified, [{ ...verified[0], id: full.manifest.id, ok: true }, { ...verified[1], id: inc.manifest.id, ok: true }]);
  const incData = path.join(dir, 'tape1', 'images', inc.manifest.id, 'data');
  const original = await fsp.readFile(incData);
  const damaged = Buffer.from(original);
  damaged[1000] = damaged[1000]! ^ 0xff;
  await fsp.writeFile(incData, damaged);
  try {
    const found = await cli(['backup', 'verify', '--repo', 'tape1'], env);
    assert.equal(found.code, 1, 'a damaged image fails the verification');
    assert.match(found.stdout, new RegExp(`${full.manifest.id} .* ok`));
    assert.match(found.stdout, new RegExp(`${inc.manifest.id} .* DAMAGED: backup ${inc.manifest.id}: its data does not match its sha256`));
    assert.match(found.stderr, new RegExp(`1 of 2 backup image\\(s\\) cannot be restored: ${inc.manifest.id}`));
    const restore = await cli(['backup', 'restore', 'db1', '--from', inc.manifest.id, '--to', 'db1-damaged'], env);
    assert.equal(restore.code, 1);
    assert.match(restore.stderr, /does not match its sha256/);
    assert.ok(!(await api.listVolumes()).some((v) => v.name === 'db1-damaged'), 'nothing was created or written');
    const unknown = await cli(['backup', 'verify', 'no-such-backup'], env);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no backup no-such-backup in repository tape1/); // the catalog has one
  } finally {
    await fsp.writeFile(incData, original);
  }
});

test('the volume keeps serving writes during a backup; the image is one instant (a prefix of the ordered writes)', async () => {
  await tricopy(['backup', 'repo', 'add', 'tape3', '--path', path.join(dir, 'tape3')]);
  const block = 64 * KiB;
  await api.createVolume({ name: 'busy', size: 64 * MiB });
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 32M 32M', node.nbdUri('busy')]);
  const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'busy' });
  // Block i (at i * 64 KiB) gets the byte i + 1, one write at a time: the snapshot holds a prefix.
  let written = 0;
  let backupDone = false;
  let duringBackup = 0;
  const writer = (async () => {
    while (!backupDone && written < 500) {
      await client.write(written * block, Buffer.alloc(block, (written % 255) + 1));
      written++;
      duringBackup++;
    }
  })();
  await waitFor('the writer to start', () => written >= 3);
  duringBackup = 0;
  const result = JSON.parse(await tricopy(['--json', 'backup', 'run', '--volume', 'busy', '--repo', 'tape3'])) as BackupResult;
  backupDone = true;
  await writer;
  await client.disconnect();
  assert.ok(duringBackup > 0, 'writes were acknowledged while the backup ran');

  await tricopy(['backup', 'restore', 'busy', '--from', result.manifest.id, '--to', 'busy-restored']);
  const restored = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'busy-restored' });
  const image = await restored.read(0, 32 * MiB);
  await restored.disconnect();
  let prefix = 0;
  while (prefix < 500 && image[prefix * block] === (prefix % 255) + 1) prefix++;
  assert.ok(prefix >= 3, `the image holds the writes acknowledged before the backup (${prefix})`);
  for (let i = prefix; i < 500; i++) {
    assert.ok(image.subarray(i * block, (i + 1) * block).every((b) => b === 0), `block ${i} after the prefix ${prefix} is empty: one instant`);
  }
});

test('two jobs against a repository with one drive run one after the other, in arrival order', async () => {
  await tricopy(['backup', 'repo', 'add', 'tape2', '--path', path.join(dir, 'tape2'), '--drives', '1']);
  for (const v of ['a1', 'a2']) {
    await api.createVolume({ name: v, size: 16 * MiB });
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 0 4M', node.nbdUri(v)]);
  }
  // The test holds the only drive, so both jobs must queue behind it.
  const queue = new DriveQueue(path.join(dir, 'tape2'), 1);
  const held = await queue.acquire('test-holds-the-drive');
  // Each job has looked at the queue (and said how many are ahead) before the next step: a ticket
  // in the queue alone is not enough, the drive could be released before its job counts.
  const first = startCli(['backup', 'run', '--volume', 'a1', '--repo', 'tape2'], env);
  await waitFor('the first job to wait', () => first.stderr().includes('waiting for a drive'));
  const second = startCli(['backup', 'run', '--volume', 'a2', '--repo', 'tape2'], env);
  await waitFor('the second job to wait', () => second.stderr().includes('waiting for a drive'));
  assert.equal(await queue.depth(), 3, 'the test\'s ticket and both jobs\'');
  const repo = new Repository(path.join(dir, 'tape2'));
  assert.ok((await repo.jobs()).every((j) => j.state === 'queued'), 'no job runs while the drive is held');
  await held.release();
  const [r1, r2] = await Promise.all([first.done, second.done]);
  assert.equal(r1.code, 0, r1.stderr);
  assert.equal(r2.code, 0, r2.stderr);
  assert.match(r1.stderr, /waiting for a drive \(1 job\(s\) ahead\)/);
  assert.match(r2.stderr, /waiting for a drive \(2 job\(s\) ahead\)/);
  const jobs: JobRecord[] = (await repo.jobs()).filter((j) => j.kind === 'backup');
  const j1 = jobs.find((j) => j.volume === 'a1')!;
  const j2 = jobs.find((j) => j.volume === 'a2')!;
  assert.equal(j1.state, 'succeeded');
  assert.equal(j2.state, 'succeeded');
  assert.ok(j1.finishedAt! <= j2.startedAt!, `the second job started (${j2.startedAt}) after the first ended (${j1.finishedAt})`);
});

test('a policy runs by name and keeps only its newest chains', async () => {
  await tricopy(['backup', 'repo', 'add', 'tape4', '--path', path.join(dir, 'tape4')]);
  await api.createVolume({ name: 'p1', size: 8 * MiB });
  await tricopy(['backup', 'policy', 'add', 'nightly', '--volume', 'p1', '--repo', 'tape4', '--schedule', '0 2 * * *', '--keep', '2']);
  const ids: string[] = [];
  for (const pattern of ['0x61', '0x62', '0x63']) {
    await runOk('qemu-io', ['-f', 'raw', '-c', `write -P ${pattern} 0 1M`, node.nbdUri('p1')]);
    const r = JSON.parse(await tricopy(['--json', 'backup', 'run', 'nightly'])) as BackupResult;
    assert.equal(r.manifest.policy, 'nightly');
    assert.equal(r.manifest.kind, 'full');
    ids.push(r.manifest.id);
    if (ids.length === 3) assert.deepEqual(r.expired, [ids[0]], 'the third run deletes the oldest chain');
  }
  const listed = JSON.parse(await tricopy(['--json', 'backup', 'list', '--repo', 'tape4'])) as Array<{ id: string }>;
  assert.deepEqual(listed.map((m) => m.id), ids.slice(1));
  const policies = JSON.parse(await tricopy(['--json', 'backup', 'policy', 'list'])) as Array<{ name: string; nextRun: string }>;
  assert.equal(policies.find((p) => p.name === 'nightly')?.nextRun?.length, 24);
});

test('after a job killed mid-copy, the rerun cleans up and takes a full backup that restores', async () => {
  await tricopy(['backup', 'repo', 'add', 'tape5', '--path', path.join(dir, 'tape5')]);
  await api.createVolume({ name: 'k1', size: 8 * MiB });
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x71 0 2M', node.nbdUri('k1')]);
  await tricopy(['backup', 'run', '--volume', 'k1', '--repo', 'tape5', '--incremental']);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x72 1M 2M', node.nbdUri('k1')]);
  // What a SIGKILL between the snapshot and the end of the copy leaves: a running job of a dead
  // process, its snapshot (holding the frozen bitmap), a half-written image, no chain state.
  const gone = await runOk(process.execPath, ['-e', 'console.log(process.pid)']);
  const deadPid = Number(gone.stdout.trim());
  const repo = new Repository(path.join(dir, 'tape5'));
  const killedId = '20261202T000000Z-dead00';
  await repo.saveJob({ id: killedId, kind: 'backup', volume: 'k1', state: 'running', pid: deadPid, queuedAt: '2026-12-02T00:00:00.000Z',
    startedAt: '2026-12-02T00:00:00.000Z', finishedAt: null, backupId: null, error: null });
  await api.createSnapshot({ name: `backup-${killedId}`, volumes: ['k1'], bitmaps: ['backup-tape5'] });
  await fsp.mkdir(repo.partialDir(killedId), { recursive: true });
  await fsp.writeFile(path.join(repo.partialDir(killedId), 'data'), 'half');
  await repo.setChainState('k1', { lastBackupId: null });
  assert.equal((await repo.jobs()).find((j) => j.id === killedId)?.shownState, 'interrupted');

  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x73 6M 64k', node.nbdUri('k1')]);
  const expected = await contentDigest(node.ports.nbdPort, 'k1');
  const rerun = JSON.parse(await tricopy(['--json', 'backup', 'run', '--volume', 'k1', '--repo', 'tape5', '--incremental'])) as BackupResult;
  assert.equal(rerun.manifest.kind, 'full', 'the changes frozen into the lost snapshot are in no image: the chain restarts');
  assert.deepEqual((await api.listSnapshots('k1')).map((s) => s.name), [], 'the killed job\'s snapshot is deleted');
  await assert.rejects(fsp.stat(repo.partialDir(killedId)), 'the half-written image is removed');
  await tricopy(['backup', 'restore', 'k1', '--from', rerun.manifest.id, '--to', 'k1-restored']);
  assert.equal(await contentDigest(node.ports.nbdPort, 'k1-restored'), expected);
});
