// A backup repository: a directory of backup images, job records and per-volume chain state.
//
//   DIR/repo.json                   name and drives (the repository describes itself)
//   DIR/images/ID/manifest.json     one backup image: its manifest (manifest.ts) ...
//   DIR/images/ID/data              ... and its extents, back to back
//   DIR/images/.partial-ID/         an image being written; renamed to images/ID when complete
//   DIR/jobs/ID.json                a job record (job-state.ts)
//   DIR/volumes/VOLUME.json         the backup the volume's changed-block bitmap counts from
//   DIR/queue/                      drive tickets (drives.ts)
//
// An image exists under images/ only once its data and manifest are synced, so a crash leaves at
// most a .partial directory, which the next job removes.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError } from '../common/errors';
import { nodeDisk } from '../common/disk';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import { type BackupManifest, decodeManifest } from './manifest';
import { type JobEvent, type JobState, nextJobState } from './job-state';
import { processIsAlive } from './drives';

export interface JobRecord {
  id: string;
  kind: 'backup' | 'restore';
  volume: string;
  state: JobState;
  pid: number;
  queuedAt: string;
  startedAt: string | null;
  finishedAt: string | null;
  /** The image written (backup) or read (restore). */
  backupId: string | null;
  error: string | null;
  /** What happened on the way (hooks, the split, a missing replica), oldest first; absent in records of older versions. */
  events?: JobEventRecord[];
}

export interface JobEventRecord {
  at: string;
  /** NO_REPLICA_VOLUME, PRE_SPLIT_HOOK_FAILED, … (hooks.ts). */
  kind: string;
  message: string;
  /** What to do about it. */
  hint?: string;
}

/** A job as shown: `interrupted` when its process died before it ended. */
export type ShownJobState = JobState | 'interrupted';

export type ShownJob = JobRecord & { shownState: ShownJobState };

export interface VolumeChainState {
  /** The backup the bitmap counts changes from; null: the next backup must be a full one. */
  lastBackupId: string | null;
}

export class Repository {
  constructor(readonly dir: string) {}

  static async create(dir: string, name: string, drives: number): Promise<Repository> {
    await fsp.mkdir(dir, { recursive: true });
    const existing = await readJsonIfExists(path.join(dir, 'repo.json'), nodeDisk);
    if (existing === undefined && (await fsp.readdir(dir)).length > 0) {
      throw new TricopyError('conflict', `${dir} is not empty and not a backup repository`, 'give an empty or new directory');
    }
    for (const sub of ['images', 'jobs', 'volumes', 'queue']) await fsp.mkdir(path.join(dir, sub), { recursive: true });
    await atomicWriteJson(path.join(dir, 'repo.json'), { format: 'tricopy-backup-repo/1', name, drives }, nodeDisk);
    return new Repository(dir);
  }

  imageDir(id: string): string {
    return path.join(this.dir, 'images', id);
  }

  partialDir(id: string): string {
    return path.join(this.dir, 'images', `.partial-${id}`);
  }

  /** Every complete image's manifest, oldest snapshot first. */
  async list(): Promise<BackupManifest[]> {
    const out: BackupManifest[] = [];
    for (const id of await this.imageIds()) out.push(await this.manifest(id));
    return out.sort((a, b) => (a.snapshotAt < b.snapshotAt ? -1 : a.snapshotAt > b.snapshotAt ? 1 : 0));
  }

  /** The ids of the complete images (partial ones being written are not listed). */
  async imageIds(): Promise<string[]> {
    const names = await fsp.readdir(path.join(this.dir, 'images')).catch(() => [] as string[]);
    return names.filter((x) => !x.startsWith('.')).sort();
  }

  async manifest(id: string): Promise<BackupManifest> {
    let text: string;
    try {
      text = await fsp.readFile(path.join(this.imageDir(id), 'manifest.json'), 'utf8');
    } catch {
      throw new TricopyError('not-found', `no backup ${id} in ${this.dir}`, 'list them with: tricopy backup list');
    }
    const m = decodeManifest(JSON.parse(text) as unknown);
    if (m.id !== id) throw new TricopyError('io-error', `backup ${id}: its manifest names ${m.id}`);
    return m;
  }

