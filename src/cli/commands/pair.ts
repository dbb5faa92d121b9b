// `tricopy pair`: remote copy pairs between two nodes: create, status, split, resync, verify,
// takeover, swap, delete and wait; --wait draws copy (or verify) progress on stderr.
import { type Command, Option } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { NodeClient } from '../../contracts/node-client';
import type { PairState, PairStatus, ResidualHoldView, VerifyStatus } from '../../contracts/pairs';
import { defaultVerifyRateMiBPerSecond, maxVerifyRateMiBPerSecond, minVerifyRateMiBPerSecond } from '../../replication/limits';
import { HttpNodeClient } from '../../node/api-client';
import { printJson, table } from '../format';
import { client, commandTimeoutMs, globals, residualClient, tokenOf, whenNotBusy } from '../globals';

export function registerPairCommands(program: Command): void {
  const pair = program.command('pair').description('remote copy pairs: create, watch, split, resync, verify, take over, swap, delete');
  addCreate(pair);
  addStatus(pair);
  addSplit(pair);
  addResync(pair);
  addVerify(pair);
  addTakeover(pair);
  addSwap(pair);
  addDelete(pair);
  addWait(pair);
  addReleaseResidual(pair);
}

function addCreate(pair: Command): void {
  pair.command('create <name>')
    .description('pair a volume of this node (the primary) with a volume on another node (the secondary).\n' +
      'The secondary volume is created if missing; allocated regions are copied, then the pair is duplex.')
    .requiredOption('--volume <volume>', 'the primary volume on this node')
    .requiredOption('--to <url>', 'control API URL of the secondary node, e.g. http://dc2:7801')
    .option('--peer-volume <volume>', 'name of the secondary volume (default: the same name)')
    .addOption(new Option('--mode <mode>', 'sync: acknowledged after both nodes wrote; async: ordered journal; quorum: a sync pair used as a cluster quorum volume (spec 004, see tricopy quorum)').choices(['sync', 'async', 'quorum']).makeOptionMandatory())
    .addOption(new Option('--fence <level>', 'sync pairs: data = refuse host writes while the secondary cannot be updated; never = go on and record (default: data for sync, never for async)').choices(['data', 'never']))
    .option('--group <group>', 'async consistency group (volumes of one group stay write-order consistent together; default: the pair name)')
    .option('--no-copy', 'skip the initial copy: only when both volumes are known to hold the same data')
    .option('--via <network:order>', 'copy through a remote copy network (spec 002): this node\'s edge acknowledges each copy write once it\n' +
      'holds it and delivers it in order to the peer\'s edge, under the order-guarantee id; see tricopy network apply')
    .option('--wait', 'wait until the pair is duplex, showing copy progress')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { volume: string; to: string; peerVolume?: string; mode: 'sync' | 'async' | 'quorum'; fence?: 'data' | 'never'; group?: string; copy: boolean; via?: string; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = client(cmd);
      if (opts.mode === 'quorum' && opts.group) throw new TricopyError('invalid-argument', 'a quorum pair has no consistency group; drop --group');
      const peerInfo = await new HttpNodeClient(opts.to, tokenOf(cmd)).nodeInfo();
      if (!peerInfo.replication) {
        throw new TricopyError('invalid-argument', `node ${peerInfo.name} at ${opts.to} has no cluster secret`, 'start every node with the same --cluster-secret-file');
      }
      let peer = { node: peerInfo.name, host: peerInfo.replAddress.host, replPort: peerInfo.replAddress.port };
      let returnAddress: { host: string; replPort: number } | undefined;
      if (opts.via) ({ peer, returnAddress } = await throughNetwork(api as HttpNodeClient, name, peerInfo.name, opts.via));
      const status = await api.createPair({
        name, volume: opts.volume, peer, ...(returnAddress ? { returnAddress } : {}),
        ...(opts.peerVolume ? { peerVolume: opts.peerVolume } : {}), mode: opts.mode === 'quorum' ? 'sync' : opts.mode,
        ...(opts.mode === 'quorum' ? { purpose: 'quorum' as const } : {}), ...(opts.fence ? { fence: opts.fence } : {}),
        ...(opts.group ? { group: opts.group } : {}), noCopy: opts.copy === false, peerDataDirId: peerInfo.dataDirId,
      });
      if (!opts.wait) {
        if (globals(cmd).json) return printJson(status);
        return console.log(`created pair ${name}: ${status.volume} on this node → ${status.peer.volume} on ${status.peer.node} (${modeOf(status)}), ${status.state} (${status.code})`);
      }
      const final = await waitWithProgress(api, name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
      if (globals(cmd).json) return printJson(final);
      console.log(`pair ${name} is duplex (PAIR)`);
    });
}

