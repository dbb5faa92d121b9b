// `tricopy snapshot`: space-efficient point-in-time snapshots of volumes, each exported read-only
// over NBD as VOLUME@NAME: create (several volumes or a consistency group at one instant), list,
// delete and rollback.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import { printJson, table } from '../format';
import { globals, replicaClient } from '../globals';

export function registerSnapshotCommands(program: Command): void {
  const snapshot = program.command('snapshot').description('point-in-time snapshots of volumes, exported read-only as VOLUME@NAME');
  snapshot.command('create [volumes...]')
    .description('snapshot volumes at one instant; each is then readable over NBD as VOLUME@NAME.\n' +
      'A snapshot stores only what the volume changes after it (copy-on-write, 4 KiB blocks).')
    .requiredOption('--name <name>', 'the snapshot\'s name')
    .option('--group <group>', 'also every volume of this consistency group on the node (one instant for all)')
    .option('--bitmap <name...>', 'changed-block bitmaps to freeze into the snapshot and clear at the same instant (incremental backup)')
    .action(async (volumes: string[], opts: { name: string; group?: string; bitmap?: string[] }, cmd: Command) => {
      if (volumes.length === 0 && !opts.group) throw new TricopyError('invalid-argument', 'name the volumes to snapshot, or --group');
      const snapshots = await replicaClient(cmd).createSnapshot({
        name: opts.name, volumes, ...(opts.group ? { group: opts.group } : {}), ...(opts.bitmap ? { bitmaps: opts.bitmap } : {}),
      });
      if (globals(cmd).json) return printJson(snapshots);
      for (const s of snapshots) console.log(`snapshot ${s.exportName} taken at ${s.createdAt}; export ${s.exportUri}`);
    });
  snapshot.command('list [volume]')
    .description('snapshots of one volume or of every volume, oldest first, with the space each holds')
    .action(async (volume: string | undefined, _opts, cmd: Command) => {
      const snapshots = await replicaClient(cmd).listSnapshots(volume);
      if (globals(cmd).json) return printJson(snapshots);
      if (snapshots.length === 0) return console.log('no snapshots; take one with: tricopy snapshot create VOLUME --name NAME');
      console.log(table(['EXPORT', 'CREATED', 'GROUP', 'USED', 'BITMAPS', 'URI'], snapshots.map((s) => [
        s.exportName, s.createdAt, s.group ?? '-', formatBytes(s.usedBytes), s.bitmaps.join(',') || '-', s.exportUri,
      ])));
    });
  snapshot.command('delete <volume>')
    .description('delete a snapshot and free its space (what an older snapshot still needs moves into it); its clients are disconnected')
    .requiredOption('--name <name>', 'the snapshot')
    .action(async (volume: string, opts: { name: string }, cmd: Command) => {
      await replicaClient(cmd).deleteSnapshot(volume, opts.name);
      if (globals(cmd).json) return printJson({ deleted: `${volume}@${opts.name}` });
      console.log(`deleted snapshot ${volume}@${opts.name}`);
    });
  snapshot.command('rollback <volume>')
    .description('write a snapshot\'s image back over the volume (only the regions changed since); every snapshot stays.\n' +
      'Refused while clients are attached, unless --force disconnects them; hosts may not attach until it ends.')
    .requiredOption('--to <name>', 'the snapshot')
    .option('--force', 'disconnect attached clients')
    .action(async (volume: string, opts: { to: string; force?: boolean }, cmd: Command) => {
      const view = await replicaClient(cmd).rollback(volume, { to: opts.to, force: opts.force === true });
      if (globals(cmd).json) return printJson(view);
      console.log(`volume ${volume} rolled back to snapshot ${view.name} (taken ${view.createdAt})`);
    });
}
