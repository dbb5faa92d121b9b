// Backup hooks and backups from a split replica (spec 003 §5.4, Figs. 4 and 7) on a real node
// through the `tricopy backup` CLI. The hooks write to the volume itself (what an application's
// last flush before a quiesce does) and to a log: what the pre-split hook wrote is in the image,
// what the post-split hook wrote is not, so they ran on each side of the split; the log shows the
// environment they were given. A failing pre hook stops the job before anything is split; a
// failing post hook is reported and the backup stands. A backup from the split of an in-node
// replica pair restores byte-equal; a replica that does not exist is a NO_REPLICA_VOLUME event.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { BackupResult } from '../../src/backup/engine';
import { Repository } from '../../src/backup/repository';
import { NbdClient } from '../../src/nbd/client';
import { HttpNodeClient } from '../../src/node/api-client';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { contentDigest, runOk, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;
let node: NodeProcess;
let api: HttpNodeClient;
let env: NodeJS.ProcessEnv;

before(async () => {
  dir = await tempDir('backup-hooks');
  node = await NodeProcess.start({ name: 'bk', dataDir: path.join(dir, 'data') });
  api = new HttpNodeClient(node.apiUrl);
  env = { TRICOPY_NODE: node.apiUrl, TRICOPY_BACKUP_CATALOG: path.join(dir, 'catalog.json') };
  await tricopy(['backup', 'repo', 'add', 'tape1', '--path', path.join(dir, 'tape1'), '--drives', '1']);
});

after(async () => {
  await node.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function tricopy(args: string[]): Promise<{ stdout: string; stderr: string }> {
  const r = await cli(args, env);
  assert.equal(r.code, 0, `tricopy ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/** A hook script: logs its phase and environment, then writes `pattern` at `offset` of the volume through NBD. */
async function hookScript(name: string, log: string, pattern: number, offset: string, exitCode = 0): Promise<string> {
  const file = path.join(dir, `${name}.sh`);
  await fsp.writeFile(file, [
    `echo "$TRICOPY_BACKUP_PHASE volume=$TRICOPY_BACKUP_VOLUME policy=$TRICOPY_BACKUP_POLICY source=$TRICOPY_BACKUP_SOURCE split_ok=$TRICOPY_BACKUP_SPLIT_OK split_at=$TRICOPY_BACKUP_SPLIT_AT" >> ${log}`,
    `qemu-io -f raw -c 'write -P ${pattern} ${offset} 64k' "nbd://127.0.0.1:${node.ports.nbdPort}/$TRICOPY_BACKUP_VOLUME" > /dev/null`,
    exitCode === 0 ? 'exit 0' : `echo "hook ${name} says no" >&2; exit ${exitCode}`,
  ].join('\n'));
  return `sh ${file}`;
}

async function readAt(exportName: string, offset: number, length: number): Promise<Buffer> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName });
  try {
    return await client.read(offset, length);
  } finally {
    await client.disconnect();
  }
}

test('hooks run on each side of the split with the job in their environment; a failing pre hook stops the job before the split; a failing post hook is reported', async () => {
  await api.createVolume({ name: 'db1', size: 32 * MiB });
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 1M 4M', node.nbdUri('db1')]);
  const log = path.join(dir, 'hooks.log');
  const pre = await hookScript('pre', log, 0x5a, '0');
  const post = await hookScript('post', log, 0xa5, '64k');
  await tricopy(['backup', 'policy', 'add', 'nightly', '--volume', 'db1', '--repo', 'tape1', '--schedule', '0 2 * * *',
    '--pre-split-hook', pre, '--post-split-hook', post]);
  const listed = JSON.parse((await tricopy(['--json', 'backup', 'policy', 'list'])).stdout) as Array<{ preSplitHook: string; source: { kind: string } }>;
  assert.equal(listed[0]!.preSplitHook, pre);
  assert.equal(listed[0]!.source.kind, 'snapshot');

  const run = await tricopy(['--json', 'backup', 'run', 'nightly']);
  const result = JSON.parse(run.stdout) as BackupResult;
  assert.deepEqual((await fsp.readFile(log, 'utf8')).trim().split('\n'), [
    'pre-split volume=db1 policy=nightly source=snapshot split_ok= split_at=',
    `post-split volume=db1 policy=nightly source=snapshot split_ok=yes split_at=${result.manifest.snapshotAt}`,
  ], 'the pre hook, then the post hook with the split instant');
  const jobs = await new Repository(path.join(dir, 'tape1')).jobs();
  assert.deepEqual(jobs.at(-1)!.events?.map((e) => e.kind), ['PRE_SPLIT_HOOK_OK', 'SPLIT_DONE', 'POST_SPLIT_HOOK_OK']);
  // What the pre hook wrote is in the image, what the post hook wrote is not.
  await tricopy(['backup', 'restore', 'db1', '--from', result.manifest.id, '--to', 'db1-restored']);
  assert.ok((await readAt('db1-restored', 0, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0x5a)), 'the pre-split hook\'s write is in the backup');
  assert.ok((await readAt('db1-restored', 64 * 1024, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0)), 'the post-split hook\'s write is not');
  assert.ok((await readAt('db1', 64 * 1024, 64 * 1024)).equals(Buffer.alloc(64 * 1024, 0xa5)), 'the post-split hook did write the volume');

  // A failing pre hook: the job stops, nothing is split, the post hook does not run.
  await fsp.rm(log);
  const failing = await hookScript('failing-pre', log, 0x77, '128k', 3);
  const refused = await cli(['backup', 'run', '--volume', 'db1', '--repo', 'tape1', '--incremental', '--pre-split-hook', failing, '--post-split-hook', post], env);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /PRE_SPLIT_HOOK_FAILED: pre-split hook failed \(exit 3\); nothing was split, the job stops: hook failing-pre says no/);
  assert.deepEqual((await fsp.readFile(log, 'utf8')).trim().split('\n').map((l) => l.split(' ')[0]), ['pre-split'], 'only the pre hook ran');
  assert.deepEqual((await api.listSnapshots('db1')).map((s) => s.name), [], 'no snapshot was taken');
  const failedJob = (await new Repository(path.join(dir, 'tape1')).jobs()).at(-1)!;
  assert.equal(failedJob.state, 'failed');
  assert.deepEqual(failedJob.events?.map((e) => e.kind), ['PRE_SPLIT_HOOK_FAILED']);
  assert.match(failedJob.events![0]!.hint ?? '', /fix the hook and run the backup again/);
  // The chain was left as it was: the next incremental counts from the last good backup.
  const inc = JSON.parse((await tricopy(['--json', 'backup', 'run', '--volume', 'db1', '--repo', 'tape1', '--incremental'])).stdout) as BackupResult;
  assert.equal(inc.manifest.kind, 'incremental');
  assert.equal(inc.manifest.parentId, result.manifest.id);

  // A failing post hook is reported; the backup stands.
  const failingPost = await hookScript('failing-post', log, 0x66, '192k', 4);
  const reported = await tricopy(['--json', 'backup', 'run', '--volume', 'db1', '--repo', 'tape1', '--post-split-hook', failingPost]);
  assert.match(reported.stderr, /POST_SPLIT_HOOK_FAILED: post-split hook failed \(exit 4\); the backup goes on/);
  assert.equal((JSON.parse(reported.stdout) as BackupResult).manifest.kind, 'full');
});

test('a backup from the split of an in-node replica restores byte-equal; a replica that does not exist is NO_REPLICA_VOLUME', async () => {
  await api.createVolume({ name: 'app', size: 32 * MiB });
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 0 6M', '-c', 'write -P 0x22 20M 1M', node.nbdUri('app')]);
  await tricopy(['replica', 'create', 'app-r1', '--volume', 'app', '--wait']);
  await tricopy(['replica', 'split', 'app-r1']); // split since: the backup resyncs it first
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x23 3M 2M', node.nbdUri('app')]);
  const log = path.join(dir, 'replica-hooks.log');
  const pre = await hookScript('replica-pre', log, 0x24, '10M');
  const post = await hookScript('replica-post', log, 0x25, '11M');
  const atSplit = async (): Promise<string> => contentDigest(node.ports.nbdPort, 'app');

  const missing = await cli(['backup', 'run', '--volume', 'app', '--repo', 'tape1', '--source', 'replica:app-r9', '--pre-split-hook', pre], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /NO_REPLICA_VOLUME: replica app-r9 does not exist on node .*; nothing was split/);
  assert.match(missing.stderr, /tricopy replica create app-r9 --volume app --wait/, 'it says what to do');
  await assert.rejects(fsp.readFile(log, 'utf8'), /ENOENT/, 'no hook ran for a missing replica');

  const run = await tricopy(['--json', 'backup', 'run', '--volume', 'app', '--repo', 'tape1', '--source', 'replica:app-r1', '--pre-split-hook', pre, '--post-split-hook', post]);
  const result = JSON.parse(run.stdout) as BackupResult;
  assert.equal(result.manifest.kind, 'full');
  assert.match(run.stderr, /REPLICA_RESYNC: replica app-r1 was split: resynchronising it before the split/);
  assert.deepEqual((await fsp.readFile(log, 'utf8')).trim().split('\n').map((l) => l.split(' ').slice(0, 4).join(' ')), [
    'pre-split volume=app policy= source=replica:app-r1', 'post-split volume=app policy= source=replica:app-r1',
  ]);
  const jobs = await new Repository(path.join(dir, 'tape1')).jobs();
  assert.deepEqual(jobs.at(-1)!.events?.map((e) => e.kind), ['REPLICA_RESYNC', 'REPLICA_DUPLEX', 'PRE_SPLIT_HOOK_OK', 'SPLIT_DONE', 'POST_SPLIT_HOOK_OK', 'REPLICA_RESYNC']);

  // The image is the volume at the split: with the pre hook's write, without the post hook's.
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0 11M 64k', node.nbdUri('app')]); // undo the post hook's write
  const expected = await atSplit();
  await tricopy(['backup', 'restore', 'app', '--from', result.manifest.id, '--to', 'app-restored']);
  assert.equal(await contentDigest(node.ports.nbdPort, 'app-restored'), expected, 'the backup from the split replica restores byte-equal');
  // The pair was resynced after the copy, ready for the next backup.
  await waitFor('app-r1 duplex again', async () => (await api.getReplica('app-r1')).state === 'duplex', { timeoutMs: 60_000 });
});
