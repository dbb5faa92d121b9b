// The backup repositories and policies the manager keeps in its store (next to nodes and
// topologies, so every manager sharing the store sees the same ones and a new leader runs them):
// added and removed through the leader's single writer, each change an event in the history. The
// checks are the file catalog's (backup/catalog.ts); a policy names the registered node that serves
// its volume, found from what the nodes pushed (the leader's read model) when the operator does not say.
import * as path from 'node:path';
import { TricopyError } from '../common/errors';
import { checkDrives, checkHook, checkKeep, checkName, checkSchedule, parseBackupSource, sourceText } from '../backup/catalog';
import type { BackupManifest } from '../backup/manifest';
import { Repository } from '../backup/repository';
import { nextRunAfter } from '../backup/schedule';
import { verifyRepositories } from '../backup/verify';
import type {
  AddBackupPolicyRequest, AddBackupRepoRequest, BackupImageView, BackupPolicyRecord, BackupPolicyView, BackupRepoRecord, BackupImageCheck, VerifyBackupsRequest,
} from '../contracts/backup';
import type { ManagerContext } from './context';
import { nodeServingVolume, registeredNode } from './backup-rules';

/** Default number of chains a policy keeps. */
export const defaultKeepChains = 7;

export class ManagerBackupCatalog {
  constructor(private readonly ctx: ManagerContext, private readonly changed: () => void) {}

  repos(): Promise<BackupRepoRecord[]> {
    return this.ctx.store.listBackupRepos();
  }

  async repo(name: string): Promise<BackupRepoRecord> {
    const repo = (await this.repos()).find((r) => r.name === name);
    if (!repo) throw new TricopyError('not-found', `no backup repository named ${name} at the manager`, 'list them with: tricopy backup repo list --manager');
    return repo;
  }

  policies(): Promise<BackupPolicyRecord[]> {
    return this.ctx.store.listBackupPolicies();
  }

  async policyViews(): Promise<BackupPolicyView[]> {
    const now = new Date(this.ctx.clock.now());
    return (await this.policies()).map((p) => ({ ...p, nextRunAt: nextRunAfter(p.schedule, now)?.toISOString() ?? null }));
  }

  async policy(name: string): Promise<BackupPolicyRecord> {
    const policy = (await this.policies()).find((p) => p.name === name);
    if (!policy) throw new TricopyError('not-found', `no backup policy named ${name} at the manager`, 'list them with: tricopy backup policy list --manager');
    return policy;
  }

  /** Creates the repository's directory on this (the leading) manager's machine and keeps it. */
  async addRepo(req: AddBackupRepoRequest): Promise<BackupRepoRecord> {
    if (!path.isAbsolute(req.path)) throw new TricopyError('invalid-argument', `repository path ${req.path} is not absolute`, 'give the directory as the manager\'s machine sees it, from /');
    const record: BackupRepoRecord = {
      name: checkName('repository', req.name), path: path.normalize(req.path), drives: checkDrives(req.drives ?? 1), addedAt: this.now(),
    };
    return this.ctx.writer.run(async (tx) => {
      const repos = await this.repos();
      if (repos.some((r) => r.name === record.name)) throw new TricopyError('already-exists', `backup repository ${record.name} exists`);
      if (repos.some((r) => r.path === record.path)) throw new TricopyError('conflict', `repository ${repos.find((r) => r.path === record.path)!.name} is at ${record.path}`);
      await Repository.create(record.path, record.name, record.drives);
      tx.ops.push(this.ctx.store.putBackupRepo(record));
      tx.event({ kind: 'backup-repo-added', node: null, subject: record.name, reason: `backup repository ${record.name} at ${record.path} with ${record.drives} drive(s)` });
      return record;
    });
  }

  async removeRepo(name: string): Promise<void> {
    await this.ctx.writer.run(async (tx) => {
      await this.repo(name);
      const users = (await this.policies()).filter((p) => p.repo === name).map((p) => p.name);
      if (users.length > 0) throw new TricopyError('conflict', `policies ${users.join(', ')} use repository ${name}`, 'remove them first: tricopy backup policy remove NAME --manager');
      tx.ops.push(this.ctx.store.deleteBackupRepo(name));
      tx.event({ kind: 'backup-repo-removed', node: null, subject: name, reason: `backup repository ${name} forgotten (its directory and images stay)` });
    });
  }

