// `tricopy replica`: in-node replica pairs (spec 003 §5.1, ShadowImage-like): create, status,
// split (--quick), resync, restore, delete and wait; --wait draws copy progress on stderr.
import { type Command, Option } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { ReplicaNodeClient } from '../../contracts/node-client';
import { type ReadMissPolicy, type ReplicaStatus, type ReplicaWaitState, replicaStates } from '../../contracts/replicas';
import { keyValues, printJson, table } from '../format';
import { globals, replicaClient } from '../globals';

export function registerReplicaCommands(program: Command): void {
  const replica = program.command('replica')
    .description('in-node replicas: a second volume on this node kept identical (dual write), split into a point-in-time image');
  addCreate(replica);
  addStatus(replica);
  addSplit(replica);
  addResync(replica);
  addRestore(replica);
  addDelete(replica);
  addWait(replica);
}

function addCreate(replica: Command): void {
  replica.command('create <name>')
    .description('pair a volume with a replica volume NAME on this node: the primary is copied to it (COPY), then every write\n' +
      'goes to both (PAIR). The replica volume is created with the primary\'s size and access list.')
    .requiredOption('--volume <volume>', 'the primary volume')
    .option('--existing', 'use the existing volume NAME as the replica (at least as large as the primary; its content is overwritten)')
    .addOption(new Option('--read-miss <policy>', 'after a quick split, how a read of a region not copied yet is served').choices(['copy-on-read', 'pass-through']).default('copy-on-read'))
    .option('--thin', 'create the replica volume thin (overcommit)')
    .option('--wait', 'wait until the pair is duplex, showing copy progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { volume: string; existing?: boolean; readMiss: ReadMissPolicy; thin?: boolean; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = replicaClient(cmd);
      const status = await api.createReplica({
        name, volume: opts.volume, existing: opts.existing === true, readMissPolicy: opts.readMiss, thin: opts.thin === true,
      });
      if (!opts.wait) {
        if (globals(cmd).json) return printJson(status);
        return console.log(`created replica ${name} of ${status.volume}: ${status.state} (${status.code})`);
      }
      const final = await waitWithProgress(api, name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
      if (globals(cmd).json) return printJson(final);
      console.log(`replica ${name} is duplex (PAIR)`);
    });
}

function addStatus(replica: Command): void {
  replica.command('status [name]')
    .description('replica pairs of this node: primary, state and code, split time, copy progress, changed regions, export')
    .action(async (name: string | undefined, _opts, cmd: Command) => {
      const api = replicaClient(cmd);
      const list = name ? [await api.getReplica(name)] : await api.listReplicas();
      if (globals(cmd).json) return printJson(name ? list[0] : list);
      if (list.length === 0) return console.log('no replicas; create one with: tricopy replica create NAME --volume V');
      if (name) return console.log(details(list[0]!));
      console.log(table(['NAME', 'VOLUME', 'STATE', 'CODE', 'COPY', 'SPLIT AT', 'CHANGED P/S', 'EXPORT'], list.map((r) => [
        r.name, r.volume, r.state, r.code, r.progressPercent === null ? '-' : `${r.progressPercent}%`, r.splitAt ?? '-',
        `${formatBytes(r.regions.dirtyPrimary * r.regions.regionBytes)}/${formatBytes(r.regions.dirtySecondary * r.regions.regionBytes)}`,
        r.exportUri ?? '-',
      ])));
    });
}

function details(r: ReplicaStatus): string {
  return keyValues([
    ['name', r.name], ['primary', r.volume], ['state', `${r.state} (${r.code})`], ['reason', r.reason],
    ['split at', r.splitAt ?? '-'], ['read miss', r.readMissPolicy],
    ['copy', r.progressPercent === null ? '-' : `${r.progressPercent}% (${r.regions.pending} of ${r.regions.total} regions of ${formatBytes(r.regions.regionBytes)} left)`],
    ['changed on primary', formatBytes(r.regions.dirtyPrimary * r.regions.regionBytes)],
    ['changed on replica', formatBytes(r.regions.dirtySecondary * r.regions.regionBytes)],
    ['copied since start', formatBytes(r.copiedBytes)], ['export', r.exportUri ?? '- (split it to use it)'], ['clients', String(r.clients)],
    ['created', r.createdAt],
  ]);
}

function addSplit(replica: Command): void {
  replica.command('split <name>')
    .description('split a duplex pair: the replica holds the primary\'s image of this instant; later writes go to the primary only.\n' +
      'With --quick, also while copying: usable at once, the rest is copied in the background (copy-on-write, copy-on-read).')
    .option('--quick', 'quick split (no need to wait for duplex)')
    .action(async (name: string, opts: { quick?: boolean }, cmd: Command) => {
      const status = await replicaClient(cmd).splitReplica(name, { quick: opts.quick === true });
      if (globals(cmd).json) return printJson(status);
      console.log(`replica ${name} is ${status.state} (${status.code}) at ${status.splitAt}; export ${status.exportUri}`);
    });
}

