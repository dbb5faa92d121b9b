// `tricopy topology`: the three-site procedures of a topology file (apply, status, failover,
// failback, repair), run against the nodes the file names.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { HttpNodeClient } from '../../node/api-client';
import type { Orchestrator } from '../../topology/orchestrator';
import type { ProcedureName, StartProcedureRequest } from '../../contracts/manager';
import { printJson } from '../format';
import { globals, managerClient, tokenOf, viaManager } from '../globals';

export function registerTopologyCommands(program: Command): void {
  const topology = program.command('topology').description('three-site topologies (3DC): apply, status, failover, failback, repair.\n' +
    'With --manager, <file> may also be the name of a topology the manager keeps, and procedures run at the manager (history kept)');
  addApply(topology);
  addStatus(topology);
  addFailover(topology);
  addFailback(topology);
  addRepair(topology);
  addDrill(topology);
  addArbiter(topology);
}

function addArbiter(topology: Command): void {
  topology.command('arbiter <file>')
    .description('automatic failover: where each site\'s node stands with the topology\'s arbiter (who holds it, whether writes are accepted, why)')
    .action(async (file: string, _opts, cmd: Command) => {
      const { loadTopology } = await import('../../topology/topology-file');
      const { table } = await import('../format');
      const t = await loadTopology(file);
      const token = tokenOf(cmd);
      const rows = await Promise.all((['primary', 'sync', 'async'] as const).map(async (role) => {
        const spec = t[role];
        try {
          const mine = (await new HttpNodeClient(spec.node, token, 5000).failoverStatus()).find((x) => x.topology === t.name);
          return { site: spec.site, role, status: mine ?? null, error: mine ? null : 'takes no part (apply with failover: automatic)' };
        } catch (err) {
          return { site: spec.site, role, status: null, error: err instanceof Error ? err.message : String(err) };
        }
      }));
      if (globals(cmd).json) return printJson(rows);
      // The failback column: manual, or automatic with where the sync site's watch stands (idle, watching, returned, failing-back).
      const failback = (s: (typeof rows)[number]['status']): string => !s ? '-' : s.failback.mode === 'manual' ? 'manual' : `automatic: ${s.failback.state}`;
      console.log(table(['SITE', 'ROLE', 'STATE', 'HOLDER', 'WRITES', 'HOLD VALID UNTIL', 'FAILBACK', 'REASON'], rows.map((r) => [
        r.site, r.role, r.status?.state ?? '-', r.status?.holder ?? '-', r.status ? (r.status.writesAllowed ? 'accepted' : 'refused') : '-',
        r.status?.holdValidUntil ?? '-', failback(r.status), r.status?.reason ?? r.error ?? '',
      ])));
    });
}

/**
 * With --manager: the procedure runs at the manager (its history keeps every step). `target` is a
 * topology name the manager keeps, or a topology file (kept by the manager first if it is new).
 * Prints the run's lines as they come; a failed run exits 1 with its error.
 */
async function throughManager(target: string, cmd: Command, procedure: ProcedureName,
  opts: { to?: string; newestFrom?: string; wait?: boolean; timeout?: string }): Promise<void> {
  const api = managerClient(cmd);
  const name = await topologyName(target, cmd);
  const request: StartProcedureRequest = {
    topology: name, procedure, ...(opts.to ? { to: opts.to } : {}), ...(opts.newestFrom ? { newestFrom: opts.newestFrom } : {}),
    wait: opts.wait === true, ...(opts.wait ? { timeoutSeconds: Number(opts.timeout ?? '3600') } : {}),
  };
  const run = await api.startProcedure(request, `cli (${process.env.USER ?? 'unknown'})`);
  if (!globals(cmd).json) console.log(`manager run ${run.id}: ${procedure} ${name}`);
  for await (const line of api.followProcedure(run.id, 0)) if (!globals(cmd).json) console.log(line);
  const final = await api.getProcedure(run.id);
  if (globals(cmd).json) printJson(final);
  if (final.state !== 'succeeded') {
    throw new TricopyError('io-error', `${procedure} of ${name} ${final.state}: ${final.error ?? ''}`, `its record: tricopy manager procedure ${run.id}`);
  }
}