  async addPolicy(req: AddBackupPolicyRequest): Promise<BackupPolicyView> {
    const nodes = await this.ctx.store.listNodes();
    const volume = checkName('volume', req.volume);
    const node = req.node !== undefined ? registeredNode(nodes, req.node).name : nodeServingVolume(this.ctx.model.all(), volume);
    const record: BackupPolicyRecord = {
      name: checkName('policy', req.name), volume, repo: req.repo, node, schedule: checkSchedule(req.schedule), incremental: req.incremental === true,
      keep: checkKeep(req.keep ?? defaultKeepChains), source: sourceText(parseBackupSource(req.source ?? 'snapshot')),
      preSplitHook: checkHook('the pre-split hook', req.preSplitHook), postSplitHook: checkHook('the post-split hook', req.postSplitHook), addedAt: this.now(),
    };
    const added = await this.ctx.writer.run(async (tx) => {
      await this.repo(record.repo);
      if ((await this.policies()).some((p) => p.name === record.name)) throw new TricopyError('already-exists', `backup policy ${record.name} exists`);
      tx.ops.push(this.ctx.store.putBackupPolicy(record));
      tx.event({ kind: 'backup-policy-added', node: record.node, subject: record.name,
        reason: `backup policy ${record.name}: ${record.volume} on ${record.node} to ${record.repo} at "${record.schedule}"${record.incremental ? ', incremental' : ''}, keep ${record.keep}` });
      return record;
    });
    this.changed();
    return { ...added, nextRunAt: nextRunAfter(added.schedule, new Date(this.ctx.clock.now()))?.toISOString() ?? null };
  }

  async removePolicy(name: string): Promise<void> {
    await this.ctx.writer.run(async (tx) => {
      await this.policy(name);
      tx.ops.push(this.ctx.store.deleteBackupPolicy(name));
      tx.event({ kind: 'backup-policy-removed', node: null, subject: name, reason: `backup policy ${name} removed (its backups stay)` });
    });
    this.changed();
  }

  /** Images in every repository (or one), oldest snapshot first. */
  async images(options: { repo?: string; volume?: string }): Promise<BackupImageView[]> {
    const repos = options.repo !== undefined ? [await this.repo(options.repo)] : await this.repos();
    const out: BackupImageView[] = [];
    for (const r of repos) {
      for (const m of await new Repository(r.path).list()) {
        if (options.volume === undefined || m.volume === options.volume) out.push(imageView(r.name, m));
      }
    }
    return out;
  }

  /** Verifies images without restoring them (backup/verify.ts): every repository, or one. */
  async verify(request: VerifyBackupsRequest): Promise<BackupImageCheck[]> {
    const repos = request.repo !== undefined ? [await this.repo(request.repo)] : await this.repos();
    return verifyRepositories(repos, { ...(request.ids ? { ids: request.ids } : {}), ...(request.volume !== undefined ? { volume: request.volume } : {}) });
  }

  /** The repository holding a backup (the one named, or the first that has it) and its manifest. */
  async findImage(backupId: string, repoName?: string): Promise<{ repo: BackupRepoRecord; manifest: BackupManifest }> {
    const repos = repoName !== undefined ? [await this.repo(repoName)] : await this.repos();
    for (const repo of repos) {
      const manifest = await new Repository(repo.path).manifest(backupId).catch(() => null);
      if (manifest) return { repo, manifest };
    }
    throw new TricopyError('not-found', `no backup ${backupId} in ${repoName ? `repository ${repoName}` : 'any repository of the manager'}`, 'list them with: tricopy backup list --manager');
  }

  private now(): string {
    return new Date(this.ctx.clock.now()).toISOString();
  }
}

function imageView(repo: string, m: BackupManifest): BackupImageView {
  return { id: m.id, repo, volume: m.volume, kind: m.kind, snapshotAt: m.snapshotAt, parentId: m.parentId, dataBytes: m.dataBytes, policy: m.policy };
}
