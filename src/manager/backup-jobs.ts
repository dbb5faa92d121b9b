// Backup and restore jobs the leading manager runs with the backup engine (backup/engine.ts)
// against the registered node that serves the volume: each job's record (policy, volume, what was
// asked for and what was taken, start, end, bytes copied, result, the error and what to do) is kept
// in the store, and what happens in it is in the event history and its live stream: started,
// progress (the record at most once a second while copying, an event per tenth of the copy), each note of the engine (hooks, the split,
// NO_REPLICA_VOLUME …) and the end. A scheduled time is fired once: the job's record and the
// policy's last fired time are stored in one batch, which only the leader can commit. A job cut short
// by its manager's death is marked interrupted when a manager next leads; the engine cleans up what
// it left (its snapshot, a half-written image) on the next run.
import { randomBytes } from 'node:crypto';
import { TricopyError, errorMessage } from '../common/errors';
import { type BackupSource, type JobContext, restoreBackup, runBackup } from '../backup/engine';
import { parseBackupSource } from '../backup/catalog';
import { Repository } from '../backup/repository';
import type { BackupJobRecord, BackupPolicyRecord, BackupRepoRecord, StartRestoreRequest } from '../contracts/backup';
import type { NewEvent } from './history';
import { HttpNodeClient } from '../node/api-client';
import type { ManagerBackupCatalog } from './backup-catalog';
import {
  type BackupJobEvent, ProgressGate, backupJobId, isNewScheduledTime, jobIdsToForget, maxBackupJobsKept, nextBackupJobState, noteEventKind,
  percentDone, registeredNode, nodeServingVolume,
} from './backup-rules';
import type { ManagerContext } from './context';
import type { StoredNode } from './store/collections';
import { normalizeUrl } from './stored-node-client';
import type { Tx } from './writer';

/** Who started a job and why. */
export interface JobOrigin {
  trigger: BackupJobRecord['trigger'];
  startedBy: string;
  scheduledAt: Date | null;
}

/** What a job does once its record is stored: the engine's work, returning what goes into the record at the end. */
type JobWork = (ctx: JobContext) => Promise<Partial<BackupJobRecord>>;

export class BackupJobs {
  private readonly running = new Map<string, BackupJobRecord>();

  constructor(private readonly ctx: ManagerContext, private readonly catalog: ManagerBackupCatalog) {}

  /** On taking the lead: jobs a dead leader left running are interrupted (run them again). */
  async markInterrupted(): Promise<void> {
    for (const job of await this.ctx.store.listBackupJobs()) {
      if (job.state !== 'running' || this.running.has(job.id)) continue;
      const ended = this.advance(job, 'manager-gone', {
        error: `the manager running it (${job.manager}) stopped before the job ended`,
        hint: job.policy ? `run it again: tricopy backup run ${job.policy} --manager (the next backup cleans up what this one left)` : 'run it again',
      });
      await this.ctx.writer.run(async (tx) => this.store(tx, ended, { kind: 'backup-job-interrupted', reason: `${describe(ended)}: ${ended.error}` }));
    }
  }

  /**
   * Starts a policy's backup; resolves with its record once stored (the copy goes on). A scheduled
   * time fired before (by this or another leader) starts nothing: null.
   */
  async startPolicy(policy: BackupPolicyRecord, origin: JobOrigin): Promise<BackupJobRecord | null> {
    const repo = await this.catalog.repo(policy.repo);
    const node = await this.node(policy.node);
    const source: BackupSource = parseBackupSource(policy.source);
    const job = this.newRecord('backup', { policy: policy.name, volume: policy.volume, target: null, repo: repo.name, node: node.name, incremental: policy.incremental }, origin);
    const started = await this.ctx.writer.run(async (tx) => {
      if (origin.scheduledAt !== null) {
        if (!isNewScheduledTime(await this.ctx.store.backupFiredAt(policy.name), origin.scheduledAt)) return false;
        tx.ops.push(this.ctx.store.putBackupFiredAt(policy.name, origin.scheduledAt.toISOString()));
      }
      await this.store(tx, job, { kind: 'backup-job-started', reason: `${describe(job)} started by ${origin.startedBy}${origin.scheduledAt ? ` (scheduled for ${origin.scheduledAt.toISOString()})` : ''}` });
      await this.forgetOld(tx);
      return true;
    });
    if (!started) return null;
    this.execute(job, repo, node, async (ctx) => {
      const r = await runBackup(ctx, {
        volume: policy.volume, incremental: policy.incremental, policy: policy.name, keep: policy.keep, source, hooks: { pre: policy.preSplitHook, post: policy.postSplitHook },
      });
      return { backupId: r.manifest.id, image: r.manifest.kind, fellBackToFull: r.fellBackToFull, bytesCopied: r.manifest.dataBytes };
    });
    return { ...job };
  }

