// Backup manifests (the codec refuses what could not be restored), retention (whole chains only)
// and the job state table.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type BackupManifest, coalesceExtents, decodeManifest, encodeManifest, manifestFormat } from '../../src/backup/manifest';
import { backupsToExpire, chainsOf } from '../../src/backup/retention';
import { nextJobState } from '../../src/backup/job-state';

function manifest(id: string, at: string, parentId: string | null = null, chainId = id): BackupManifest {
  return {
    format: manifestFormat, id, kind: parentId === null ? 'full' : 'incremental', volume: 'db1', node: 'http://127.0.0.1:7801',
    sizeBytes: 1 << 20, snapshotAt: at, parentId, chainId, policy: null, extents: [{ offset: 0, length: 65536 }, { offset: 131072, length: 4096 }],
    dataBytes: 69632, dataSha256: 'a'.repeat(64), startedAt: at, finishedAt: at,
  };
}

test('a manifest round-trips through its codec', () => {
  const m = manifest('f1', '2026-12-01T02:00:00.000Z');
  assert.deepEqual(decodeManifest(JSON.parse(encodeManifest(m)) as unknown), m);
  const inc = manifest('i1', '2026-12-02T02:00:00.000Z', 'f1', 'f1');
  assert.deepEqual(decodeManifest(JSON.parse(encodeManifest(inc)) as unknown), inc);
});

test('the codec refuses manifests that could not be restored', () => {
  const good = manifest('f1', '2026-12-01T02:00:00.000Z');
  const cases: Array<[string, Partial<Record<keyof BackupManifest, unknown>>, RegExp]> = [
    ['wrong format', { format: 'other/1' }, /format/],
    ['overlapping extents', { extents: [{ offset: 0, length: 65536 }, { offset: 4096, length: 4096 }], dataBytes: 69632 }, /overlaps/],
    ['extent past the end', { extents: [{ offset: 1 << 20, length: 4096 }], dataBytes: 4096 }, /past/],
    ['size not the sum', { dataBytes: 1 }, /sum/],
    ['bad sha256', { dataSha256: 'xyz' }, /hex/],
    ['full with a parent', { parentId: 'x' }, /parent/],
    ['incremental without a parent', { kind: 'incremental' }, /parent/],
    ['negative size', { sizeBytes: -1 }, /sizeBytes/],
  ];
  for (const [what, patch, message] of cases) {
    assert.throws(() => decodeManifest({ ...good, ...patch }), message, what);
  }
  assert.throws(() => encodeManifest({ ...good, dataBytes: 5 }), /sum/, 'nothing unreadable is written');
});

test('extents that touch or overlap are merged', () => {
  assert.deepEqual(coalesceExtents([{ offset: 0, length: 10 }, { offset: 10, length: 5 }, { offset: 12, length: 10 }, { offset: 30, length: 1 }]),
    [{ offset: 0, length: 22 }, { offset: 30, length: 1 }]);
});

test('retention keeps the newest N chains and deletes only whole chains', () => {
  const backups = [
    manifest('f1', '2026-12-01T00:00:00Z'), manifest('i1a', '2026-12-01T06:00:00Z', 'f1', 'f1'), manifest('i1b', '2026-12-01T12:00:00Z', 'i1a', 'f1'),
    manifest('f2', '2026-12-02T00:00:00Z'), manifest('i2a', '2026-12-02T06:00:00Z', 'f2', 'f2'),
    manifest('f3', '2026-12-03T00:00:00Z'),
  ];
  assert.deepEqual(chainsOf(backups).map((c) => c.fullId), ['f3', 'f2', 'f1']);
  assert.deepEqual(backupsToExpire(backups, 2).sort(), ['f1', 'i1a', 'i1b']);
  assert.deepEqual(backupsToExpire(backups, 1).sort(), ['f1', 'f2', 'i1a', 'i1b', 'i2a']);
  assert.deepEqual(backupsToExpire(backups, 3), []);
  // A full backup whose incrementals are newer than a later full is still kept with them.
  const late = [...backups, manifest('i1c', '2026-12-04T00:00:00Z', 'i1b', 'f1')];
  assert.deepEqual(backupsToExpire(late, 2).sort(), ['f2', 'i2a']);
  assert.throws(() => backupsToExpire(backups, 0), /at least 1/);
});

test('job states change only as the table says', () => {
  assert.equal(nextJobState('queued', 'drive-acquired'), 'running');
  assert.equal(nextJobState('queued', 'error'), 'failed');
  assert.equal(nextJobState('running', 'copy-done'), 'succeeded');
  assert.equal(nextJobState('running', 'error'), 'failed');
  assert.throws(() => nextJobState('queued', 'copy-done'), /not allowed/);
  assert.throws(() => nextJobState('succeeded', 'error'), /not allowed/);
  assert.throws(() => nextJobState('failed', 'drive-acquired'), /not allowed/);
});
