// Backups run by the manager (spec 003 §5.3–5.4 on the manager): two managers share Debian's etcd
// and a real node is registered. Through the CLI against the manager that does NOT lead (its writes
// are forwarded), a repository and a policy whose cron time is a few seconds ahead (6-field cron,
// seconds) are added; the leader fires it once at that time, the follower fires nothing; the job's
// history entry (policy, volume, kind, start, end, bytes, result) and its events are in the
// history and the live stream; the backup restores through the manager to a new volume that is
// byte-equal (sha256 via nbdcopy). A policy run now takes an incremental of only what changed, and
// a policy from a replica that does not exist fails with NO_REPLICA_VOLUME and what to do. A file
// catalog (a repository holding an image, a policy) is imported into the manager.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BackupImageCheck, BackupJobRecord, BackupPolicyView } from '../../src/contracts/backup';
import type { ManagerEvent } from '../../src/contracts/manager';
import { HttpNodeClient } from '../../src/node/api-client';
import { EtcdProcess, ManagerProcess, killAllManagers } from '../support/manager-process';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { runOk, sha256Export } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;

/** A 6-field cron expression naming one second (local time, as the manager evaluates it). */
function cronAt(t: Date): string {
  return `${t.getSeconds()} ${t.getMinutes()} ${t.getHours()} ${t.getDate()} ${t.getMonth() + 1} *`;
}

