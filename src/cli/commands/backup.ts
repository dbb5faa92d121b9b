// `tricopy backup`: managed backup (spec 003 §5.3–5.4). Repositories of backup images with a number
// of drives (jobs beyond it wait in FIFO order), full and incremental backups from a snapshot and
// its frozen changed-block bitmap, policies with cron schedules and retention, and restore. Without
// a manager, jobs run in this process against the node given by --node and the catalog of
// repositories and policies is a file on this machine (--catalog, TRICOPY_BACKUP_CATALOG); with
// --manager the manager keeps them, fires the schedules and runs the jobs (backup-manager.ts).
import * as path from 'node:path';
import type { Command } from 'commander';
import { systemClock } from '../../common/clock';
import { TricopyError, errorMessage } from '../../common/errors';
import { formatBytes } from '../../common/units';
import { HttpNodeClient } from '../../node/api-client';
import {
  CatalogStore, type Policy, type RepoEntry, checkDrives, checkHook, checkKeep, checkName, checkSchedule, parseBackupSource, sourceText,
} from '../../backup/catalog';
import { type BackupSource, type JobContext, expire, restoreBackup, runBackup } from '../../backup/engine';
import type { BackupManifest } from '../../backup/manifest';
import { Repository } from '../../backup/repository';
import { BackupScheduler, nextRunAfter } from '../../backup/schedule';
import { printJson, table } from '../format';
import { defaultNodeUrl, globals, tokenOf, viaManager } from '../globals';
import {
  managerImages, managerJobs, managerPolicyAdd, managerPolicyList, managerRemove, managerRepoAdd, managerRepoList, managerRestore, managerRun,
  notThroughManager,
} from './backup-manager';
import { registerCatalogImport } from './backup-import';
import { registerVerifyCommand } from './backup-verify';

function catalogOf(cmd: Command): CatalogStore {
  const file = cmd.optsWithGlobals<{ catalog?: string }>().catalog;
  return new CatalogStore(file);
}

function nodeUrlOf(cmd: Command): string {
  return globals(cmd).node ?? process.env.TRICOPY_NODE ?? defaultNodeUrl;
}

function wholeNumber(what: string) {
  return (text: string): number => {
    if (!/^\d+$/.test(text)) throw new TricopyError('invalid-argument', `${what} must be a whole number, not ${JSON.stringify(text)}`);
    return Number(text);
  };
}

/** Progress on stderr, a line per tenth of the copy, so long copies show they move. */
function progressPrinter(label: string): JobContext['onProgress'] {
  let lastTenth = -1;
  return (e) => {
    if (e.phase === 'waiting') return void process.stderr.write(`${label}: waiting for a drive (${e.ahead} job(s) ahead)\n`);
    const tenth = e.totalBytes === 0 ? 10 : Math.floor((e.doneBytes / e.totalBytes) * 10);
    if (tenth === lastTenth) return;
    lastTenth = tenth;
    process.stderr.write(`${label}: ${formatBytes(e.doneBytes)} of ${formatBytes(e.totalBytes)} (${tenth * 10}%)\n`);
  };
}

function contextFor(cmd: Command, repo: RepoEntry, nodeUrl: string, label: string): JobContext {
  return {
    node: new HttpNodeClient(nodeUrl, tokenOf(cmd)), nodeUrl, repo: new Repository(repo.path), repoName: repo.name, drives: repo.drives,
    ...(globals(cmd).json ? {} : { onProgress: progressPrinter(label) }),
    // Events go to stderr even with --json: a failing hook or a missing replica must be seen.
    onEvent: (e) => process.stderr.write(`${label}: ${e.kind}: ${e.message}${e.hint ? ` (${e.hint})` : ''}\n`),
  };
}

/** --source, --pre-split-hook and --post-split-hook, as `policy add` and `run` take them. */
interface SplitOptions {
  source?: string;
  preSplitHook?: string;
  postSplitHook?: string;
}

function addSplitOptions(c: Command): Command {
  return c
    .option('--source <source>', 'where the image comes from: snapshot (default), or replica:NAME, the split of the in-node replica pair NAME ' +
      '(resynced and waited for until duplex, split at the backup time, resynced after the copy; always a full backup)')
    .option('--pre-split-hook <cmd>', 'shell command run before the split or snapshot (quiesce the application); if it fails the job stops and nothing is split. ' +
      'It gets TRICOPY_BACKUP_VOLUME, _POLICY, _JOB, _REPO, _SOURCE, _PHASE and TRICOPY_NODE')
    .option('--post-split-hook <cmd>', 'shell command run after the split (resume the application), also when the split failed (TRICOPY_BACKUP_SPLIT_OK=yes|no, ' +
      'TRICOPY_BACKUP_SPLIT_AT); a failure is reported, the backup goes on');
}