/** A pair through a remote copy network (`--via NETWORK:ORDER`): see edge/pair-via.ts. */
async function throughNetwork(api: HttpNodeClient, pair: string, peerNode: string, via: string): Promise<{ peer: { node: string; host: string; replPort: number }; returnAddress: { host: string; replPort: number } }> {
  const m = /^([^:]+):([^:]+)$/.exec(via);
  if (!m) throw new TricopyError('invalid-argument', `--via "${via}" is not NETWORK:ORDER`, 'e.g. --via rcn:erp (the network file\'s name and one of its orders)');
  const [, network, order] = m as unknown as [string, string, string];
  const { pairThroughNetwork, bindAtSourceEdge } = await import('../../edge/pair-via');
  const route = pairThroughNetwork(await api.getNetwork(network), peerNode, order);
  await bindAtSourceEdge(route, pair);
  return { peer: route.peer, returnAddress: route.returnAddress };
}

function addStatus(pair: Command): void {
  pair.command('status [name]')
    .description('pairs of this node: role (P/S), peer, mode, fence, state and code, copy progress, journal and lag')
    .action(async (name: string | undefined, _opts, cmd: Command) => {
      const api = client(cmd);
      const pairs = name ? [await api.getPair(name)] : await api.listPairs();
      if (globals(cmd).json) return printJson(name ? pairs[0] : pairs);
      if (pairs.length === 0) return console.log('no pairs; create one with: tricopy pair create NAME --volume V --to URL --mode sync');
      console.log(table(['NAME', 'ROLE', 'VOLUME', 'PEER', 'MODE', 'FENCE', 'STATE', 'CODE', 'COPY', 'GROUP', 'JOURNAL', 'LAG'], pairs.map((p) => [
        p.name, p.role === 'primary' ? 'P' : 'S', p.volume, `${p.peer.node}:${p.peer.volume}${p.peer.connected ? '' : ' (down)'}`, modeOf(p),
        p.fence, p.state, p.code, p.progressPercent === null ? '-' : `${p.progressPercent}%`, p.group ?? '-',
        p.journal ? `${formatBytes(p.journal.usedBytes)}/${formatBytes(p.journal.capacityBytes)}` : '-',
        p.lag ? `${p.lag.seconds.toFixed(1)}s ${formatBytes(p.lag.bytes)} ${p.lag.entries}e` : '-',
      ])));
      for (const p of pairs) if (p.code === 'PSUE' || p.code === 'PSUS' || p.code === 'SSWS' || p.code === 'SSUS') console.log(`${p.name}: ${p.reason}`);
      for (const p of pairs) if (p.verify) console.log(`${p.name}: ${verifyLine(p.verify)}`);
      for (const p of pairs) if (p.residualHold) console.log(`${p.name}: ${residualLine(p.residualHold)}`);
    });
}

function residualLine(h: ResidualHoldView): string {
  return `host writes wait (${h.waitingWrites} now): edge ${h.edge} still applies residual entries of order ${h.order} after a fast failover ` +
    `(${h.remaining === null ? 'how many: not known yet' : `${h.remaining} left`}; since ${h.since}); ` +
    `to discard them: tricopy network failover FILE --order ${h.order} --discard-residual, or here: tricopy pair release-residual --order ${h.order}`;
}