/** A file's topology name (the manager is given the file when it does not keep it yet), or the name itself. */
async function topologyName(target: string, cmd: Command): Promise<string> {
  const { promises: fsp } = await import('node:fs');
  const text = await fsp.readFile(target, 'utf8').catch(() => undefined);
  if (text === undefined) return target;
  const { loadTopology } = await import('../../topology/topology-file');
  const t = await loadTopology(target);
  const api = managerClient(cmd);
  if (!(await api.listTopologies()).some((x) => x.name === t.name)) await api.addTopology(text);
  return t.name;
}

/** The topology modules are loaded when a topology command runs, so that other commands start fast. */
async function runner(file: string, cmd: Command, opts: { wait?: boolean; timeout?: string }): Promise<Orchestrator> {
  const { loadTopology } = await import('../../topology/topology-file');
  const { Orchestrator: O } = await import('../../topology/orchestrator');
  const t = await loadTopology(file);
  const waitSeconds = opts.wait ? Number(opts.timeout ?? '3600') : 0;
  if (!Number.isFinite(waitSeconds) || waitSeconds < 0) throw new TricopyError('invalid-argument', '--timeout takes a number of seconds');
  const token = tokenOf(cmd);
  return new O(t, { clientFor: (url) => new HttpNodeClient(url, token), print: (line) => console.log(line.replaceAll('<file>', file)), waitSeconds, apiToken: token },
    (url) => new HttpNodeClient(url, token));
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

/** The topology's status as the manager knows it (from what the nodes pushed; no node is asked). */
async function statusFromManager(target: string, cmd: Command): Promise<import('../../topology/orchestrator').TopologyStatus> {
  const name = await topologyName(target, cmd);
  const status = (await managerClient(cmd).status()).topologies.find((t) => t.name === name);
  if (!status) throw new TricopyError('not-found', `the manager keeps no topology ${name}`, 'add it: tricopy manager topology add <file>');
  return status;
}

function addApply(topology: Command): void {
  topology.command('apply <file>')
    .description('create what the topology file describes (volumes, sync and async pairs, consistency group); idempotent')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      if (viaManager(cmd)) return throughManager(file, cmd, 'apply', opts);
      await naming(file, async () => (await runner(file, cmd, opts)).apply());
    });
}

function addStatus(topology: Command): void {
  topology.command('status <file>')
    .description('where the application runs, which protection is missing, every copy\'s state, delta method and whether its ' +
      'two ends agree, and what a failover to each site would lose now ("unknown, because …" where that cannot be known)')
    .action(async (file: string, _opts, cmd: Command) => {
      const status = viaManager(cmd) ? await statusFromManager(file, cmd) : await (await runner(file, cmd, {})).status();
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
      if (viaManager(cmd)) return throughManager(file, cmd, 'failover', opts);
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
      if (viaManager(cmd)) return throughManager(file, cmd, 'failback', opts);
      await naming(file, async () => (await runner(file, cmd, opts)).failback(opts.to));
    });
}

interface DrillOptions {
  at?: string;
  name?: string;
  end?: boolean;
  status?: boolean;
  force?: boolean;
  result?: string;
  note?: string;
}

