// `tricopy volume relocate`: move a volume online to another data area (tier) of its node, and how
// `volume show` describes a move (spec 003 Fig. 15).
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { RelocationView, VolumeView } from '../../contracts/node';
import type { RelocationNodeClient } from '../../contracts/node-client';
import { HttpNodeClient } from '../../node/api-client';
import { printJson } from '../format';
import { globals, nodeUrl, tokenOf } from '../globals';

/** How often --wait asks the node for progress. */
const pollIntervalMs = 300;

export function addRelocate(volume: Command): void {
  volume.command('relocate <name>')
    .description('move a volume to another data area of its node (e.g. from fast to slow disks) while hosts keep using it:\n' +
      'a background copy, then a brief hold of writes to switch files; NBD sessions, pairs and replicas stay as they are')
    .requiredOption('--tier <tier>', 'the data area to move to (see --data-area of tricopy node run; the data directory is "default")')
    .option('--wait', 'wait until the move is done, showing progress')
    .option('--timeout <seconds>', 'with --wait: give up waiting after this many seconds (the move goes on)', '3600')
    .action(async (name: string, opts: { tier: string; wait?: boolean; timeout: string }, cmd: Command) => {
      const timeoutSeconds = Number(opts.timeout);
      if (!Number.isFinite(timeoutSeconds) || timeoutSeconds <= 0) throw new TricopyError('invalid-argument', '--timeout is a positive number of seconds');
      const api: RelocationNodeClient = new HttpNodeClient(nodeUrl(cmd), tokenOf(cmd));
      const json = globals(cmd).json === true;
      const started = await api.relocateVolume(name, { tier: opts.tier });
      const final = opts.wait ? await waitForMove(api, name, timeoutSeconds, json) : started;
      if (json) return printJson(final);
      const r = final.relocation!;
      if (!opts.wait) return console.log(`volume ${name} is moving from tier ${r.from} to tier ${r.to}; follow it with: tricopy volume show ${name}`);
      console.log(`volume ${name} moved to tier ${r.to}: ${relocationText(r)}`);
    });
}

/** One line about a move, for `volume show` and `volume relocate`. */
export function relocationText(r: RelocationView): string {
  const rate = r.bytesPerSecond > 0 ? `, ${formatBytes(r.bytesPerSecond)}/s` : '';
  switch (r.state) {
    case 'copying':
    case 'switching':
      return `${r.state} to tier ${r.to}: ${r.progressPercent}% (${formatBytes(r.passedBytes)} of ${formatBytes(r.totalBytes)}${rate})`;
    case 'done':
      return `from tier ${r.from} to tier ${r.to}, done ${r.finishedAt}${rate}; writes held ${r.holdMs} ms at the switch`;
    default:
      return `${r.state}: the move from tier ${r.from} to tier ${r.to} stopped (${r.error ?? 'no reason'}); the volume stayed in tier ${r.from}; run it again with --tier ${r.to}`;
  }
}

async function waitForMove(api: RelocationNodeClient, name: string, timeoutSeconds: number, quiet: boolean): Promise<VolumeView> {
  const deadline = Date.now() + timeoutSeconds * 1000;
  const tty = process.stderr.isTTY === true && !quiet;
  let lastLine = '';
  for (;;) {
    const v = await api.getVolume(name);
    const r = v.relocation;
    if (!r) throw new TricopyError('unavailable', `volume ${name} shows no relocation (the node restarted?)`, `see: tricopy volume show ${name}`);
    if (r.state === 'done') {
      if (tty) process.stderr.write(`\r${' '.repeat(lastLine.length)}\r`);
      return v;
    }
    if (r.state === 'failed' || r.state === 'interrupted') {
      throw new TricopyError('io-error', `the move of volume ${name} to tier ${r.to} ${r.state}: ${r.error ?? 'no reason given'}`,
        `the volume stayed in tier ${r.from}; run the move again once the cause is fixed: tricopy volume relocate ${name} --tier ${r.to}`);
    }
    if (Date.now() > deadline) throw new TricopyError('unavailable', `volume ${name} is still moving after ${timeoutSeconds} s (the move goes on)`, `follow it with: tricopy volume show ${name}`);
    const line = `[${'#'.repeat(Math.floor(r.progressPercent / 5)).padEnd(20, ' ')}] ${relocationText(r)}`;
    if (tty) process.stderr.write(`\r${line}`);
    else if (!quiet && line !== lastLine) process.stderr.write(`${line}\n`);
    lastLine = line;
    await new Promise((resolve) => setTimeout(resolve, pollIntervalMs));
  }
}