function splitSettings(opts: SplitOptions): { source: BackupSource; preSplitHook: string | null; postSplitHook: string | null } {
  return {
    source: parseBackupSource(opts.source ?? 'snapshot'),
    preSplitHook: checkHook('--pre-split-hook', opts.preSplitHook), postSplitHook: checkHook('--post-split-hook', opts.postSplitHook),
  };
}

function registerRepoCommands(backup: Command): void {
  const repo = backup.command('repo').description('backup repositories: directories of backup images, each with a number of drives');
  repo.command('add <name>')
    .description('create a repository in DIR (new or empty); --drives jobs may run against it at once, further jobs wait in FIFO order')
    .requiredOption('--path <dir>', 'the directory that holds the images')
    .option('--drives <n>', 'how many backup or restore jobs may run at once', wholeNumber('--drives'), 1)
    .action(async (name: string, opts: { path: string; drives: number }, cmd: Command) => {
      if (viaManager(cmd)) return managerRepoAdd(cmd, name, opts);
      const store = catalogOf(cmd);
      const catalog = await store.load();
      const entry: RepoEntry = { name: checkName('repository', name), path: path.resolve(opts.path), drives: checkDrives(opts.drives) };
      if (catalog.repos.some((r) => r.name === name)) throw new TricopyError('already-exists', `backup repository ${name} exists`);
      await Repository.create(entry.path, entry.name, entry.drives);
      await store.save({ ...catalog, repos: [...catalog.repos, entry] });
      if (globals(cmd).json) return printJson(entry);
      console.log(`backup repository ${name} at ${entry.path} with ${entry.drives} drive(s)`);
    });
  repo.command('list')
    .description('repositories, with their drives, images and jobs queued or running')
    .action(async (_opts, cmd: Command) => {
      if (viaManager(cmd)) return managerRepoList(cmd);
      const catalog = await catalogOf(cmd).load();
      const rows = await Promise.all(catalog.repos.map(async (r) => {
        const repository = new Repository(r.path);
        const images = await repository.list().catch(() => [] as BackupManifest[]);
        const active = (await repository.jobs().catch(() => [])).filter((j) => j.shownState === 'queued' || j.shownState === 'running').length;
        return { ...r, images: images.length, bytes: images.reduce((n, m) => n + m.dataBytes, 0), activeJobs: active };
      }));
      if (globals(cmd).json) return printJson(rows);
      if (rows.length === 0) return console.log('no backup repositories; add one with: tricopy backup repo add NAME --path DIR --drives N');
      console.log(table(['NAME', 'PATH', 'DRIVES', 'IMAGES', 'SIZE', 'JOBS'], rows.map((r) => [r.name, r.path, String(r.drives), String(r.images), formatBytes(r.bytes), String(r.activeJobs)])));
    });
  repo.command('remove <name>')
    .description('forget a repository (its directory and images stay; refused while a policy uses it)')
    .action(async (name: string, _opts, cmd: Command) => {
      if (viaManager(cmd)) return managerRemove(cmd, 'repo', name);
      const store = catalogOf(cmd);
      const catalog = await store.load();
      await store.repo(name);
      const users = catalog.policies.filter((p) => p.repo === name).map((p) => p.name);
      if (users.length > 0) throw new TricopyError('conflict', `policies ${users.join(', ')} use repository ${name}`, 'remove them first: tricopy backup policy remove NAME');
      await store.save({ ...catalog, repos: catalog.repos.filter((r) => r.name !== name) });
      if (globals(cmd).json) return printJson({ removed: name });
      console.log(`forgot backup repository ${name}; its directory was left as it is`);
    });
}

