// `npm run bench -- topology`: three nodes (tokyo primary, osaka sync, sapporo async) on this
// machine with a multi-target topology of 4 GiB. Measures host write IOPS of a topology volume
// against an unpaired volume on the same node, async lag under that load, and a site failure under
// a steady write load: the time from `topology failover` to osaka accepting writes, and the bytes
// the delta resync sent to sapporo against the async backlog at the moment of failure. The failure
// is repeated with a 32 GiB topology to show the failover time does not grow with volume size.
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClient } from '../src/nbd/client';
import type { GroupStatus } from '../src/contracts/pairs';
import type { TopologyStatus } from '../src/topology/orchestrator';
import { Cluster } from '../test/support/cluster';
import { cli, cliPath } from '../test/support/node-process';
import { tempDir } from '../test/support/tools';
import { type FioJob, type FioResult, type Watched, cpuSnapshot, fio, fmtCpu, loadSummary, machineSummary, median, nodeWrites, prefill, table, toolVersion, writeDocsSection } from './lib';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const sites = ['tokyo', 'osaka', 'sapporo'];

interface FailoverResult {
  topologyBytes: number;
  backlogBytes: number;
  backlogEntries: number;
  acceptsWritesMs: number;
  commandMs: number;
  duplexMs: number;
  deltaBytes: number;
  deltaMethods: string[];
}

