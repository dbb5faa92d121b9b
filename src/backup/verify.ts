// Verification of a repository's backup images without restoring them: each image's manifest must
// read back valid, its data file must have the manifest's size and sha256, and an incremental's
// parent must be there, verified, and of the same volume, size and chain, taken before it. An image
// is restorable only when its whole chain verifies, so a damaged image also fails every image built
// on it. A damaged manifest is reported, not thrown: the rest of the repository is still checked.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError, errorMessage } from '../common/errors';
import type { BackupImageCheck } from '../contracts/backup';
import type { BackupManifest } from './manifest';
import { Repository } from './repository';

/** Which images to check: the given ids and what their restore needs, or every image (of a volume). */
export interface VerifySelection {
  ids?: string[];
  volume?: string;
  /** Called after each data file is read, with the bytes read so far and in all. */
  onProgress?: (doneBytes: number, totalBytes: number) => void;
}

/** Reads an image's data file back and checks its size and sha256 against the manifest. */
export async function verifyImageData(repo: Repository, m: BackupManifest): Promise<void> {
  const file = path.join(repo.imageDir(m.id), 'data');
  const stat = await fsp.stat(file).catch(() => null);
  if (!stat) throw new TricopyError('io-error', `backup ${m.id}: its data file is missing`);
  if (stat.size !== m.dataBytes) throw new TricopyError('io-error', `backup ${m.id}: its data file is ${stat.size} bytes, its manifest says ${m.dataBytes}`);
  const hash = createHash('sha256');
  const handle = await fsp.open(file, 'r');
  try {
    for await (const chunk of handle.createReadStream({ autoClose: false })) hash.update(chunk as Buffer);
  } finally {
    await handle.close();
  }
  if (hash.digest('hex') !== m.dataSha256) throw new TricopyError('io-error', `backup ${m.id}: its data does not match its sha256; the image is damaged`);
}

/**
 * Checks images across repositories: with ids, each must be in one of them (else not-found, before
 * anything is read); `onProgress` gets each repository's name with its bytes read.
 */
export async function verifyRepositories(repos: ReadonlyArray<{ name: string; path: string }>, selection: VerifySelection & { ids?: string[] },
  onProgress?: (repo: string, doneBytes: number, totalBytes: number) => void): Promise<BackupImageCheck[]> {
  const ids = selection.ids ?? [];
  const plans: Array<{ name: string; repo: Repository; ids?: string[] }> = [];
  const found = new Set<string>();
  for (const r of repos) {
    const repo = new Repository(r.path);
    if (ids.length === 0) {
      plans.push({ name: r.name, repo });
      continue;
    }
    const present = new Set(await repo.imageIds());
    const here = ids.filter((id) => present.has(id));
    here.forEach((id) => found.add(id));
    if (here.length > 0) plans.push({ name: r.name, repo, ids: here });
  }
  const missing = ids.filter((id) => !found.has(id));
  if (missing.length > 0) throw new TricopyError('not-found', `no backup ${missing.join(', ')} in ${repos.length === 1 ? `repository ${repos[0]!.name}` : 'any repository'}`,
    'list them with: tricopy backup list (with --manager for the manager\'s repositories)');
  const out: BackupImageCheck[] = [];
  for (const p of plans) {
    out.push(...await verifyRepository(p.repo, p.name, {
      ...(p.ids ? { ids: p.ids } : {}), ...(selection.volume !== undefined ? { volume: selection.volume } : {}),
      ...(onProgress ? { onProgress: (done: number, total: number) => onProgress(p.name, done, total) } : {}),
    }));
  }
  return out;
}

type Read = { id: string; manifest: BackupManifest } | { id: string; problem: string };

/** Checks the selected images of `repo` (see VerifySelection), oldest snapshot first; damaged manifests last. */
export async function verifyRepository(repo: Repository, repoName: string, selection: VerifySelection = {}): Promise<BackupImageCheck[]> {
  const read = new Map<string, Read>();
  for (const id of await repo.imageIds()) {
    read.set(id, await repo.manifest(id).then((manifest) => ({ id, manifest }), (err: unknown) => ({ id, problem: `its manifest cannot be read: ${errorMessage(err)}` })));
  }
  const wanted = selected(read, selection);
  const order = [...wanted].map((id) => read.get(id)!).sort(bySnapshot);
  const totalBytes = order.reduce((n, r) => n + ('manifest' in r ? r.manifest.dataBytes : 0), 0);
  let doneBytes = 0;
  const results = new Map<string, BackupImageCheck>();
  // Oldest first, so a parent's result is known when its children are checked.
  for (const r of order) {
    if (!('manifest' in r)) {
      results.set(r.id, { id: r.id, repo: repoName, volume: null, kind: null, snapshotAt: null, dataBytes: null, ok: false, problem: r.problem });
      continue;
    }
    const m = r.manifest;
    let problem = await verifyImageData(repo, m).then(() => null, (err: unknown) => errorMessage(err));
    doneBytes += m.dataBytes;
    selection.onProgress?.(doneBytes, totalBytes);
    problem ??= chainProblem(m, read, results);
    results.set(m.id, { id: m.id, repo: repoName, volume: m.volume, kind: m.kind, snapshotAt: m.snapshotAt, dataBytes: m.dataBytes, ok: problem === null, problem });
  }
  return order.map((r) => results.get(r.id)!);
}

/** The ids to check: the asked ones (each must exist) with their ancestors, or every image (of the volume). */
function selected(read: Map<string, Read>, selection: VerifySelection): Set<string> {
  const out = new Set<string>();
  if (!selection.ids || selection.ids.length === 0) {
    for (const r of read.values()) if (!selection.volume || !('manifest' in r) || r.manifest.volume === selection.volume) out.add(r.id);
    return out;
  }
  for (const id of selection.ids) {
    if (!read.has(id)) throw new TricopyError('not-found', `no backup ${id} in this repository`, 'list them with: tricopy backup list');
    for (let at: string | null = id; at !== null && !out.has(at);) {
      out.add(at);
      const r = read.get(at);
      at = r && 'manifest' in r ? r.manifest.parentId : null;
    }
  }
  return out;
}

function chainProblem(m: BackupManifest, read: Map<string, Read>, results: Map<string, BackupImageCheck>): string | null {
  if (m.parentId === null) return null;
  const parent = read.get(m.parentId);
  if (!parent) return `it needs ${m.parentId}, which is missing from the repository`;
  if (!('manifest' in parent)) return `it needs ${m.parentId}, whose manifest cannot be read`;
  const p = parent.manifest;
  if (p.volume !== m.volume || p.sizeBytes !== m.sizeBytes || p.chainId !== m.chainId) {
    return `its parent ${p.id} is of another volume, size or chain (${p.volume}, ${p.sizeBytes} bytes, chain ${p.chainId})`;
  }
  if (!(p.snapshotAt < m.snapshotAt)) return `its parent ${p.id} was not taken before it`;
  const checked = results.get(p.id);
  if (checked && !checked.ok) return `it needs ${p.id}, which is damaged`;
  return null;
}

function bySnapshot(a: Read, b: Read): number {
  const at = (r: Read): string => ('manifest' in r ? r.manifest.snapshotAt : '\uffff');
  return at(a) < at(b) ? -1 : at(a) > at(b) ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
