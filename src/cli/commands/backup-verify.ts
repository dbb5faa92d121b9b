// `tricopy backup verify`: checks backup images without restoring them (backup/verify.ts), in the
// repositories of the catalog file, or with --manager in the manager's. Prints one row per image
// and fails (exit 1) when any image cannot be restored, naming why.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { CatalogStore } from '../../backup/catalog';
import { verifyRepositories } from '../../backup/verify';
import type { BackupImageCheck } from '../../contracts/backup';
import { printJson, table } from '../format';
import { globals, managerClient, viaManager } from '../globals';

interface VerifyOptions {
  repo?: string;
  volume?: string;
}

export function registerVerifyCommand(backup: Command, catalogOf: (cmd: Command) => CatalogStore): void {
  backup.command('verify [backup-id...]')
    .description('check backup images without restoring them: each data file is read back against its size and sha256, and each incremental\'s chain ' +
      'is checked (its parent present, intact, of the same volume). With ids: those images and the images their restore needs; without: every image. ' +
      'Exits 1 when any image cannot be restored')
    .option('--repo <repo>', 'only this repository (default: every repository)')
    .option('--volume <volume>', 'only images of this volume (without ids)')
    .action(async (ids: string[], opts: VerifyOptions, cmd: Command) => {
      if (ids.length > 0 && opts.volume !== undefined) throw new TricopyError('invalid-argument', 'give backup ids or --volume, not both');
      const checks = viaManager(cmd) ? await viaTheManager(cmd, ids, opts) : await inCatalog(cmd, catalogOf(cmd), ids, opts);
      report(cmd, checks, ids);
    });
}

async function inCatalog(cmd: Command, store: CatalogStore, ids: string[], opts: VerifyOptions): Promise<BackupImageCheck[]> {
  const repos = opts.repo !== undefined ? [await store.repo(opts.repo)] : (await store.load()).repos;
  const quiet = globals(cmd).json === true;
  const lastTenth = new Map<string, number>();
  return verifyRepositories(repos, { ids, ...(opts.volume !== undefined ? { volume: opts.volume } : {}) }, (repo, done, total) => {
    const tenth = total === 0 ? 10 : Math.floor((done / total) * 10);
    if (quiet || tenth === lastTenth.get(repo)) return;
    lastTenth.set(repo, tenth);
    process.stderr.write(`verify ${repo}: ${formatBytes(done)} of ${formatBytes(total)} read (${tenth * 10}%)\n`);
  });
}

async function viaTheManager(cmd: Command, ids: string[], opts: VerifyOptions): Promise<BackupImageCheck[]> {
  if (!globals(cmd).json) process.stderr.write('verifying at the manager (it reads every data file; this takes as long as reading them)\n');
  return managerClient(cmd).verifyBackups({
    ...(opts.repo !== undefined ? { repo: opts.repo } : {}), ...(ids.length > 0 ? { ids } : {}), ...(opts.volume !== undefined ? { volume: opts.volume } : {}),
  });
}

function report(cmd: Command, checks: BackupImageCheck[], ids: string[]): void {
  if (globals(cmd).json) printJson(checks);
  else if (checks.length === 0) console.log(ids.length === 0 ? 'no backups to verify' : 'nothing verified');
  else {
    console.log(table(['ID', 'REPO', 'VOLUME', 'KIND', 'SNAPSHOT', 'DATA', 'RESULT'], checks.map((c) => [
      c.id, c.repo, c.volume ?? '?', c.kind ?? '?', c.snapshotAt ?? '?', c.dataBytes === null ? '?' : formatBytes(c.dataBytes), c.ok ? 'ok' : `DAMAGED: ${c.problem}`])));
  }
  const damaged = checks.filter((c) => !c.ok);
  if (damaged.length > 0) {
    throw new TricopyError('io-error', `${damaged.length} of ${checks.length} backup image(s) cannot be restored: ${damaged.map((c) => c.id).join(', ')}`,
      'restore from an image whose whole chain verifies; the next backup of a volume whose chain is damaged should be a full one (backup run without --incremental)');
  }
}
