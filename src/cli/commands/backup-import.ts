// `tricopy backup catalog import --manager URL`: moves a file catalog's repositories and policies to
// the manager, so that the leading manager runs the schedules. Each entry is added as `repo add` and
// `policy add --manager` would add it (the repositories' directories and their images stay where
// they are). Entries the manager has already, the same, are skipped, so the import can be run again
// after a partial failure; an entry the manager has under the same name with other settings is a
// conflict and is left to the operator. The file catalog itself is left unchanged.
import type { Command } from 'commander';
import { TricopyError, errorMessage } from '../../common/errors';
import { type Catalog, type CatalogStore, type Policy, type RepoEntry, sourceText } from '../../backup/catalog';
import type { BackupPolicyView, BackupRepoRecord } from '../../contracts/backup';
import type { HttpManagerClient } from '../../manager/client';
import { printJson, table } from '../format';
import { globals, managerClient, viaManager } from '../globals';

export type ImportOutcome = 'added' | 'present' | 'conflict' | 'failed' | 'would add';

export interface ImportResult {
  kind: 'repository' | 'policy';
  name: string;
  outcome: ImportOutcome;
  detail: string;
}

export function registerCatalogImport(backup: Command, catalogOf: (cmd: Command) => CatalogStore): void {
  const catalog = backup.command('catalog').description('the file catalog as a whole');
  catalog.command('import')
    .description('add the repositories and policies of the catalog file (--catalog, TRICOPY_BACKUP_CATALOG or the default) to the manager ' +
      'given by --manager: entries it has already, the same, are skipped; one it has with other settings is a conflict (exit 1) and stays as it is. ' +
      'The directories and their images stay where they are; the manager must see them at the same paths. The file is left unchanged: ' +
      'stop any `backup scheduler` that runs it, or both run the policies')
    .option('--dry-run', 'show what would be added, change nothing')
    .action(async (opts: { dryRun?: boolean }, cmd: Command) => {
      if (!viaManager(cmd)) throw new TricopyError('invalid-argument', 'backup catalog import needs --manager URL (or TRICOPY_MANAGER): the manager to import into');
      const store = catalogOf(cmd);
      const results = await importCatalog(managerClient(cmd), await store.load(), opts.dryRun === true);
      report(cmd, store.file, results);
    });
}

/** Adds what the manager lacks, repositories first (the policies name them). */
export async function importCatalog(client: HttpManagerClient, catalog: Catalog, dryRun: boolean): Promise<ImportResult[]> {
  const results: ImportResult[] = [];
  const repos = await client.listBackupRepos();
  for (const r of catalog.repos) results.push(await importRepo(client, repos, r, dryRun));
  const policies = await client.listBackupPolicies();
  for (const p of catalog.policies) results.push(await importPolicy(client, policies, p, dryRun));
  return results;
}

async function importRepo(client: HttpManagerClient, present: BackupRepoRecord[], r: RepoEntry, dryRun: boolean): Promise<ImportResult> {
  const base = { kind: 'repository' as const, name: r.name };
  const same = present.find((x) => x.name === r.name);
  if (same) {
    return same.path === r.path && same.drives === r.drives
      ? { ...base, outcome: 'present', detail: `${r.path}, ${r.drives} drive(s)` }
      : { ...base, outcome: 'conflict', detail: `the manager has it at ${same.path} with ${same.drives} drive(s); the file at ${r.path} with ${r.drives}` };
  }
  if (dryRun) return { ...base, outcome: 'would add', detail: `${r.path}, ${r.drives} drive(s)` };
  try {
    const added = await client.addBackupRepo({ name: r.name, path: r.path, drives: r.drives });
    return { ...base, outcome: 'added', detail: `${added.path}, ${added.drives} drive(s)` };
  } catch (err) {
    return { ...base, outcome: 'failed', detail: errorMessage(err) };
  }
}

async function importPolicy(client: HttpManagerClient, present: BackupPolicyView[], p: Policy, dryRun: boolean): Promise<ImportResult> {
  const base = { kind: 'policy' as const, name: p.name };
  const source = sourceText(p.source);
  const what = `${p.volume} to ${p.repo} at "${p.schedule}"${p.incremental ? ', incremental' : ''}, keep ${p.keep}, from ${source}`;
  const same = present.find((x) => x.name === p.name);
  if (same) {
    // The node is not compared: the file names it by URL, the manager by its registered name.
    const alike = same.volume === p.volume && same.repo === p.repo && same.schedule === p.schedule && same.incremental === p.incremental &&
      same.keep === p.keep && same.source === source && same.preSplitHook === p.preSplitHook && same.postSplitHook === p.postSplitHook;
    return alike ? { ...base, outcome: 'present', detail: what }
      : { ...base, outcome: 'conflict', detail: `the manager has another policy of this name: ${same.volume} to ${same.repo} at "${same.schedule}"` };
  }
  if (dryRun) return { ...base, outcome: 'would add', detail: `${what}, node ${p.node}` };
  try {
    const added = await client.addBackupPolicy({
      name: p.name, volume: p.volume, repo: p.repo, node: p.node, schedule: p.schedule, incremental: p.incremental, keep: p.keep, source,
      ...(p.preSplitHook !== null ? { preSplitHook: p.preSplitHook } : {}), ...(p.postSplitHook !== null ? { postSplitHook: p.postSplitHook } : {}),
    });
    return { ...base, outcome: 'added', detail: `${what}, node ${added.node}, next ${added.nextRunAt ?? 'never'}` };
  } catch (err) {
    return { ...base, outcome: 'failed', detail: errorMessage(err) };
  }
}

function report(cmd: Command, file: string, results: ImportResult[]): void {
  if (globals(cmd).json) printJson(results);
  else if (results.length === 0) console.log(`the catalog ${file} holds no repositories and no policies; nothing to import`);
  else console.log(table(['KIND', 'NAME', 'RESULT', 'DETAIL'], results.map((r) => [r.kind, r.name, r.outcome, r.detail])));
  const bad = results.filter((r) => r.outcome === 'conflict' || r.outcome === 'failed');
  if (bad.length > 0) {
    throw new TricopyError('conflict', `${bad.length} of ${results.length} catalog entries were not imported: ${bad.map((r) => `${r.kind} ${r.name}`).join(', ')}`,
      'rename or remove the conflicting entry at the manager or in the file, then run the import again (entries already imported are skipped)');
  }
  if (!globals(cmd).json && results.some((r) => r.outcome === 'added')) {
    process.stderr.write(`imported into the manager; ${file} is unchanged: stop any \`tricopy backup scheduler\` that runs it, or both run its policies\n`);
  }
}
