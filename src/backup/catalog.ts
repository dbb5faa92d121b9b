// The backup catalog: the repositories (name → directory) and the policies an operator defined.
// It is one JSON file on the machine that runs the jobs (TRICOPY_BACKUP_CATALOG, else
// ~/.config/tricopy/backup.json), replaced atomically; every read validates it.
import * as os from 'node:os';
import * as path from 'node:path';
import { Cron } from 'croner';
import { TricopyError } from '../common/errors';
import { nodeDisk } from '../common/disk';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { BackupSource } from './engine';
import { maxDrives, maxHookCommandBytes, maxKeepChains, namePattern } from './limits';

export interface RepoEntry {
  name: string;
  path: string;
  drives: number;
}

export interface Policy {
  name: string;
  volume: string;
  repo: string;
  /** The node that serves the volume (its API URL). */
  node: string;
  /** A cron expression (5 fields, or 6 with seconds), evaluated in the scheduler's local time. */
  schedule: string;
  incremental: boolean;
  /** Backup chains to keep (a full and its incrementals count as one). */
  keep: number;
  /** Where the image comes from: a snapshot, or the split of an in-node replica pair (spec 003 Fig. 4). */
  source: BackupSource;
  /** Shell commands run before the split (quiesce the application) and after it (resume it); null: none. */
  preSplitHook: string | null;
  postSplitHook: string | null;
}

export interface Catalog {
  repos: RepoEntry[];
  policies: Policy[];
}

export function defaultCatalogPath(): string {
  return process.env.TRICOPY_BACKUP_CATALOG ?? path.join(os.homedir(), '.config', 'tricopy', 'backup.json');
}

function bad(message: string, hint?: string): never {
  throw new TricopyError('invalid-argument', message, hint);
}

export function checkName(kind: string, name: string): string {
  if (!namePattern.test(name)) bad(`${kind} name ${JSON.stringify(name)} is not valid`, 'use letters, digits, dot, dash and underscore (at most 63)');
  return name;
}

export function checkDrives(drives: number): number {
  if (!Number.isSafeInteger(drives) || drives < 1 || drives > maxDrives) bad(`--drives must be a whole number from 1 to ${maxDrives}`);
  return drives;
}

export function checkKeep(keep: number): number {
  if (!Number.isSafeInteger(keep) || keep < 1 || keep > maxKeepChains) bad(`--keep must be a whole number from 1 to ${maxKeepChains}`);
  return keep;
}

export function checkSchedule(schedule: string): string {
  try {
    new Cron(schedule, { paused: true }).stop();
  } catch (err) {
    bad(`schedule ${JSON.stringify(schedule)} is not a cron expression: ${(err as Error).message}`, 'e.g. "0 2 * * *" (02:00 every day)');
  }
  return schedule;
}

/** `snapshot` or `replica:NAME`, as --source takes it. */
export function parseBackupSource(text: string): BackupSource {
  if (text === 'snapshot') return { kind: 'snapshot' };
  if (text.startsWith('replica:')) return { kind: 'replica', name: checkName('replica', text.slice('replica:'.length)) };
  return bad(`--source is snapshot or replica:NAME, not ${JSON.stringify(text)}`, 'replica:NAME backs up from the split of the in-node replica pair NAME (tricopy replica status)');
}

export function sourceText(source: BackupSource): string {
  return source.kind === 'snapshot' ? 'snapshot' : `replica:${source.name}`;
}

export function checkHook(which: string, command: string | null | undefined): string | null {
  if (command === undefined || command === null) return null;
  if (command.trim() === '') bad(`${which} is empty`, 'give a shell command, e.g. "psql -c \'CHECKPOINT\'", or leave the option out');
  if (Buffer.byteLength(command) > maxHookCommandBytes) bad(`${which} is longer than ${maxHookCommandBytes} bytes`, 'put the commands in a script and give its path');
  return command;
}

function decodeRepo(raw: unknown): RepoEntry {
  const o = (raw ?? {}) as Record<string, unknown>;
  if (typeof o.name !== 'string' || typeof o.path !== 'string' || typeof o.drives !== 'number') bad('backup catalog: a repository needs name, path and drives');
  return { name: checkName('repository', o.name), path: o.path, drives: checkDrives(o.drives) };
}

function decodePolicy(raw: unknown): Policy {
  const o = (raw ?? {}) as Record<string, unknown>;
  for (const k of ['name', 'volume', 'repo', 'node', 'schedule'] as const) {
    if (typeof o[k] !== 'string') bad(`backup catalog: a policy needs ${k}`);
  }
  if (typeof o.incremental !== 'boolean' || typeof o.keep !== 'number') bad('backup catalog: a policy needs incremental and keep');
  return {
    name: checkName('policy', o.name as string), volume: checkName('volume', o.volume as string), repo: checkName('repository', o.repo as string),
    node: o.node as string, schedule: checkSchedule(o.schedule as string), incremental: o.incremental, keep: checkKeep(o.keep),
    // Absent in catalogs written before hooks and replica sources existed.
    source: parseBackupSource(typeof o.source === 'string' ? o.source : 'snapshot'),
    preSplitHook: checkHook('the pre-split hook', typeof o.preSplitHook === 'string' ? o.preSplitHook : null),
    postSplitHook: checkHook('the post-split hook', typeof o.postSplitHook === 'string' ? o.postSplitHook : null),
  };
}

export class CatalogStore {
  constructor(readonly file: string = defaultCatalogPath()) {}

  async load(): Promise<Catalog> {
    const raw = await readJsonIfExists(this.file, nodeDisk);
    if (raw === undefined) return { repos: [], policies: [] };
    const o = raw as Record<string, unknown>;
    if (!Array.isArray(o.repos) || !Array.isArray(o.policies)) bad(`backup catalog ${this.file} is not valid: repos and policies must be lists`);
    return { repos: o.repos.map(decodeRepo), policies: o.policies.map(decodePolicy) };
  }

  async save(catalog: Catalog): Promise<void> {
    await nodeDisk.mkdirp(path.dirname(this.file));
    // The source is stored as it is written on the command line (snapshot, replica:NAME).
    const policies = catalog.policies.map((p) => ({ ...p, source: sourceText(p.source) }));
    await atomicWriteJson(this.file, { ...catalog, policies }, nodeDisk);
  }

  async repo(name: string): Promise<RepoEntry> {
    const repo = (await this.load()).repos.find((r) => r.name === name);
    if (!repo) throw new TricopyError('not-found', `no backup repository named ${name}`, 'list them with: tricopy backup repo list');
    return repo;
  }

  async policy(name: string): Promise<Policy> {
    const policy = (await this.load()).policies.find((p) => p.name === name);
    if (!policy) throw new TricopyError('not-found', `no backup policy named ${name}`, 'list them with: tricopy backup policy list');
    return policy;
  }
}
