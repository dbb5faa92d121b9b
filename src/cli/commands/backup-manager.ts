// `tricopy backup … --manager`: the same commands as backup.ts, answered by the manager, which keeps
// the repositories and policies in its store, fires the schedules while it leads and runs the jobs
// (their history and events are the manager's). `run` and `restore` start a job there and follow it
// until it ends, printing its notes and progress on stderr.
import * as path from 'node:path';
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { BackupJobRecord } from '../../contracts/backup';
import type { HttpManagerClient } from '../../manager/client';
import { printJson, table } from '../format';
import { globals, managerClient } from '../globals';

/** How often a followed job is read again. */
const followPollMs = 500;

export async function managerRepoAdd(cmd: Command, name: string, opts: { path: string; drives: number }): Promise<void> {
  // Resolved here: the operator means the directory as seen from where they type (the manager's machine, as a rule).
  const repo = await managerClient(cmd).addBackupRepo({ name, path: path.resolve(opts.path), drives: opts.drives });
  if (globals(cmd).json) return printJson(repo);
  console.log(`backup repository ${repo.name} at ${repo.path} with ${repo.drives} drive(s), kept by the manager`);
}

export async function managerRepoList(cmd: Command): Promise<void> {
  const repos = await managerClient(cmd).listBackupRepos();
  if (globals(cmd).json) return printJson(repos);
  if (repos.length === 0) return console.log('no backup repositories at the manager; add one with: tricopy backup repo add NAME --path DIR --manager');
  console.log(table(['NAME', 'PATH', 'DRIVES', 'ADDED'], repos.map((r) => [r.name, r.path, String(r.drives), r.addedAt])));
}

export async function managerRemove(cmd: Command, what: 'repo' | 'policy', name: string): Promise<void> {
  const client = managerClient(cmd);
  await (what === 'repo' ? client.removeBackupRepo(name) : client.removeBackupPolicy(name));
  if (globals(cmd).json) return printJson({ removed: name });
  console.log(what === 'repo' ? `the manager forgot backup repository ${name}; its directory was left as it is` : `removed backup policy ${name} at the manager`);
}

export interface ManagerPolicyOptions {
  volume: string;
  repo: string;
  schedule: string;
  incremental?: boolean;
  keep: number;
  source?: string;
  preSplitHook?: string;
  postSplitHook?: string;
}

export async function managerPolicyAdd(cmd: Command, name: string, opts: ManagerPolicyOptions): Promise<void> {
  // --node (or TRICOPY_NODE) names the node; without it the manager finds the node that serves the volume.
  const node = globals(cmd).node ?? process.env.TRICOPY_NODE;
  const p = await managerClient(cmd).addBackupPolicy({
    name, volume: opts.volume, repo: opts.repo, schedule: opts.schedule, keep: opts.keep, incremental: opts.incremental === true,
    ...(node !== undefined ? { node } : {}), ...(opts.source !== undefined ? { source: opts.source } : {}),
    ...(opts.preSplitHook !== undefined ? { preSplitHook: opts.preSplitHook } : {}), ...(opts.postSplitHook !== undefined ? { postSplitHook: opts.postSplitHook } : {}),
  });
  if (globals(cmd).json) return printJson(p);
  console.log(`backup policy ${p.name}: ${p.volume} on node ${p.node} to ${p.repo} at "${p.schedule}", next ${p.nextRunAt ?? 'never'} (run by the leading manager)`);
}

export async function managerPolicyList(cmd: Command): Promise<void> {
  const policies = await managerClient(cmd).listBackupPolicies();
  if (globals(cmd).json) return printJson(policies);
  if (policies.length === 0) return console.log('no backup policies at the manager; add one with: tricopy backup policy add NAME --volume V --repo R --schedule CRON --manager');
  console.log(table(['NAME', 'VOLUME', 'NODE', 'REPO', 'SOURCE', 'SCHEDULE', 'INCREMENTAL', 'KEEP', 'NEXT'], policies.map((p) => [
    p.name, p.volume, p.node, p.repo, p.source, p.schedule, p.incremental ? 'yes' : 'no', String(p.keep), p.nextRunAt ?? '-'])));
}

