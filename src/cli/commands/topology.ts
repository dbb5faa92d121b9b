// `tricopy topology`: the three-site procedures of a topology file (apply, status, failover,
// failback, repair), run against the nodes the file names.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import { HttpNodeClient } from '../../node/api-client';
import type { Orchestrator } from '../../topology/orchestrator';
import { printJson, table } from '../format';
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

function addApply(topology: Command): void {
  topology.command('apply <file>')
    .description('create what the topology file describes (volumes, sync and async pairs, consistency group); idempotent')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).apply();
    });
}

function addStatus(topology: Command): void {
  topology.command('status <file>')
    .description('where the application runs, every copy\'s state and lag, and what a failover to each site would lose now')
    .action(async (file: string, _opts, cmd: Command) => {
      const status = await (await runner(file, cmd, {})).status();
      if (globals(cmd).json) return printJson(status);
      console.log(`topology ${status.name} (${status.layout}): ${status.activeSite ? `application at ${status.activeSite}` : 'no active site'} — ${status.healthy ? 'healthy' : 'NOT fully protected'}`);
      console.log(table(['SITE', 'ROLE', 'REACHABLE', 'WRITABLE', 'LOSS IF FAILED OVER HERE'], status.sites.map((st) => [
        st.site, st.role, st.reachable ? 'yes' : `no (${st.error ?? ''})`.slice(0, 40), st.writable.join(',') || '-', st.atRisk.text,
      ])));
      console.log(table(['COPY', 'FROM', 'TO', 'MODE', 'STATE', 'CODE', 'COPIED', 'LAG'], status.legs.map((l) => [
        l.pair, l.from, l.to, l.mode, l.state, l.code, l.progressPercent === null ? '-' : `${l.progressPercent}%`,
        l.lagSeconds === null ? '-' : `${l.lagSeconds.toFixed(1)}s${l.lagBytes !== null ? ` ${formatBytes(l.lagBytes)}` : ''}`,
      ])));
      for (const l of status.legs) if (l.code === 'PSUE' || l.code === 'PSUS') console.log(`${l.pair}: ${l.reason}`);
      for (const st of status.sites) {
        for (const d of st.deltaRecords) console.log(`delta record at ${st.site} for ${d.volume}: ${d.text}`);
      }
    });
}

function addFailover(topology: Command): void {
  topology.command('failover <file>')
    .description('move the application to another site after a loss: --to the sync site (Fig. 10), the async site (Fig. 13),\n' +
      'or the async site with the sync site\'s newest data (--newest-from, Fig. 14). Safe to run again after an interruption.')
    .requiredOption('--to <site>', 'site that takes over')
    .option('--newest-from <site>', 'with --to the async site: first bring it the sync site\'s newest data (nothing acknowledged is lost)')
    .option('--wait', 'wait until the new copies are duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { to: string; newestFrom?: string; wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).failover(opts.to, opts.newestFrom);
    });
}

function addFailback(topology: Command): void {
  topology.command('failback <file>')
    .description('bring the application back to the primary site of the file and restore the original copies, copying only\n' +
      'what differs (a full copy where a site lost its data). Stop the application at its current site first.')
    .requiredOption('--to <site>', 'the primary site of the topology file')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { to: string; wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).failback(opts.to);
    });
}

function addRepair(topology: Command): void {
  topology.command('repair <file>')
    .description('keep the application at the primary site and restore protection with the sites that answer: route around a lost\n' +
      'site (cascade: primary → far site directly), and re-attach a site that came back')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).repair();
    });
}
