// A manager SIGKILLed in the middle of a backup job (spec 003 §5.4, issue 12: "a SIGKILL during a
// backup loses nothing and the job can be rerun"). The node's export URIs name a fault proxy in
// front of its NBD port (--advertise-nbd-port), so the leading manager's copy of an incremental
// stops at a known byte count (after its first chunk, before its last), whatever the machine's
// speed: the job is observably running with progress. The manager is then SIGKILLed: with the
// embedded store it is started again on the same store and port; with two managers on Debian's
// etcd the other one takes the lead (and the killed one, started again, follows). The manager that
// leads next marks the job interrupted with what to do; the catalog lists only the complete backup
// (the half-written image is not an image); the rerun cleans up what the killed job left (its
// snapshot, its partial image), takes a full backup (the killed one cleared the chain) and
// completes; its restore to a new volume is byte-equal (sha256 via nbdcopy) to the volume at the
// backup instant.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { BackupJobRecord } from '../../src/contracts/backup';
import { HttpNodeClient } from '../../src/node/api-client';
import { FaultProxy } from '../support/fault-proxy';
import { EtcdProcess, ManagerProcess, killAllManagers } from '../support/manager-process';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { freePort, runOk, sha256Export } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;

/** The one of `managers` that leads, once exactly one does. */
async function leaderOf(managers: ManagerProcess[]): Promise<ManagerProcess> {
  return waitFor('one manager to lead', async () => {
    const infos = await Promise.all(managers.map((m) => m.client.info().catch(() => undefined)));
    const leading = managers.filter((_, i) => infos[i]?.leader === true);
    return leading.length === 1 ? leading[0] : undefined;
  }, { timeoutMs: 30_000, intervalMs: 100 });
}