function addReleaseResidual(pair: Command): void {
  pair.command('release-residual')
    .description('after a fast failover through a network (network failover --fast), host writes to the taken-over volumes\n' +
      'wait until the edge has applied the residual entries. When that edge is lost too, this lets them go on here:\n' +
      'entries not applied yet are discarded (the volume lacks writes the old primary had acknowledged)')
    .requiredOption('--order <id>', 'the order-guarantee id that failed over')
    .action(async (opts: { order: string }, cmd: Command) => {
      const released = await residualClient(cmd).releaseResidual(opts.order);
      if (globals(cmd).json) return printJson(released);
      for (const h of released) console.log(`order ${h.order} (edge ${h.edge}): host writes go on; residual entries not applied are discarded`);
    });
}

function addSplit(pair: Command): void {
  pair.command('split <name>')
    .description('suspend a pair (PSUS): both nodes record changed regions; async pairs first drain their journal')
    .option('--rw', 'let hosts write the secondary while split (its changes are recorded too)')
    .action(async (name: string, opts: { rw?: boolean }, cmd: Command) => {
      const status = await client(cmd).split(name, { rw: opts.rw === true }, { timeoutMs: commandTimeoutMs });
      if (globals(cmd).json) return printJson(status);
      console.log(`pair ${name} is ${status.state} (${status.code}): ${status.reason}`);
    });
}

function addResync(pair: Command): void {
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
}

function addVerify(pair: Command): void {
  pair.command('verify <name>')
    .description('run at the primary of a duplex pair: compare both copies by checksum while hosts keep writing (DRBD verify).\n' +
      'Regions that differ are recorded and reported; `pair resync` then copies exactly those.')
    .option('--rate <MiB/s>', `read each side at most this fast (${minVerifyRateMiBPerSecond}–${maxVerifyRateMiBPerSecond})`, String(defaultVerifyRateMiBPerSecond))
    .option('--wait', 'wait until the verify ends, showing progress (exit 1 unless it went through the whole volume)')
    .option('--cancel', 'stop the running verify; what it found so far stays recorded')
    .option('--timeout <seconds>', 'with --wait: give up waiting after this many seconds (the verify goes on)', '86400')
    .action(async (name: string, opts: { rate: string; wait?: boolean; cancel?: boolean; timeout: string }, cmd: Command) => {
      const api = client(cmd);
      const json = globals(cmd).json === true;
      if (opts.cancel) {
        const status = await api.cancelVerify(name);
        if (json) return printJson(status);
        return console.log(`pair ${name}: ${status.verify ? verifyLine(status.verify) : 'no verify'}`);
      }
      const rate = Number(opts.rate);
      if (!Number.isInteger(rate) || rate < minVerifyRateMiBPerSecond || rate > maxVerifyRateMiBPerSecond) {
        throw new TricopyError('invalid-argument', `--rate takes a whole number of MiB/s from ${minVerifyRateMiBPerSecond} to ${maxVerifyRateMiBPerSecond}`);
      }
      const started = await api.verify(name, { rateMiBPerSecond: rate });
      if (!opts.wait) {
        if (json) return printJson(started);
        return console.log(`pair ${name}: verify started at up to ${rate} MiB/s; follow it with: tricopy pair status ${name}`);
      }
      const final = await waitForVerify(api, name, Number(opts.timeout), json);
      if (json) printJson(final);
      else console.log(`pair ${name}: ${verifyLine(final.verify!)}`);
      if (final.verify!.state !== 'finished') throw new TricopyError('conflict', `the verify of pair ${name} did not finish: ${final.verify!.reason}`);
    });
}

/** sync, async, or quorum (a sync pair used as a quorum volume). */
function modeOf(p: PairStatus): string {
  return p.purpose === 'quorum' ? 'quorum' : p.mode;
}

/** One line about a verify, for status and the verify command. */
function verifyLine(v: VerifyStatus): string {
  if (v.state !== 'running') return v.reason;
  const found = v.differingRegions === 0 ? 'no differences so far' : `${v.differingRegions} region${v.differingRegions === 1 ? ' differs' : 's differ'} so far`;
  return `verify running, ${v.progressPercent}% of ${formatBytes(v.totalBytes)} at up to ${v.rateMiBPerSecond} MiB/s, ${found}`;
}

