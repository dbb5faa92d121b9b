// `npm run bench -- scaling`: how one node uses the machine's cores. Against one tricopy node and
// nbdkit's file plugin (threaded), interleaved round by round: 4 KiB random writes with one fio job
// on one connection, then four jobs on four connections to one export, then 16 volumes (16 exports,
// one job each) written at once. Reported: total IOPS, and the server's CPU over the run divided by
// the wall time (cores used) and by the writes (µs per write).
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NodeProcess } from '../test/support/node-process';
import { parseFioJson, run, tempDir } from '../test/support/tools';
import { cpuSnapshot, freePort, loadSummary, machineSummary, median, sparseFile, spawnServer, table, toolVersion, writeDocsSection } from './lib';

const volumeBytes = 1024 ** 3;
const volumeCount = 16;

interface Scenario {
  name: string;
  /** fio arguments after the global ones: one `--name` section per job. */
  jobs: (uriOf: (i: number) => string) => string[];
  iodepth: number;
}

interface Outcome {
  iops: number;
  coresUsed: number;
  cpuUsPerWrite: number;
}

const scenarios: Scenario[] = [
  { name: '1 job, 1 connection, QD32', iodepth: 32, jobs: (uri) => ['--name=j0', `--uri=${uri(0)}`] },
  { name: '4 jobs, 4 connections to one export, QD32 each', iodepth: 32, jobs: (uri) => ['--name=j0', `--uri=${uri(0)}`, '--numjobs=4'] },
  { name: `${volumeCount} volumes written at once, QD8 each`, iodepth: 8,
    jobs: (uri) => Array.from({ length: volumeCount }, (_, i) => [`--name=v${i}`, `--uri=${uri(i)}`]).flat() },
];

interface Target {
  name: string;
  pid: number;
  uriOf: (i: number) => string;
}

async function measure(target: Target, s: Scenario, seconds: number, cwd: string): Promise<Outcome> {
  const args = ['--ioengine=nbd', '--rw=randwrite', '--bs=4k', `--iodepth=${s.iodepth}`, '--size=256m', `--runtime=${seconds}`, '--time_based',
    '--randrepeat=0', '--norandommap', '--output-format=json', ...s.jobs(target.uriOf)];
  const [before] = await cpuSnapshot([{ label: target.name, pid: target.pid }]);
  const started = performance.now();
  const result = await run('fio', args, { cwd, timeoutMs: (seconds + 60) * 1000 });
  const wall = (performance.now() - started) / 1000;
  const [after] = await cpuSnapshot([{ label: target.name, pid: target.pid }]);
  if (result.code !== 0) throw new Error(`fio ${s.name} against ${target.name} failed: ${result.stderr}${result.stdout.slice(-2000)}`);
  const jobs = parseFioJson<{ jobs: Array<{ write: { iops: number; total_ios: number } }> }>(result.stdout).jobs;
  const writes = jobs.reduce((n, j) => n + j.write.total_ios, 0);
  const cpu = after! - before!;
  // fio's start-up and connection set-up are inside the wall time: a slight underestimate of cores used.
  return { iops: jobs.reduce((n, j) => n + j.write.iops, 0), coresUsed: cpu / wall, cpuUsPerWrite: (cpu / writes) * 1e6 };
}

export async function benchScaling(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const seconds = Number(process.env.BENCH_SECONDS ?? 5);
  const dir = await tempDir('bench-scaling');
  const teardown: Array<() => Promise<unknown>> = [];
  try {
    const node = await NodeProcess.start({ name: 'scaling', dataDir: path.join(dir, 'tricopy'), args: ['--log-level', 'warn'] });
    teardown.push(() => node.stop());
    for (let i = 0; i < volumeCount; i++) await node.api.createVolume({ name: `v${i}`, size: volumeBytes, thin: true });
    const nbdkitDir = path.join(dir, 'nbdkit');
    await fsp.mkdir(nbdkitDir);
    for (let i = 0; i < volumeCount; i++) await sparseFile(path.join(nbdkitDir, `v${i}`), volumeBytes);
    const port = await freePort();
    // One nbdkit serving the directory: export name = file name.
    const nbdkit = await spawnServer('nbdkit', 'nbdkit', ['--foreground', '--ipaddr', '127.0.0.1', '--port', String(port), 'file', `dir=${nbdkitDir}`],
      port, `nbd://127.0.0.1:${port}/v0`);
    teardown.push(() => nbdkit.stop());
    const targets: Target[] = [
      { name: 'tricopy', pid: node.child.pid!, uriOf: (i) => node.nbdUri(`v${i}`) },
      { name: 'nbdkit', pid: nbdkit.pid!, uriOf: (i) => `nbd://127.0.0.1:${port}/v${i}` },
    ];
    const loadBefore = loadSummary();
    const results = new Map<string, Outcome[]>();
    for (let round = 1; round <= rounds; round++) {
      for (const s of scenarios) {
        for (const t of targets) {
          const r = await measure(t, s, seconds, dir);
          const key = `${s.name}|${t.name}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          process.stderr.write(`round ${round} ${s.name} ${t.name}: ${r.iops.toFixed(0)} IOPS, ${r.coresUsed.toFixed(2)} cores, ${r.cpuUsPerWrite.toFixed(1)} µs/write, load ${loadSummary()}\n`);
        }
      }
    }
    const med = (s: string, t: string, pick: (o: Outcome) => number): number => median(results.get(`${s}|${t}`)!.map(pick));
    const rows = scenarios.map((s) => [s.name,
      med(s.name, 'tricopy', (o) => o.iops).toFixed(0), med(s.name, 'nbdkit', (o) => o.iops).toFixed(0),
      (med(s.name, 'tricopy', (o) => o.iops) / med(s.name, 'nbdkit', (o) => o.iops)).toFixed(2),
      `${med(s.name, 'tricopy', (o) => o.coresUsed).toFixed(2)} / ${med(s.name, 'nbdkit', (o) => o.coresUsed).toFixed(2)}`,
      `${med(s.name, 'tricopy', (o) => o.cpuUsPerWrite).toFixed(1)} / ${med(s.name, 'nbdkit', (o) => o.cpuUsPerWrite).toFixed(1)}`]);
    const markdown = [
      `Command: \`npm run bench -- scaling\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${seconds}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}, ${await toolVersion('nbdkit', ['--version'])}. fio and the server share the machine's cores.`,
      '4 KiB random writes (fio nbd engine); each job has its own connection. Cores used: CPU seconds (user + system, all threads, /proc/PID/stat) of the server over the wall time of the fio run; ' +
        `values are medians of ${rounds} interleaved runs of ${seconds} s. Load average (1/5/15 min) before the rounds: ${loadBefore}; after: ${loadSummary()}.`,
      '',
      table(['workload', 'tricopy IOPS', 'nbdkit IOPS', 'ratio', 'cores used (t/k)', 'CPU µs/write (t/k)'], rows),
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('scaling', markdown);
  } finally {
    for (const step of teardown.reverse()) await step().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
