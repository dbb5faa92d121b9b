// `tricopy edge`: run a relay of a remote copy network (an edge or a core, spec 002) in the
// foreground, or ask one about itself.
import { type Command, Option } from 'commander';
import { TricopyError, errorMessage } from '../../common/errors';
import { printJson } from '../format';
import { globals } from '../globals';

export function registerEdgeCommands(program: Command): void {
  const edge = program.command('edge').description('relays of a remote copy network: run an edge or a core, or ask one about itself');
  addRun(edge);
  addStatus(edge);
}

/** host:port, with 0 for any free port. */
export function parseListen(text: string, flag: string): { host: string; port: number } {
  const at = text.lastIndexOf(':');
  const host = at < 0 ? '127.0.0.1' : text.slice(0, at).replace(/^\[(.*)\]$/, '$1');
  const port = Number(at < 0 ? text : text.slice(at + 1));
  if (!host || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new TricopyError('invalid-argument', `${flag} "${text}" is not HOST:PORT`, 'e.g. 127.0.0.1:7830, or 127.0.0.1:0 for any free port');
  }
  return { host, port };
}

function addRun(edge: Command): void {
  edge.command('run')
    .description('run a relay in the foreground: an edge (storage nodes attach to it; it acknowledges their copy writes once\n' +
      'they are in its log area and delivers what arrives for them in order) or a core (it forwards entries between relays).\n' +
      'Logs JSON lines on stderr; prints {"apiPort","listenPort"} on stdout once listening. SIGTERM/SIGINT stop it cleanly.\n' +
      'SIGHUP reads the TLS files again (certificate rotation without a restart).')
    .requiredOption('--name <name>', 'relay name, as the network file names it')
    .addOption(new Option('--role <role>', 'edge or core').choices(['edge', 'core']).makeOptionMandatory())
    .requiredOption('--data-dir <dir>', 'directory for its log area and state (created if missing)')
    .option('--listen <host:port>', 'address for other relays and attached storage nodes; port 0 picks a free one', '127.0.0.1:7830')
    .option('--api-host <address>', 'address of the control API (default: the --listen host)')
    .option('--api-port <port>', 'control API port; 0 picks a free one', '7831')
    .option('--cluster-secret-file <file>', 'the secret the storage nodes share; every link is authenticated with it')
    .addOption(new Option('--tls-mode <mode>', 'TLS on its links (to relays and storage nodes): off, optional (accepts TLS and plain, dials plain; ' +
      'for switching a network over one process at a time) or required (TLS only, both ways)').choices(['off', 'optional', 'required']).default('off'))
    .option('--tls-cert <file>', 'X.509 certificate (PEM) it presents, both when accepting and when dialing (serverAuth and clientAuth)')
    .option('--tls-key <file>', 'the certificate\'s private key (PEM)')
    .option('--tls-ca <file>', 'CA (PEM) every peer\'s certificate must chain to; makes peer certificates mandatory (mutual TLS). ' +
      'Without it links are encrypted but certificates are not checked')
    .option('--peer-timeout <duration>', 'silence after which a link counts as down (default 4s)')
    .addOption(new Option('--log-level <level>', 'log level').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    .action(runRelay);
}

interface RunOptions {
  name: string; role: 'edge' | 'core'; dataDir: string; listen: string; apiHost?: string; apiPort: string; clusterSecretFile?: string; peerTimeout?: string; logLevel: string;
  tlsMode: 'off' | 'optional' | 'required'; tlsCert?: string; tlsKey?: string; tlsCa?: string;
}

async function runRelay(opts: RunOptions): Promise<void> {
  const { createLogger } = await import('../../common/log');
  const { Relay } = await import('../../edge/relay');
  const { buildRelayApi } = await import('../../edge/api');
  const { relayNamePattern } = await import('../../edge/network-file');
  const { parseDurationMs } = await import('../../common/units');
  const { defaultLinkTimings } = await import('../../replication/transport/link');
  const { promises: fsp } = await import('node:fs');
  if (!relayNamePattern.test(opts.name)) throw new TricopyError('invalid-argument', `--name "${opts.name}" must be 1–63 letters, digits, "_" or "-"`);
  const listen = parseListen(opts.listen, '--listen');
  const apiPort = Number(opts.apiPort);
  if (!Number.isInteger(apiPort) || apiPort < 0 || apiPort > 65535) throw new TricopyError('invalid-argument', `--api-port "${opts.apiPort}" is not a port`);
  let secret: Buffer | undefined;
  if (opts.clusterSecretFile) {
    const text = (await fsp.readFile(opts.clusterSecretFile, 'utf8').catch((err: Error) => {
      throw new TricopyError('invalid-argument', `cannot read --cluster-secret-file: ${err.message}`);
    })).trim();
    if (text.length < 16) throw new TricopyError('invalid-argument', `the cluster secret in ${opts.clusterSecretFile} is shorter than 16 characters`);
    secret = Buffer.from(text, 'utf8');
  }
  const { loadLinkTls } = await import('../../replication/transport/link-tls');
  const tlsFiles = { mode: opts.tlsMode, cert: opts.tlsCert, key: opts.tlsKey, ca: opts.tlsCa };
  const tls = await loadLinkTls(tlsFiles);
  const peerTimeoutMs = opts.peerTimeout ? parseDurationMs(opts.peerTimeout, '--peer-timeout') : defaultLinkTimings.peerTimeoutMs;
  const log = createLogger(opts.logLevel as 'info', { relay: opts.name });
  if (!secret) log.warn('no --cluster-secret-file: every link will be refused');
  if (tls && !tls.caPem) log.warn('TLS without --tls-ca: links are encrypted, but certificates are not verified (no protection from a man in the middle)');
  const relay = await Relay.start({
    name: opts.name, role: opts.role, dataDir: opts.dataDir, listenHost: listen.host, listenPort: listen.port, apiHost: opts.apiHost ?? listen.host, apiPort, secret, log,
    ...(tls ? { tls } : {}),
    timings: { ...defaultLinkTimings, peerTimeoutMs, heartbeatIntervalMs: Math.max(100, Math.floor(peerTimeoutMs / 4)) },
  });
  let api: Awaited<ReturnType<typeof buildRelayApi>>;
  try {
    api = await buildRelayApi(relay, log.child({ component: 'api' }));
    relay.apiPort = await api.listenOn(opts.apiHost ?? listen.host, apiPort);
  } catch (err) {
    await relay.stop();
    throw err;
  }
  log.info({ ...relay.ports, tls: tls?.mode ?? 'off', mutualTls: tls?.caPem !== undefined }, 'relay listening');
  process.stdout.write(`${JSON.stringify(relay.ports)}\n`);
  await new Promise<void>((resolve) => {
    let signals = 0;
    const onSignal = (signal: NodeJS.Signals): void => {
      if (++signals > 1) process.exit(1);
      log.info({ signal }, 'stopping');
      void api.close().then(() => relay.stop()).then(resolve, (err: unknown) => {
        log.error({ err }, 'clean shutdown failed');
        process.exit(1);
      });
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    // Certificates are rotated without a restart: the same files read again, checked as at start.
    process.on('SIGHUP', () => {
      void loadLinkTls(tlsFiles).then((next) => relay.reloadTls(next)).catch((err: unknown) => {
        log.error({ err: errorMessage(err) }, 'SIGHUP: the TLS files were not reloaded; the relay goes on with the ones it has');
        relay.events.emit('tls-reload-failed', relay.name, errorMessage(err));
      });
    });
  });
}

function addStatus(edge: Command): void {
  edge.command('status <api>')
    .description('one relay: its links, order-guarantee ids (counters 732/733/734, log area, delays) and pairs')
    .action(async (api: string, _opts, cmd: Command) => {
      const { HttpRelayClient } = await import('../../edge/client');
      const status = await new HttpRelayClient(api).status();
      if (globals(cmd).json) return printJson(status);
      const { relayStatusText } = await import('./network');
      console.log(relayStatusText(status));
    });
}