describe('backups run by the leading manager', { timeout: 240_000 }, () => {
  let dir: string;
  let etcd: EtcdProcess;
  let managers: ManagerProcess[];
  let leader: ManagerProcess;
  let follower: ManagerProcess;
  let node: NodeProcess;
  let scheduled: BackupJobRecord;
  let atBackup: string;

  const tricopy = async (args: string[]): Promise<string> => {
    const r = await cli(['--manager', follower.url, ...args]);
    assert.equal(r.code, 0, `tricopy ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mbackup-'));
    etcd = await EtcdProcess.start(path.join(dir, 'etcd'));
    const args = ['--store', 'etcd', '--etcd', etcd.url, '--leader-ttl', '3', '--sample-interval', '0'];
    managers = [await ManagerProcess.start({ name: 'm1', dir, args }), await ManagerProcess.start({ name: 'm2', dir, args })];
    leader = await waitFor('one manager to lead', async () => {
      const infos = await Promise.all(managers.map((m) => m.client.info().catch(() => undefined)));
      const leading = managers.filter((_, i) => infos[i]?.leader === true);
      return leading.length === 1 ? leading[0] : undefined;
    });
    follower = managers.find((m) => m !== leader)!;
    node = await NodeProcess.start({ name: 'bk', dataDir: path.join(dir, 'node') });
    await leader.client.addNode({ url: node.apiUrl });
    await new HttpNodeClient(node.apiUrl).createVolume({ name: 'db1', size: 16 * MiB });
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 3M', '-c', 'write -P 0x12 9M 1M', node.nbdUri('db1')]);
    atBackup = await sha256Export(node.nbdUri('db1'), dir);
    // The manager finds the volume's node from what the node pushed.
    await waitFor('the node\'s volume at the manager', async () => (await follower.client.status()).volumes.some((v) => v.name === 'db1'));
  });

  after(async () => {
    await node?.stop();
    for (const m of managers ?? []) await m.stop().catch(() => undefined);
    killAllManagers();
    killAllNodes();
    await etcd?.stop();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('the leader fires the policy at its cron time, once; the job and its events are in the history and the live stream', async () => {
    const lastSeq = (await leader.client.listEvents({ limit: 10_000 })).at(-1)?.seq ?? 0;
    const streamed: ManagerEvent[] = [];
    const stream = (async () => {
      for await (const e of leader.client.followEvents({ afterSeq: lastSeq })) {
        streamed.push(e);
        if (e.kind === 'backup-job-succeeded' || e.kind === 'backup-job-failed') return;
      }
    })();

    await tricopy(['backup', 'repo', 'add', 'tape1', '--path', path.join(dir, 'tape1'), '--drives', '1']);
    // Far enough ahead that the CLI has added the policy before the time comes, on a loaded machine too.
    const at = new Date(Math.ceil((Date.now() + 8000) / 1000) * 1000);
    const policy = JSON.parse(await tricopy(['--json', 'backup', 'policy', 'add', 'nightly', '--volume', 'db1', '--repo', 'tape1',
      '--schedule', cronAt(at), '--incremental', '--keep', '3'])) as BackupPolicyView;
    assert.equal(policy.node, 'bk', 'the node that serves the volume');
    assert.equal(policy.nextRunAt, at.toISOString());

    scheduled = await waitFor('the scheduled job to end', async () => {
      const job = (await follower.client.listBackupJobs()).find((j) => j.policy === 'nightly');
      return job && job.state !== 'running' ? job : undefined;
    }, { timeoutMs: 60_000, intervalMs: 200 });
    await stream;

    assert.equal(scheduled.state, 'succeeded', `${scheduled.error} (${scheduled.hint})`);
    assert.equal(scheduled.trigger, 'schedule');
    assert.equal(scheduled.scheduledAt, at.toISOString(), 'fired for its cron time');
    assert.ok(Date.parse(scheduled.startedAt) >= at.getTime(), 'not before its time');
    assert.equal(scheduled.manager, leader.url, 'run by the leader');
    assert.equal(scheduled.image, 'full', 'the first backup of a chain is a full one');
    assert.match(scheduled.fellBackToFull ?? '', /no complete backup/);
    assert.equal(scheduled.bytesCopied, 4 * MiB, 'the written extents were copied');
    assert.ok(scheduled.endedAt !== null && scheduled.backupId !== null);

    const kinds = streamed.filter((e) => e.details?.job === scheduled.id).map((e) => e.kind);
    assert.equal(kinds[0], 'backup-job-started');
    assert.ok(kinds.includes('backup-job-progress'), `progress is shown (${kinds.join(', ')})`);
    assert.equal(kinds.at(-1), 'backup-job-succeeded');
    const done = streamed.at(-1)!;
    assert.equal(done.node, 'bk');
    assert.equal(done.subject, 'db1');

    // Only the leader runs schedules; the time is fired once.
    assert.equal((await leader.client.listBackupJobs()).filter((j) => j.policy === 'nightly').length, 1);
    assert.match(await fsp.readFile(leader.logFile, 'utf8'), /backup schedules run here/);
    assert.doesNotMatch(await fsp.readFile(follower.logFile, 'utf8'), /backup schedules run here/, 'the follower fires nothing');
  });

  it('the backup restores through the manager to a new volume, byte-equal', async () => {
    const images = JSON.parse(await tricopy(['--json', 'backup', 'list', '--volume', 'db1'])) as Array<{ id: string; kind: string }>;
    assert.deepEqual(images.map((i) => i.id), [scheduled.backupId]);
    const restored = JSON.parse(await tricopy(['--json', 'backup', 'restore', 'db1', '--from', scheduled.backupId!, '--to', 'db1-restored'])) as BackupJobRecord;
    assert.equal(restored.state, 'succeeded');
    assert.equal(restored.kind, 'restore');
    assert.equal(await sha256Export(node.nbdUri('db1-restored'), dir), atBackup);
  });

  it('run now: an incremental of only what changed; jobs listed newest first', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x21 12M 64k', node.nbdUri('db1')]);
    const r = await cli(['--manager', follower.url, 'backup', 'run', 'nightly']);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /incremental backup \S+ of db1: 64KiB/);
    const jobs = JSON.parse(await tricopy(['--json', 'backup', 'jobs'])) as BackupJobRecord[];
    assert.deepEqual(jobs.map((j) => `${j.kind}/${j.trigger}/${j.image ?? '-'}`), ['backup/api/incremental', 'restore/api/-', 'backup/schedule/full']);
  });

  it('verify through the manager (a follower forwards it): the chain verifies; a damaged full backup fails itself and its incremental', async () => {
    const checks = JSON.parse(await tricopy(['--json', 'backup', 'verify', '--volume', 'db1'])) as BackupImageCheck[];
    assert.deepEqual(checks.map((c) => [c.repo, c.kind, c.ok]), [['tape1', 'full', true], ['tape1', 'incremental', true]]);
    assert.equal(checks[0]!.id, scheduled.backupId);
    const data = path.join(dir, 'tape1', 'images', scheduled.backupId!, 'data');
    const original = await fsp.readFile(data);
    await fsp.writeFile(data, original.subarray(0, original.length - 1));
    try {
      const r = await cli(['--manager', follower.url, 'backup', 'verify']);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stdout, /DAMAGED: backup \S+: its data file is \d+ bytes, its manifest says/);
      assert.match(r.stdout, new RegExp(`DAMAGED: it needs ${scheduled.backupId}, which is damaged`));
      assert.match(r.stderr, /2 of 2 backup image\(s\) cannot be restored/);
    } finally {
      await fsp.writeFile(data, original);
    }
    const bad = await cli(['--manager', follower.url, 'backup', 'verify', 'no/such']);
    assert.equal(bad.code, 2, 'an id the schema refuses is a usage error');
  });

  it('a policy from a replica that does not exist fails with NO_REPLICA_VOLUME and what to do', async () => {
    await tricopy(['backup', 'policy', 'add', 'from-replica', '--volume', 'db1', '--repo', 'tape1', '--schedule', '0 3 * * *', '--source', 'replica:db1-r1']);
    const r = await cli(['--manager', follower.url, 'backup', 'run', 'from-replica']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /NO_REPLICA_VOLUME/);
    assert.match(r.stderr, /tricopy replica create db1-r1 --volume db1/);
    const job = (await follower.client.listBackupJobs()).find((j) => j.policy === 'from-replica')!;
    assert.equal(job.state, 'failed');
    assert.match(job.hint ?? '', /replica create/);
    const event = await follower.waitEvent('the NO_REPLICA_VOLUME event', (e) => e.kind === 'backup-no-replica-volume' && e.details?.job === job.id);
    assert.match(event.reason, /what to do: create it once/);
    // Removing: a used repository is refused, then both go.
    const refused = await cli(['--manager', follower.url, 'backup', 'repo', 'remove', 'tape1']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /policies .* use repository tape1/);
    await tricopy(['backup', 'policy', 'remove', 'from-replica']);
    assert.deepEqual((await leader.client.listBackupPolicies()).map((p) => p.name), ['nightly']);
  });
  it('a file catalog moves to the manager: a dry run changes nothing; the import adds its repository (its images with it) and policy; again, nothing; a conflict fails', async () => {
    const env = { TRICOPY_BACKUP_CATALOG: path.join(dir, 'file-catalog.json') };
    const file = async (args: string[]): Promise<string> => {
      const r = await cli(['--node', node.apiUrl, ...args], env);
      assert.equal(r.code, 0, `tricopy ${args.join(' ')}: ${r.stderr}`);
      return r.stdout;
    };
    await file(['backup', 'repo', 'add', 'vault', '--path', path.join(dir, 'vault'), '--drives', '2']);
    await file(['backup', 'policy', 'add', 'weekly', '--volume', 'db1', '--repo', 'vault', '--schedule', '0 4 * * 0', '--incremental', '--keep', '3']);
    const taken = JSON.parse(await file(['--json', 'backup', 'run', 'weekly'])) as { manifest: { id: string } };
    const importing = (args: string[]) => cli(['--manager', follower.url, '--json', 'backup', 'catalog', 'import', ...args], env);

    const dry = await importing(['--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual((JSON.parse(dry.stdout) as Array<{ name: string; outcome: string }>).map((r) => [r.name, r.outcome]), [['vault', 'would add'], ['weekly', 'would add']]);
    assert.ok(!(await leader.client.listBackupRepos()).some((r) => r.name === 'vault'), 'a dry run adds nothing');

    const done = await importing([]);
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual((JSON.parse(done.stdout) as Array<{ name: string; outcome: string }>).map((r) => [r.name, r.outcome]), [['vault', 'added'], ['weekly', 'added']]);
    const repo = (await leader.client.listBackupRepos()).find((r) => r.name === 'vault')!;
    assert.deepEqual([repo.path, repo.drives], [path.join(dir, 'vault'), 2]);
    const policy = (await leader.client.listBackupPolicies()).find((p) => p.name === 'weekly')!;
    assert.deepEqual([policy.volume, policy.repo, policy.node, policy.schedule, policy.incremental, policy.keep, policy.source],
      ['db1', 'vault', 'bk', '0 4 * * 0', true, 3, 'snapshot'], 'the policy as the file had it, its node by its registered name');
    assert.ok((await leader.client.listBackupImages({ repo: 'vault' })).some((i) => i.id === taken.manifest.id), 'the image the file\'s job took is the manager\'s now');

    const again = await importing([]);
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual((JSON.parse(again.stdout) as Array<{ outcome: string }>).map((r) => r.outcome), ['present', 'present'], 'a second import changes nothing');

    await file(['backup', 'policy', 'remove', 'weekly']);
    await file(['backup', 'policy', 'add', 'weekly', '--volume', 'db1', '--repo', 'vault', '--schedule', '0 5 * * *']);
    const conflict = await cli(['--manager', follower.url, 'backup', 'catalog', 'import'], env);
    assert.equal(conflict.code, 1);
    assert.match(conflict.stdout, /weekly\s+conflict/);
    assert.match(conflict.stderr, /1 of 2 catalog entries were not imported: policy weekly/);
    assert.equal((await leader.client.listBackupPolicies()).find((p) => p.name === 'weekly')!.schedule, '0 4 * * 0', 'the manager\'s policy stays as it was');
    const withoutManager = await cli(['backup', 'catalog', 'import'], env);
    assert.equal(withoutManager.code, 2, 'a usage error');
    assert.match(withoutManager.stderr, /needs --manager/);
  });
});
