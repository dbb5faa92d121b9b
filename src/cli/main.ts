// The `tricopy` command. Parses arguments (commander), talks to a node's control API and prints
// tables for humans or JSON for machines. Errors print the problem and its hint and exit non-zero.
process.env.UV_THREADPOOL_SIZE ??= '4'; // before any fs call (bin/tricopy sizes it by core count)

import { Command, CommanderError, Option } from 'commander';
import { TricopyError, errorMessage } from '../common/errors';
import { formatBytes, parseSize } from '../common/units';
import { HttpNodeClient } from '../node/api-client';
import type { NodeClient } from '../contracts/node-client';
import type { NodeEvent } from '../common/events';
import type { VolumeView } from '../contracts/node';
import type { PairState, PairStatus } from '../contracts/pairs';
import type { Orchestrator } from '../topology/orchestrator';
import { version } from '../node/version';
import { keyValues, printJson, table } from './format';

interface GlobalOptions {
  node?: string;
  token?: string;
  json?: boolean;
}

/** Commands that may drain a journal first (split, takeover, swap) are given this long to answer. */
const commandTimeoutMs = 600_000;

function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

function client(cmd: Command): NodeClient {
  const g = globals(cmd);
  const url = g.node ?? process.env.TRICOPY_NODE ?? 'http://127.0.0.1:7801';
  return new HttpNodeClient(url, g.token ?? process.env.TRICOPY_TOKEN);
}

