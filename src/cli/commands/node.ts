// `tricopy node`: run a storage node in the foreground, or ask one about itself.
import { type Command, Option } from 'commander';
import { keyValues, printJson } from '../format';
import { client, globals } from '../globals';

export function registerNodeCommands(program: Command): void {
  const node = program.command('node').description('run a storage node, or ask one about itself');
  addRun(node);
  addInfo(node);
}

function addRun(node: Command): void {
  node.command('run')
    .description('run a storage node in the foreground: serve volumes over NBD, the control API and metrics.\n' +
      'Logs JSON lines on stderr; prints {"nbdPort","apiPort","replPort"} on stdout once listening.\n' +
      'SIGTERM/SIGINT stop it cleanly: in-flight requests finish, volumes are flushed, exit code 0.\n' +
      'SIGHUP reads the TLS files again (certificate rotation without a restart).')
    .option('--config <file>', 'YAML or JSON file with any of the settings below (flags win)')
    .option('--name <name>', 'node name, unique in the cluster (required)')
    .option('--site <site>', 'site (data centre) this node is in (default: the node name)')
    .option('--data-dir <dir>', 'directory holding the volumes (required; created if missing)')
    .option('--host <address>', 'address to listen on for NBD and replication (default 127.0.0.1)')
    .option('--api-host <address>', 'address of the control API and /metrics (default: --host); keep it on loopback when NBD faces the network')
    .option('--advertise-repl-port <port>', 'replication port peer nodes should dial when a relay or NAT forwards to this node')
    .option('--advertise-nbd-port <port>', 'NBD port put in export URIs when a relay, NAT or proxy forwards another port to this node')
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
    .addOption(new Option('--repl-tls <mode>', 'replication TLS (to peer nodes and edges) with --tls-cert/--tls-key, and --tls-ca for mutual TLS: ' +
      'off, optional (accepts both, dials plain) or required (default off)').choices(['off', 'optional', 'required']))
    .option('--api-token-file <file>', 'file holding a bearer token the control API demands (recommended off loopback)')
    .option('--max-connections <n>', 'maximum NBD connections (default 256)')
    .option('--handshake-timeout <duration>', 'NBD handshake deadline, e.g. 10s (default 10s)')
    .addOption(new Option('--min-block-size <bytes>', 'smallest NBD request alignment enforced (default 1)').choices(['1', '512', '4096']))
    .option('--cluster-secret-file <file>', 'secret shared by all nodes of the cluster; replication needs it (e.g. openssl rand -hex 32)')
    .option('--peer-timeout <duration>', 'silence after which a peer node counts as unreachable (default 4s)')
    .option('--journal-size <size>', 'capacity of each async consistency group journal (default 1GiB)')
    .addOption(new Option('--journal-full <policy>', 'when a journal is full: delay host writes, or suspend the group onto bitmaps (default delay)').choices(['delay', 'suspend']))
    .option('--no-auto-resync', 'do not resynchronise pairs by themselves when a failed link comes back')
    .option('--replica-copy-rate <size>', 'bytes per second each in-node replica copy may copy (initial, background, resync), e.g. 200MiB; default unthrottled')
    .option('--data-area <tier=dir>', 'a data area (tier) volumes can live in or move to, e.g. fast=/mnt/nvme/tricopy; repeat for more.\n' +
      'The data directory itself is tier "default"', (value: string, previous: string[] | undefined) => [...(previous ?? []), value])
    .option('--relocation-rate <size>', 'bytes of data per second each volume relocation may copy, e.g. 200MiB; default unthrottled')
    .action(runNode);
}

/** Runs a node until SIGTERM/SIGINT stops it cleanly (a second signal exits at once with code 1). */
async function runNode(opts: Record<string, string | undefined> & { dataArea?: string[] }): Promise<void> {
  // Loaded here so that client commands start fast without the server stack.
  const { loadConfigFile, resolveNodeConfig } = await import('../../node/config');
  const { createLogger } = await import('../../common/log');
  const { StorageNode } = await import('../../node/node');
  const { QuorumExtension } = await import('../../quorum/extension');
  const fromFile = opts.config ? await loadConfigFile(opts.config) : {};
  const config = resolveNodeConfig(fromFile, {
    name: opts.name, site: opts.site, dataDir: opts.dataDir, host: opts.host, apiHost: opts.apiHost, advertiseHost: opts.advertiseHost, advertiseReplPort: opts.advertiseReplPort,
    advertiseNbdPort: opts.advertiseNbdPort,
    nbdPort: opts.nbdPort, apiPort: opts.apiPort, replPort: opts.replPort, logLevel: opts.logLevel, tlsMode: opts.tls, replTls: opts.replTls,
    tlsCert: opts.tlsCert, tlsKey: opts.tlsKey, tlsCa: opts.tlsCa, tlsPskFile: opts.tlsPskFile,
    apiTokenFile: opts.apiTokenFile, maxConnections: opts.maxConnections, handshakeTimeout: opts.handshakeTimeout,
    minBlockBytes: opts.minBlockSize, clusterSecretFile: opts.clusterSecretFile, peerTimeout: opts.peerTimeout,
    journalSize: opts.journalSize, journalFull: opts.journalFull, replicaCopyRate: opts.replicaCopyRate,
    dataAreas: opts.dataArea, relocationRate: opts.relocationRate,
    autoResync: (opts as Record<string, unknown>).autoResync === false ? false : undefined,
  });
  const log = createLogger(config.logLevel, { node: config.name });
  const storageNode = await StorageNode.start(config, log, [new QuorumExtension()]);
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
    // Certificates are rotated without a restart (the outcome is an event: tls-reloaded or tls-reload-failed).
    process.on('SIGHUP', () => void storageNode.reloadTls());
  });
}

function addInfo(node: Command): void {
  node.command('info')
    .description('show the node: name, site, version, ports, volumes')
    .action(async (_opts, cmd: Command) => {
      const info = await client(cmd).nodeInfo();
      if (globals(cmd).json) return printJson(info);
      console.log(keyValues([
        ['name', info.name], ['site', info.site], ['version', info.version], ['data dir', info.dataDir], ['data dir id', info.dataDirId],
        ['nbd port', String(info.ports.nbdPort)], ['api port', String(info.ports.apiPort)],
        ['replication port', String(info.ports.replPort)], ['tls', info.tlsMode], ['volumes', String(info.volumeCount)],
        ['nbd connections', String(info.nbdConnections)], ['started', info.startedAt],
        ...info.peerLinks.map((l): [string, string] => [`link to ${l.node}`, l.up ? `up since ${l.since}` : `down since ${l.since}: ${l.reason}`]),
      ]));
    });
}
