// `tricopy volume`: create, list, show, grow, share (access lists, host-group mappings) and delete
// the volumes of one node.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes, parseSize } from '../../common/units';
import type { VolumeView } from '../../contracts/node';
import { keyValues, printJson, table } from '../format';
import { HttpNodeClient } from '../../node/api-client';
import { client, globals, hostGroupClient, nodeUrl, replicaClient, tokenOf } from '../globals';
import { parseLun, printClosed } from './host-group';
import { addRelocate, relocationText } from './volume-relocate';

export function registerVolumeCommands(program: Command): void {
  const volume = program.command('volume').description('create, inspect, grow, share and delete volumes');
  addCreate(volume);
  addList(volume);
  addShow(volume);
  addResize(volume);
  for (const verb of ['allow', 'disallow'] as const) addAccessRule(volume, verb);
  addMapping(volume);
  addMakeWritable(volume);
  addRelocate(volume);
  addDelete(volume);
  addBitmap(volume);
}

function addCreate(volume: Command): void {
  volume.command('create <name>')
    .description('create a volume (a sparse file on the node, exported over NBD under its name)')
    .requiredOption('--size <size>', 'logical size, e.g. 10GiB (units: B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB; kB/MB/GB/TB/PB are powers of 1000)')
    .option('--description <text>', 'free text shown to NBD clients')
    .option('--thin', 'allow the size to exceed the free space of the node (overcommit)')
    .option('--tier <tier>', 'the data area to create it in (see --data-area of tricopy node run; default: the data directory)')
    .action(async (name: string, opts: { size: string; description?: string; thin?: boolean; tier?: string }, cmd: Command) => {
      const sizeBytes = parseSize(opts.size, 'volume size');
      const view = await client(cmd).createVolume({
        name, size: sizeBytes, ...(opts.description ? { description: opts.description } : {}), thin: opts.thin === true,
        ...(opts.tier ? { tier: opts.tier } : {}),
      });
      if (globals(cmd).json) return printJson(view);
      console.log(`created volume ${view.name} (${formatBytes(view.sizeBytes)}), export ${view.exportUri}`);
    });
}

function addList(volume: Command): void {
  volume.command('list')
    .description('list the volumes of the node')
    .action(async (_opts, cmd: Command) => {
      const volumes = await client(cmd).listVolumes();
      if (globals(cmd).json) return printJson(volumes);
      if (volumes.length === 0) return console.log('no volumes; create one with: tricopy volume create NAME --size 10GiB');
      console.log(table(['NAME', 'SIZE', 'ALLOCATED', 'CLIENTS', 'ACCESS', 'EXPORT'], volumes.map((v) => [
        v.name, formatBytes(v.sizeBytes), formatBytes(v.allocatedBytes), String(v.clients.length), accessSummary(v), v.exportUri,
      ])));
    });
}

function addShow(volume: Command): void {
  volume.command('show <name>')
    .description('show one volume: size, allocation, access list, attached clients')
    .action(async (name: string, _opts, cmd: Command) => {
      const v = await client(cmd).getVolume(name);
      if (globals(cmd).json) return printJson(v);
      console.log(keyValues([
        ['name', v.name], ['uuid', v.uuid], ['size', `${formatBytes(v.sizeBytes)} (${v.sizeBytes} bytes)`],
        ['allocated', formatBytes(v.allocatedBytes)], ['tier', v.tier], ...(v.relocation ? [['relocation', relocationText(v.relocation)] as [string, string]] : []),
        ['created', v.createdAt], ['description', v.description || '-'],
        ['export', v.exportUri], ['allowed clients', v.access.clients.join(', ') || '(none)'],
        ['allowed identities', v.access.identities.join(', ') || '(none)'],
        ['host groups', v.hostGroups.length > 0
          ? `${v.hostGroups.map((m) => `${m.hostGroup} (LUN ${m.lun})`).join(', ')}: only their hosts see the volume; the access list does not apply`
          : '(none: the access list decides)'],
        ['attached', v.clients.map((c) => `${c.address}:${c.port}${c.tls ? ' tls' : ''}${c.identity ? ` (${c.identity})` : ''}`).join(', ') || '(none)'],
        ['host writes', `${v.hostWrites.state}${v.hostWrites.reason ? ` (${v.hostWrites.reason})` : ''}`],
        ...(v.detachedSecondary ? [['former secondary', detachedText(v.detachedSecondary)] as [string, string]] : []),
      ]));
    });
}

