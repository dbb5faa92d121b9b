// The manager's backup decisions without I/O: which registered node serves a volume (a remote
// pair's secondary is not it), a node named by name or URL, the job record's state table, a
// scheduled time fired once — also by a second leader over the same store —, progress stored at
// most once an interval, job ids in start order and the old records forgotten, and note kinds as
// history event kinds.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { systemClock } from '../../src/common/clock';
import { TricopyError } from '../../src/common/errors';
import { createLogger } from '../../src/common/log';
import type { BackupPolicyRecord } from '../../src/contracts/backup';
import { AlertBook } from '../../src/manager/alerts';
import { ManagerBackupCatalog } from '../../src/manager/backup-catalog';
import { BackupJobs } from '../../src/manager/backup-jobs';
import type { ManagerContext } from '../../src/manager/context';
import { EventHistory } from '../../src/manager/history';
import { ClusterModel } from '../../src/manager/model';
import { ManagerStore } from '../../src/manager/store/collections';
import { LevelKv } from '../../src/manager/store/level-kv';
import { Webhooks } from '../../src/manager/webhooks';
import { Writer } from '../../src/manager/writer';
import { freePort } from '../support/tools';
import { waitFor } from '../support/wait';
import type { VolumeView } from '../../src/contracts/node';
import type { PairStatus } from '../../src/contracts/pairs';
import {
  ProgressGate, backupJobId, isNewScheduledTime, jobIdsToForget, nextBackupJobState, nodeServingVolume, noteEventKind, percentDone, registeredNode,
} from '../../src/manager/backup-rules';
import type { NodeState, StoredNode } from '../../src/manager/store/collections';

function state(name: string, volumes: string[], secondaries: string[] = []): NodeState {
  return {
    name, incarnation: 'i', lastEventId: 0, updatedAt: '', info: null, groups: [], table: [],
    volumes: volumes.map((v) => ({ name: v }) as VolumeView),
    pairs: secondaries.map((v) => ({ name: `p-${v}`, role: 'secondary', volume: v }) as PairStatus),
  };
}

const node = (name: string, url: string): StoredNode => ({
  name, site: name, url, registeredAt: '', reachable: true, lastSeenAt: null, lastError: null, incarnation: null, version: null,
});

function code(err: unknown): string | undefined {
  return err instanceof TricopyError ? err.code : undefined;
}

test('the node that serves a volume: the only one, or the one that is not a pair\'s secondary', () => {
  assert.equal(nodeServingVolume([state('tokyo', ['db1']), state('osaka', ['db2'])], 'db1'), 'tokyo');
  assert.equal(nodeServingVolume([state('tokyo', ['db1']), state('osaka', ['db1'], ['db1'])], 'db1'), 'tokyo');
  assert.throws(() => nodeServingVolume([state('tokyo', ['db2'])], 'db1'), (err) => code(err) === 'not-found' && /--node/.test((err as TricopyError).hint ?? ''));
  assert.throws(() => nodeServingVolume([state('tokyo', ['db1']), state('osaka', ['db1'])], 'db1'), (err) => code(err) === 'conflict');
});

test('a registered node by name or by its API URL (with or without a trailing slash)', () => {
  const nodes = [node('tokyo', 'http://127.0.0.1:7801'), node('osaka', 'http://127.0.0.1:7802')];
  assert.equal(registeredNode(nodes, 'osaka').name, 'osaka');
  assert.equal(registeredNode(nodes, 'http://127.0.0.1:7802/').name, 'osaka');
  assert.throws(() => registeredNode(nodes, 'sapporo'), (err) => code(err) === 'not-found');
});

test('a job record\'s state table: running ends once, in one of three ways', () => {
  assert.equal(nextBackupJobState('running', 'copy-done'), 'succeeded');
  assert.equal(nextBackupJobState('running', 'error'), 'failed');
  assert.equal(nextBackupJobState('running', 'manager-gone'), 'interrupted');
  for (const ended of ['succeeded', 'failed', 'interrupted'] as const) {
    assert.throws(() => nextBackupJobState(ended, 'copy-done'), (err) => code(err) === 'internal');
  }
});

test('a scheduled time is new only after the last fired one', () => {
  const t = new Date('2026-12-02T02:00:00Z');
  assert.equal(isNewScheduledTime(undefined, t), true);
  assert.equal(isNewScheduledTime('2026-12-01T02:00:00.000Z', t), true);
  assert.equal(isNewScheduledTime('2026-12-02T02:00:00.000Z', t), false, 'the same time again (a second leader) does not fire');
  assert.equal(isNewScheduledTime('2026-12-03T02:00:00.000Z', t), false);
});