  /** Starts a restore of a backup to a volume (a new one, or an existing one with force). */
  async startRestore(req: StartRestoreRequest, startedBy: string): Promise<BackupJobRecord> {
    const { repo, manifest } = await this.catalog.findImage(req.backupId, req.repo);
    const nodes = await this.ctx.store.listNodes();
    const node = req.node !== undefined ? registeredNode(nodes, req.node)
      : nodes.find((n) => normalizeUrl(n.url) === normalizeUrl(manifest.node)) ?? registeredNode(nodes, nodeServingVolume(this.ctx.model.all(), manifest.volume));
    const job = this.newRecord('restore', { policy: manifest.policy, volume: manifest.volume, target: req.target, repo: repo.name, node: node.name, incremental: false },
      { trigger: 'api', startedBy, scheduledAt: null });
    await this.ctx.writer.run(async (tx) => {
      await this.store(tx, job, { kind: 'backup-job-started', reason: `${describe(job)} of backup ${req.backupId} started by ${startedBy}` });
      await this.forgetOld(tx);
    });
    this.execute(job, repo, node, async (ctx) => {
      const r = await restoreBackup(ctx, { backupId: req.backupId, target: req.target, force: req.force === true });
      return { backupId: req.backupId, bytesCopied: r.bytes };
    });
    return { ...job };
  }

  async get(id: string): Promise<BackupJobRecord | undefined> {
    const live = this.running.get(id);
    return live ? { ...live, notes: [...live.notes] } : this.ctx.store.getBackupJob(id);
  }

  /** Newest first; a job this manager runs is shown as it is now (its progress). */
  async list(limit: number = maxBackupJobsKept): Promise<BackupJobRecord[]> {
    return (await this.ctx.store.listBackupJobs(limit)).map((j) => {
      const live = this.running.get(j.id);
      return live ? { ...live, notes: [...live.notes] } : j;
    });
  }

  /** Jobs this manager runs now. */
  runningCount(): number {
    return this.running.size;
  }

  private newRecord(kind: BackupJobRecord['kind'], what: Pick<BackupJobRecord, 'policy' | 'volume' | 'target' | 'repo' | 'node' | 'incremental'>, origin: JobOrigin): BackupJobRecord {
    const now = this.ctx.clock.now();
    return {
      id: backupJobId(now, randomBytes(3).toString('hex')), kind, ...what, trigger: origin.trigger, scheduledAt: origin.scheduledAt?.toISOString() ?? null,
      startedBy: origin.startedBy, manager: this.ctx.url, state: 'running', image: null, startedAt: new Date(now).toISOString(), endedAt: null,
      bytesCopied: 0, bytesTotal: null, waitingBehind: null, backupId: null, fellBackToFull: null, error: null, hint: null, notes: [],
    };
  }

  private async node(name: string): Promise<StoredNode> {
    return registeredNode(await this.ctx.store.listNodes(), name);
  }