export function buildProgram(): Command {
  const program = new Command('tricopy')
    .description('Multi-site remote copy for block storage: NBD volumes on storage nodes, replicated to other sites.')
    .version(version, '-V, --version')
    .option('--node <url>', 'control API of the node to talk to (env TRICOPY_NODE, default http://127.0.0.1:7801)')
    .option('--token <token>', 'API bearer token, if the node demands one (env TRICOPY_TOKEN)')
    .option('--json', 'print machine-readable JSON instead of tables')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false })
    // Set before subcommands exist so they inherit it: usage errors come back to main() as exit 2.
    .exitOverride();

  // --- node ------------------------------------------------------------------------------------
  const node = program.command('node').description('run a storage node, or ask one about itself');

  node.command('run')
    .description('run a storage node in the foreground: serve volumes over NBD, the control API and metrics.\n' +
      'Logs JSON lines on stderr; prints {"nbdPort","apiPort","replPort"} on stdout once listening.\n' +
      'SIGTERM/SIGINT stop it cleanly: in-flight requests finish, volumes are flushed, exit code 0.')
    .option('--config <file>', 'YAML or JSON file with any of the settings below (flags win)')
    .option('--name <name>', 'node name, unique in the cluster (required)')
    .option('--site <site>', 'site (data centre) this node is in (default: the node name)')
    .option('--data-dir <dir>', 'directory holding the volumes (required; created if missing)')
    .option('--host <address>', 'address to listen on for NBD and replication (default 127.0.0.1)')
    .option('--api-host <address>', 'address of the control API and /metrics (default: --host); keep it on loopback when NBD faces the network')
    .option('--advertise-repl-port <port>', 'replication port peer nodes should dial when a relay or NAT forwards to this node')
    .option('--advertise-host <address>', 'address clients and peer nodes should use (default: --host, or the first non-loopback IPv4 address when --host is 0.0.0.0)')
    .option('--nbd-port <port>', 'NBD port for hosts; 0 picks a free one (default 10809)')
    .option('--api-port <port>', 'HTTP control API and /metrics port; 0 picks a free one (default 7801)')
    .option('--repl-port <port>', 'node-to-node replication port; 0 picks a free one (default 7800)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']))
    .addOption(new Option('--tls <mode>', 'NBD TLS: off, optional (clients choose) or required (default off)').choices(['off', 'optional', 'required']))
    .option('--tls-cert <file>', 'X.509 server certificate (PEM)')
    .option('--tls-key <file>', 'X.509 server private key (PEM)')
    .option('--tls-ca <file>', 'CA (PEM) that client certificates must chain to; makes client certificates mandatory')
    .option('--tls-psk-file <file>', 'TLS pre-shared keys, "identity:hexkey" per line (psktool format)')
    .option('--api-token-file <file>', 'file holding a bearer token the control API demands (recommended off loopback)')
    .option('--max-connections <n>', 'maximum NBD connections (default 256)')
    .option('--handshake-timeout <duration>', 'NBD handshake deadline, e.g. 10s (default 10s)')
    .addOption(new Option('--min-block-size <bytes>', 'smallest NBD request alignment enforced (default 1)').choices(['1', '512', '4096']))
    .option('--cluster-secret-file <file>', 'secret shared by all nodes of the cluster; replication needs it (e.g. openssl rand -hex 32)')
    .option('--peer-timeout <duration>', 'silence after which a peer node counts as unreachable (default 4s)')
    .option('--journal-size <size>', 'capacity of each async consistency group journal (default 1GiB)')
    .addOption(new Option('--journal-full <policy>', 'when a journal is full: delay host writes, or suspend the group onto bitmaps (default delay)').choices(['delay', 'suspend']))
    .option('--no-auto-resync', 'do not resynchronise pairs by themselves when a failed link comes back')
    .action(async (opts: Record<string, string | undefined>) => {
      // Loaded here so that client commands start fast without the server stack.
      const { loadConfigFile, resolveNodeConfig } = await import('../node/config');
      const { createLogger } = await import('../common/log');
      const { StorageNode } = await import('../node/node');
      const fromFile = opts.config ? await loadConfigFile(opts.config) : {};
      const config = resolveNodeConfig(fromFile, {
        name: opts.name, site: opts.site, dataDir: opts.dataDir, host: opts.host, apiHost: opts.apiHost, advertiseHost: opts.advertiseHost, advertiseReplPort: opts.advertiseReplPort,
        nbdPort: opts.nbdPort, apiPort: opts.apiPort, replPort: opts.replPort, logLevel: opts.logLevel, tlsMode: opts.tls,
        tlsCert: opts.tlsCert, tlsKey: opts.tlsKey, tlsCa: opts.tlsCa, tlsPskFile: opts.tlsPskFile,
        apiTokenFile: opts.apiTokenFile, maxConnections: opts.maxConnections, handshakeTimeout: opts.handshakeTimeout,
        minBlockBytes: opts.minBlockSize, clusterSecretFile: opts.clusterSecretFile, peerTimeout: opts.peerTimeout,
        journalSize: opts.journalSize, journalFull: opts.journalFull,
        autoResync: (opts as Record<string, unknown>).autoResync === false ? false : undefined,
      });
      const log = createLogger(config.logLevel, { node: config.name });
      const storageNode = await StorageNode.start(config, log);
      process.stdout.write(`${JSON.stringify(storageNode.ports)}\n`);
      await new Promise<void>((resolve) => {
        let signals = 0;
        const onSignal = (signal: NodeJS.Signals): void => {
          signals++;
          if (signals > 1) {
            log.warn({ signal }, 'second signal: exiting without waiting');
            process.exit(1);
          }
          log.info({ signal }, 'stopping');
          storageNode.stop().then(resolve, (err: unknown) => {
            log.error({ err }, 'clean shutdown failed');
            process.exit(1);
          });
        };
        process.on('SIGTERM', onSignal);
        process.on('SIGINT', onSignal);
      });
    });

  node.command('info')
    .description('show the node: name, site, version, ports, volumes')
    .action(async (_opts, cmd: Command) => {
      const info = await client(cmd).nodeInfo();
      if (globals(cmd).json) return printJson(info);
      console.log(keyValues([
        ['name', info.name], ['site', info.site], ['version', info.version], ['data dir', info.dataDir],
        ['nbd port', String(info.ports.nbdPort)], ['api port', String(info.ports.apiPort)],
        ['replication port', String(info.ports.replPort)], ['tls', info.tlsMode], ['volumes', String(info.volumeCount)],
        ['nbd connections', String(info.nbdConnections)], ['started', info.startedAt],
      ]));
    });

  // --- volume ----------------------------------------------------------------------------------
  const volume = program.command('volume').description('create, inspect, grow, share and delete volumes');

  volume.command('create <name>')
    .description('create a volume (a sparse file on the node, exported over NBD under its name)')
    .requiredOption('--size <size>', 'logical size, e.g. 10GiB (units: B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB; kB/MB/GB/TB/PB are powers of 1000)')
    .option('--description <text>', 'free text shown to NBD clients')
    .option('--thin', 'allow the size to exceed the free space of the node (overcommit)')
    .action(async (name: string, opts: { size: string; description?: string; thin?: boolean }, cmd: Command) => {
      const sizeBytes = parseSize(opts.size, 'volume size');
      const view = await client(cmd).createVolume({
        name, size: sizeBytes, ...(opts.description ? { description: opts.description } : {}), thin: opts.thin === true,
      });
      if (globals(cmd).json) return printJson(view);
      console.log(`created volume ${view.name} (${formatBytes(view.sizeBytes)}), export ${view.exportUri}`);
    });

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

  volume.command('show <name>')
    .description('show one volume: size, allocation, access list, attached clients')
    .action(async (name: string, _opts, cmd: Command) => {
      const v = await client(cmd).getVolume(name);
      if (globals(cmd).json) return printJson(v);
      console.log(keyValues([
        ['name', v.name], ['uuid', v.uuid], ['size', `${formatBytes(v.sizeBytes)} (${v.sizeBytes} bytes)`],
        ['allocated', formatBytes(v.allocatedBytes)], ['created', v.createdAt], ['description', v.description || '-'],
        ['export', v.exportUri], ['allowed clients', v.access.clients.join(', ') || '(none)'],
        ['allowed identities', v.access.identities.join(', ') || '(none)'],
        ['attached', v.clients.map((c) => `${c.address}:${c.port}${c.tls ? ' tls' : ''}${c.identity ? ` (${c.identity})` : ''}`).join(', ') || '(none)'],
      ]));
    });

  volume.command('resize <name>')
    .description('grow a volume (shrinking is refused); attached clients see the new size when they reconnect')
    .requiredOption('--size <size>', 'new logical size, e.g. 20GiB')
    .action(async (name: string, opts: { size: string }, cmd: Command) => {
      const v = await client(cmd).resizeVolume(name, { size: parseSize(opts.size, 'volume size') });
      if (globals(cmd).json) return printJson(v);
      console.log(`volume ${v.name} is now ${formatBytes(v.sizeBytes)}`);
    });

  for (const verb of ['allow', 'disallow'] as const) {
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

  volume.command('delete <name>')
    .description('delete a volume and its data; refused while clients are attached unless --force')
    .option('--force', 'disconnect attached clients and delete anyway')
    .action(async (name: string, opts: { force?: boolean }, cmd: Command) => {
      await client(cmd).deleteVolume(name, { force: opts.force === true });
      if (globals(cmd).json) return printJson({ deleted: name });
      console.log(`deleted volume ${name}`);
    });

  // --- pairs ------------------------------------------------------------------------------------
  const pair = program.command('pair').description('remote copy pairs: create, watch, split, resync, take over, swap, delete');

  pair.command('create <name>')
    .description('pair a volume of this node (the primary) with a volume on another node (the secondary).\n' +
      'The secondary volume is created if missing; allocated regions are copied, then the pair is duplex.')
    .requiredOption('--volume <volume>', 'the primary volume on this node')
    .requiredOption('--to <url>', 'control API URL of the secondary node, e.g. http://dc2:7801')
    .option('--peer-volume <volume>', 'name of the secondary volume (default: the same name)')
    .addOption(new Option('--mode <mode>', 'sync: acknowledged after both nodes wrote; async: ordered journal').choices(['sync', 'async']).makeOptionMandatory())
    .addOption(new Option('--fence <level>', 'sync pairs: data = refuse host writes while the secondary cannot be updated; never = go on and record (default: data for sync, never for async)').choices(['data', 'never']))
    .option('--group <group>', 'async consistency group (volumes of one group stay write-order consistent together; default: the pair name)')
    .option('--no-copy', 'skip the initial copy: only when both volumes are known to hold the same data')
    .option('--wait', 'wait until the pair is duplex, showing copy progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { volume: string; to: string; peerVolume?: string; mode: 'sync' | 'async'; fence?: 'data' | 'never'; group?: string; copy: boolean; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = client(cmd);
      const peerInfo = await new HttpNodeClient(opts.to, globals(cmd).token ?? process.env.TRICOPY_TOKEN).nodeInfo();
      if (!peerInfo.replication) {
        throw new TricopyError('invalid-argument', `node ${peerInfo.name} at ${opts.to} has no cluster secret`, 'start every node with the same --cluster-secret-file');
      }
      const status = await api.createPair({
        name, volume: opts.volume, peer: { node: peerInfo.name, host: peerInfo.replAddress.host, replPort: peerInfo.replAddress.port },
        ...(opts.peerVolume ? { peerVolume: opts.peerVolume } : {}), mode: opts.mode, ...(opts.fence ? { fence: opts.fence } : {}),
        ...(opts.group ? { group: opts.group } : {}), noCopy: opts.copy === false,
      });
      if (!opts.wait) {
        if (globals(cmd).json) return printJson(status);
        return console.log(`created pair ${name}: ${status.volume} on this node → ${status.peer.volume} on ${status.peer.node} (${status.mode}), ${status.state} (${status.code})`);
      }
      const final = await waitWithProgress(api, name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
      if (globals(cmd).json) return printJson(final);
      console.log(`pair ${name} is duplex (PAIR)`);
    });

  pair.command('status [name]')
    .description('pairs of this node: role (P/S), peer, mode, fence, state and code, copy progress, journal and lag')
    .action(async (name: string | undefined, _opts, cmd: Command) => {
      const api = client(cmd);
      const pairs = name ? [await api.getPair(name)] : await api.listPairs();
      if (globals(cmd).json) return printJson(name ? pairs[0] : pairs);
      if (pairs.length === 0) return console.log('no pairs; create one with: tricopy pair create NAME --volume V --to URL --mode sync');
      console.log(table(['NAME', 'ROLE', 'VOLUME', 'PEER', 'MODE', 'FENCE', 'STATE', 'CODE', 'COPY', 'GROUP', 'JOURNAL', 'LAG'], pairs.map((p) => [
        p.name, p.role === 'primary' ? 'P' : 'S', p.volume, `${p.peer.node}:${p.peer.volume}${p.peer.connected ? '' : ' (down)'}`, p.mode,
        p.fence, p.state, p.code, p.progressPercent === null ? '-' : `${p.progressPercent}%`, p.group ?? '-',
        p.journal ? `${formatBytes(p.journal.usedBytes)}/${formatBytes(p.journal.capacityBytes)}` : '-',
        p.lag ? `${p.lag.seconds.toFixed(1)}s ${formatBytes(p.lag.bytes)} ${p.lag.entries}e` : '-',
      ])));
      for (const p of pairs) if (p.code === 'PSUE' || p.code === 'PSUS' || p.code === 'SSWS' || p.code === 'SSUS') console.log(`${p.name}: ${p.reason}`);
    });

  pair.command('split <name>')
    .description('suspend a pair (PSUS): both nodes record changed regions; async pairs first drain their journal')
    .option('--rw', 'let hosts write the secondary while split (its changes are recorded too)')
    .action(async (name: string, opts: { rw?: boolean }, cmd: Command) => {
      const status = await client(cmd).split(name, { rw: opts.rw === true }, { timeoutMs: commandTimeoutMs });
      if (globals(cmd).json) return printJson(status);
      console.log(`pair ${name} is ${status.state} (${status.code}): ${status.reason}`);
    });

  pair.command('resync <name>')
    .description('copy the regions changed on either side since the split (union of both records) and return to duplex')
    .option('--discard <node>', 'split brain only: the node whose changes are thrown away')
    .option('--wait', 'wait until the pair is duplex, showing progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { discard?: string; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = client(cmd);
      const status = await api.resync(name, opts.discard ? { discard: opts.discard } : {});
      if (!opts.wait) {
        if (globals(cmd).json) return printJson(status);
        return console.log(`pair ${name} is ${status.state} (${status.code}): ${status.reason}`);
      }
      const final = await waitWithProgress(api, name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
      if (globals(cmd).json) return printJson(final);
      console.log(`pair ${name} is duplex (PAIR)`);
    });

  pair.command('takeover <name>')
    .description('run at the secondary node: with the primary reachable, swap roles; without it, make this volume writable (SSWS)\n' +
      'after applying everything received. Every pair of the same consistency group is taken over together.')
    .action(async (name: string, _opts, cmd: Command) => {
      const pairs = await client(cmd).takeover(name, { timeoutMs: commandTimeoutMs });
      if (globals(cmd).json) return printJson(pairs);
      for (const p of pairs) console.log(`pair ${p.name}: ${p.role} ${p.state} (${p.code}): ${p.reason}`);
    });

  pair.command('swap <name>')
    .description('run at the node that becomes the primary: reverse the pair, copying only the regions that differ')
    .option('--discard <node>', 'split brain only: the other node, whose changes are thrown away')
    .option('--wait', 'wait until the pair is duplex again')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { discard?: string; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = client(cmd);
      const pairs = await api.swap(name, opts.discard ? { discard: opts.discard } : {}, { timeoutMs: commandTimeoutMs });
      if (opts.wait) for (const p of pairs) await waitWithProgress(api, p.name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
      const final = opts.wait ? await Promise.all(pairs.map((p) => api.getPair(p.name))) : pairs;
      if (globals(cmd).json) return printJson(final);
      for (const p of final) console.log(`pair ${p.name}: ${p.role} ${p.state} (${p.code}): ${p.reason}`);
    });

  pair.command('delete <name>')
    .description('end a pair on both nodes; both volumes stay, independent and writable')
    .option('--force', 'delete here even if the peer is unreachable (it drops its side when it reconnects)')
    .action(async (name: string, opts: { force?: boolean }, cmd: Command) => {
      await client(cmd).deletePair(name, { force: opts.force === true });
      if (globals(cmd).json) return printJson({ deleted: name });
      console.log(`deleted pair ${name}`);
    });

  pair.command('wait <name>')
    .description('wait until a pair reaches a state (exit 1 on timeout)')
    .addOption(new Option('--state <state>', 'state to wait for').choices(['simplex', 'initial-copying', 'duplex', 'duplex-pending', 'suspending', 'suspended', 'secondary-writable']).makeOptionMandatory())
    .option('--timeout <seconds>', 'give up after this many seconds', '120')
    .action(async (name: string, opts: { state: PairState; timeout: string }, cmd: Command) => {
      const timeoutMs = Math.round(Number(opts.timeout) * 1000);
      if (!Number.isFinite(timeoutMs) || timeoutMs <= 0) throw new TricopyError('invalid-argument', '--timeout takes a positive number of seconds');
      const status = await client(cmd).waitPair(name, opts.state, timeoutMs);
      if (globals(cmd).json) return printJson(status);
      console.log(`pair ${name} is ${status.state} (${status.code})`);
    });

  // --- groups -----------------------------------------------------------------------------------
  const group = program.command('group').description('async consistency groups: journal use and lag');

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
        `${g.lag.seconds.toFixed(1)}s ${formatBytes(g.lag.bytes)} ${g.lag.entries} entries`,
      ])));
    });

  // --- topologies --------------------------------------------------------------------------
  const topology = program.command('topology').description('three-site topologies (3DC): apply, status, failover, failback, repair');
  const runner = async (file: string, cmd: Command, opts: { wait?: boolean; timeout?: string }): Promise<Orchestrator> => {
    const { loadTopology } = await import('../topology/topology-file');
    const { Orchestrator: O } = await import('../topology/orchestrator');
    const t = await loadTopology(file);
    const waitSeconds = opts.wait ? Number(opts.timeout ?? '3600') : 0;
    if (!Number.isFinite(waitSeconds) || waitSeconds < 0) throw new TricopyError('invalid-argument', '--timeout takes a number of seconds');
    const token = globals(cmd).token ?? process.env.TRICOPY_TOKEN;
    return new O(t, { clientFor: (url) => new HttpNodeClient(url, token), print: (line) => console.log(line), waitSeconds });
  };

  topology.command('apply <file>')
    .description('create what the topology file describes (volumes, sync and async pairs, consistency group); idempotent')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).apply();
    });

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

  topology.command('failback <file>')
    .description('bring the application back to the primary site of the file and restore the original copies, copying only\n' +
      'what differs (a full copy where a site lost its data). Stop the application at its current site first.')
    .requiredOption('--to <site>', 'the primary site of the topology file')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { to: string; wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).failback(opts.to);
    });

  topology.command('repair <file>')
    .description('keep the application at the primary site and restore protection with the sites that answer: route around a lost\n' +
      'site (cascade: primary → far site directly), and re-attach a site that came back')
    .option('--wait', 'wait until every copy is duplex')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (file: string, opts: { wait?: boolean; timeout: string }, cmd: Command) => {
      await (await runner(file, cmd, opts)).repair();
    });

  // --- events ----------------------------------------------------------------------------------
  program.command('events')
    .description('show the node\'s recent events (state changes with reasons); --follow streams new ones')
    .option('--after <id>', 'only events after this id', '0')
    .option('--follow', 'keep streaming events as they happen (Ctrl-C to stop)')
    .action(async (opts: { after: string; follow?: boolean }, cmd: Command) => {
      const api = client(cmd);
      const print = (e: NodeEvent): void => {
        if (globals(cmd).json) process.stdout.write(`${JSON.stringify(e)}\n`);
        else console.log(`${e.time}  ${`#${e.id}`.padStart(6)}  ${e.kind.padEnd(20)} ${e.subject}: ${e.reason}`);
      };
      const after = Number(opts.after);
      if (!Number.isInteger(after) || after < 0) throw new TricopyError('invalid-argument', '--after takes an event id (a whole number)');
      if (!opts.follow) {
        (await api.listEvents(after)).forEach(print);
        return;
      }
      // The node pushes events (server-sent events); nothing is polled.
      for await (const event of api.followEvents(after)) print(event);
    });

  return program;
}