async function topo(args: string[]): Promise<string> {
  const r = await cli(['topology', ...args]);
  if (r.code !== 0) throw new Error(`tricopy topology ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

async function groupLag(cluster: Cluster, site: string): Promise<GroupStatus['lag']> {
  return (await cluster.node(site).api.getGroup('erp')).lag;
}

/** Starts fio writing at a steady rate until it is killed (or the node dies under it). */
function steadyLoad(uri: string, cwd: string, rateIops: number): { stop: () => void; done: Promise<void> } {
  // --thread: the job runs inside this process, so SIGKILL stops it (a forked job process would
  // outlive its parent and spin against the dead server).
  const child = spawn('fio', ['--name=steady', '--thread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=8', '--size=1g',
    `--rate_iops=${rateIops}`, '--time_based', '--runtime=600', '--randrepeat=0', '--norandommap', '--output-format=json'], { cwd, stdio: 'ignore' });
  const done = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { stop: () => child.kill('SIGKILL'), done };
}

/** Runs `topology failover --to osaka` and times when a host write at osaka first succeeds. */
async function timedFailover(cluster: Cluster, file: string): Promise<{ acceptsWritesMs: number; commandMs: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, [cliPath, 'topology', 'failover', file, '--to', 'osaka'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(performance.now() - started + (code === 0 ? 0 : Number.NaN))));
  let acceptsWritesMs = Number.NaN;
  const probe = Buffer.alloc(4096, 0x5a);
  for (;;) {
    const client = await NbdClient.connect({ host: '127.0.0.1', port: cluster.node('osaka').ports.nbdPort, exportName: 'db1' }).catch(() => undefined);
    const ok = client ? await client.write(3 * GiB - 4096, probe).then(() => true, () => false) : false;
    await client?.disconnect().catch(() => undefined);
    if (ok) {
      acceptsWritesMs = performance.now() - started;
      break;
    }
    if (performance.now() - started > 120_000) throw new Error(`osaka never accepted writes; failover output:\n${output}`);
    await new Promise((r) => setTimeout(r, 10));
  }
  const commandMs = await exited;
  if (Number.isNaN(commandMs)) throw new Error(`topology failover failed:\n${output}`);
  return { acceptsWritesMs, commandMs };
}

async function failoverRun(dir: string, name: string, volumes: Record<string, string>, topologyBytes: number): Promise<FailoverResult> {
  const cluster = await Cluster.create(path.join(dir, name), sites, ['--peer-timeout', '2s', '--log-level', 'warn']);
  try {
    const file = await cluster.topologyFile({ name: 'erp', volumes, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    await topo(['apply', file, '--wait']);
    await prefill(cluster.node('tokyo').nbdUri('db1'), '256m', dir);
    const load = steadyLoad(cluster.node('tokyo').nbdUri('db1'), dir, 2000);
    // Steady state first, then the async site falls behind for a moment (a slow WAN), then the
    // primary site is lost with that backlog outstanding.
    await new Promise((r) => setTimeout(r, 3000));
    cluster.freeze('sapporo');
    await new Promise((r) => setTimeout(r, 2000));
    const lag = await groupLag(cluster, 'tokyo');
    await cluster.kill('tokyo');
    load.stop();
    await load.done;
    cluster.thaw('sapporo');
    const { acceptsWritesMs, commandMs } = await timedFailover(cluster, file);
    const startedDuplex = performance.now();
    for (;;) {
      // The taken-over sync pairs stay SSWS (tokyo is gone): only the new async legs must be duplex.
      const s = JSON.parse(await topo(['status', file, '--json'])) as TopologyStatus;
      const asyncLegs = s.legs.filter((l) => l.from === 'osaka' && l.to === 'sapporo');
      if (s.activeSite === 'osaka' && asyncLegs.length === Object.keys(volumes).length && asyncLegs.every((l) => l.code === 'PAIR')) break;
      if (performance.now() - startedDuplex > 600_000) throw new Error(`the async legs never became duplex: ${JSON.stringify(s.legs)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
    const duplexMs = commandMs + performance.now() - startedDuplex;
    let deltaBytes = 0;
    const deltaMethods: string[] = [];
    for (const v of Object.keys(volumes)) {
      const leg = await cluster.node('osaka').api.getPair(`erp.${v}.osaka.sapporo`);
      deltaBytes += leg.deltaBytes ?? 0;
      deltaMethods.push(`${v}: ${leg.deltaMethod ?? 'none'}`);
    }
    return { topologyBytes, backlogBytes: lag.bytes, backlogEntries: lag.entries, acceptsWritesMs, commandMs, duplexMs, deltaBytes, deltaMethods };
  } finally {
    await cluster.stopAll();
  }
}

export async function benchTopology(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const runtimeSeconds = Number(process.env.BENCH_SECONDS ?? 5);
  const dir = await tempDir('bench-topo');
  try {
    // 1. Host write IOPS and async lag with the topology applied.
    const job: FioJob = { name: 'rand-write-4k-qd32', rw: 'randwrite', bs: '4k', iodepth: 32, size: '256m', runtimeSeconds };
    const cluster = await Cluster.create(path.join(dir, 'iops'), sites, ['--log-level', 'warn', '--journal-size', '4GiB']);
    const results = new Map<string, FioResult[]>();
    /** volume → CPU µs per host write of each node, one entry per round. */
    const cpuPerWrite = new Map<string, Array<Map<string, number>>>();
    const lagSeconds: number[] = [];
    let loadBefore = '';
    try {
      const watch: Watched[] = sites.map((label) => ({ label, pid: cluster.node(label).child.pid! }));
      const file = await cluster.topologyFile({ name: 'erp', volumes: { db1: '3GiB', log1: '1GiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
      await cluster.volume('tokyo', 'unpaired', 3 * GiB);
      await topo(['apply', file, '--wait']);
      for (const v of ['unpaired', 'db1']) await prefill(cluster.node('tokyo').nbdUri(v), '256m', dir);
      await topo(['apply', file, '--wait']);
      loadBefore = loadSummary();
      for (let round = 1; round <= rounds; round++) {
        for (const v of ['unpaired', 'db1']) {
          let sampling = v === 'db1';
          const sampler = (async () => {
            while (sampling) {
              lagSeconds.push((await groupLag(cluster, 'tokyo')).seconds);
              await new Promise((r) => setTimeout(r, 200));
            }
          })();
          // CPU from before fio starts until sapporo has applied everything, over the host writes tokyo served.
          const writesBefore = await nodeWrites(cluster.node('tokyo').apiUrl, v);
          const cpuBefore = await cpuSnapshot(watch);
          const r = await fio(cluster.node('tokyo').nbdUri(v), job, dir);
          sampling = false;
          await sampler;
          for (;;) {
            if ((await groupLag(cluster, 'tokyo')).entries === 0) break;
            await new Promise((res) => setTimeout(res, 50));
          }
          const cpuAfter = await cpuSnapshot(watch);
          const writes = (await nodeWrites(cluster.node('tokyo').apiUrl, v)) - writesBefore;
          const cpu = new Map(watch.map((w, i) => [w.label, ((cpuAfter[i]! - cpuBefore[i]!) / writes) * 1e6]));
          results.set(v, [...(results.get(v) ?? []), r]);
          cpuPerWrite.set(v, [...(cpuPerWrite.get(v) ?? []), cpu]);
          process.stderr.write(`round ${round} ${v}: ${r.iops.toFixed(0)} IOPS, p50 ${r.latP50Us.toFixed(0)} µs, p99 ${r.latP99Us.toFixed(0)} µs, CPU µs/write ` +
            `${sites.map((site) => `${site} ${fmtCpu(cpu.get(site))}`).join(', ')}, load ${loadSummary()}\n`);
        }
      }
    } finally {
      await cluster.stopAll();
    }
    const med = (v: string, pick: (r: FioResult) => number): number => median(results.get(v)!.map(pick));
    const baseIops = med('unpaired', (r) => r.iops);
    const rows = ['unpaired', 'db1'].map((v) => [v === 'db1' ? 'topology volume (sync osaka + async sapporo)' : 'unpaired volume', med(v, (r) => r.iops).toFixed(0),
      med(v, (r) => r.latP50Us).toFixed(0), med(v, (r) => r.latP99Us).toFixed(0), (med(v, (r) => r.iops) / baseIops).toFixed(2)]);
    const cpuMed = (v: string, site: string): number => median(cpuPerWrite.get(v)!.map((m) => m.get(site)!));
    const baseCpu = cpuMed('unpaired', 'tokyo');
    const cpuRows = ['unpaired', 'db1'].map((v) => [v === 'db1' ? 'topology volume' : 'unpaired volume',
      ...sites.map((site) => `${fmtCpu(cpuMed(v, site))} (${(cpuMed(v, site) / baseCpu).toFixed(2)})`),
      (sites.reduce((n, site) => n + cpuMed(v, site), 0) / baseCpu).toFixed(2)]);
    const sortedLag = [...lagSeconds].sort((a, b) => a - b);
    const p99Lag = sortedLag.length > 0 ? sortedLag[Math.min(sortedLag.length - 1, Math.floor(sortedLag.length * 0.99))]! : 0;

    // 2. Site failure under load, at two topology sizes.
    const failovers: FailoverResult[] = [];
    failovers.push(await failoverRun(dir, 'fail-4g', { db1: '3GiB', log1: '1GiB' }, 4 * GiB));
    failovers.push(await failoverRun(dir, 'fail-32g', { db1: '28GiB', log1: '4GiB' }, 32 * GiB));
    for (const f of failovers) process.stderr.write(`failover ${f.topologyBytes / GiB} GiB: ${JSON.stringify(f)}\n`);
    const failRows = failovers.map((f) => [`${f.topologyBytes / GiB} GiB`, `${(f.backlogBytes / MiB).toFixed(1)} MiB (${f.backlogEntries} entries)`,
      `${(f.acceptsWritesMs / 1000).toFixed(2)} s`, `${(f.commandMs / 1000).toFixed(2)} s`, `${(f.duplexMs / 1000).toFixed(2)} s`,
      `${(f.deltaBytes / MiB).toFixed(1)} MiB`, f.backlogBytes > 0 ? (f.deltaBytes / f.backlogBytes).toFixed(2) : 'n/a', f.deltaMethods.join(', ')]);

    const markdown = [
      `Command: \`npm run bench -- topology\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${runtimeSeconds}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}. Three nodes (tokyo, osaka, sapporo) and fio share the machine's cores on loopback.`,
      '',
      `Host writes to a volume of a multi-target topology (sync to osaka with fence data, async to sapporo in one consistency group), against an unpaired volume on the same node; medians of ${rounds} interleaved runs of ${runtimeSeconds} s:`,
      '',
      table(['volume', 'IOPS', 'p50 µs', 'p99 µs', 'IOPS ratio'], rows),
      '',
      'CPU µs per host write of each node (user + system, /proc/PID/stat) from before fio started until sapporo had applied everything, over the host writes tokyo served; ' +
        `in brackets the ratio to tokyo's CPU per write for the unpaired volume. Load average (1/5/15 min) before the rounds: ${loadBefore}; after: ${loadSummary()}.`,
      '',
      table(['volume', 'tokyo (primary)', 'osaka (sync secondary)', 'sapporo (async secondary)', 'all three ÷ unpaired'], cpuRows),
      '',
      `Async lag at sapporo while fio ran (sampled every 200 ms, ${lagSeconds.length} samples): p99 ${p99Lag.toFixed(2)} s, max ${(sortedLag.at(-1) ?? 0).toFixed(2)} s.`,
      '',
      'Site failure: fio writes 2,000 IOPS of 4 KiB to tokyo; sapporo stalls for 2 s (SIGSTOP) so a backlog builds; tokyo is killed (SIGKILL); sapporo resumes; ' +
        '`tricopy topology failover erp.yaml --to osaka` runs. "Accepts writes" is from starting the command to the first successful NBD write at osaka; ' +
        '"duplex" until osaka → sapporo is duplex again. The delta ratio is the bytes the delta resync sent to sapporo over the async backlog at tokyo just before it died.',
      '',
      table(['topology', 'async backlog at failure', 'accepts writes', 'command', 'duplex', 'delta sent', 'delta / backlog', 'how the delta was found'], failRows),
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('topology', markdown);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
