// `npm run bench -- edge`: a remote copy network on this machine (spec 002). Host 4 KiB write
// latency (fio, one write in flight) of (a) a sync pair straight to a node over a link with 20 ms
// delay each way, (b) a sync pair through a near edge that forwards over the same kind of link, and
// (c) an unpaired volume, interleaved round by round; then how long the target needs to be up to
// date after the load stops, and the throughput of a burst over a 100 Mbit/s far link.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Rcn } from '../test/support/rcn';
import { tempDir } from '../test/support/tools';
import { type FioJob, type FioResult, fio, loadSummary, machineSummary, median, prefill, table, toolVersion, writeDocsSection } from './lib';

const MiB = 1024 * 1024;

export async function benchEdge(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const runtimeSeconds = Number(process.env.BENCH_SECONDS ?? 5);
  const delayMs = Number(process.env.BENCH_DELAY_MS ?? 20);
  const job: FioJob = { name: 'rand-write-4k-qd1', rw: 'randwrite', bs: '4k', iodepth: 1, size: '64m', runtimeSeconds };
  const dir = await tempDir('bench-edge');
  const rcn = await Rcn.create(path.join(dir, 'n'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']], proxied: [['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', logSize: '4GiB' } },
  });
  try {
    await rcn.cluster.start('osaka'); // paired directly, over a delayed link
    await rcn.apply();
    for (const v of ['unpaired', 'direct', 'edge']) {
      await rcn.cluster.volume('tokyo', v, 256 * MiB);
      await prefill(rcn.cluster.node('tokyo').nbdUri(v), '64m', dir);
    }
    const direct = await rcn.cluster.pair({ name: 'direct', primary: 'tokyo', secondary: 'osaka', volume: 'direct', mode: 'sync', viaProxy: true });
    await rcn.pairVia({ name: 'edge', primary: 'tokyo', secondary: 'sapporo', volume: 'edge', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'direct', 'duplex', 300_000);
    await rcn.cluster.waitState('tokyo', 'edge', 'duplex', 300_000);
    await rcn.drained('erp', 300_000);
    for (const p of direct.proxies) p.setDelay(delayMs);
    rcn.proxy('c-1', 'e-sapporo').setDelay(delayMs);

    const targets: Array<[string, string]> = [['unpaired', '(c) unpaired volume'], ['direct', `(a) sync pair, ${delayMs} ms link`], ['edge', `(b) sync pair through the edge, ${delayMs} ms far link`]];
    const results = new Map<string, FioResult[]>();
    const drains: number[] = [];
    const loadBefore = loadSummary();
    for (let round = 1; round <= rounds; round++) {
      for (const [t] of targets) {
        const r = await fio(rcn.cluster.node('tokyo').nbdUri(t), job, dir);
        results.set(t, [...(results.get(t) ?? []), r]);
        let drainNote = '';
        if (t === 'edge') {
          const started = Date.now();
          await rcn.drained('erp', 600_000);
          drains.push((Date.now() - started) / 1000);
          drainNote = `, target up to date ${drains.at(-1)!.toFixed(2)} s after the load stopped`;
        }
        process.stderr.write(`round ${round} ${t}: ${r.iops.toFixed(0)} IOPS, p50 ${r.latP50Us.toFixed(0)} µs, p99 ${r.latP99Us.toFixed(0)} µs${drainNote}, load ${loadSummary()}\n`);
      }
    }
    // A burst of 64 MiB through a 100 Mbit/s far link (no compression: see network.md).
    const proxy = rcn.proxy('c-1', 'e-sapporo');
    proxy.setDelay(delayMs);
    proxy.setBandwidth(12.5 * MiB);
    const client = await rcn.cluster.client('tokyo', 'edge');
    const burstBytes = 64 * MiB;
    const burstStarted = Date.now();
    for (let off = 0; off < burstBytes; off += MiB) await client.write(off, randomBytes(MiB));
    const acked = (Date.now() - burstStarted) / 1000;
    await rcn.drained('erp', 600_000);
    const delivered = (Date.now() - burstStarted) / 1000;
    await client.disconnect();

    const med = (t: string, pick: (r: FioResult) => number): number => median(results.get(t)!.map(pick));
    const base = med('unpaired', (r) => r.latP50Us);
    const rows = targets.map(([t, label]) => [label, med(t, (r) => r.iops).toFixed(0), med(t, (r) => r.latP50Us).toFixed(0), med(t, (r) => r.latP99Us).toFixed(0),
      (med(t, (r) => r.latP50Us) / base).toFixed(2)]);
    const markdown = [
      `Command: \`npm run bench -- edge\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${runtimeSeconds}, BENCH_DELAY_MS=${delayMs}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}. Three storage nodes, three relays, the fault proxies and fio share the machine's cores. ` +
        `Load average (1/5/15 min) before the rounds: ${loadBefore}; after: ${loadSummary()}.`,
      `fio writes 4 KiB at random, one write in flight, for ${runtimeSeconds} s per run; values are medians of ${rounds} interleaved runs. The delayed links delay each direction by ${delayMs} ms.`,
      '',
      table(['volume', 'IOPS', 'p50 µs', 'p99 µs', 'p50 ÷ unpaired'], rows),
      '',
      `After each run against (b) the target was up to date (every entry acknowledged by the target edge) within ${Math.max(...drains).toFixed(2)} s (median ${median(drains).toFixed(2)} s).`,
      `A burst of ${burstBytes / MiB} MiB in 1 MiB writes through (b) with the far link limited to 100 Mbit/s: the host had its answers after ${acked.toFixed(1)} s ` +
        `(${(burstBytes / MiB / acked).toFixed(0)} MiB/s), the target had everything after ${delivered.toFixed(1)} s (${(burstBytes / MiB / delivered).toFixed(1)} MiB/s over the link). ` +
        'Compression is not implemented yet (network.md), so compressible data goes at the same rate.',
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('edge', markdown);
  } finally {
    await rcn.stopAll();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
