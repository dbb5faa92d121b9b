// `npm run bench -- nbd`: fio's nbd engine against a tricopy node, nbdkit's file plugin and qemu-nbd,
// each serving a sparse file on the same disk, interleaved round by round; medians and ratios.
// BENCH_WORKLOADS and BENCH_SERVERS (comma-separated names) run only some of them; BENCH_BASELINE
// names another built checkout whose node runs as one more server, "baseline", for before/after
// comparisons within one run (its figures are printed, never written to the docs).
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NodeProcess } from '../test/support/node-process';
import { tempDir } from '../test/support/tools';
import { type FioJob, type FioResult, type Server, fio, fmtCpu, freePort, loadSummary, machineSummary, median, prefill, sparseFile, spawnServer, table, toolVersion, writeDocsSection } from './lib';

const volumeBytes = 2 * 1024 ** 3;

export async function benchNbd(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const runtimeSeconds = Number(process.env.BENCH_SECONDS ?? 5);
  const allJobs: FioJob[] = [
    { name: 'seq-write-1m-qd8', rw: 'write', bs: '1m', iodepth: 8, size: '1g', runtimeSeconds },
    { name: 'rand-write-4k-qd32', rw: 'randwrite', bs: '4k', iodepth: 32, size: '1g', runtimeSeconds },
    { name: 'rand-read-4k-qd32', rw: 'randread', bs: '4k', iodepth: 32, size: '512m', runtimeSeconds },
    { name: 'rand-write-4k-qd1', rw: 'randwrite', bs: '4k', iodepth: 1, size: '1g', runtimeSeconds },
  ];
  const jobs = pick(allJobs, process.env.BENCH_WORKLOADS, 'BENCH_WORKLOADS');
  const serverNames = pick(['tricopy', 'nbdkit', 'qemu-nbd'].map((name) => ({ name })), process.env.BENCH_SERVERS, 'BENCH_SERVERS')
    .map((s) => s.name);
  const dir = await tempDir('bench-nbd');
  const servers: Server[] = [];
  const tricopyNode = await NodeProcess.start({ name: 'bench', dataDir: path.join(dir, 'tricopy'), args: ['--log-level', 'warn'] });
  const baseline = process.env.BENCH_BASELINE;
  const baselineNode = baseline
    ? await NodeProcess.start({ name: 'baseline', dataDir: path.join(dir, 'baseline'), args: ['--log-level', 'warn'], cli: path.join(baseline, 'bin', 'tricopy') })
    : undefined;
  try {
    await tricopyNode.api.createVolume({ name: 'bench', size: volumeBytes, thin: true });
    if (baselineNode) {
      await baselineNode.api.createVolume({ name: 'bench', size: volumeBytes, thin: true });
      servers.push({ name: 'baseline', uri: baselineNode.nbdUri('bench'), pid: baselineNode.child.pid, stop: async () => void (await baselineNode.stop()) });
    }
    if (serverNames.includes('tricopy')) servers.push({ name: 'tricopy', uri: tricopyNode.nbdUri('bench'), pid: tricopyNode.child.pid, stop: async () => void (await tricopyNode.stop()) });
    if (serverNames.includes('nbdkit')) {
      const nbdkitFile = path.join(dir, 'nbdkit.img');
      await sparseFile(nbdkitFile, volumeBytes);
      const nbdkitPort = await freePort();
      servers.push(await spawnServer('nbdkit', 'nbdkit', ['--foreground', '--ipaddr', '127.0.0.1', '--port', String(nbdkitPort),
        '--exportname', 'bench', 'file', `file=${nbdkitFile}`], nbdkitPort, `nbd://127.0.0.1:${nbdkitPort}/bench`));
    }
    if (serverNames.includes('qemu-nbd')) {
      const qemuFile = path.join(dir, 'qemu.img');
      await sparseFile(qemuFile, volumeBytes);
      const qemuPort = await freePort();
      servers.push(await spawnServer('qemu-nbd', 'qemu-nbd', ['--persistent', '--shared=16', '--format=raw', '--bind=127.0.0.1',
        `--port=${qemuPort}`, '--export-name=bench', '--cache=writeback', '--aio=threads', qemuFile], qemuPort,
        `nbd://127.0.0.1:${qemuPort}/bench`));
    }

    for (const s of servers) await prefill(s.uri, '512m', dir);
    const loadBefore = loadSummary();
    const results = new Map<string, FioResult[]>();
    for (let round = 1; round <= rounds; round++) {
      for (const job of jobs) {
        for (const s of servers) {
          const r = await fio(s.uri, job, dir, s.pid ? [{ label: s.name, pid: s.pid }] : []);
          const key = `${job.name}|${s.name}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          process.stderr.write(`round ${round} ${job.name} ${s.name}: ${r.iops.toFixed(0)} IOPS, ${r.mibPerSecond.toFixed(1)} MiB/s, p99 ${r.latP99Us.toFixed(0)} µs, CPU ${fmtCpu(r.cpuUsPerIo.get(s.name))} µs/IO, load ${loadSummary()}\n`);
        }
      }
    }
    const med = (job: string, server: string, value: (r: FioResult) => number): number =>
      median((results.get(`${job}|${server}`) ?? []).map(value));
    const rows = jobs.map((job) => {
      const main = job.iodepth === 1 ? (r: FioResult) => r.latMeanUs : job.bs === '1m' ? (r: FioResult) => r.mibPerSecond : (r: FioResult) => r.iops;
      const unit = job.iodepth === 1 ? 'µs mean latency' : job.bs === '1m' ? 'MiB/s' : 'IOPS';
      const t = med(job.name, 'tricopy', main);
      const k = med(job.name, 'nbdkit', main);
      const q = med(job.name, 'qemu-nbd', main);
      // For latency, lower is better: the ratio is inverted so that > 1 always means "tricopy faster".
      const ratio = (a: number, b: number): string => (job.iodepth === 1 ? b / a : a / b).toFixed(2);
      const cpu = (server: string): number => med(job.name, server, (r) => r.cpuUsPerIo.get(server) ?? Number.NaN);
      return [job.name, unit, t.toFixed(job.bs === '1m' ? 1 : 0), k.toFixed(job.bs === '1m' ? 1 : 0), q.toFixed(job.bs === '1m' ? 1 : 0),
        ratio(t, k), ratio(t, q), `${med(job.name, 'tricopy', (r) => r.latP99Us).toFixed(0)} / ${med(job.name, 'nbdkit', (r) => r.latP99Us).toFixed(0)} / ${med(job.name, 'qemu-nbd', (r) => r.latP99Us).toFixed(0)}`,
        `${fmtCpu(cpu('tricopy'))} / ${fmtCpu(cpu('nbdkit'))} / ${fmtCpu(cpu('qemu-nbd'))}`,
        (cpu('tricopy') / cpu('nbdkit')).toFixed(2), (cpu('tricopy') / cpu('qemu-nbd')).toFixed(2)];
    });
    const markdown = [
      `Command: \`npm run bench -- nbd\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${runtimeSeconds}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}, ${await toolVersion('nbdkit', ['--version'])}, ${await toolVersion('qemu-nbd', ['--version'])}.`,
      'Each server exports a sparse 2 GiB file on the same disk (page cache, no O_DIRECT); fio uses its nbd engine (libnbd, one connection);',
      `rounds interleave the servers; values are medians of ${rounds} runs of ${runtimeSeconds} s. Ratio > 1 means tricopy is faster (for QD1 latency: lower).`,
      'CPU µs per I/O: user + system time of the server process (all threads, /proc/PID/stat) over fio\'s measured window, divided by the I/Os fio completed; CPU ratios > 1 mean tricopy spends more.',
      `Load average (1/5/15 min) before the rounds: ${loadBefore}; after: ${loadSummary()}.`,
      '',
      table(['workload', 'metric', 'tricopy', 'nbdkit file', 'qemu-nbd', 'ratio tricopy/nbdkit', 'ratio tricopy/qemu-nbd', 'p99 µs (t/k/q)',
        'CPU µs/IO (t/k/q)', 'CPU ratio t/k', 'CPU ratio t/q'], rows),
    ].join('\n');
    console.log(markdown);
    if (baselineNode) console.log(`\nAgainst the baseline (${baseline}):\n\n${baselineTable(jobs, med)}`);
    if (args.includes('--write-docs')) await writeDocsSection('nbd', markdown);
  } finally {
    for (const s of servers) await s.stop().catch(() => undefined);
    await tricopyNode.stop().catch(() => undefined);
    await baselineNode?.stop().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Picks the named entries (a comma-separated list) or, without a list, all of them. */
function pick<T extends { name: string }>(all: T[], list: string | undefined, variable: string): T[] {
  if (!list) return all;
  const names = list.split(',').map((n) => n.trim()).filter((n) => n !== '');
  const unknown = names.filter((n) => !all.some((entry) => entry.name === n));
  if (unknown.length > 0) throw new Error(`${variable}: unknown ${unknown.join(', ')}; known: ${all.map((e) => e.name).join(', ')}`);
  return all.filter((entry) => names.includes(entry.name));
}

/** tricopy against the baseline build: main figure, p99 and CPU per I/O, medians of the rounds. */
function baselineTable(jobs: FioJob[], med: (job: string, server: string, value: (r: FioResult) => number) => number): string {
  const rows = jobs.map((job) => {
    const main = job.iodepth === 1 ? (r: FioResult) => r.latMeanUs : job.bs === '1m' ? (r: FioResult) => r.mibPerSecond : (r: FioResult) => r.iops;
    const t = med(job.name, 'tricopy', main);
    const b = med(job.name, 'baseline', main);
    const cpu = (server: string): number => med(job.name, server, (r) => r.cpuUsPerIo.get(server) ?? Number.NaN);
    return [job.name, t.toFixed(1), b.toFixed(1), (job.iodepth === 1 ? b / t : t / b).toFixed(2),
      `${fmtCpu(cpu('tricopy'))} / ${fmtCpu(cpu('baseline'))}`, (cpu('tricopy') / cpu('baseline')).toFixed(2)];
  });
  return table(['workload', 'tricopy', 'baseline', 'ratio (> 1: tricopy faster)', 'CPU µs/IO (t/b)', 'CPU ratio t/b'], rows);
}