function registerPolicyCommands(backup: Command): void {
  const policy = backup.command('policy').description('backup policies: a volume, a repository, a cron schedule and how many chains to keep');
  const add = policy.command('add <name>')
    .description('define a policy; `backup run NAME` runs it now, `backup scheduler` runs it at its times')
    .requiredOption('--volume <volume>', 'the volume to back up (on --node)')
    .requiredOption('--repo <repo>', 'the repository to write to')
    .requiredOption('--schedule <cron>', 'when, as a cron expression, e.g. "0 2 * * *" (02:00 each day, local time)')
    .option('--incremental', 'copy only what changed since the last backup (the first one is full)')
    .option('--keep <n>', 'backup chains to keep (a full backup and its incrementals are one chain)', wholeNumber('--keep'), 7);
  addSplitOptions(add)
    .action(async (name: string, opts: { volume: string; repo: string; schedule: string; incremental?: boolean; keep: number } & SplitOptions, cmd: Command) => {
      if (viaManager(cmd)) return managerPolicyAdd(cmd, name, opts);
      const store = catalogOf(cmd);
      const catalog = await store.load();
      if (catalog.policies.some((p) => p.name === name)) throw new TricopyError('already-exists', `backup policy ${name} exists`);
      await store.repo(opts.repo);
      const entry: Policy = {
        name: checkName('policy', name), volume: checkName('volume', opts.volume), repo: opts.repo, node: nodeUrlOf(cmd),
        schedule: checkSchedule(opts.schedule), incremental: opts.incremental === true, keep: checkKeep(opts.keep), ...splitSettings(opts),
      };
      await store.save({ ...catalog, policies: [...catalog.policies, entry] });
      if (globals(cmd).json) return printJson(entry);
      console.log(`backup policy ${name}: ${entry.volume} to ${entry.repo} at "${entry.schedule}", next ${nextRunAfter(entry.schedule, new Date())?.toISOString() ?? 'never'}`);
    });
  policy.command('list')
    .description('policies and when each runs next')
    .action(async (_opts, cmd: Command) => {
      if (viaManager(cmd)) return managerPolicyList(cmd);
      const policies = (await catalogOf(cmd).load()).policies.map((p) => ({ ...p, nextRun: nextRunAfter(p.schedule, new Date())?.toISOString() ?? null }));
      if (globals(cmd).json) return printJson(policies);
      if (policies.length === 0) return console.log('no backup policies; add one with: tricopy backup policy add NAME --volume V --repo R --schedule CRON');
      console.log(table(['NAME', 'VOLUME', 'REPO', 'SOURCE', 'SCHEDULE', 'INCREMENTAL', 'KEEP', 'HOOKS', 'NEXT'], policies.map((p) => [
        p.name, p.volume, p.repo, sourceText(p.source), p.schedule, p.incremental ? 'yes' : 'no', String(p.keep),
        [p.preSplitHook ? 'pre' : '', p.postSplitHook ? 'post' : ''].filter(Boolean).join('+') || '-', p.nextRun ?? '-'])));
    });
  policy.command('remove <name>')
    .description('delete a policy (its backups stay)')
    .action(async (name: string, _opts, cmd: Command) => {
      if (viaManager(cmd)) return managerRemove(cmd, 'policy', name);
      const store = catalogOf(cmd);
      const catalog = await store.load();
      await store.policy(name);
      await store.save({ ...catalog, policies: catalog.policies.filter((p) => p.name !== name) });
      if (globals(cmd).json) return printJson({ removed: name });
      console.log(`removed backup policy ${name}`);
    });
}

async function runPolicy(cmd: Command, store: CatalogStore, p: Policy): Promise<Awaited<ReturnType<typeof runBackup>>> {
  const repo = await store.repo(p.repo);
  return runBackup(contextFor(cmd, repo, p.node, `backup ${p.name}`), {
    volume: p.volume, incremental: p.incremental, policy: p.name, keep: p.keep, source: p.source, hooks: { pre: p.preSplitHook, post: p.postSplitHook },
  });
}

function printBackup(cmd: Command, result: Awaited<ReturnType<typeof runBackup>>): void {
  if (globals(cmd).json) return printJson(result);
  const m = result.manifest;
  if (result.fellBackToFull) console.log(`an incremental backup was asked for; took a full one: ${result.fellBackToFull}`);
  console.log(`${m.kind} backup ${m.id} of ${m.volume} at ${m.snapshotAt}: ${m.extents.length} extent(s), ${formatBytes(m.dataBytes)}, sha256 ${m.dataSha256}`);
  if (result.expired.length > 0) console.log(`retention deleted ${result.expired.length} older backup(s): ${result.expired.join(', ')}`);
}