/** Follows a job until it ends: its notes and its progress (a line per tenth) on stderr. */
async function follow(client: HttpManagerClient, started: BackupJobRecord, label: string, quiet: boolean): Promise<BackupJobRecord> {
  let notes = 0;
  let lastTenth = -1;
  for (let job = started; ; job = await client.getBackupJob(job.id)) {
    for (const n of job.notes.slice(notes)) process.stderr.write(`${label}: ${n.kind}: ${n.message}${n.hint ? ` (${n.hint})` : ''}\n`);
    notes = job.notes.length;
    if (!quiet && job.bytesTotal !== null) {
      const tenth = job.bytesTotal === 0 ? 10 : Math.floor((job.bytesCopied / job.bytesTotal) * 10);
      if (tenth !== lastTenth) process.stderr.write(`${label}: ${formatBytes(job.bytesCopied)} of ${formatBytes(job.bytesTotal)} (${tenth * 10}%)\n`);
      lastTenth = tenth;
    }
    if (job.state !== 'running') return job;
    await new Promise((resolve) => setTimeout(resolve, followPollMs));
  }
}

function printJobEnd(cmd: Command, job: BackupJobRecord): void {
  if (globals(cmd).json) printJson(job);
  else if (job.state === 'succeeded') {
    if (job.fellBackToFull) console.log(`an incremental backup was asked for; took a full one: ${job.fellBackToFull}`);
    console.log(job.kind === 'restore'
      ? `restored backup ${job.backupId} of ${job.volume} to volume ${job.target} (${formatBytes(job.bytesCopied)}); job ${job.id}`
      : `${job.image} backup ${job.backupId} of ${job.volume}: ${formatBytes(job.bytesCopied)}; job ${job.id}`);
  }
  if (job.state !== 'succeeded') throw new TricopyError('io-error', `job ${job.id} ${job.state}: ${job.error ?? ''}`, job.hint ?? undefined);
}

export async function managerRun(cmd: Command, policy: string): Promise<void> {
  const client = managerClient(cmd);
  const job = await client.runBackupPolicy(policy);
  process.stderr.write(`backup ${policy}: job ${job.id} started at the manager\n`);
  printJobEnd(cmd, await follow(client, job, `backup ${policy}`, globals(cmd).json === true));
}

export async function managerRestore(cmd: Command, volume: string, opts: { from: string; to?: string; repo?: string; force?: boolean }): Promise<void> {
  const client = managerClient(cmd);
  const node = globals(cmd).node ?? process.env.TRICOPY_NODE;
  const image = (await client.listBackupImages(opts.repo !== undefined ? { repo: opts.repo } : {})).find((i) => i.id === opts.from);
  if (image && image.volume !== volume) throw new TricopyError('invalid-argument', `backup ${opts.from} is of volume ${image.volume}, not ${volume}`);
  const job = await client.startRestore({
    backupId: opts.from, target: opts.to ?? volume, force: opts.force === true,
    ...(opts.repo !== undefined ? { repo: opts.repo } : {}), ...(node !== undefined ? { node } : {}),
  });
  printJobEnd(cmd, await follow(client, job, `restore ${job.target}`, globals(cmd).json === true));
}

export async function managerJobs(cmd: Command): Promise<void> {
  const jobs = await managerClient(cmd).listBackupJobs();
  if (globals(cmd).json) return printJson(jobs);
  if (jobs.length === 0) return console.log('no backup jobs at the manager yet');
  console.log(table(['ID', 'KIND', 'POLICY', 'VOLUME', 'STATE', 'IMAGE', 'STARTED', 'ENDED', 'COPIED', 'TRIGGER', 'ERROR'], jobs.map((j) => [
    j.id, j.kind, j.policy ?? '-', j.volume, j.state, j.image ?? '-', j.startedAt, j.endedAt ?? '-',
    j.bytesTotal !== null && j.state === 'running' ? `${formatBytes(j.bytesCopied)} of ${formatBytes(j.bytesTotal)}` : formatBytes(j.bytesCopied),
    j.trigger, j.error ? `${j.error}${j.hint ? ` (${j.hint})` : ''}` : '-'])));
}

export async function managerImages(cmd: Command, opts: { repo?: string; volume?: string }): Promise<void> {
  const images = await managerClient(cmd).listBackupImages(opts);
  if (globals(cmd).json) return printJson(images);
  if (images.length === 0) return console.log('no backups');
  console.log(table(['ID', 'REPO', 'VOLUME', 'KIND', 'SNAPSHOT', 'PARENT', 'DATA', 'POLICY'], images.map((m) => [
    m.id, m.repo, m.volume, m.kind, m.snapshotAt, m.parentId ?? '-', formatBytes(m.dataBytes), m.policy ?? '-'])));
}

/** What a command without a manager form says when given --manager. */
export function notThroughManager(what: string, instead: string): never {
  throw new TricopyError('invalid-argument', `${what} does not run through the manager`, instead);
}