/** Polls a pair until it reaches `state`, drawing copy progress; fails on a failure suspend. */
async function waitWithProgress(api: NodeClient, name: string, state: PairState, timeoutSeconds: number, quiet: boolean): Promise<PairStatus> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  const tty = process.stderr.isTTY === true && !quiet;
  let lastLine = '';
  for (;;) {
    const p = await api.getPair(name);
    if (p.state === state) {
      if (tty) process.stderr.write(`\r${' '.repeat(lastLine.length)}\r`);
      return p;
    }
    if (p.code === 'PSUE') throw new TricopyError('io-error', `pair ${name} was suspended by a failure: ${p.reason}`);
    if (Date.now() > deadline) throw new TricopyError('unavailable', `pair ${name} is still ${p.state} after ${timeoutSeconds} s`);
    const percent = p.progressPercent ?? 0;
    const bar = `[${'#'.repeat(Math.floor(percent / 5)).padEnd(20, ' ')}] ${String(percent).padStart(3)}% ${p.state} (${p.code})`;
    if (tty) process.stderr.write(`\r${bar}`);
    else if (!quiet && bar !== lastLine) process.stderr.write(`${bar}\n`);
    lastLine = bar;
    await new Promise((r) => setTimeout(r, 500));
  }
}

function accessSummary(v: VolumeView): string {
  const rules = [...v.access.clients, ...v.access.identities.map((i) => `id:${i}`)];
  if (rules.length === 0) return '(nobody)';
  return rules.length > 2 ? `${rules.slice(0, 2).join(',')},+${rules.length - 2}` : rules.join(',');
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit with code 0; usage errors were printed by commander already.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof TricopyError) {
      process.stderr.write(`error: ${err.message}\n`);
      if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
      return err.code === 'invalid-argument' ? 2 : 1;
    }
    process.stderr.write(`error: ${errorMessage(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv).then((code) => {
    process.exitCode = code;
  }, (err: unknown) => {
    process.stderr.write(`fatal: ${errorMessage(err)}\n`);
    process.exitCode = 1;
  });
}
