// Backup and restore jobs: what one `tricopy backup run` or `backup restore` does against a node.
//
// A backup takes a snapshot of the volume (freezing the repository's changed-block bitmap into it
// and clearing the live one at that instant), so the volume keeps serving writes; it copies from
// the snapshot's read-only NBD export either every allocated extent (full) or the extents the
// frozen bitmap marks (incremental), writes them and their manifest into the repository, and
// deletes the snapshot. The volume's chain state is cleared before the snapshot and set after the
// image is complete: a job that fails or is killed in between leaves it cleared, so the next
// backup is a full one (the changes frozen into the lost snapshot are not in the bitmap any more).
//
// The snapshot (or, with a replica source, the split of an in-node replica pair: replica-source.ts)
// is taken between the policy's pre-split and post-split hooks (hooks.ts). What happens on the way
// is recorded as events in the job's record.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError, errorMessage } from '../common/errors';
import type { NodeClient, ReplicaNodeClient } from '../contracts/node-client';
import { NbdClient } from '../nbd/client';
import { DriveQueue, type DriveQueueDeps, systemDriveDeps } from './drives';
import { type HookContext, type JobEventKind, type RecordEvent, type SplitHooks, aroundSplit } from './hooks';
import { nbdAddress, writeImage } from './image-writer';
import { type BackupManifest, type Extent, manifestFormat } from './manifest';
import { blockStatusSpanBytes, copyChunkBytes } from './limits';
import { backupFromReplica } from './replica-source';
import { type JobEventRecord, type JobRecord, Repository, type ShownJob } from './repository';
import { backupsToExpire } from './retention';
import { verifyImageData } from './verify';

export type BackupNode = NodeClient & ReplicaNodeClient;

export interface JobContext {
  node: BackupNode;
  /** The node's API URL, recorded in manifests. */
  nodeUrl: string;
  repo: Repository;
  repoName: string;
  drives: number;
  driveDeps?: DriveQueueDeps;
  /** Told about waiting for a drive and the copy's progress (bytes done of total). */
  onProgress?: (event: { phase: 'waiting'; ahead: number } | { phase: 'copying'; doneBytes: number; totalBytes: number }) => void;
  /** Told about each event recorded in the job's record (hooks, the split, a missing replica). */
  onEvent?: (event: JobEventRecord) => void;
  now?: () => Date;
}

/** Where the point-in-time image comes from: a snapshot (default) or the split of an in-node replica pair. */
export type BackupSource = { kind: 'snapshot' } | { kind: 'replica'; name: string };

export interface BackupRequest {
  volume: string;
  incremental: boolean;
  policy?: string;
  /** Chains to keep after the backup (retention); none: keep all. */
  keep?: number;
  source?: BackupSource;
  /** Commands run before and after the split (spec 003 §5.4). */
  hooks?: SplitHooks;
}

export interface BackupResult {
  manifest: BackupManifest;
  /** Set when an incremental was asked for but a full backup was taken, and why. */
  fellBackToFull: string | null;
  expired: string[];
  waitedBehind: number;
}

/** The bitmap a repository's backups of a volume count changes with (one per repository). */
export function bitmapNameFor(repoName: string): string {
  return `backup-${repoName}`;
}

const snapshotPrefix = 'backup-';

export function snapshotNameFor(jobId: string): string {
  return `${snapshotPrefix}${jobId}`;
}

function newJobId(now: Date): string {
  const stamp = now.toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  return `${stamp}-${Math.random().toString(16).slice(2, 8).padEnd(6, '0')}`;
}

async function jobRecord(ctx: JobContext, kind: JobRecord['kind'], volume: string): Promise<JobRecord> {
  const now = (ctx.now ?? (() => new Date()))();
  const job: JobRecord = {
    id: newJobId(now), kind, volume, state: 'queued', pid: process.pid, queuedAt: now.toISOString(),
    startedAt: null, finishedAt: null, backupId: null, error: null,
  };
  await ctx.repo.saveJob(job);
  return job;
}

/** Runs `work` as a job holding a drive, recording its states and the events `work` records. */
async function asJob<T>(ctx: JobContext, kind: JobRecord['kind'], volume: string,
  work: (job: JobRecord, waitedBehind: number, record: RecordEvent) => Promise<{ result: T; backupId: string }>): Promise<T> {
  const now = () => (ctx.now ?? (() => new Date()))().toISOString();
  let job = await jobRecord(ctx, kind, volume);
  const record = async (eventKind: JobEventKind, message: string, hint?: string): Promise<void> => {
    const event: JobEventRecord = { at: now(), kind: eventKind, message, ...(hint ? { hint } : {}) };
    job = await ctx.repo.addJobEvent(job, event);
    ctx.onEvent?.(event);
  };
  const queue = new DriveQueue(ctx.repo.dir, ctx.drives, ctx.driveDeps ?? systemDriveDeps);
  let drive;
  try {
    drive = await queue.acquire(job.id, process.pid, (ahead) => ctx.onProgress?.({ phase: 'waiting', ahead }));
  } catch (err) {
    await ctx.repo.advanceJob(job, 'error', now(), { error: errorMessage(err) });
    throw err;
  }
  try {
    job = await ctx.repo.advanceJob(job, 'drive-acquired', now());
    const { result, backupId } = await work(job, drive.waitedBehind, record);
    await ctx.repo.advanceJob(job, 'copy-done', now(), { backupId });
    return result;
  } catch (err) {
    await ctx.repo.advanceJob(job, 'error', now(), { error: errorMessage(err) });
    throw err;
  } finally {
    await drive.release();
  }
}

