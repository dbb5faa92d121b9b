// `npm run bench -- replication`: two nodes on this machine; fio against a volume with no pair,
// with a sync pair and with an async pair, interleaved round by round; ratios to the unpaired
// volume; async lag sampled under load; initial copy rate of a 2 GiB volume; resync of 1% of it.
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { Cluster } from '../test/support/cluster';
import { tempDir } from '../test/support/tools';
import { type FioJob, type FioResult, type Watched, cpuSnapshot, fio, fmtCpu, loadSummary, machineSummary, median, nodeWrites, prefill, table, toolVersion, writeDocsSection } from './lib';

const MiB = 1024 * 1024;

export async function benchReplication(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const runtimeSeconds = Number(process.env.BENCH_SECONDS ?? 5);
  const copyBytes = Number(process.env.BENCH_COPY_MIB ?? 2048) * MiB;
  const jobs: FioJob[] = [
    { name: 'rand-write-4k-qd32', rw: 'randwrite', bs: '4k', iodepth: 32, size: '256m', runtimeSeconds },
    { name: 'seq-write-1m-qd8', rw: 'write', bs: '1m', iodepth: 8, size: '256m', runtimeSeconds },
  ];
  const dir = await tempDir('bench-repl');
  const cluster = await Cluster.create(path.join(dir, 'c'), ['primary', 'secondary'], ['--log-level', 'warn', '--journal-size', '4GiB']);
  try {
    const targets = ['unpaired', 'sync', 'async'];
    for (const v of targets) {
      await cluster.volume('primary', v, 1024 * MiB);
      await prefill(cluster.node('primary').nbdUri(v), '256m', dir);
    }
    await cluster.pair({ name: 'sync', primary: 'primary', secondary: 'secondary', volume: 'sync', mode: 'sync', fence: 'data' });
    await cluster.pair({ name: 'async', primary: 'primary', secondary: 'secondary', volume: 'async', mode: 'async', group: 'bench' });
    await cluster.waitState('primary', 'sync', 'duplex', 300_000);
    await cluster.waitState('primary', 'async', 'duplex', 300_000);

    const results = new Map<string, FioResult[]>();
    /** job|target → CPU µs per host write of each node, one entry per round. */
    const cpuPerWrite = new Map<string, Array<Map<string, number>>>();
    const watch: Watched[] = ['primary', 'secondary'].map((label) => ({ label, pid: cluster.node(label).child.pid! }));
    const loadBefore = loadSummary();
    const lagSamples: Array<{ seconds: number; bytes: number }> = [];
    const drainTimes: number[] = [];
    for (let round = 1; round <= rounds; round++) {
      for (const job of jobs) {
        for (const t of targets) {
          let sampling = t === 'async';
          const sampler = (async () => {
            while (sampling) {
              const g = await cluster.node('primary').api.getGroup('bench');
              lagSamples.push({ seconds: g.lag.seconds, bytes: g.lag.bytes });
              await new Promise((r) => setTimeout(r, 200));
            }
          })();
          // CPU from before fio starts until the async backlog has drained (the secondary's share of
          // the work comes late), over every host write the primary served meanwhile (its counter).
          const writesBefore = await nodeWrites(cluster.node('primary').apiUrl, t);
          const cpuBefore = await cpuSnapshot(watch);
          const r = await fio(cluster.node('primary').nbdUri(t), job, dir);
          sampling = false;
          await sampler;
          if (t === 'async') {
            const started = Date.now();
            for (;;) {
              const g = await cluster.node('primary').api.getGroup('bench');
              if (g.lag.entries === 0) break;
              await new Promise((res) => setTimeout(res, 50));
            }
            drainTimes.push((Date.now() - started) / 1000);
          }
          const cpuAfter = await cpuSnapshot(watch);
          const writes = (await nodeWrites(cluster.node('primary').apiUrl, t)) - writesBefore;
          const cpu = new Map(watch.map((w, i) => [w.label, ((cpuAfter[i]! - cpuBefore[i]!) / writes) * 1e6]));
          const key = `${job.name}|${t}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          cpuPerWrite.set(key, [...(cpuPerWrite.get(key) ?? []), cpu]);
          process.stderr.write(`round ${round} ${job.name} ${t}: ${r.iops.toFixed(0)} IOPS, ${r.mibPerSecond.toFixed(1)} MiB/s, p50 ${r.latP50Us.toFixed(0)} µs, p99 ${r.latP99Us.toFixed(0)} µs, ` +
            `CPU µs/write primary ${fmtCpu(cpu.get('primary'))} secondary ${fmtCpu(cpu.get('secondary'))}, load ${loadSummary()}\n`);
        }
      }
    }

    // Initial copy of a fully written volume, then resync after 1% of it changed.
    await cluster.volume('primary', 'big', copyBytes);
    const writer = await cluster.client('primary', 'big');
    for (let off = 0; off < copyBytes; off += 8 * MiB) await writer.write(off, randomBytes(8 * MiB));
    const copyStarted = Date.now();
    await cluster.pair({ name: 'big', primary: 'primary', secondary: 'secondary', volume: 'big', mode: 'sync', fence: 'never' });
    await cluster.waitState('primary', 'big', 'duplex', 600_000);
    const copySeconds = (Date.now() - copyStarted) / 1000;
    await cluster.node('primary').api.split('big');
    const chunk = 64 * 1024;
    const chunks = copyBytes / chunk;
    const changed = Math.round(chunks / 100);
    for (let i = 0; i < changed; i++) await writer.write(((i * 7919) % chunks) * chunk, randomBytes(chunk));
    const before = await cluster.node('primary').api.getPair('big');
    const resyncStarted = Date.now();
    await cluster.node('primary').api.resync('big');
    await cluster.waitState('primary', 'big', 'duplex', 600_000);
    const resyncSeconds = (Date.now() - resyncStarted) / 1000;
    await writer.disconnect();

    const med = (job: string, t: string, pick: (r: FioResult) => number): number => median(results.get(`${job}|${t}`)!.map(pick));
    const cpuMed = (job: string, t: string, label: string): number => median(cpuPerWrite.get(`${job}|${t}`)!.map((m) => m.get(label)!));
    const rows: string[][] = [];
    const cpuRows: string[][] = [];
    for (const job of jobs) {
      const base = med(job.name, 'unpaired', (r) => r.iops);
      const baseP99 = med(job.name, 'unpaired', (r) => r.latP99Us);
      const baseCpu = cpuMed(job.name, 'unpaired', 'primary');
      for (const t of targets) {
        const iops = med(job.name, t, (r) => r.iops);
        rows.push([job.name, t, iops.toFixed(0), med(job.name, t, (r) => r.mibPerSecond).toFixed(1), med(job.name, t, (r) => r.latP50Us).toFixed(0),
          med(job.name, t, (r) => r.latP99Us).toFixed(0), (iops / base).toFixed(2), (med(job.name, t, (r) => r.latP99Us) / baseP99).toFixed(2)]);
        const p = cpuMed(job.name, t, 'primary');
        const sec = cpuMed(job.name, t, 'secondary');
        cpuRows.push([job.name, t, fmtCpu(p), fmtCpu(sec), (p / baseCpu).toFixed(2), t === 'unpaired' ? '(idle)' : (sec / baseCpu).toFixed(2),
          ((p + sec) / baseCpu).toFixed(2)]);
      }
    }
    const maxLag = lagSamples.reduce((m, s) => ({ seconds: Math.max(m.seconds, s.seconds), bytes: Math.max(m.bytes, s.bytes) }), { seconds: 0, bytes: 0 });
    const p99Lag = lagSamples.length > 0 ? [...lagSamples].sort((a, b) => a.seconds - b.seconds)[Math.floor(lagSamples.length * 0.99)]!.seconds : 0;
    const markdown = [
      `Command: \`npm run bench -- replication\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${runtimeSeconds}, BENCH_COPY_MIB=${copyBytes / MiB}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}. Both nodes and fio share the machine's cores; volumes live in the page cache of one disk.`,
      `Values are medians of ${rounds} interleaved runs of ${runtimeSeconds} s; ratios are to the unpaired volume on the same node in the same run.`,
      '',
      table(['workload', 'volume', 'IOPS', 'MiB/s', 'p50 µs', 'p99 µs', 'IOPS ratio', 'p99 ratio'], rows),
      '',
      'CPU µs per host write of each node process (user + system, /proc/PID/stat), from before fio started until the async backlog had drained, ' +
        'over the host writes the primary served meanwhile; ratios are to the unpaired volume\'s node in the same run (goals: primary ≤ 1.3, secondary ≤ 1.0). ' +
        `Load average (1/5/15 min) before the rounds: ${loadBefore}; after: ${loadSummary()}.`,
      '',
      table(['workload', 'volume', 'primary µs/write', 'secondary µs/write', 'primary ÷ unpaired', 'secondary ÷ unpaired', 'both ÷ unpaired'], cpuRows),
      '',
      `Async lag while fio ran against the async volume (sampled every 200 ms, ${lagSamples.length} samples): max ${maxLag.seconds.toFixed(2)} s / ${(maxLag.bytes / MiB).toFixed(1)} MiB, p99 ${p99Lag.toFixed(2)} s; after each run the backlog drained in ${Math.max(...drainTimes).toFixed(2)} s at most.`,
      '',
      `Initial copy of a fully written ${copyBytes / MiB} MiB volume (sync pair): ${copySeconds.toFixed(1)} s = ${(copyBytes / MiB / copySeconds).toFixed(0)} MiB/s.`,
      `Resync after changing 1% (${changed} regions of 64 KiB, ${(before.differentialBytes / MiB).toFixed(1)} MiB recorded): ${resyncSeconds.toFixed(2)} s = ${((resyncSeconds / copySeconds) * 100).toFixed(1)}% of the full copy time.`,
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('replication', markdown);
  } finally {
    await cluster.stopAll();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