/** One of start (--at), --end or --status, with the options that belong to it; checked before any node is asked. */
function drillAction(opts: DrillOptions): 'start' | 'end' | 'status' {
  const chosen = [opts.end ? 'end' : null, opts.status ? 'status' : null].filter((x): x is 'end' | 'status' => x !== null);
  if (chosen.length > 1) throw new TricopyError('invalid-argument', 'give one of --end and --status');
  const action: 'start' | 'end' | 'status' = chosen.length === 0 ? 'start' : chosen[0]!;
  if (action === 'start' && !opts.at) throw new TricopyError('invalid-argument', 'name the site to drill at: --at SITE (or --end, --status)');
  if (action !== 'end' && (opts.force || opts.result || opts.note)) throw new TricopyError('invalid-argument', '--force, --result and --note go with --end');
  if (action === 'status' && (opts.at || opts.name)) throw new TricopyError('invalid-argument', '--status shows every drill of the topology; it takes no --at or --name');
  if (opts.result !== undefined && opts.result !== 'passed' && opts.result !== 'failed') throw new TricopyError('invalid-argument', `--result is passed or failed, not ${JSON.stringify(opts.result)}`);
  if (opts.name !== undefined && !/^[A-Za-z0-9][A-Za-z0-9_-]{0,57}$/.test(opts.name)) {
    throw new TricopyError('invalid-argument', `drill name ${JSON.stringify(opts.name)} is not valid`, 'use 1–58 letters, digits, "_" or "-"');
  }
  return action;
}

function addDrill(topology: Command): void {
  topology.command('drill <file>')
    .description('DR drill without disruption: --at SITE snapshots that site\'s copy at one instant and exports a writable throwaway clone of each ' +
      'volume (VOLUME@NAME) while replication goes on; --end discards the clones; --status shows running drills. Start and end are node events.')
    .option('--at <site>', 'the site whose copy is drilled (start), or whose drills end (with --end)')
    .option('--name <name>', 'the drill\'s name: the clones export as VOLUME@NAME', 'drill')
    .option('--end', 'end the drill(s): discard clones and snapshots (every site when --at is not given)')
    .option('--status', 'running drills of the topology, their clones, and the copies\' state now')
    .option('--force', 'with --end: disconnect hosts still attached to the clones')
    .option('--result <passed|failed>', 'with --end: the outcome of the application\'s checks, recorded in the drill-ended event')
    .option('--note <text>', 'with --end: a note for the drill-ended event')
    .action(async (file: string, opts: DrillOptions, cmd: Command) => {
      if (viaManager(cmd)) throw new TricopyError('invalid-argument', 'a drill talks to the site\'s node directly; it does not run through the manager', 'drop --manager (the drill\'s events reach the manager\'s history through the node)');
      const nameGiven = cmd.getOptionValueSource('name') === 'cli';
      const action = drillAction({ ...opts, ...(nameGiven ? {} : { name: undefined }) });
      const name = opts.name ?? 'drill';
      await naming(file, async () => {
        const o = await runner(file, cmd, {});
        if (action === 'start') return o.startDrill(opts.at!, name);
        if (action === 'end') {
          const ended = await o.endDrill({
            ...(opts.at ? { at: opts.at } : {}), ...(nameGiven ? { name } : {}), force: opts.force === true,
            ...(opts.result ? { result: opts.result as 'passed' | 'failed' } : {}), ...(opts.note ? { note: opts.note } : {}),
          });
          if (globals(cmd).json) printJson(ended);
          return;
        }
        const status = await o.drillStatus();
        if (globals(cmd).json) return printJson(status);
        const { table } = await import('../format');
        if (status.drills.length === 0) console.log('no drill runs');
        else {
          console.log(table(['SITE', 'DRILL', 'STARTED', 'RUNNING', 'CLONES', 'COPIES NOW'], status.drills.map((d) => [
            d.site, d.name, d.startedAt, `${Math.round(d.runningMs / 1000)} s`, d.clones.map((c) => c.exportUri).join(' '),
            d.pairsNow.map((p) => `${p.name} ${p.code}${p.appliedSeq === null ? '' : ` applied ${p.appliedSeq}`}`).join(', '),
          ])));
        }
        for (const u of status.unreachable) console.log(`not asked: ${u}`);
      });
    });
}

function addRepair(topology: Command): void {
  topology.command('repair <file>')
    .description('keep the application at the primary site and restore protection with the sites that answer: route around a lost ' +
      'site (cascade: primary → far site directly), and re-attach a site that came back')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      if (viaManager(cmd)) return throughManager(file, cmd, 'repair', opts);
      await naming(file, async () => (await runner(file, cmd, opts)).repair());
    });
}