function registerRunCommands(backup: Command): void {
  const run = backup.command('run [policy]')
    .description('back up a volume now: a snapshot (the volume keeps serving writes), a copy of it into the repository, the snapshot deleted.\n' +
      'Either a policy\'s name, or --volume and --repo. Waits for a free drive of the repository.')
    .option('--volume <volume>', 'the volume (on --node)')
    .option('--repo <repo>', 'the repository')
    .option('--incremental', 'copy only the regions changed since the last backup to this repository (else, or if there is none, a full backup)')
    .option('--keep <n>', 'then delete all but the newest N chains of the volume in the repository', wholeNumber('--keep'));
  addSplitOptions(run)
    .action(async (policyName: string | undefined, opts: { volume?: string; repo?: string; incremental?: boolean; keep?: number } & SplitOptions, cmd: Command) => {
      if (viaManager(cmd)) {
        if (policyName === undefined || opts.volume || opts.repo) {
          return notThroughManager('a backup without a policy', 'the manager runs policies: add one (backup policy add … --manager), then: tricopy backup run NAME --manager');
        }
        return managerRun(cmd, policyName);
      }
      const store = catalogOf(cmd);
      if (policyName !== undefined) {
        if (opts.volume || opts.repo) throw new TricopyError('invalid-argument', 'give a policy or --volume and --repo, not both');
        if (opts.source || opts.preSplitHook || opts.postSplitHook) throw new TricopyError('invalid-argument', 'a policy has its own source and hooks; give them to policy add');
        return printBackup(cmd, await runPolicy(cmd, store, await store.policy(policyName)));
      }
      if (!opts.volume || !opts.repo) throw new TricopyError('invalid-argument', 'name a policy, or give --volume and --repo');
      const repo = await store.repo(opts.repo);
      const ctx = contextFor(cmd, repo, nodeUrlOf(cmd), `backup ${opts.volume}`);
      const split = splitSettings(opts);
      printBackup(cmd, await runBackup(ctx, {
        volume: checkName('volume', opts.volume), incremental: opts.incremental === true, ...(opts.keep !== undefined ? { keep: checkKeep(opts.keep) } : {}),
        source: split.source, hooks: { pre: split.preSplitHook, post: split.postSplitHook },
      }));
    });
  backup.command('scheduler')
    .description('run every policy at the times of its schedule, until stopped (SIGINT/SIGTERM); policies are re-read each time')
    .action(async (_opts, cmd: Command) => {
      if (viaManager(cmd)) return notThroughManager('backup scheduler', 'the leading manager fires every policy it keeps at its times; nothing to run here');
      const store = catalogOf(cmd);
      const scheduler = new BackupScheduler<Policy>({
        clock: systemClock, loadPolicies: async () => (await store.load()).policies,
        run: async (p) => printBackup(cmd, await runPolicy(cmd, store, p)),
        onError: (p, err) => process.stderr.write(`backup ${p.name} failed: ${errorMessage(err)}\n`),
      });
      scheduler.start();
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await scheduler.stop();
    });
  backup.command('expire')
    .description('apply retention now: delete all but the newest N chains of a volume in a repository')
    .requiredOption('--volume <volume>', 'the volume')
    .requiredOption('--repo <repo>', 'the repository')
    .requiredOption('--keep <n>', 'chains to keep', wholeNumber('--keep'))
    .action(async (opts: { volume: string; repo: string; keep: number }, cmd: Command) => {
      if (viaManager(cmd)) return notThroughManager('backup expire', 'a policy\'s --keep applies after each of its backups at the manager');
      const repo = await catalogOf(cmd).repo(opts.repo);
      const expired = await expire(new Repository(repo.path), opts.volume, checkKeep(opts.keep));
      if (globals(cmd).json) return printJson({ expired });
      console.log(expired.length === 0 ? 'nothing to delete' : `deleted ${expired.join(', ')}`);
    });
}

async function findBackup(store: CatalogStore, id: string, repoName?: string): Promise<RepoEntry> {
  const repos = repoName ? [await store.repo(repoName)] : (await store.load()).repos;
  for (const r of repos) {
    if (await new Repository(r.path).manifest(id).then(() => true, () => false)) return r;
  }
  throw new TricopyError('not-found', `no backup ${id} in ${repoName ? `repository ${repoName}` : 'any repository'}`, 'list them with: tricopy backup list');
}