/**
 * Deletes what jobs of this repository left when they were killed: their half-written images and
 * their snapshots. Only the records of the jobs that left something are read (not the whole job
 * history, which grows with every backup). A snapshot named like a backup's of a job this
 * repository has no record of is another repository's, and stays.
 */
async function removeLeftovers(ctx: JobContext, volume: string, currentJobId: string): Promise<void> {
  const recordOf = (jobId: string): Promise<ShownJob | undefined> => (jobId === currentJobId ? Promise.resolve(undefined) : ctx.repo.job(jobId));
  const live = (job: ShownJob | undefined): boolean => job !== undefined && (job.shownState === 'queued' || job.shownState === 'running');
  await ctx.repo.removePartials(async (jobId) => jobId === currentJobId || live(await recordOf(jobId)));
  for (const s of await ctx.node.listSnapshots(volume)) {
    if (!s.name.startsWith(snapshotPrefix)) continue;
    const job = await recordOf(s.name.slice(snapshotPrefix.length));
    if (job !== undefined && !live(job)) await ctx.node.deleteSnapshot(volume, s.name);
  }
}

/** Decides full or incremental: an incremental needs the parent image and the bitmap counting from it. */
async function chooseParent(ctx: JobContext, req: BackupRequest, hasBitmap: boolean): Promise<{ parent: BackupManifest | null; why: string | null }> {
  if (!req.incremental) return { parent: null, why: null };
  const { lastBackupId } = await ctx.repo.chainState(req.volume);
  if (lastBackupId === null) return { parent: null, why: 'no complete backup of the volume to count changes from in this repository' };
  if (!hasBitmap) return { parent: null, why: `the volume has no bitmap ${bitmapNameFor(ctx.repoName)}` };
  const parent = await ctx.repo.manifest(lastBackupId).catch(() => null);
  if (!parent) return { parent: null, why: `the last backup ${lastBackupId} is gone from the repository` };
  return { parent, why: null };
}

export async function runBackup(ctx: JobContext, req: BackupRequest): Promise<BackupResult> {
  return asJob(ctx, 'backup', req.volume, async (job, waitedBehind, record) => {
    const source = req.source ?? { kind: 'snapshot' };
    const hookContext: HookContext = {
      volume: req.volume, policy: req.policy ?? null, job: job.id, repo: ctx.repoName, node: ctx.nodeUrl,
      source: source.kind === 'snapshot' ? 'snapshot' : `replica:${source.name}`,
    };
    const hooks = req.hooks ?? { pre: null, post: null };
    if (source.kind === 'replica') {
      const manifest = await backupFromReplica({ ...ctx, record, hooks, hookContext, job }, req.volume, source.name, req.policy ?? null);
      const expired = req.keep === undefined ? [] : await expire(ctx.repo, req.volume, req.keep);
      const why = req.incremental ? 'a backup from a replica copies the whole split image (the replica keeps no changed-block bitmap of its own)' : null;
      return { result: { manifest, fellBackToFull: why, expired, waitedBehind }, backupId: manifest.id };
    }
    await removeLeftovers(ctx, req.volume, job.id);
    const volume = await ctx.node.getVolume(req.volume);
    const bitmap = bitmapNameFor(ctx.repoName);
    const hasBitmap = (await ctx.node.listBitmaps(req.volume)).some((b) => b.name === bitmap);
    const { parent, why } = await chooseParent(ctx, req, hasBitmap);
    if (!hasBitmap) await ctx.node.addBitmap(req.volume, bitmap);
    const snapshotName = snapshotNameFor(job.id);
    const snapshot = await aroundSplit(hooks, hookContext, record, async () => {
      // Commit point: until this job's image is complete, the bitmap does not count from any image.
      // (After the pre-split hook: a failing hook leaves the chain as it was.)
      await ctx.repo.setChainState(req.volume, { lastBackupId: null });
      const [taken] = await ctx.node.createSnapshot({ name: snapshotName, volumes: [req.volume], bitmaps: [bitmap] });
      if (!taken) throw new TricopyError('internal', `the node took no snapshot of ${req.volume}`);
      return { ...taken, splitAt: taken.createdAt };
    });
    let manifest: BackupManifest;
    try {
      manifest = await writeImage(ctx, {
        format: manifestFormat, id: job.id, kind: parent ? 'incremental' : 'full', volume: req.volume, node: ctx.nodeUrl,
        sizeBytes: volume.sizeBytes, snapshotAt: snapshot.createdAt, parentId: parent?.id ?? null, chainId: parent?.chainId ?? job.id,
        policy: req.policy ?? null, extents: [], dataBytes: 0, startedAt: job.startedAt ?? snapshot.createdAt,
      }, snapshot.exportUri, parent ? bitmap : null);
    } finally {
      await ctx.node.deleteSnapshot(req.volume, snapshotName);
    }
    await ctx.repo.setChainState(req.volume, { lastBackupId: manifest.id });
    const expired = req.keep === undefined ? [] : await expire(ctx.repo, req.volume, req.keep);
    return { result: { manifest, fellBackToFull: why, expired, waitedBehind }, backupId: manifest.id };
  });
}

