// `npm run bench -- edge`: a remote copy network on this machine (spec 002). Host 4 KiB write
// latency (fio, one write in flight) of (a) a sync pair straight to a node over a link with 20 ms
// delay each way, (b) a sync pair through a near edge that forwards over the same kind of link, and
// (c) an unpaired volume, and (d) a sync pair straight to a node on this machine with no delay (what
// a sync copy costs here at all), interleaved round by round, with the CPU each process spends per
// host write; then how long the target needs to be up to
// date after the load stops, and the throughput of a burst over a 100 Mbit/s far link: random data,
// then compressible data (rows of a table) without and with zstd on that link.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Rcn } from '../test/support/rcn';
import { tempDir } from '../test/support/tools';
import { type FioJob, type FioResult, type Watched, fio, fmtCpu, loadSummary, machineSummary, median, prefill, table, toolVersion, writeDocsSection } from './lib';

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
    await rcn.cluster.start('kyoto'); // paired directly, next door
    await rcn.apply();
    for (const v of ['unpaired', 'direct', 'edge', 'near']) {
      await rcn.cluster.volume('tokyo', v, 256 * MiB);
      await prefill(rcn.cluster.node('tokyo').nbdUri(v), '64m', dir);
    }
    const direct = await rcn.cluster.pair({ name: 'direct', primary: 'tokyo', secondary: 'osaka', volume: 'direct', mode: 'sync', viaProxy: true });
    await rcn.pairVia({ name: 'edge', primary: 'tokyo', secondary: 'sapporo', volume: 'edge', order: 'erp' });
    await rcn.cluster.pair({ name: 'near', primary: 'tokyo', secondary: 'kyoto', volume: 'near', mode: 'sync' });
    await rcn.cluster.waitState('tokyo', 'direct', 'duplex', 300_000);
    await rcn.cluster.waitState('tokyo', 'near', 'duplex', 300_000);
    await rcn.cluster.waitState('tokyo', 'edge', 'duplex', 300_000);
    await rcn.drained('erp', 300_000);
    for (const p of direct.proxies) p.setDelay(delayMs);
    rcn.proxy('c-1', 'e-sapporo').setDelay(delayMs);

    const targets: Array<[string, string]> = [['unpaired', '(c) unpaired volume'], ['direct', `(a) sync pair, ${delayMs} ms link`], ['edge', `(b) sync pair through the edge, ${delayMs} ms far link`],
      ['near', '(d) sync pair to a node next door, no delay']];
    // CPU per host write: the primary, its secondary or source edge (the near end of the copy), and every process of the run.
    const pid = (child: { pid?: number }): number => child.pid!;
    const nodes = ['tokyo', 'osaka', 'sapporo', 'kyoto'].map((n) => ({ label: n, pid: pid(rcn.cluster.node(n).child) }));
    const relays = ['e-tokyo', 'c-1', 'e-sapporo'].map((n) => ({ label: n, pid: pid(rcn.relay(n).child) }));
    const watch: Watched[] = [...nodes, ...relays];
    const nearEnd: Record<string, string | undefined> = { unpaired: undefined, direct: 'osaka', edge: 'e-tokyo', near: 'kyoto' };
    const results = new Map<string, FioResult[]>();
    const drains: number[] = [];
    const loadBefore = loadSummary();
    for (let round = 1; round <= rounds; round++) {
      for (const [t] of targets) {
        const r = await fio(rcn.cluster.node('tokyo').nbdUri(t), job, dir, watch);
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
    // Bursts of 64 MiB through a 100 Mbit/s far link: random data, then rows of a table without and
    // with compression on that link (the network file applied again with `compress: 3`).
    const proxy = rcn.proxy('c-1', 'e-sapporo');
    proxy.setDelay(delayMs);
    proxy.setBandwidth(12.5 * MiB);
    const client = await rcn.cluster.client('tokyo', 'edge');
    const burstBytes = 64 * MiB;
    const burst = async (data: (off: number) => Buffer): Promise<{ acked: number; delivered: number; sentBytes: number }> => {
      const before = (await rcn.status('c-1')).counters.bytesSent;
      const started = Date.now();
      for (let off = 0; off < burstBytes; off += MiB) await client.write(off, data(off));
      const acked = (Date.now() - started) / 1000;
      await rcn.drained('erp', 600_000);
      return { acked, delivered: (Date.now() - started) / 1000, sentBytes: (await rcn.status('c-1')).counters.bytesSent - before };
    };
    const random = await burst(() => randomBytes(MiB));
    const plainRows = await burst(tableRows);
    rcn.options.linkExtra = { 'c-1>e-sapporo': { compress: 3 } };
    await rcn.writeFile();
    await rcn.apply();
    const zstdRows = await burst(tableRows);
    await client.disconnect();
    const rate = (b: { delivered: number }): string => `${(burstBytes / MiB / b.delivered).toFixed(1)} MiB/s`;

    const med = (t: string, pick: (r: FioResult) => number): number => median(results.get(t)!.map(pick));
    const base = med('unpaired', (r) => r.latP50Us);
    const cpu = (t: string, label: string | undefined): number => (label === undefined ? Number.NaN : med(t, (r) => r.cpuUsPerIo.get(label) ?? Number.NaN));
    const cpuAll = (t: string): number => med(t, (r) => watch.reduce((sum, w) => sum + (r.cpuUsPerIo.get(w.label) ?? 0), 0));
    const rows = targets.map(([t, label]) => [label, med(t, (r) => r.iops).toFixed(0), med(t, (r) => r.latP50Us).toFixed(0), med(t, (r) => r.latP99Us).toFixed(0),
      (med(t, (r) => r.latP50Us) / base).toFixed(2), fmtCpu(cpu(t, 'tokyo')), nearEnd[t] ? `${fmtCpu(cpu(t, nearEnd[t]))} (${nearEnd[t]})` : '-', fmtCpu(cpuAll(t))]);
    const markdown = [
      `Command: \`npm run bench -- edge\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${runtimeSeconds}, BENCH_DELAY_MS=${delayMs}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}. Four storage nodes, three relays, the fault proxies and fio share the machine's cores. ` +
        `Load average (1/5/15 min) before the rounds: ${loadBefore}; after: ${loadSummary()}.`,
      `fio writes 4 KiB at random, one write in flight, for ${runtimeSeconds} s per run; values are medians of ${rounds} interleaved runs. The delayed links delay each direction by ${delayMs} ms.`,
      '',
      table(['volume', 'IOPS', 'p50 µs', 'p99 µs', 'p50 ÷ unpaired', 'CPU µs/write primary', 'near end', 'all processes'], rows),
      '',
      `After each run against (b) the target was up to date (every entry acknowledged by the target edge) within ${Math.max(...drains).toFixed(2)} s (median ${median(drains).toFixed(2)} s).`,
      `Bursts of ${burstBytes / MiB} MiB in 1 MiB writes through (b) with the far link limited to 100 Mbit/s (12.5 MiB/s) by the fault proxy:`,
      '',
      table(['data', 'far link', 'host answered after s', 'target up to date after s', 'throughput to the target', 'bytes over the far link'], [
        ['random', 'plain', random.acked.toFixed(1), random.delivered.toFixed(1), rate(random), `${(random.sentBytes / MiB).toFixed(1)} MiB`],
        ['rows of a table', 'plain', plainRows.acked.toFixed(1), plainRows.delivered.toFixed(1), rate(plainRows), `${(plainRows.sentBytes / MiB).toFixed(1)} MiB`],
        ['rows of a table', 'zstd level 3', zstdRows.acked.toFixed(1), zstdRows.delivered.toFixed(1), rate(zstdRows), `${(zstdRows.sentBytes / MiB).toFixed(1)} MiB`],
      ]),
      '',
      `Compressible data with zstd on the far link: **${(plainRows.delivered / zstdRows.delivered).toFixed(2)} ×** the throughput without (goal ≥ 2 ×).`,
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('edge', markdown);
  } finally {
    await rcn.stopAll();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** 1 MiB of SQL rows, different at every offset: compressible the way database pages and logs are. */
function tableRows(off: number): Buffer {
  let text = '';
  for (let r = 0; text.length < MiB; r++) text += `INSERT INTO orders (id, customer, state, total) VALUES (${off + r}, 'customer-${(off + r) % 9973}', 'pending', ${(r * 7919) % 100000});\n`;
  return Buffer.from(text.slice(0, MiB));
}
