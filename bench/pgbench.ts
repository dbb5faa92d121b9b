// `npm run bench -- pgbench` (also the second part of `npm run bench -- nbd`): PostgreSQL's pgbench on
// ext4 over nbdfuse + a loop device, against three NBD servers on this machine: nbdkit's file plugin,
// a tricopy volume with no pair, and a tricopy sync pair (two nodes). Commits are durable
// (synchronous_commit, fsync and full_page_writes on), so every commit waits for an NBD write and
// flush. Runs interleave the servers; the best TPS of the runs counts. CPU per transaction of each
// server process is user + system time from /proc/PID/stat over the run, over the transactions.
// BENCH_NODE_PROFILE_DIR: the unpaired volume's node writes a CPU profile (--cpu-prof) there when it stops.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdBlockDevice } from '../test/support/blockdev';
import { Cluster } from '../test/support/cluster';
import { NodeProcess } from '../test/support/node-process';
import { PgbenchRun, pgbenchInit } from '../test/support/pgbench';
import { PostgresServer, initdb, pgBin } from '../test/support/postgres';
import { tempDir } from '../test/support/tools';
import { cpuSeconds, freePort, loadSummary, machineSummary, sparseFile, spawnServer, table, toolVersion, writeDocsSection } from './lib';

const volumeBytes = 1024 ** 3;

/** One way of serving the volume, with the processes whose CPU a transaction costs. */
interface Target {
  name: string;
  uri: string;
  processes: Array<{ label: string; pid: number }>;
}

interface Database {
  target: Target;
  device: NbdBlockDevice;
  server: PostgresServer;
}

interface RunResult {
  tps: number;
  transactions: number;
  /** label → CPU seconds over the run */
  cpu: Map<string, number>;
}