function registerListAndRestore(backup: Command): void {
  backup.command('list')
    .description('backup images, oldest first (every repository, or one)')
    .option('--repo <repo>', 'only this repository')
    .option('--volume <volume>', 'only this volume')
    .action(async (opts: { repo?: string; volume?: string }, cmd: Command) => {
      if (viaManager(cmd)) return managerImages(cmd, opts);
      const store = catalogOf(cmd);
      const repos = opts.repo ? [await store.repo(opts.repo)] : (await store.load()).repos;
      const rows: Array<BackupManifest & { repo: string }> = [];
      for (const r of repos) {
        for (const m of await new Repository(r.path).list()) if (!opts.volume || m.volume === opts.volume) rows.push({ ...m, repo: r.name });
      }
      if (globals(cmd).json) return printJson(rows);
      if (rows.length === 0) return console.log('no backups');
      console.log(table(['ID', 'REPO', 'VOLUME', 'KIND', 'SNAPSHOT', 'PARENT', 'DATA', 'POLICY'], rows.map((m) => [
        m.id, m.repo, m.volume, m.kind, m.snapshotAt, m.parentId ?? '-', formatBytes(m.dataBytes), m.policy ?? '-'])));
    });
  backup.command('jobs')
    .description('backup and restore jobs of a repository (interrupted: its process died; run it again); with --manager: every job the manager ran, newest first')
    .option('--repo <repo>', 'the repository (required without --manager)')
    .action(async (opts: { repo?: string }, cmd: Command) => {
      if (viaManager(cmd)) return managerJobs(cmd);
      if (!opts.repo) throw new TricopyError('invalid-argument', 'backup jobs needs --repo (or --manager for the manager\'s jobs)');
      const jobs = await new Repository((await catalogOf(cmd).repo(opts.repo)).path).jobs();
      if (globals(cmd).json) return printJson(jobs);
      console.log(table(['ID', 'KIND', 'VOLUME', 'STATE', 'QUEUED', 'FINISHED', 'EVENTS', 'ERROR'], jobs.map((j) => [
        j.id, j.kind, j.volume, j.shownState, j.queuedAt, j.finishedAt ?? '-', (j.events ?? []).map((e) => e.kind).join(' ') || '-', j.error ?? '-'])));
    });
  backup.command('restore <volume>')
    .description('restore a backup (its full backup, then each incremental in order; every data file checked against its sha256 first).\n' +
      'To a new volume with --to (created with the backup\'s size); over VOLUME itself only with --force (stop its hosts first).')
    .requiredOption('--from <backup-id>', 'the backup (from `backup list`)')
    .option('--to <volume>', 'the volume to write (default: VOLUME itself)')
    .option('--repo <repo>', 'the repository holding the backup (default: search them all)')
    .option('--force', 'overwrite an existing volume')
    .action(async (volume: string, opts: { from: string; to?: string; repo?: string; force?: boolean }, cmd: Command) => {
      if (viaManager(cmd)) return managerRestore(cmd, volume, opts);
      const store = catalogOf(cmd);
      const repo = await findBackup(store, opts.from, opts.repo);
      const manifest = await new Repository(repo.path).manifest(opts.from);
      if (manifest.volume !== volume) throw new TricopyError('invalid-argument', `backup ${opts.from} is of volume ${manifest.volume}, not ${volume}`);
      const target = checkName('volume', opts.to ?? volume);
      const result = await restoreBackup(contextFor(cmd, repo, nodeUrlOf(cmd), `restore ${target}`), { backupId: opts.from, target, force: opts.force === true });
      if (globals(cmd).json) return printJson(result);
      console.log(`restored ${volume} as of ${manifest.snapshotAt} to ${result.created ? 'new ' : ''}volume ${target} (${result.applied.length} image(s), ${formatBytes(result.bytes)})`);
    });
}

export function registerBackupCommands(program: Command): void {
  const backup = program.command('backup')
    .description('managed backup: repositories with drives, full and incremental backups from snapshots, policies, retention, restore.\n' +
      'With --manager URL the manager keeps repositories and policies, runs the schedules while it leads and records every job')
    .option('--catalog <file>', 'the catalog of repositories and policies (env TRICOPY_BACKUP_CATALOG, default ~/.config/tricopy/backup.json)');
  registerRepoCommands(backup);
  registerPolicyCommands(backup);
  registerRunCommands(backup);
  registerListAndRestore(backup);
  registerVerifyCommand(backup, catalogOf);
  registerCatalogImport(backup, catalogOf);
}
