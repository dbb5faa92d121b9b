// `tricopy group`: async consistency groups of one node: sequence numbers, journal use and lag.
import type { Command } from 'commander';
import { formatBytes } from '../../common/units';
import { printJson, table } from '../format';
import { client, globals } from '../globals';

export function registerGroupCommands(program: Command): void {
  const group = program.command('group').description('async consistency groups: journal use and lag');
  addStatus(group);
}

function addStatus(group: Command): void {
  group.command('status [name]')
    .description('a group: its pairs, sequence numbers, journal use and lag in seconds, bytes and entries')
    .action(async (name: string | undefined, _opts, cmd: Command) => {
      const api = client(cmd);
      const groups = name ? [await api.getGroup(name)] : await api.listGroups();
      if (globals(cmd).json) return printJson(name ? groups[0] : groups);
      if (groups.length === 0) return console.log('no consistency groups on this node');
      console.log(table(['GROUP', 'ROLE', 'PEER', 'PAIRS', 'LAST', 'RECEIVED', 'APPLIED', 'JOURNAL', 'LAG'], groups.map((g) => [
        g.group, g.role, `${g.peer}${g.connected ? '' : ' (down)'}`, g.pairs.join(','), String(g.lastSeq), String(g.receivedSeq), String(g.appliedSeq),
        g.journal ? `${formatBytes(g.journal.usedBytes)}/${formatBytes(g.journal.capacityBytes)} (${g.journal.fullPolicy})` : '-',
        `${g.lag.seconds.toFixed(1)}s ${formatBytes(g.lag.bytes)} ${g.lag.entries} entries${g.blockedEntries > 0 ? ` (${g.blockedEntries} held for the sync copy or behind one)` : ''}`,
      ])));
    });
}
