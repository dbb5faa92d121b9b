// `tricopy manager`: run the management server, register nodes and topologies with it, and ask it
// for the status of everything. Events, alerts and procedure runs are in manager-history.ts.
import { promises as fsp } from 'node:fs';
import { type Command, Option } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { StatusDocument } from '../../contracts/manager';
import { keyValues, printJson, table } from '../format';
import { globals, managerClient } from '../globals';
import { registerManagerHistoryCommands } from './manager-history';

export function registerManagerCommands(program: Command): void {
  const manager = program.command('manager').description('the management server: one place for every node, topology, report, event and alert');
  addRun(manager);
  addInfo(manager);
  addNode(manager);
  addTopology(manager);
  addStatus(manager);
  registerManagerHistoryCommands(manager);
}

function addRun(manager: Command): void {
  manager.command('run')
    .description('run a manager in the foreground: store, API, web console at /.\n' +
      'Logs JSON lines on stderr; prints {"apiPort"} on stdout once listening. SIGTERM/SIGINT stop it cleanly.')
    .option('--config <file>', 'YAML or JSON file with any of the settings below (flags win)')
    .option('--data-dir <dir>', 'directory of the embedded store (required with --store embedded)')
    .addOption(new Option('--store <kind>', 'embedded (default: LevelDB in --data-dir) or etcd (several managers, one leads)').choices(['embedded', 'etcd']))
    .option('--etcd <urls>', 'etcd endpoints, comma-separated (with --store etcd), e.g. http://127.0.0.1:2379')
    .option('--etcd-prefix <prefix>', 'key prefix in etcd (default /tricopy/)')
    .option('--leader-ttl <seconds>', 'with etcd: a leader that stops renewing its lease loses it after this long (default 5)')
    .option('--host <address>', 'address to listen on (default 127.0.0.1)')
    .option('--api-port <port>', 'API and console port; 0 picks a free one (default 7900)')
    .option('--advertise-url <url>', 'how nodes and other managers reach this one (default http://<host>:<port>)')
    .option('--api-token-file <file>', 'file holding a bearer token the API demands (nodes are given it when registered)')
    .option('--sample-interval <duration>', 'scrape each node\'s /metrics this often for samples and liveness; 0 = off (default 10s)')
    .option('--poll-interval <duration>', 'prior-art mode for comparison: query every copy this often (default off)')
    .option('--webhook <url>', 'POST alert changes as JSON here (repeat for several)', (v: string, prev: string[] = []) => [...prev, v])
    .option('--monitor-codes <codes>', 'pair codes nodes report on, comma-separated (default PSUE)')
    .option('--alert-lag <duration>', 'nodes report async copies lagging more than this (default 60s; 0 = off)')
    .option('--alert-journal <percent>', 'nodes report async journals fuller than this (default 80; 0 = off)')
    .option('--alert-link-down <duration>', 'nodes report copies whose link to the target is down this long while in step (default 2s; 0 = off)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .action(runManager);
}

async function runManager(opts: Record<string, string | string[] | undefined>): Promise<void> {
  const { loadManagerConfigFile, resolveManagerConfig } = await import('../../manager/config');
  const { createLogger } = await import('../../common/log');
  const { ManagerService } = await import('../../manager/service');
  const fromFile = typeof opts.config === 'string' ? await loadManagerConfigFile(opts.config) : {};
  const config = resolveManagerConfig(fromFile, {
    dataDir: opts.dataDir, store: opts.store, etcd: opts.etcd, etcdPrefix: opts.etcdPrefix, leaderTtl: opts.leaderTtl, host: opts.host,
    apiPort: opts.apiPort, advertiseUrl: opts.advertiseUrl, apiTokenFile: opts.apiTokenFile, sampleInterval: opts.sampleInterval,
    pollInterval: opts.pollInterval, webhooks: opts.webhook, monitorCodes: opts.monitorCodes, alertLag: opts.alertLag, alertJournal: opts.alertJournal, alertLinkDown: opts.alertLinkDown,
    logLevel: opts.logLevel,
  });
  const log = createLogger(config.logLevel, { component: 'manager' });
  const m = await ManagerService.start(config, log);
  process.stdout.write(`${JSON.stringify({ apiPort: m.apiPort })}\n`);
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (++signals > 1) process.exit(1);
      log.info({ signal }, 'stopping');
      // A backup job still copying would hold the process open for as long as its copy takes: it ends here.
      m.stop().then(() => (m.backups.jobs.runningCount() > 0 ? process.exit(0) : resolve()), () => process.exit(1));
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

function addInfo(manager: Command): void {
  manager.command('info')
    .description('the manager: id, store, whether it leads, every manager sharing the store')
    .action(async (_opts, cmd: Command) => {
      const info = await managerClient(cmd).info();
      if (globals(cmd).json) return printJson(info);
      console.log(keyValues([['id', info.managerId], ['url', info.url], ['store', info.store], ['leader', info.leader ? 'yes (this one)' : info.leaderUrl ?? 'none right now'],
        ['managers', info.managers.join(', ')], ['polling', info.pollIntervalMs === null ? 'off (nodes report)' : `every ${info.pollIntervalMs} ms`], ['version', info.version]]));
    });
}

function addNode(manager: Command): void {
  const node = manager.command('node').description('nodes the manager looks after');
  node.command('add <url>')
    .description('register the node whose control API is at <url>: it learns its manager, pushes its state and events, and reports failures')
    .option('--node-token <token>', 'the node\'s API token, when it demands one')
    .action(async (url: string, opts: { nodeToken?: string }, cmd: Command) => {
      const n = await managerClient(cmd).addNode({ url, ...(opts.nodeToken ? { token: opts.nodeToken } : {}) });
      if (globals(cmd).json) return printJson(n);
      console.log(`registered node ${n.name} (site ${n.site}) at ${n.url}`);
    });
  node.command('list')
    .description('registered nodes: site, address, reachable, last heard of')
    .action(async (_opts, cmd: Command) => {
      const nodes = await managerClient(cmd).listNodes();
      if (globals(cmd).json) return printJson({ nodes });
      console.log(table(['NAME', 'SITE', 'URL', 'REACHABLE', 'LAST SEEN', 'VERSION'], nodes.map((n) => [
        n.name, n.site, n.url, n.reachable ? 'yes' : `no (${n.lastError ?? ''})`.slice(0, 50), n.lastSeenAt ?? '-', n.version ?? '-',
      ])));
    });
}

function addTopology(manager: Command): void {
  const topology = manager.command('topology').description('topology definitions the manager keeps');
  topology.command('add <file>')
    .description('keep the topology file\'s definition (its nodes must be registered) and register its copies\' command paths')
    .action(async (file: string, _opts, cmd: Command) => {
      let text: string;
      try {
        text = await fsp.readFile(file, 'utf8');
      } catch (err) {
        throw new TricopyError('invalid-argument', `cannot read topology file ${file}: ${(err as Error).message}`);
      }
      const t = await managerClient(cmd).addTopology(text);
      if (globals(cmd).json) return printJson(t);
      console.log(`topology ${t.name} (${t.layout}: ${t.sites.primary}, ${t.sites.sync}, ${t.sites.async}) kept by the manager`);
    });
  topology.command('list')
    .description('topologies the manager keeps')
    .action(async (_opts, cmd: Command) => {
      const ts = await managerClient(cmd).listTopologies();
      if (globals(cmd).json) return printJson({ topologies: ts });
      console.log(table(['NAME', 'LAYOUT', 'PRIMARY', 'SYNC', 'ASYNC', 'ADDED'], ts.map((t) => [t.name, t.layout, t.sites.primary, t.sites.sync, t.sites.async, t.addedAt])));
    });
}

function addStatus(manager: Command): void {
  manager.command('status')
    .description('sites, nodes, volumes, pairs, groups, topologies, health and data at risk — from what the nodes pushed, without asking them')
    .action(async (_opts, cmd: Command) => {
      const s = await managerClient(cmd).status();
      if (globals(cmd).json) return printJson(s);
      printStatus(s);
    });
}

export function printStatus(s: StatusDocument): void {
  console.log(`manager ${s.manager.url} (${s.manager.store}${s.manager.leader ? ', leader' : ''}): ${s.healthy ? 'healthy' : 'NOT healthy'}, ${s.alertsOpen} alert(s) open`);
  console.log(table(['NODE', 'SITE', 'REACHABLE', 'URL'], s.nodes.map((n) => [n.name, n.site, n.reachable ? 'yes' : 'NO', n.url])));
  for (const t of s.topologies) {
    console.log(`\ntopology ${t.name} (${t.layout}): ${t.activeSite ? `application at ${t.activeSite}` : 'no active site'} — ${t.healthy ? 'healthy' : 'NOT fully protected'}`);
    console.log(table(['SITE', 'ROLE', 'REACHABLE', 'LOSS IF FAILED OVER HERE'], t.sites.map((x) => [x.site, x.role, x.reachable ? 'yes' : 'no', x.atRisk.text])));
    console.log(table(['COPY', 'FROM', 'TO', 'MODE', 'CODE', 'LAG'], t.legs.map((l) => [l.pair, l.from, l.to, l.mode, l.code,
      l.lagSeconds === null ? '-' : `${l.lagSeconds.toFixed(1)}s${l.lagBytes !== null ? ` ${formatBytes(l.lagBytes)}` : ''}`])));
  }
  if (s.pairs.length > 0) {
    console.log('');
    console.log(table(['NODE', 'PAIR', 'ROLE', 'PEER', 'MODE', 'CODE', 'REASON'], s.pairs.map((p) => [p.node, p.name, p.role === 'primary' ? 'P' : 'S', p.peer.node, p.mode, p.code,
      p.code === 'PAIR' ? '' : p.reason.slice(0, 60)])));
  }
}