for (const store of ['embedded', 'etcd'] as const) describe(`a manager killed during a backup job (${store} store)`, { timeout: 240_000 }, () => {
  let dir: string;
  let repoDir: string;
  let etcd: EtcdProcess | undefined;
  /** Every manager process started (a killed one too). */
  let managers: ManagerProcess[] = [];
  /** The one that leads. */
  let manager: ManagerProcess;
  let node: NodeProcess;
  let api: HttpNodeClient;
  let proxy: FaultProxy;
  let fullId: string;
  let killed: BackupJobRecord;
  let atRerun: string;

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mbackup-kill-'));
    repoDir = path.join(dir, 'tape1');
    const args = ['--sample-interval', '0'];
    if (store === 'etcd') {
      etcd = await EtcdProcess.start(path.join(dir, 'etcd'));
      args.push('--store', 'etcd', '--etcd', etcd.url, '--leader-ttl', '3');
      managers = [await ManagerProcess.start({ name: 'm1', dir, args }), await ManagerProcess.start({ name: 'm2', dir, args })];
    } else {
      managers = [await ManagerProcess.start({ name: 'm1', dir, args })];
    }
    manager = await leaderOf(managers);
    // The proxy needs the node's NBD port and the node the proxy's: the NBD port is chosen first.
    const nbdPort = await freePort();
    proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: nbdPort });
    node = await NodeProcess.start({ name: 'bk', dataDir: path.join(dir, 'node'), ports: { nbdPort }, args: ['--advertise-nbd-port', String(proxy.port)] });
    api = new HttpNodeClient(node.apiUrl);
    await manager.client.addNode({ url: node.apiUrl });
    const volume = await api.createVolume({ name: 'db1', size: 32 * MiB });
    assert.equal(new URL(volume.exportUri).port, String(proxy.port), 'export URIs name the advertised NBD port');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 16M', node.nbdUri('db1')]);
    await waitFor('the node\'s volume at the manager', async () => (await manager.client.status()).volumes.some((v) => v.name === 'db1'));
    await manager.client.addBackupRepo({ name: 'tape1', path: repoDir, drives: 1 });
    await manager.client.addBackupPolicy({ name: 'nightly', volume: 'db1', repo: 'tape1', schedule: '0 3 * * *', incremental: true, keep: 3 });
    const r = await cli(['--manager', manager.url, '--json', 'backup', 'run', 'nightly']);
    assert.equal(r.code, 0, r.stderr);
    const full = JSON.parse(r.stdout) as BackupJobRecord;
    assert.equal(full.image, 'full');
    fullId = full.backupId!;
  });

  after(async () => {
    await proxy?.close();
    await node?.stop();
    for (const m of managers) await m.stop().catch(() => undefined);
    killAllManagers();
    killAllNodes();
    await etcd?.stop();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('a running incremental is observably copying when its leader is SIGKILLed; the manager that leads next marks it interrupted with what to do', async () => {
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x22 20M 8M', node.nbdUri('db1')]);
    atRerun = await sha256Export(node.nbdUri('db1'), dir);
    // 8 MiB changed = two 4 MiB reads, in flight together: one reply arrives whole, the other stops
    // 1 MiB in. Which one is not fixed (the node may answer the second read first), and the image is
    // written in order, so the job's own progress may still read 0: the proxy's count is the proof
    // that the job is in the middle of its copy.
    const stallAt = proxy.bytesForwarded.toClient + 5 * MiB;
    proxy.stallAfterToClient(stallAt);
    const started = await manager.client.runBackupPolicy('nightly', 'test');
    assert.equal(started.state, 'running');
    await waitFor('the job to read 5 MiB of its 8', () => proxy.bytesForwarded.toClient === stallAt, { timeoutMs: 60_000, intervalMs: 100 });
    const copying = await manager.client.getBackupJob(started.id);
    assert.equal(copying.state, 'running');
    assert.ok(copying.bytesCopied <= 4 * MiB, `${copying.bytesCopied} of ${copying.bytesTotal} bytes: at most the reply that arrived whole`);
    assert.equal(copying.bytesTotal, 8 * MiB, 'an incremental of the changed 8 MiB');
    const partials = (await fsp.readdir(path.join(repoDir, 'images'))).filter((n) => n.startsWith('.partial-'));
    assert.equal(partials.length, 1, 'the image being written is a partial directory');

    const dead = manager;
    await dead.kill();
    if (store === 'etcd') {
      manager = await leaderOf(managers.filter((m) => m !== dead));
    } else {
      manager = await dead.restart();
      managers.push(manager);
      await leaderOf([manager]);
    }
    killed = await waitFor('the killed job to end', async () => {
      const job = await manager.client.getBackupJob(started.id);
      return job.state !== 'running' ? job : undefined;
    }, { timeoutMs: 30_000, intervalMs: 100 });
    assert.equal(killed.state, 'interrupted');
    assert.match(killed.error ?? '', /stopped before the job ended/);
    assert.match(killed.hint ?? '', /tricopy backup run nightly --manager/);
    assert.equal(killed.backupId, null, 'no backup is recorded for it');
    assert.ok(killed.endedAt !== null);
    const event = await manager.waitEvent('the interrupted event', (e) => e.kind === 'backup-job-interrupted' && e.details?.job === started.id);
    assert.equal(event.subject, 'db1');
    const listed = await cli(['--manager', manager.url, 'backup', 'jobs']);
    assert.match(listed.stdout, /interrupted/);
  });

  it('the catalog holds only the complete backup; restore cannot pick the half one', async () => {
    const images = await manager.client.listBackupImages({ volume: 'db1' });
    assert.deepEqual(images.map((i) => i.id), [fullId], 'only the full backup taken before is an image');
    const partials = (await fsp.readdir(path.join(repoDir, 'images'))).filter((n) => n.startsWith('.partial-'));
    assert.equal(partials.length, 1, 'the half-written image is left as a partial (not an image)');
    const halfId = partials[0]!.slice('.partial-'.length);
    const refused = await cli(['--manager', manager.url, 'backup', 'restore', 'db1', '--from', halfId, '--to', 'db1-half']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /no backup/);
    assert.ok(!(await api.listVolumes()).some((v) => v.name === 'db1-half'));
  });

  it('the rerun cleans up what the killed job left, takes a full backup and completes; its restore is byte-equal', async () => {
    proxy.restore();
    assert.equal((await api.listSnapshots('db1')).length, 1, 'the killed job\'s snapshot is still there');
    const r = await cli(['--manager', manager.url, '--json', 'backup', 'run', 'nightly']);
    assert.equal(r.code, 0, r.stderr);
    const rerun = JSON.parse(r.stdout) as BackupJobRecord;
    assert.equal(rerun.state, 'succeeded');
    assert.equal(rerun.image, 'full', 'the killed job cleared the chain: the changes it froze are not in the bitmap any more');
    assert.match(rerun.fellBackToFull ?? '', /no complete backup/);
    assert.deepEqual((await api.listSnapshots('db1')).map((s) => s.name), [], 'the killed job\'s snapshot is deleted');
    assert.deepEqual((await fsp.readdir(path.join(repoDir, 'images'))).filter((n) => n.startsWith('.')), [], 'its partial image is removed');
    assert.deepEqual((await manager.client.listBackupImages({ volume: 'db1' })).map((i) => i.id).sort(), [fullId, rerun.backupId!].sort());

    const restore = await cli(['--manager', manager.url, '--json', 'backup', 'restore', 'db1', '--from', rerun.backupId!, '--to', 'db1-restored']);
    assert.equal(restore.code, 0, restore.stderr);
    assert.equal(await sha256Export(node.nbdUri('db1-restored'), dir), atRerun);

    assert.equal((await manager.client.getBackupJob(killed.id)).state, 'interrupted', 'the interrupted job stays as it was');
    if (store === 'etcd') {
      // The killed manager, started again, follows and sees the job as the leader does.
      const dead = managers.find((m) => m.child.signalCode === 'SIGKILL')!;
      const again = await dead.restart();
      managers.push(again);
      await waitFor('the restarted manager to follow', async () => (await again.client.info()).leaderUrl === manager.url);
      assert.equal((await again.client.getBackupJob(killed.id)).state, 'interrupted');
    }
  });
});