  private execute(job: BackupJobRecord, repo: BackupRepoRecord, node: StoredNode, work: JobWork): void {
    this.running.set(job.id, job);
    const gate = new ProgressGate();
    let lastTenth = -1;
    const ctx: JobContext = {
      node: new HttpNodeClient(node.url, node.token), nodeUrl: node.url, repo: new Repository(repo.path), repoName: repo.name, drives: repo.drives,
      now: () => new Date(this.ctx.clock.now()),
      onProgress: (e) => {
        if (e.phase === 'waiting') {
          job.waitingBehind = e.ahead;
          return this.save(job, { kind: 'backup-job-waiting', reason: `${describe(job)} waits for a drive of ${repo.name} (${e.ahead} job(s) ahead)` });
        }
        job.bytesCopied = e.doneBytes;
        job.bytesTotal = e.totalBytes;
        if (!gate.due(this.ctx.clock.now())) return;
        // The record (what the console and `backup jobs` show) every interval; an event per tenth of the copy, so an hours-long copy does not flood the history.
        const tenth = Math.floor((percentDone(e.doneBytes, e.totalBytes) ?? 0) / 10);
        const event = tenth === lastTenth ? null : { kind: 'backup-job-progress', reason: `${describe(job)}: ${tenth * 10}% (${e.doneBytes} of ${e.totalBytes} bytes)`,
          details: { doneBytes: e.doneBytes, totalBytes: e.totalBytes } };
        lastTenth = tenth;
        this.save(job, event);
      },
      onEvent: (note) => {
        job.notes.push(note);
        this.save(job, { kind: noteEventKind(note.kind), reason: `${describe(job)}: ${note.message}${note.hint ? `; what to do: ${note.hint}` : ''}`,
          details: { note: note.kind, ...(note.hint ? { hint: note.hint } : {}) } });
      },
    };
    void work(ctx).then((result) => this.finish(job, 'copy-done', result), (err: unknown) => this.finish(job, 'error', {
      error: errorMessage(err), hint: err instanceof TricopyError && err.hint ? err.hint : 'see the manager log',
    }));
  }

  private async finish(job: BackupJobRecord, event: BackupJobEvent, patch: Partial<BackupJobRecord>): Promise<void> {
    const ended = this.advance(job, event, patch);
    Object.assign(job, ended);
    const outcome = ended.state === 'succeeded'
      ? `done: ${ended.kind === 'restore' ? `backup ${ended.backupId} written` : `${ended.image} backup ${ended.backupId} taken`}, ${ended.bytesCopied} bytes copied${ended.fellBackToFull ? ` (full, not incremental: ${ended.fellBackToFull})` : ''}`
      : `failed: ${ended.error}${ended.hint ? `; what to do: ${ended.hint}` : ''}`;
    await this.ctx.writer.run(async (tx) => this.store(tx, ended, {
      kind: ended.state === 'succeeded' ? 'backup-job-succeeded' : 'backup-job-failed', reason: `${describe(ended)} ${outcome}`,
      details: { bytesCopied: ended.bytesCopied, backupId: ended.backupId, ...(ended.error ? { error: ended.error, hint: ended.hint } : {}) },
    })).catch((err: unknown) => this.ctx.log.error({ err: errorMessage(err), job: job.id }, 'cannot store the end of a backup job (this manager may no longer lead)'));
    this.running.delete(job.id);
  }

  private advance(job: BackupJobRecord, event: BackupJobEvent, patch: Partial<BackupJobRecord>): BackupJobRecord {
    return { ...job, ...patch, state: nextBackupJobState(job.state, event), endedAt: new Date(this.ctx.clock.now()).toISOString() };
  }

  /** Stores a running job's record now, with an event if given; a failure is logged (the job goes on). */
  private save(job: BackupJobRecord, event: Omit<NewEvent, 'node' | 'subject'> | null): void {
    const snapshot = { ...job, notes: [...job.notes] };
    void this.ctx.writer.run(async (tx) => this.store(tx, snapshot, event))
      .catch((err: unknown) => this.ctx.log.warn({ err: errorMessage(err), job: job.id }, 'cannot store a backup job\'s progress'));
  }

  private async store(tx: Tx, job: BackupJobRecord, event: Omit<NewEvent, 'node' | 'subject'> | null): Promise<void> {
    tx.ops.push(this.ctx.store.putBackupJob(job));
    if (event) tx.event({ ...event, node: job.node, subject: job.volume, details: { job: job.id, policy: job.policy, repo: job.repo, ...(event.details ?? {}) } });
  }

  private async forgetOld(tx: Tx): Promise<void> {
    const ids = (await this.ctx.store.listBackupJobs()).map((j) => j.id);
    for (const id of jobIdsToForget(ids, maxBackupJobsKept - 1)) tx.ops.push(this.ctx.store.deleteBackupJob(id));
  }
}

function describe(job: BackupJobRecord): string {
  return job.kind === 'restore' ? `restore of ${job.volume} from ${job.repo} to ${job.target} (job ${job.id})`
    : `backup of ${job.volume}${job.policy ? ` (policy ${job.policy})` : ''} to ${job.repo} (job ${job.id})`;
}
