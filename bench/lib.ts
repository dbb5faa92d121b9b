// Benchmark plumbing: servers to compare against, fio runs, medians, and the results section of
// docs/benchmarks.md. Benchmarks measure; they never pass or fail on speed.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fetchMetrics, freePort, metricValue, parseFioJson, run, runOk } from '../test/support/tools';

export { freePort };

export const repoRoot = path.resolve(__dirname, '..', '..');

export async function waitForPort(port: number, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1' }, () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Server {
  name: string;
  uri: string;
  /** The serving process, for CPU accounting. */
  pid?: number;
  stop(): Promise<void>;
}

export async function spawnServer(name: string, command: string, args: string[], port: number, uri: string): Promise<Server> {
  const child: ChildProcess = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForPort(port);
  return {
    name,
    uri,
    pid: child.pid,
    stop: async () => {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

export async function sparseFile(file: string, sizeBytes: number): Promise<void> {
  await fsp.writeFile(file, '');
  await fsp.truncate(file, sizeBytes);
}

export interface FioJob {
  name: string;
  rw: 'write' | 'randwrite' | 'randread' | 'read';
  bs: string;
  iodepth: number;
  size: string;
  runtimeSeconds: number;
  /** More fio options (e.g. --numjobs=4 for four connections). */
  extraArgs?: string[];
}

export interface FioResult {
  iops: number;
  mibPerSecond: number;
  latP50Us: number;
  latP99Us: number;
  latMeanUs: number;
  /** I/Os fio completed in its measured window (after the ramp). */
  ios: number;
  /** Per watched process (by label): CPU microseconds (user + system) per I/O over the measured window. */
  cpuUsPerIo: Map<string, number>;
}

/** A process whose CPU a benchmark charges to the I/Os it serves (an NBD server, a storage node). */
export interface Watched {
  label: string;
  pid: number;
}

interface FioJson {
  jobs: Array<{
    error: number;
    read: FioSide;
    write: FioSide;
  }>;
}
interface FioSide {
  iops: number;
  bw_bytes: number;
  total_ios: number;
  clat_ns: { mean: number; percentile?: Record<string, number> };
}

const rampSeconds = 1;

/**
 * Runs one fio job against `uri`. The CPU of each watched process is read from /proc when fio's
 * ramp ends and when fio exits, so it covers the window whose I/Os fio counts (fio's own start-up,
 * a few ms, shifts the window slightly; the error is well under 5 %).
 */
export async function fio(uri: string, job: FioJob, cwd: string, watch: Watched[] = []): Promise<FioResult> {
  const args = [`--name=${job.name}`, '--ioengine=nbd', `--uri=${uri}`, `--rw=${job.rw}`, `--bs=${job.bs}`,
    `--iodepth=${job.iodepth}`, `--size=${job.size}`, `--runtime=${job.runtimeSeconds}`, '--time_based', `--ramp_time=${rampSeconds}`,
    '--randrepeat=0', '--norandommap', '--output-format=json', ...(job.extraArgs ?? [])];
  let before: Promise<number[]> | undefined;
  const rampTimer = setTimeout(() => {
    before = Promise.all(watch.map((w) => cpuSeconds(w.pid)));
  }, rampSeconds * 1000);
  const result = await run('fio', args, { cwd, timeoutMs: (job.runtimeSeconds + 60) * 1000 });
  clearTimeout(rampTimer);
  const after = await Promise.all(watch.map((w) => cpuSeconds(w.pid)));
  if (result.code !== 0) throw new Error(`fio ${job.name} against ${uri} failed: ${result.stderr}${result.stdout.slice(-2000)}`);
  const jobs = parseFioJson<FioJson>(result.stdout).jobs;
  const sides = jobs.map((j) => (job.rw.includes('read') ? j.read : j.write));
  // Several jobs (numjobs) are summed; latency figures are the first job's (they share one target).
  const first = sides[0]!;
  const ios = sides.reduce((n, s) => n + s.total_ios, 0);
  const startCpu = before ? await before : watch.map(() => Number.NaN);
  return {
    iops: sides.reduce((n, s) => n + s.iops, 0),
    mibPerSecond: sides.reduce((n, s) => n + s.bw_bytes, 0) / 1024 / 1024,
    latP50Us: (first.clat_ns.percentile?.['50.000000'] ?? 0) / 1000,
    latP99Us: (first.clat_ns.percentile?.['99.000000'] ?? 0) / 1000,
    latMeanUs: first.clat_ns.mean / 1000,
    ios,
    cpuUsPerIo: new Map(watch.map((w, i) => [w.label, ios > 0 ? ((after[i]! - startCpu[i]!) / ios) * 1e6 : Number.NaN])),
  };
}

/** Fills a region sequentially so reads hit data, not holes. */
export async function prefill(uri: string, size: string, cwd: string): Promise<void> {
  await runOk('fio', ['--name=prefill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1m', '--iodepth=8', `--size=${size}`,
    '--output-format=json'], { cwd, timeoutMs: 600_000 });
}

let clockTicks: number | undefined;

/** CPU seconds (user + system, all threads) a process has used so far, from /proc/PID/stat. */
export async function cpuSeconds(pid: number): Promise<number> {
  clockTicks ??= Number((await runOk('getconf', ['CLK_TCK'])).stdout.trim());
  const stat = await fsp.readFile(`/proc/${pid}/stat`, 'utf8');
  // After the command name (which may hold spaces): field 3 (state) first; utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

/** Resident memory of a process now, in bytes (VmRSS from /proc/PID/status). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  if (kib === undefined) throw new Error(`no VmRSS for process ${pid}`);
  return Number(kib) * 1024;
}

/** CPU seconds of each watched process now. */
export function cpuSnapshot(watch: Watched[]): Promise<number[]> {
  return Promise.all(watch.map((w) => cpuSeconds(w.pid)));
}

/** Host writes a tricopy node has completed on a volume (its NBD request counter). */
export async function nodeWrites(apiUrl: string, volume: string): Promise<number> {
  return metricValue(await fetchMetrics(apiUrl), 'tricopy_nbd_requests_total', { volume, op: 'write' });
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of the values; NaN when there are none. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

/** The load average when a figure was taken (this machine is shared; noisy figures say so). */
export function loadSummary(): string {
  return os.loadavg().map((l) => l.toFixed(2)).join(' ');
}

/** "12.3" or "–" for a value that could not be measured. */
export function fmtCpu(us: number | undefined): string {
  return us === undefined || !Number.isFinite(us) ? '–' : us.toFixed(1);
}

export function machineSummary(): string {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  return `${os.cpus().length} × ${cpu}, ${Math.round(os.totalmem() / 1024 ** 3)} GiB RAM, Linux ${os.release()}, Node ${process.version}`;
}

/** Replaces the section between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`. */
export async function writeDocsSection(name: string, markdown: string): Promise<void> {
  const file = path.join(repoRoot, 'docs', 'benchmarks.md');
  let text = await fsp.readFile(file, 'utf8').catch(() => '# Benchmarks\n');
  const start = `<!-- bench:${name}:start -->`;
  const end = `<!-- bench:${name}:end -->`;
  const block = `${start}\n${markdown.trim()}\n${end}`;
  if (text.includes(start) && text.includes(end)) {
    text = text.slice(0, text.indexOf(start)) + block + text.slice(text.indexOf(end) + end.length);
  } else {
    text = `${text.trimEnd()}\n\n${block}\n`;
  }
  await fsp.writeFile(file, text);
}

export function table(headers: string[], rows: string[][]): string {
  return [`| ${headers.join(' | ')} |`, `|${headers.map(() => '---').join('|')}|`, ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
}

export async function toolVersion(command: string, args: string[]): Promise<string> {
  const r = await run(command, args).catch(() => undefined);
  return (r?.stdout || r?.stderr || '').split('\n')[0]!.trim();
}