function detachedText(d: NonNullable<VolumeView['detachedSecondary']>): string {
  return `holds ${d.primary}'s image since pair ${d.pair} was dissolved (${d.at}); left read-only`;
}

function addMakeWritable(volume: Command): void {
  volume.command('make-writable <name>')
    .description('let hosts write a volume a topology procedure left read-only: a former secondary holding its old primary\'s image\n' +
      '(topology status then no longer counts it as that image; pairing the volume again also lifts it)')
    .action(async (name: string, _opts, cmd: Command) => {
      const v = await new HttpNodeClient(nodeUrl(cmd), tokenOf(cmd)).makeWritable(name);
      if (globals(cmd).json) return printJson(v);
      console.log(`volume ${v.name}: host writes ${v.hostWrites.state}`);
    });
}

function addResize(volume: Command): void {
  volume.command('resize <name>')
    .description('grow a volume (shrinking is refused); attached clients see the new size when they reconnect')
    .requiredOption('--size <size>', 'new logical size, e.g. 20GiB')
    .action(async (name: string, opts: { size: string }, cmd: Command) => {
      const v = await client(cmd).resizeVolume(name, { size: parseSize(opts.size, 'volume size') });
      if (globals(cmd).json) return printJson(v);
      console.log(`volume ${v.name} is now ${formatBytes(v.sizeBytes)}`);
    });
}

function addAccessRule(volume: Command, verb: 'allow' | 'disallow'): void {
  volume.command(`${verb} <name>`)
    .description(verb === 'allow'
      ? 'let more NBD clients attach: an address or CIDR range, or a TLS identity (PSK user or certificate CN)'
      : 'remove an access rule; clients already attached keep their session until they disconnect')
    .option('--client <cidr>', 'client address or range, e.g. 10.0.0.0/8')
    .option('--identity <name>', 'TLS identity: PSK username or client certificate common name')
    .action(async (name: string, opts: { client?: string; identity?: string }, cmd: Command) => {
      if (opts.client === undefined && opts.identity === undefined) {
        throw new TricopyError('invalid-argument', `volume ${verb} needs --client and/or --identity`);
      }
      const v = await client(cmd)[verb](name, opts);
      if (globals(cmd).json) return printJson(v);
      console.log(`volume ${v.name} access: clients ${v.access.clients.join(', ') || '(none)'}; identities ${v.access.identities.join(', ') || '(none)'}`);
    });
}

function addMapping(volume: Command): void {
  volume.command('map <name>')
    .description('present a volume to a host group under a LUN: from then on only hosts of its mapped groups see it\n' +
      '(its access list no longer applies); open sessions of other hosts are closed')
    .requiredOption('--host-group <group>', 'the host group')
    .requiredOption('--lun <n>', 'LUN number, unique in the group (0-255)')
    .action(async (name: string, opts: { hostGroup: string; lun: string }, cmd: Command) => {
      const change = await hostGroupClient(cmd).mapVolume(name, { hostGroup: opts.hostGroup, lun: parseLun(opts.lun) });
      if (globals(cmd).json) return printJson(change);
      console.log(`volume ${name} mapped to host group ${opts.hostGroup} as LUN ${opts.lun}`);
      printClosed(change);
    });
  volume.command('unmap <name>')
    .description('stop presenting a volume to a host group; its hosts\' open sessions are closed unless another mapping\n' +
      '(or, after the last mapping, the access list) still admits them')
    .requiredOption('--host-group <group>', 'the host group')
    .action(async (name: string, opts: { hostGroup: string }, cmd: Command) => {
      const change = await hostGroupClient(cmd).unmapVolume(name, opts.hostGroup);
      if (globals(cmd).json) return printJson(change);
      console.log(`volume ${name} unmapped from host group ${opts.hostGroup}`);
      printClosed(change);
    });
}

