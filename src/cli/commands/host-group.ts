// `tricopy host-group`: host groups of one node (spec 003 §5.6): named sets of hosts, by TLS
// identity and/or client address, to which volumes are mapped (`tricopy volume map`). Also the
// human output of a change that closed sessions, shared with `volume map|unmap`.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import type { HostGroupChange, HostGroupView } from '../../contracts/host-groups';
import { keyValues, printJson, table } from '../format';
import { globals, hostGroupClient } from '../globals';

interface MemberOptions {
  identity: string[];
  client: string[];
}

const collect = (value: string, previous: string[]): string[] => [...previous, value];

function memberOptions(command: Command): Command {
  return command
    .option('--identity <name>', 'TLS identity: PSK username or client certificate common name (repeatable)', collect, [])
    .option('--client <cidr>', 'client address or CIDR range, e.g. 10.1.0.0/24 (repeatable)', collect, []);
}

function members(opts: MemberOptions): { identities?: string[]; clients?: string[] } {
  return { ...(opts.identity.length > 0 ? { identities: opts.identity } : {}), ...(opts.client.length > 0 ? { clients: opts.client } : {}) };
}

export function registerHostGroupCommands(program: Command): void {
  const group = program.command('host-group')
    .description('host groups: hosts named by TLS identity and/or address; a volume mapped to groups is seen only by their hosts');

  memberOptions(group.command('create <name>')
    .description('create a host group; it presents nothing until volumes are mapped to it (tricopy volume map)'))
    .action(async (name: string, opts: MemberOptions, cmd: Command) => {
      const g = await hostGroupClient(cmd).createHostGroup({ name, ...members(opts) });
      if (globals(cmd).json) return printJson(g);
      console.log(`created host group ${g.name}: ${memberText(g)}`);
    });

  group.command('list')
    .description('the host groups of the node, their members and mapped volumes')
    .action(async (_opts, cmd: Command) => {
      const groups = await hostGroupClient(cmd).listHostGroups();
      if (globals(cmd).json) return printJson(groups);
      if (groups.length === 0) return console.log('no host groups; create one with: tricopy host-group create NAME --identity ID --client CIDR');
      console.log(table(['NAME', 'IDENTITIES', 'CLIENTS', 'VOLUMES'], groups.map((g) => [
        g.name, g.identities.join(',') || '-', g.clients.join(',') || '-', g.mappings.map((m) => `${m.volume}:${m.lun}`).join(',') || '-',
      ])));
    });

  group.command('show <name>')
    .description('one host group: members and the volumes mapped to it by LUN')
    .action(async (name: string, _opts, cmd: Command) => {
      const g = await hostGroupClient(cmd).getHostGroup(name);
      if (globals(cmd).json) return printJson(g);
      console.log(keyValues([
        ['name', g.name], ['identities', g.identities.join(', ') || '(none)'], ['clients', g.clients.join(', ') || '(none)'],
        ['mapped volumes', g.mappings.map((m) => `LUN ${m.lun}: ${m.volume}`).join(', ') || '(none)'],
      ]));
    });

  memberOptions(group.command('add <name>').description('add hosts to a host group'))
    .action(async (name: string, opts: MemberOptions, cmd: Command) => {
      requireMembers(opts, 'add');
      const g = await hostGroupClient(cmd).addHostGroupMembers(name, members(opts));
      if (globals(cmd).json) return printJson(g);
      console.log(`host group ${g.name}: ${memberText(g)}`);
    });

  memberOptions(group.command('remove <name>')
    .description('remove hosts from a host group; their open NBD sessions on its volumes are closed at once'))
    .action(async (name: string, opts: MemberOptions, cmd: Command) => {
      requireMembers(opts, 'remove');
      const change = await hostGroupClient(cmd).removeHostGroupMembers(name, members(opts));
      if (globals(cmd).json) return printJson(change);
      console.log(`host group ${change.hostGroup.name}: ${memberText(change.hostGroup)}`);
      printClosed(change);
    });

  group.command('delete <name>')
    .description('delete a host group; refused while volumes are mapped to it')
    .action(async (name: string, _opts, cmd: Command) => {
      await hostGroupClient(cmd).deleteHostGroup(name);
      if (globals(cmd).json) return printJson({ deleted: name });
      console.log(`deleted host group ${name}`);
    });
}

function requireMembers(opts: MemberOptions, verb: string): void {
  if (opts.identity.length === 0 && opts.client.length === 0) {
    throw new TricopyError('invalid-argument', `host-group ${verb} needs --identity and/or --client`);
  }
}

function memberText(g: HostGroupView): string {
  return `identities ${g.identities.join(', ') || '(none)'}; clients ${g.clients.join(', ') || '(none)'}`;
}

/** Tells the operator which sessions a narrowing change closed. */
export function printClosed(change: HostGroupChange): void {
  for (const s of change.closedSessions) {
    console.log(`closed session of ${s.address}:${s.port}${s.identity ? ` (${s.identity})` : ''} on ${s.export}: the host lost access`);
  }
}

/** A LUN from the command line: an integer, checked for range by the node. */
export function parseLun(text: string): number {
  if (!/^\d{1,9}$/.test(text)) throw new TricopyError('invalid-argument', `--lun ${text} is not a LUN number`, 'a LUN is an integer such as 0');
  return Number(text);
}