test('progress is stored the first time, then at most once an interval', () => {
  const gate = new ProgressGate(1000);
  assert.deepEqual([0, 10, 999, 1000, 1500, 2001].map((ms) => gate.due(ms)), [true, false, false, true, false, true]);
  assert.equal(percentDone(5, 10), 50);
  assert.equal(percentDone(0, 0), 100, 'nothing to copy is done');
  assert.equal(percentDone(5, null), null);
});

test('job ids sort by start time; the oldest records beyond the limit are forgotten', () => {
  const ids = [backupJobId(9_000, 'aaaaaa'), backupJobId(10_000, '000000'), backupJobId(1_700_000_000_000, 'ffffff')];
  assert.deepEqual([...ids].sort(), ids);
  assert.deepEqual(jobIdsToForget(['j5', 'j4', 'j3', 'j2', 'j1'], 3), ['j2', 'j1']);
  assert.deepEqual(jobIdsToForget(['j2', 'j1'], 3), []);
  assert.equal(noteEventKind('NO_REPLICA_VOLUME'), 'backup-no-replica-volume');
});

/** What one leading manager's backup jobs use: its own history, writer and read model over the shared store. */
async function leaderOver(store: ManagerStore, url: string): Promise<{ jobs: BackupJobs; history: EventHistory }> {
  const log = createLogger('silent');
  const history = new EventHistory(store, systemClock);
  const alerts = new AlertBook(store, systemClock);
  const model = new ClusterModel(store, systemClock);
  await history.load();
  const writer = new Writer(store, history, alerts, new Webhooks([], log), () => 'm', () => model.load());
  // The part of the manager's context the backup jobs use.
  const ctx = { store, writer, history, model, clock: systemClock, log, url } as Partial<ManagerContext> as ManagerContext;
  return { jobs: new BackupJobs(ctx, new ManagerBackupCatalog(ctx, () => undefined)), history };
}

test('a scheduled time is fired once: a new leader over the same store does not fire it again, and fires the next one', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mbk-'));
  const kv = await LevelKv.open(path.join(dir, 'store'));
  const store = new ManagerStore(kv);
  // A node nobody listens on: each job fails at once, after its record is stored.
  const deadUrl = `http://127.0.0.1:${await freePort()}`;
  await store.commit([
    store.putNode({ ...node('bk', deadUrl) }),
    store.putBackupRepo({ name: 'tape1', path: path.join(dir, 'tape1'), drives: 1, addedAt: '' }),
  ]);
  const policy: BackupPolicyRecord = {
    name: 'nightly', volume: 'db1', repo: 'tape1', node: 'bk', schedule: '0 2 * * *', incremental: false, keep: 1, source: 'snapshot',
    preSplitHook: null, postSplitHook: null, addedAt: '',
  };
  const at = new Date('2026-12-02T02:00:00Z');
  const origin = { trigger: 'schedule' as const, startedBy: 'schedule', scheduledAt: at };
  const first = await leaderOver(store, 'http://m1');
  const fired = await first.jobs.startPolicy(policy, origin);
  assert.equal(fired?.scheduledAt, at.toISOString());
  const allEnded = () => waitFor('the jobs to end', async () => {
    const jobs = await store.listBackupJobs();
    return jobs.every((j) => j.state !== 'running') ? jobs : undefined;
  });
  // The first leader is done writing before the next takes over (one leader writes at a time).
  await allEnded();
  const second = await leaderOver(store, 'http://m2');
  assert.equal(await second.jobs.startPolicy(policy, origin), null, 'the second leader does not fire the same time');
  const next = await second.jobs.startPolicy(policy, { ...origin, scheduledAt: new Date('2026-12-03T02:00:00Z') });
  assert.equal(next?.manager, 'http://m2');

  const ended = await allEnded();
  assert.deepEqual(ended.map((j) => [j.scheduledAt, j.manager, j.state]), [
    ['2026-12-03T02:00:00.000Z', 'http://m2', 'failed'], ['2026-12-02T02:00:00.000Z', 'http://m1', 'failed'],
  ]);
  assert.match(ended[0]!.error ?? '', /./, 'the failure is recorded');
  const events = await second.history.query({});
  assert.equal(events.filter((e) => e.kind === 'backup-job-started').length, 2);
  assert.equal(events.filter((e) => e.kind === 'backup-job-failed').length, 2);
  await kv.close();
  await fsp.rm(dir, { recursive: true, force: true });
});
