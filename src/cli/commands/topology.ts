// `tricopy topology`: the three-site procedures of a topology file (apply, status, failover,
// failback, repair), run against the nodes the file names.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { HttpNodeClient } from '../../node/api-client';
import type { Orchestrator } from '../../topology/orchestrator';
import { printJson } from '../format';
import { globals, tokenOf } from '../globals';

export function registerTopologyCommands(program: Command): void {
  const topology = program.command('topology').description('three-site topologies (3DC): apply, status, failover, failback, repair');
  addApply(topology);
  addStatus(topology);
  addFailover(topology);
  addFailback(topology);
  addRepair(topology);
}

/** The topology modules are loaded when a topology command runs, so that other commands start fast. */
async function runner(file: string, cmd: Command, opts: { wait?: boolean; timeout?: string }): Promise<Orchestrator> {
  const { loadTopology } = await import('../../topology/topology-file');
  const { Orchestrator: O } = await import('../../topology/orchestrator');
  const t = await loadTopology(file);
  const waitSeconds = opts.wait ? Number(opts.timeout ?? '3600') : 0;
  if (!Number.isFinite(waitSeconds) || waitSeconds < 0) throw new TricopyError('invalid-argument', '--timeout takes a number of seconds');
  const token = tokenOf(cmd);
  return new O(t, { clientFor: (url) => new HttpNodeClient(url, token), print: (line) => console.log(line), waitSeconds });
}

/** Refusals name the command to run instead with `<file>`: here it is the file this command was given. */
async function naming(file: string, run: () => Promise<void>): Promise<void> {
  try {
    await run();
  } catch (err) {
    if (err instanceof TricopyError && (err.message.includes('<file>') || err.hint?.includes('<file>'))) {
      throw new TricopyError(err.code, err.message.replaceAll('<file>', file), err.hint?.replaceAll('<file>', file));
    }
    throw err;
  }
}

function addApply(topology: Command): void {
  topology.command('apply <file>')
    .description('create what the topology file describes (volumes, sync and async pairs, consistency group); idempotent')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      await naming(file, async () => (await runner(file, cmd, opts)).apply());
    });
}

function addStatus(topology: Command): void {
  topology.command('status <file>')
    .description('where the application runs, which protection is missing, every copy\'s state, delta method and whether its ' +
      'two ends agree, and what a failover to each site would lose now ("unknown, because …" where that cannot be known)')
    .action(async (file: string, _opts, cmd: Command) => {
      const status = await (await runner(file, cmd, {})).status();
      if (globals(cmd).json) return printJson(status);
      const { renderTopologyStatus } = await import('../topology-status-view');
      console.log(renderTopologyStatus(status, file));
    });
}

function addFailover(topology: Command): void {
  topology.command('failover <file>')
    .description('move the application to another site after a loss: --to the sync site (Fig. 10), the async site (Fig. 13), ' +
      'or the async site with the sync site\'s newest data (--newest-from, Fig. 14). Safe to run again after an interruption.')
    .requiredOption('--to <site>', 'site that takes over')
    .option('--newest-from <site>', 'with --to the async site: first bring it the sync site\'s newest data (nothing acknowledged is lost)')
    .option('--wait', 'wait until the new copies are duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { to: string; newestFrom?: string; wait?: boolean; timeout: string }, cmd: Command) => {
      await naming(file, async () => (await runner(file, cmd, opts)).failover(opts.to, opts.newestFrom));
    });
}

function addFailback(topology: Command): void {
  topology.command('failback <file>')
    .description('bring the application back to the primary site of the file and restore the original copies, copying only ' +
      'what differs (a full copy where a site lost its data). Stop the application at its current site first.')
    .requiredOption('--to <site>', 'the primary site of the topology file')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { to: string; wait?: boolean; timeout: string }, cmd: Command) => {
      await naming(file, async () => (await runner(file, cmd, opts)).failback(opts.to));
    });
}

function addRepair(topology: Command): void {
  topology.command('repair <file>')
    .description('keep the application at the primary site and restore protection with the sites that answer: route around a lost ' +
      'site (cascade: primary → far site directly), and re-attach a site that came back')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      await naming(file, async () => (await runner(file, cmd, opts)).repair());
    });
}