function addResync(replica: Command): void {
  replica.command('resync <name>')
    .description('bring the replica back to the primary: copy the regions changed on either side since the split, then duplex')
    .option('--force', 'disconnect clients attached to the replica')
    .option('--wait', 'wait until the pair is duplex, showing progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { force?: boolean; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = replicaClient(cmd);
      const status = await api.resyncReplica(name, { force: opts.force === true });
      await finish(api, name, status, opts, cmd);
    });
}

function addRestore(replica: Command): void {
  replica.command('restore <name>')
    .description('reverse resync: copy the split replica\'s image back onto the primary (the regions changed since the split), then duplex.\n' +
      'Hosts may not attach the primary while it runs.')
    .option('--force', 'disconnect clients attached to the primary or the replica')
    .option('--wait', 'wait until the pair is duplex, showing progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { force?: boolean; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = replicaClient(cmd);
      const status = await api.restoreReplica(name, { force: opts.force === true });
      await finish(api, name, status, opts, cmd);
    });
}

async function finish(api: ReplicaNodeClient, name: string, status: ReplicaStatus, opts: { wait?: boolean; timeout: string }, cmd: Command): Promise<void> {
  if (!opts.wait) {
    if (globals(cmd).json) return printJson(status);
    return console.log(`replica ${name} is ${status.state} (${status.code}): ${status.reason}`);
  }
  const final = await waitWithProgress(api, name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
  if (globals(cmd).json) return printJson(final);
  console.log(`replica ${name} is duplex (PAIR)`);
}

function addDelete(replica: Command): void {
  replica.command('delete <name>')
    .description('dissolve a pair; the replica volume stays as a plain volume unless --delete-volume\n' +
      '(deleted during a quick split\'s background copy, its content is undefined)')
    .option('--delete-volume', 'delete the replica volume too')
    .option('--force', 'with --delete-volume: disconnect its clients')
    .action(async (name: string, opts: { deleteVolume?: boolean; force?: boolean }, cmd: Command) => {
      await replicaClient(cmd).deleteReplica(name, { deleteVolume: opts.deleteVolume === true, force: opts.force === true });
      if (globals(cmd).json) return printJson({ deleted: name });
      console.log(`deleted replica pair ${name}${opts.deleteVolume ? ' and its volume' : `; volume ${name} stays`}`);
    });
}

function addWait(replica: Command): void {
  replica.command('wait <name>')
    .description('wait until a pair reaches a state (simplex: until it is deleted); exit 1 on timeout (the pair event wait of Fig. 7)')
    .addOption(new Option('--state <state>', 'state to wait for').choices([...replicaStates, 'simplex']).makeOptionMandatory())
    .option('--timeout <seconds>', 'give up after this many seconds', '3600')
    .action(async (name: string, opts: { state: ReplicaWaitState; timeout: string }, cmd: Command) => {
      const timeoutMs = Math.round(Number(opts.timeout) * 1000);
      if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new TricopyError('invalid-argument', '--timeout takes a positive number of seconds');
      const api = replicaClient(cmd);
      const deadline = Date.now() + timeoutMs;
      // The node holds one wait for at most 600 s; longer waits ask again.
      for (;;) {
        const left = deadline - Date.now();
        try {
          const status = await api.waitReplica(name, opts.state, Math.max(1, Math.min(left, 600_000)));
          if (globals(cmd).json) return printJson(status);
          return console.log(`replica ${name} is ${status.state}${status.code ? ` (${status.code})` : ''}`);
        } catch (err) {
          if (!(err instanceof TricopyError) || err.code !== 'unavailable' || Date.now() >= deadline) throw err;
        }
      }
    });
}

/** Polls a pair until it reaches `state`, drawing copy progress; fails when a failure suspends it. */
async function waitWithProgress(api: ReplicaNodeClient, name: string, state: ReplicaWaitState, timeoutSeconds: number, quiet: boolean): Promise<ReplicaStatus> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  const tty = process.stderr.isTTY === true && !quiet;
  let lastLine = '';
  for (;;) {
    const r = await api.getReplica(name);
    if (r.state === state) {
      if (tty) process.stderr.write(`\r${' '.repeat(lastLine.length)}\r`);
      return r;
    }
    if (r.state === 'suspended') throw new TricopyError('io-error', `replica ${name} was suspended by a failure: ${r.reason}`, `resync it: tricopy replica resync ${name}`);
    if (Date.now() > deadline) throw new TricopyError('unavailable', `replica ${name} is still ${r.state} after ${timeoutSeconds} s`);
    const percent = r.progressPercent ?? 0;
    const bar = `[${'#'.repeat(Math.floor(percent / 5)).padEnd(20, ' ')}] ${String(percent).padStart(3)}% ${r.state} (${r.code})`;
    if (tty) process.stderr.write(`\r${bar}`);
    else if (!quiet && bar !== lastLine) process.stderr.write(`${bar}\n`);
    lastLine = bar;
    await new Promise((resolve) => setTimeout(resolve, 300));
  }
}
