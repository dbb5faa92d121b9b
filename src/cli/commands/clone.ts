// `tricopy clone`: writable throwaway clones of a node's volumes, outside any topology. A clone set
// NAME takes a snapshot VOLUME@NAME.base of each volume at one instant and exports a writable clone
// of each as VOLUME@NAME (or, with --snapshot S, reads an existing snapshot VOLUME@S: an older
// image); the volumes never see the clones' writes. The same clone sets a `topology drill` makes
// (src/replica/clones.ts); delete discards the overlays and the set's own snapshots.
import type { Command } from 'commander';
import { formatBytes } from '../../common/units';
import { printJson, table } from '../format';
import { cloneClient, globals } from '../globals';

export function registerCloneCommands(program: Command): void {
  const clone = program.command('clone').description('writable throwaway clones of volumes, exported over NBD as VOLUME@NAME');
  clone.command('create <name>')
    .description('clone volumes at one instant: each is then writable over NBD as VOLUME@NAME.\n' +
      'Reads come from a snapshot VOLUME@NAME.base taken now (or, with --snapshot S, from VOLUME@S);\n' +
      'writes go to an overlay (64 KiB regions)\n' +
      'that only the clone sees. The volumes go on unchanged, replication into them included.')
    .requiredOption('--volume <volume...>', 'a volume to clone (repeat for several, all at one instant)')
    .option('--snapshot <snapshot>', 'clone an existing snapshot of the volumes (an older image) instead of taking one now;\n' +
      'several volumes need a snapshot taken of them together (snapshot create --group). The snapshot stays, and cannot be deleted while the clone reads it')
    .action(async (name: string, opts: { volume: string[]; snapshot?: string }, cmd: Command) => {
      const set = await cloneClient(cmd).createCloneSet({ name, volumes: opts.volume, ...(opts.snapshot !== undefined ? { snapshot: opts.snapshot } : {}) });
      if (globals(cmd).json) return printJson(set);
      const from = opts.snapshot !== undefined ? ` (snapshot ${opts.snapshot})` : '';
      for (const c of set.clones) console.log(`clone ${c.exportName} of ${c.volume} as of ${set.createdAt}${from}; export ${c.exportUri} (read-write)`);
      console.log(`discard with: tricopy clone delete ${name}`);
    });
  clone.command('list')
    .description('clone sets on the node (a DR drill\'s included), with what each clone wrote and its clients')
    .action(async (_opts, cmd: Command) => {
      const sets = await cloneClient(cmd).listCloneSets();
      if (globals(cmd).json) return printJson(sets);
      if (sets.length === 0) return console.log('no clones; make one with: tricopy clone create NAME --volume VOLUME');
      console.log(table(['EXPORT', 'SET', 'STATE', 'CREATED', 'WRITTEN', 'CLIENTS', 'DRILL', 'URI'], sets.flatMap((s) => s.clones.map((c) => [
        c.exportName, s.name, s.state, s.createdAt, formatBytes(c.writtenBytes), String(c.clients),
        s.drill ? `${s.drill.topology}@${s.drill.site}` : '-', c.exportUri,
      ]))));
    });
  clone.command('delete <name>')
    .description('discard a clone set: its overlays and snapshots go, the space they held is freed.\n' +
      'Refused while clients are attached, unless --force disconnects them.')
    .option('--force', 'disconnect attached clients')
    .action(async (name: string, opts: { force?: boolean }, cmd: Command) => {
      const deleted = await cloneClient(cmd).endCloneSet(name, { force: opts.force === true });
      if (globals(cmd).json) return printJson(deleted);
      const clients = deleted.disconnected > 0 ? `, ${deleted.disconnected} client(s) disconnected` : '';
      console.log(`deleted clone set ${name} after ${(deleted.durationMs / 1000).toFixed(1)} s (${formatBytes(deleted.writtenBytes)} written${clients})`);
    });
}