function addDelete(volume: Command): void {
  volume.command('delete <name>')
    .description('delete a volume and its data; refused while clients are attached unless --force')
    .option('--force', 'disconnect attached clients and delete anyway')
    .action(async (name: string, opts: { force?: boolean }, cmd: Command) => {
      await client(cmd).deleteVolume(name, { force: opts.force === true });
      if (globals(cmd).json) return printJson({ deleted: name });
      console.log(`deleted volume ${name}`);
    });
}

function accessSummary(v: VolumeView): string {
  if (v.hostGroups.length > 0) return `hg:${v.hostGroups.map((m) => m.hostGroup).join(',')}`;
  const rules = [...v.access.clients, ...v.access.identities.map((i) => `id:${i}`)];
  if (rules.length === 0) return '(nobody)';
  return rules.length > 2 ? `${rules.slice(0, 2).join(',')},+${rules.length - 2}` : rules.join(',');
}

function addBitmap(volume: Command): void {
  const bitmap = volume.command('bitmap')
    .description('changed-block bitmaps for backup tools: each records the regions written since it was added or cleared,\n' +
      'served over NBD as the metadata context qemu:dirty-bitmap:NAME (nbdinfo --map=qemu:dirty-bitmap:NAME URI)');
  bitmap.command('add <volume>')
    .description('start recording changes of the volume from this instant')
    .requiredOption('--name <name>', 'the bitmap (one per consumer)')
    .action(async (name: string, opts: { name: string }, cmd: Command) => {
      const b = await replicaClient(cmd).addBitmap(name, opts.name);
      if (globals(cmd).json) return printJson(b);
      console.log(`volume ${name}: bitmap ${b.name} records changes from ${b.clearedAt}; NBD context ${b.context}`);
    });
  bitmap.command('clear <volume>')
    .description('forget what was recorded (after a backup took it): record again from this instant')
    .requiredOption('--name <name>', 'the bitmap')
    .action(async (name: string, opts: { name: string }, cmd: Command) => {
      const b = await replicaClient(cmd).clearBitmap(name, opts.name);
      if (globals(cmd).json) return printJson(b);
      console.log(`volume ${name}: bitmap ${b.name} cleared at ${b.clearedAt}`);
    });
  bitmap.command('list <volume>')
    .description('the bitmaps of a volume and how much each has recorded')
    .action(async (name: string, _opts, cmd: Command) => {
      const list = await replicaClient(cmd).listBitmaps(name);
      if (globals(cmd).json) return printJson(list);
      if (list.length === 0) return console.log(`volume ${name} has no bitmaps; add one with: tricopy volume bitmap add ${name} --name NAME`);
      console.log(table(['NAME', 'CHANGED', 'SINCE', 'GRANULARITY', 'NBD CONTEXT'], list.map((b) => [
        b.name, formatBytes(b.dirtyBytes), b.clearedAt, formatBytes(b.granularityBytes), b.context,
      ])));
    });
  bitmap.command('delete <volume>')
    .description('stop recording and delete the bitmap')
    .requiredOption('--name <name>', 'the bitmap')
    .action(async (name: string, opts: { name: string }, cmd: Command) => {
      await replicaClient(cmd).deleteBitmap(name, opts.name);
      if (globals(cmd).json) return printJson({ deleted: opts.name });
      console.log(`volume ${name}: bitmap ${opts.name} deleted`);
    });
}