/** Deletes the volume's oldest chains beyond `keep` (whole chains only). */
export async function expire(repo: Repository, volume: string, keep: number): Promise<string[]> {
  const ids = backupsToExpire((await repo.list()).filter((m) => m.volume === volume), keep);
  for (const id of ids) await repo.removeImage(id);
  return ids;
}

export interface RestoreRequest {
  backupId: string;
  /** The volume to write; created with the backup's size when it does not exist. */
  target: string;
  /** Overwrite an existing volume (its hosts must be stopped). */
  force: boolean;
}

export interface RestoreResult {
  target: string;
  created: boolean;
  applied: string[];
  bytes: number;
}

/** The parts of [0, size) not covered by `extents` (sorted, not overlapping). */
function gaps(extents: Extent[], size: number): Extent[] {
  const out: Extent[] = [];
  let at = 0;
  for (const e of extents) {
    if (e.offset > at) out.push({ offset: at, length: e.offset - at });
    at = e.offset + e.length;
  }
  if (at < size) out.push({ offset: at, length: size - at });
  return out;
}

async function applyImage(client: NbdClient, repo: Repository, m: BackupManifest, onBytes: (n: number) => void): Promise<void> {
  const file = await fsp.open(path.join(repo.imageDir(m.id), 'data'), 'r');
  try {
    let position = 0;
    for (const e of m.extents) {
      for (let at = e.offset; at < e.offset + e.length; at += copyChunkBytes) {
        const length = Math.min(copyChunkBytes, e.offset + e.length - at);
        const buf = Buffer.alloc(length);
        const { bytesRead } = await file.read(buf, 0, length, position);
        if (bytesRead !== length) throw new TricopyError('io-error', `backup ${m.id}: data file ends early`);
        await client.write(at, buf);
        position += length;
        onBytes(length);
      }
    }
  } finally {
    await file.close();
  }
}

export async function restoreBackup(ctx: JobContext, req: RestoreRequest): Promise<RestoreResult> {
  const chain = await ctx.repo.chain(req.backupId);
  const full = chain[0]!;
  return asJob(ctx, 'restore', req.target, async () => {
    for (const m of chain) await verifyImageData(ctx.repo, m); // every data file checked before anything is written
    const existing = (await ctx.node.listVolumes()).find((v) => v.name === req.target);
    if (existing && !req.force) {
      throw new TricopyError('conflict', `volume ${req.target} exists`, `restore to a new volume with --to NAME, or overwrite it with --force (stop its hosts first)`);
    }
    if (existing && existing.sizeBytes !== full.sizeBytes) throw new TricopyError('conflict', `volume ${req.target} is ${existing.sizeBytes} bytes, the backup ${full.sizeBytes}`);
    const target = existing ?? await ctx.node.createVolume({ name: req.target, size: full.sizeBytes });
    const client = await NbdClient.connect(nbdAddress(target.exportUri));
    const totalBytes = chain.reduce((n, m) => n + m.dataBytes, 0);
    let doneBytes = 0;
    try {
      // An existing volume holds other data where the full backup has none: zero it there.
      if (existing) {
        for (const g of gaps(full.extents, full.sizeBytes)) {
          for (let at = g.offset; at < g.offset + g.length; at += blockStatusSpanBytes) {
            await client.writeZeroes(at, Math.min(blockStatusSpanBytes, g.offset + g.length - at));
          }
        }
      }
      for (const m of chain) {
        await applyImage(client, ctx.repo, m, (n) => {
          doneBytes += n;
          ctx.onProgress?.({ phase: 'copying', doneBytes, totalBytes });
        });
      }
      await client.flush();
    } finally {
      await client.disconnect().catch(() => undefined);
    }
    return { result: { target: req.target, created: !existing, applied: chain.map((m) => m.id), bytes: doneBytes }, backupId: req.backupId };
  });
}
