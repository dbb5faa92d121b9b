// Helpers for three-site tests: run `tricopy topology …`, read its status, compare volumes across
// sites, and the failback every failover test ends with.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import type { TopologyStatus } from '../../src/topology/orchestrator';
import type { Cluster } from './cluster';
import { cli, cliPath } from './node-process';
import { sha256Export } from './tools';
import { waitFor } from './wait';

/** Runs `tricopy topology ARGS` and returns its output; a non-zero exit fails with the output. */
export async function topo(args: string[]): Promise<string> {
  const r = await cli(['topology', ...args]);
  assert.equal(r.code, 0, `tricopy topology ${args.join(' ')}:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/**
 * Starts `tricopy topology ARGS` and SIGKILLs it once its output contains `marker` (an operator's
 * lost session); returns what it printed. The command may also have finished by then.
 */
export async function interruptedTopo(args: string[], marker: string): Promise<string> {
  const child = spawn(process.execPath, [cliPath, 'topology', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let partial = '';
  let exited = false;
  child.stdout.on('data', (d: Buffer) => (partial += d.toString()));
  const closed = new Promise<void>((resolve) => child.on('close', () => { exited = true; resolve(); }));
  await waitFor(`"${marker}" in the output of topology ${args[0]}`, () => exited || partial.includes(marker), { timeoutMs: 60_000, intervalMs: 5 });
  child.kill('SIGKILL');
  await closed;
  return partial;
}

export async function topologyStatus(file: string): Promise<TopologyStatus> {
  return JSON.parse(await topo(['status', file, '--json'])) as TopologyStatus;
}

export async function groupLagEntries(cluster: Cluster, site: string, group: string): Promise<number> {
  return (await cluster.node(site).api.getGroup(group)).lag.entries;
}

/** The volume reads the same (sha256 through NBD) at every site named. */
export async function sameEverywhere(cluster: Cluster, volume: string, sites: string[], dir: string): Promise<void> {
  const hashes = await Promise.all(sites.map((s) => sha256Export(cluster.node(s).nbdUri(volume), dir)));
  assert.equal(new Set(hashes).size, 1, `${volume} is identical on ${sites.join(', ')}`);
}

/**
 * Tokyo returns; failback (killed once after `interruptAt` appears, then run again, when given)
 * ends in the original layout, every copy duplex, all three sites equal.
 */
export async function failbackToTokyo(cluster: Cluster, file: string, group: string, volumes: string[], dir: string, interruptAt?: string): Promise<string> {
  await cluster.restart('tokyo');
  if (interruptAt !== undefined) await interruptedTopo(['failback', file, '--to', 'tokyo', '--wait'], interruptAt);
  const out = await topo(['failback', file, '--to', 'tokyo', '--wait']);
  const final = await topologyStatus(file);
  assert.equal(final.activeSite, 'tokyo');
  assert.ok(final.healthy, `all legs duplex: ${JSON.stringify(final.legs.map((l) => `${l.pair} ${l.code}`))}`);
  await waitFor('the async site applied everything', async () => (await groupLagEntries(cluster, 'tokyo', group)) === 0);
  for (const v of volumes) await sameEverywhere(cluster, v, ['tokyo', 'osaka', 'sapporo'], dir);
  return out;
}
