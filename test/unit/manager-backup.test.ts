// The manager's backup decisions without I/O: which registered node serves a volume (a remote
// pair's secondary is not it), a node named by name or URL, the job record's state table, a
// scheduled time fired once, progress stored at most once an interval, job ids in start order and
// the old records forgotten, and note kinds as history event kinds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { TricopyError } from '../../src/common/errors';
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