/** Polls a pair until its verify ends, drawing progress. */
async function waitForVerify(api: NodeClient, name: string, timeoutSeconds: number, quiet: boolean): Promise<PairStatus> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  const tty = process.stderr.isTTY === true && !quiet;
  let lastLine = '';
  for (;;) {
    const p = await api.getPair(name);
    const v = p.verify;
    if (!v) throw new TricopyError('conflict', `pair ${name} has no verify on this node any more (was it deleted, or the node restarted?)`);
    if (v.state !== 'running') {
      if (tty) process.stderr.write(`\r${' '.repeat(lastLine.length)}\r`);
      return p;
    }
    if (Date.now() > deadline) throw new TricopyError('unavailable', `the verify of pair ${name} is still running after ${timeoutSeconds} s`, `stop it with: tricopy pair verify ${name} --cancel`);
    const bar = `[${'#'.repeat(Math.floor(v.progressPercent / 5)).padEnd(20, ' ')}] ${String(v.progressPercent).padStart(3)}% verify, ${v.differingRegions} differing`;
    if (tty) process.stderr.write(`\r${bar}`);
    else if (!quiet && bar !== lastLine) process.stderr.write(`${bar}\n`);
    lastLine = bar;
    await new Promise((r) => setTimeout(r, 500));
  }
}

function addTakeover(pair: Command): void {
  pair.command('takeover <name>')
    .description('run at the secondary node: with the primary reachable, swap roles; without it, make this volume writable (SSWS)\n' +
      'after applying everything received. Every pair of the same consistency group is taken over together.')
    .action(async (name: string, _opts, cmd: Command) => {
      const pairs = await whenNotBusy(() => client(cmd).takeover(name, { timeoutMs: commandTimeoutMs }));
      if (globals(cmd).json) return printJson(pairs);
      for (const p of pairs) console.log(`pair ${p.name}: ${p.role} ${p.state} (${p.code}): ${p.reason}`);
    });
}

function addSwap(pair: Command): void {
  pair.command('swap <name>')
    .description('run at the node that becomes the primary: reverse the pair, copying only the regions that differ')
    .option('--discard <node>', 'split brain only: the other node, whose changes are thrown away')
    .option('--wait', 'wait until the pair is duplex again')
    .option('--timeout <seconds>', 'with --wait: give up after this many seconds', '3600')
    .action(async (name: string, opts: { discard?: string; wait?: boolean; timeout: string }, cmd: Command) => {
      const api = client(cmd);
      const pairs = await whenNotBusy(() => api.swap(name, opts.discard ? { discard: opts.discard } : {}, { timeoutMs: commandTimeoutMs }));
      if (opts.wait) for (const p of pairs) await waitWithProgress(api, p.name, 'duplex', Number(opts.timeout), globals(cmd).json === true);
      const final = opts.wait ? await Promise.all(pairs.map((p) => api.getPair(p.name))) : pairs;
      if (globals(cmd).json) return printJson(final);
      for (const p of final) console.log(`pair ${p.name}: ${p.role} ${p.state} (${p.code}): ${p.reason}`);
    });
}

function addDelete(pair: Command): void {
  pair.command('delete <name>')
    .description('end a pair on both nodes; both volumes stay, independent and writable')
    .option('--force', 'delete here even if the peer is unreachable (it drops its side when it reconnects)')
    .option('--keep-read-only', 'at the secondary: its volume stays read-only to hosts, holding the primary\'s image\n' +
      '(until it is paired again, or tricopy volume make-writable); topology procedures leave sites behind so')
    .action(async (name: string, opts: { force?: boolean; keepReadOnly?: boolean }, cmd: Command) => {
      await client(cmd).deletePair(name, { force: opts.force === true, keepReadOnly: opts.keepReadOnly === true });
      if (globals(cmd).json) return printJson({ deleted: name });
      console.log(`deleted pair ${name}`);
    });
}

function addWait(pair: Command): void {
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
