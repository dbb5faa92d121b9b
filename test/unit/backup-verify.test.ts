// `backup verify` on repositories built image by image: intact chains verify; a changed byte, a
// truncated or missing data file, an unreadable manifest and a missing or foreign parent are each
// named, every image built on a damaged one fails too, and the rest of the repository is checked.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { type BackupManifest, encodeManifest, manifestFormat } from '../../src/backup/manifest';
import { Repository } from '../../src/backup/repository';
import { verifyRepositories, verifyRepository } from '../../src/backup/verify';
import { tempDir } from '../support/tools';

const dirs: string[] = [];
after(async () => {
  for (const d of dirs) await fsp.rm(d, { recursive: true, force: true });
});

async function repository(name: string): Promise<{ repo: Repository; dir: string }> {
  const dir = await tempDir(`verify-${name}`);
  dirs.push(dir);
  return { repo: await Repository.create(dir, name, 1), dir };
}

/** Writes a complete image: its data (`bytes` of `fill`) and a manifest that describes it. */
async function image(repo: Repository, id: string, at: string, opts: { parent?: BackupManifest; volume?: string; bytes?: number; fill?: number } = {}): Promise<BackupManifest> {
  const bytes = opts.bytes ?? 8192;
  const data = Buffer.alloc(bytes, opts.fill ?? 0x5a);
  const m: BackupManifest = {
    format: manifestFormat, id, kind: opts.parent ? 'incremental' : 'full', volume: opts.volume ?? 'db1', node: 'http://127.0.0.1:7801',
    sizeBytes: 1 << 20, snapshotAt: at, parentId: opts.parent?.id ?? null, chainId: opts.parent?.chainId ?? id, policy: null,
    extents: [{ offset: 0, length: bytes }], dataBytes: bytes, dataSha256: createHash('sha256').update(data).digest('hex'), startedAt: at, finishedAt: at,
  };
  await fsp.mkdir(repo.imageDir(id), { recursive: true });
  await fsp.writeFile(path.join(repo.imageDir(id), 'data'), data);
  await fsp.writeFile(path.join(repo.imageDir(id), 'manifest.json'), encodeManifest(m));
  return m;
}

const day = (d: number): string => `2026-12-0${d}T02:00:00.000Z`;
const summary = (checks: Array<{ id: string; ok: boolean; problem: string | null }>): string[] => checks.map((c) => `${c.id}:${c.ok ? 'ok' : c.problem}`);

test('intact chains verify, oldest first, with their bytes read reported', async () => {
  const { repo } = await repository('intact');
  const f1 = await image(repo, 'f1', day(1));
  const i1 = await image(repo, 'i1', day(2), { parent: f1, bytes: 4096 });
  await image(repo, 'i2', day(3), { parent: i1, bytes: 4096 });
  await image(repo, 'g1', day(2), { volume: 'db2' });
  const progress: number[] = [];
  const checks = await verifyRepository(repo, 'intact', { onProgress: (done, total) => progress.push(done / total) });
  assert.deepEqual(summary(checks), ['f1:ok', 'g1:ok', 'i1:ok', 'i2:ok']);
  assert.deepEqual(checks.map((c) => [c.repo, c.volume, c.kind, c.dataBytes]), [
    ['intact', 'db1', 'full', 8192], ['intact', 'db2', 'full', 8192], ['intact', 'db1', 'incremental', 4096], ['intact', 'db1', 'incremental', 4096]]);
  assert.equal(progress.at(-1), 1, 'progress ends at every byte read');
  assert.deepEqual(summary(await verifyRepository(repo, 'intact', { volume: 'db2' })), ['g1:ok'], '--volume keeps that volume\'s images');
  assert.deepEqual(summary(await verifyRepository(repo, 'intact', { ids: ['i1'] })), ['f1:ok', 'i1:ok'], 'an id brings the images its restore needs, no others');
});