  /** The chain that ends at `id`: its full backup first, then each incremental in order. */
  async chain(id: string): Promise<BackupManifest[]> {
    const chain: BackupManifest[] = [];
    for (let at: string | null = id; at !== null;) {
      const m: BackupManifest = await this.manifest(at).catch((err: unknown) => {
        if (chain.length > 0) throw new TricopyError('io-error', `backup ${chain[0]!.id} needs ${at}, which is missing from ${this.dir}`);
        throw err;
      });
      chain.unshift(m);
      at = m.parentId;
      if (chain.length > 100_000) throw new TricopyError('io-error', `backup ${id}: its chain loops`);
    }
    return chain;
  }

  async removeImage(id: string): Promise<void> {
    await fsp.rm(this.imageDir(id), { recursive: true, force: true });
  }

  /** Removes images a crashed job left half written: every partial image whose job is not live. */
  async removePartials(isLive: (jobId: string) => Promise<boolean>): Promise<void> {
    const names = await fsp.readdir(path.join(this.dir, 'images')).catch(() => [] as string[]);
    for (const n of names) {
      if (n.startsWith('.partial-') && !(await isLive(n.slice('.partial-'.length)))) {
        await fsp.rm(path.join(this.dir, 'images', n), { recursive: true, force: true });
      }
    }
  }

  async chainState(volume: string): Promise<VolumeChainState> {
    const raw = await readJsonIfExists(path.join(this.dir, 'volumes', `${volume}.json`), nodeDisk);
    const last = (raw as { lastBackupId?: unknown } | undefined)?.lastBackupId;
    return { lastBackupId: typeof last === 'string' ? last : null };
  }

  async setChainState(volume: string, state: VolumeChainState): Promise<void> {
    await atomicWriteJson(path.join(this.dir, 'volumes', `${volume}.json`), state, nodeDisk);
  }

  // --- job records ---

  async saveJob(job: JobRecord): Promise<void> {
    await atomicWriteJson(path.join(this.dir, 'jobs', `${job.id}.json`), job, nodeDisk);
  }

  /** Appends an event to the job's record. */
  async addJobEvent(job: JobRecord, event: JobEventRecord): Promise<JobRecord> {
    const next: JobRecord = { ...job, events: [...(job.events ?? []), event] };
    await this.saveJob(next);
    return next;
  }

  /** Applies an event to a job through the state table and records the result. */
  async advanceJob(job: JobRecord, event: JobEvent, now: string, patch: Partial<Pick<JobRecord, 'backupId' | 'error'>> = {}): Promise<JobRecord> {
    const state = nextJobState(job.state, event);
    const next: JobRecord = {
      ...job, ...patch, state,
      startedAt: state === 'running' ? now : job.startedAt,
      finishedAt: state === 'succeeded' || state === 'failed' ? now : job.finishedAt,
    };
    await this.saveJob(next);
    return next;
  }

  async jobs(): Promise<ShownJob[]> {
    const names = await fsp.readdir(path.join(this.dir, 'jobs')).catch(() => [] as string[]);
    const out: ShownJob[] = [];
    for (const n of names.filter((x) => x.endsWith('.json') && !x.startsWith('.'))) {
      out.push(shown(JSON.parse(await fsp.readFile(path.join(this.dir, 'jobs', n), 'utf8')) as JobRecord));
    }
    return out.sort((a, b) => (a.queuedAt < b.queuedAt ? -1 : 1));
  }

  /** One job's record as shown; undefined when this repository has none of that id. */
  async job(id: string): Promise<ShownJob | undefined> {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(id)) return undefined;
    const raw = await readJsonIfExists(path.join(this.dir, 'jobs', `${id}.json`), nodeDisk);
    return raw === undefined ? undefined : shown(raw as JobRecord);
  }
}

/** A record with the state to show: `interrupted` when its process died before it ended. */
function shown(job: JobRecord): ShownJob {
  const ended = job.state === 'succeeded' || job.state === 'failed';
  return { ...job, shownState: !ended && !processIsAlive(job.pid) ? 'interrupted' : job.state };
}