/** `command` names the bench that ran it, for the docs. */
export async function benchPgbench(args: string[], command = 'pgbench'): Promise<void> {
  const runs = Number(process.env.BENCH_PGBENCH_RUNS ?? 2);
  const seconds = Number(process.env.BENCH_SECONDS ?? 10);
  const clients = Number(process.env.BENCH_PGBENCH_CLIENTS ?? 4);
  const scale = Number(process.env.BENCH_PGBENCH_SCALE ?? 10);
  const dir = await tempDir('bench-pgbench');
  await fsp.chmod(dir, 0o755); // the postgres user reaches its sockets and data below
  const teardown: Array<() => Promise<unknown>> = [];
  try {
    const targets: Target[] = [];
    const nbdkitFile = path.join(dir, 'nbdkit.img');
    await sparseFile(nbdkitFile, volumeBytes);
    const nbdkitPort = await freePort();
    const nbdkit = await spawnServer('nbdkit', 'nbdkit', ['--foreground', '--ipaddr', '127.0.0.1', '--port', String(nbdkitPort),
      '--exportname', 'bench', 'file', `file=${nbdkitFile}`], nbdkitPort, `nbd://127.0.0.1:${nbdkitPort}/bench`);
    teardown.push(() => nbdkit.stop());
    targets.push({ name: 'nbdkit file', uri: nbdkit.uri, processes: [{ label: 'nbdkit', pid: nbdkit.pid! }] });

    const single = await NodeProcess.start({ name: 'single', dataDir: path.join(dir, 'single'), args: ['--log-level', 'warn'],
      execArgv: process.env.BENCH_NODE_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_NODE_PROFILE_DIR}`] : [] });
    teardown.push(() => single.stop());
    await single.api.createVolume({ name: 'bench', size: volumeBytes, thin: true });
    targets.push({ name: 'tricopy, unpaired volume', uri: single.nbdUri('bench'), processes: [{ label: 'node', pid: single.child.pid! }] });

    const cluster = await Cluster.create(path.join(dir, 'cluster'), ['primary', 'secondary'], ['--log-level', 'warn']);
    teardown.push(() => cluster.stopAll());
    await cluster.volume('primary', 'bench', volumeBytes);
    await cluster.pair({ name: 'bench', primary: 'primary', secondary: 'secondary', volume: 'bench', mode: 'sync', fence: 'data' });
    await cluster.waitState('primary', 'bench', 'duplex', 300_000);
    targets.push({ name: 'tricopy, sync pair', uri: cluster.node('primary').nbdUri('bench'), processes: [
      { label: 'primary', pid: cluster.node('primary').child.pid! }, { label: 'secondary', pid: cluster.node('secondary').child.pid! }] });

    const databases: Database[] = [];
    for (const [i, target] of targets.entries()) {
      const host = path.join(dir, `host${i}`);
      await fsp.mkdir(host);
      const device = await NbdBlockDevice.attach(target.uri, host);
      teardown.push(() => device.detach());
      await device.mkfsExt4();
      await device.mount(path.join(host, 'mnt'));
      await initdb(path.join(host, 'mnt', 'pgdata'));
      const server = await PostgresServer.start({ dataDir: path.join(host, 'mnt', 'pgdata'), socketDir: path.join(host, 'sock'),
        logFile: path.join(host, 'postgres.log'), settings: { shared_buffers: '128MB' } });
      teardown.push(() => server.stop());
      const started = Date.now();
      await pgbenchInit(server, scale);
      process.stderr.write(`${target.name}: pgbench -i -s ${scale} took ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
      databases.push({ target, device, server });
    }

    const results = new Map<string, RunResult[]>();
    const loadBefore = loadSummary();
    for (let round = 1; round <= runs; round++) {
      for (const db of databases) {
        const r = await measure(db, clients, seconds);
        results.set(db.target.name, [...(results.get(db.target.name) ?? []), r]);
        process.stderr.write(`round ${round} ${db.target.name}: ${r.tps.toFixed(0)} TPS, ${r.transactions} transactions, CPU ${
          [...r.cpu].map(([label, s]) => `${label} ${s.toFixed(2)} s`).join(', ')}, load ${loadSummary()}\n`);
      }
    }

    const best = (name: string): RunResult => results.get(name)!.reduce((a, b) => (b.tps > a.tps ? b : a));
    const baseline = best(targets[0]!.name);
    const baselineCpu = [...baseline.cpu.values()].reduce((a, b) => a + b, 0) / baseline.transactions;
    const rows = targets.map((t) => {
      const b = best(t.name);
      const cpuPerTx = [...b.cpu].map(([label, s]) => `${label} ${((s / b.transactions) * 1e6).toFixed(0)}`).join(', ');
      const total = [...b.cpu.values()].reduce((x, y) => x + y, 0) / b.transactions;
      return [t.name, b.tps.toFixed(0), results.get(t.name)!.map((r) => r.tps.toFixed(0)).join(' / '), (b.tps / baseline.tps).toFixed(2), cpuPerTx,
        (total / baselineCpu).toFixed(2)];
    });
    const markdown = [
      `Command: \`npm run bench -- ${command}\` (BENCH_SECONDS=${seconds}, BENCH_PGBENCH_RUNS=${runs}, BENCH_PGBENCH_CLIENTS=${clients}, BENCH_PGBENCH_SCALE=${scale}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion(path.join(pgBin, 'pgbench'), ['--version'])}, ${await toolVersion('nbdkit', ['--version'])}, ${await toolVersion('nbdfuse', ['--version'])}.`,
      `Each server exports a 1 GiB sparse volume; the host side is nbdfuse (libnbd, multi-conn) → loop device → ext4 → PostgreSQL 15 with fsync, synchronous_commit and full_page_writes on, shared_buffers 128 MB;`,
      `pgbench's built-in TPC-B-like transaction, scale ${scale}, ${clients} clients, ${seconds} s per run. Runs interleave the servers; TPS is the best of ${runs} (all runs listed).`,
      'CPU per transaction: user + system time of each NBD server process over the run (/proc/PID/stat), divided by the transactions of that run; for the sync pair both nodes.',
      `Load average (1/5/15 min) before the runs: ${loadBefore}; after: ${loadSummary()}.`,
      '',
      table(['configuration', 'TPS (best)', 'TPS of each run', 'TPS ratio vs nbdkit', 'server CPU µs per transaction', 'server CPU ratio vs nbdkit'], rows),
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('pgbench', markdown);
  } finally {
    for (const step of teardown.reverse()) await step().catch((err: unknown) => process.stderr.write(`teardown: ${String(err)}\n`));
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** One pgbench run from a fresh checkpoint, with the CPU each server process used meanwhile. */
async function measure(db: Database, clients: number, seconds: number): Promise<RunResult> {
  await db.server.query('CHECKPOINT');
  const before = await Promise.all(db.target.processes.map((p) => cpuSeconds(p.pid)));
  const run = await PgbenchRun.start(db.server, { clients, seconds });
  const outcome = await run.done;
  const after = await Promise.all(db.target.processes.map((p) => cpuSeconds(p.pid)));
  if (outcome.code !== 0) throw new Error(`pgbench against ${db.target.name} failed:\n${outcome.output}`);
  return { tps: outcome.tps, transactions: outcome.transactions,
    cpu: new Map(db.target.processes.map((p, i) => [p.label, after[i]! - before[i]!])) };
}