test('a changed byte, a truncated or missing data file: that image and every image built on it fail; other chains pass', async () => {
  const { repo } = await repository('damaged');
  const f1 = await image(repo, 'f1', day(1));
  const i1 = await image(repo, 'i1', day(2), { parent: f1 });
  await image(repo, 'i2', day(3), { parent: i1 });
  const f2 = await image(repo, 'f2', day(4));
  await image(repo, 'i3', day(5), { parent: f2 });
  const f3 = await image(repo, 'f3', day(6));
  await image(repo, 'i4', day(7), { parent: f3 });

  const flipped = path.join(repo.imageDir('i1'), 'data');
  const bytes = await fsp.readFile(flipped);
  bytes[4000] ^= 0x01;
  await fsp.writeFile(flipped, bytes);
  await fsp.truncate(path.join(repo.imageDir('f2'), 'data'), 100);
  await fsp.rm(path.join(repo.imageDir('i4'), 'data'));

  assert.deepEqual(summary(await verifyRepository(repo, 'damaged')), [
    'f1:ok',
    'i1:backup i1: its data does not match its sha256; the image is damaged',
    'i2:it needs i1, which is damaged',
    'f2:backup f2: its data file is 100 bytes, its manifest says 8192',
    'i3:it needs f2, which is damaged',
    'f3:ok',
    'i4:backup i4: its data file is missing',
  ]);
});

test('an unreadable manifest is reported and the rest is checked; a missing or foreign parent is named', async () => {
  const { repo } = await repository('chains');
  const f1 = await image(repo, 'f1', day(1));
  await image(repo, 'i1', day(2), { parent: f1 });
  const other = await image(repo, 'x1', day(1), { volume: 'db2' });
  await image(repo, 'i2', day(3), { parent: { ...other, chainId: 'f1' } });
  await fsp.writeFile(path.join(repo.imageDir('f1'), 'manifest.json'), '{"format": "tricopy-backup/1", "id": ');
  const gone = await image(repo, 'f9', day(1), { volume: 'db3' });
  await image(repo, 'i9', day(2), { parent: gone, volume: 'db3' });
  await repo.removeImage('f9');

  const checks = await verifyRepository(repo, 'chains');
  const byId = new Map(checks.map((c) => [c.id, c]));
  assert.match(byId.get('f1')!.problem ?? '', /^its manifest cannot be read: /);
  assert.deepEqual([byId.get('f1')!.volume, byId.get('f1')!.kind, byId.get('f1')!.dataBytes], [null, null, null]);
  assert.equal(byId.get('i1')!.problem, 'it needs f1, whose manifest cannot be read');
  assert.match(byId.get('i2')!.problem ?? '', /^its parent x1 is of another volume, size or chain \(db2/);
  assert.equal(byId.get('i9')!.problem, 'it needs f9, which is missing from the repository');
  assert.equal(byId.get('x1')!.ok, true);
  assert.equal(checks.at(-1)!.id, 'f1', 'an image without a readable manifest comes last');
});

test('across repositories: ids are found where they are; an id in none is refused before anything is read', async () => {
  const a = await repository('a');
  const b = await repository('b');
  const fa = await image(a.repo, 'fa', day(1));
  await image(a.repo, 'ia', day(2), { parent: fa });
  await image(b.repo, 'fb', day(1));
  const repos = [{ name: 'a', path: a.dir }, { name: 'b', path: b.dir }];
  assert.deepEqual((await verifyRepositories(repos, { ids: ['ia', 'fb'] })).map((c) => `${c.repo}/${c.id}:${c.ok}`), ['a/fa:true', 'a/ia:true', 'b/fb:true']);
  assert.deepEqual((await verifyRepositories(repos, {})).map((c) => `${c.repo}/${c.id}`), ['a/fa', 'a/ia', 'b/fb']);
  let progressCalls = 0;
  await assert.rejects(verifyRepositories(repos, { ids: ['fb', 'nope'] }, () => progressCalls++), /no backup nope in any repository/);
  assert.equal(progressCalls, 0);
  await assert.rejects(verifyRepositories([repos[1]!], { ids: ['fa'] }), /no backup fa in repository b/);
});
