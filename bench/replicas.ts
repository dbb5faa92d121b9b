// `npm run bench -- replicas`: spec 003's questions on one node process. Quick split time of a 1 GiB
// and a 16 GiB volume (goal < 100 ms, independent of size); host 4 KiB random write IOPS and p99 on
// a volume whose quick-split replica is still copying and on one with 10 snapshots, against a plain
// volume, interleaved round by round (goal ≥ 0.7 ×); an incremental backup of 1 % changed against a
// full backup (goal ≤ 5 %); relocation throughput between two data areas.
//
// BENCH_REPLICAS_PARTS (comma-separated: split, writes, backup, relocation; default all) runs only
// those parts; --write-docs needs all of them. BENCH_NODE_PROFILE_DIR: the node process writes a CPU
// profile (--cpu-prof) there when it stops.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { randomBytes } from 'node:crypto';
import type { BackupResult } from '../src/backup/engine';
import { HttpNodeClient } from '../src/node/api-client';
import { NbdClient } from '../src/nbd/client';
import { NodeProcess, cli } from '../test/support/node-process';
import { runOk, tempDir } from '../test/support/tools';
import { type FioJob, type FioResult, fio, fmtCpu, loadSummary, machineSummary, median, table, toolVersion, writeDocsSection } from './lib';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

const allParts = ['split', 'writes', 'backup', 'relocation'] as const;
type Part = (typeof allParts)[number];

function benchParts(value: string | undefined): Set<Part> {
  if (!value) return new Set(allParts);
  const parts = value.split(',').map((p) => p.trim()).filter((p) => p !== '');
  const unknown = parts.filter((p) => !(allParts as readonly string[]).includes(p));
  if (unknown.length > 0) throw new Error(`BENCH_REPLICAS_PARTS: unknown part ${unknown.join(', ')} (parts: ${allParts.join(', ')})`);
  return new Set(parts as Part[]);
}

interface BackupTiming {
  /** Around the whole `tricopy backup run` command. */
  commandS: number;
  /** From the job's manifest: the drive taken, the snapshot, the image written and checked. */
  jobS: number;
  kind: string;
  dataBytes: number;
}

function backupTable(full: BackupTiming | undefined, inc: BackupTiming | undefined): string {
  if (!full || !inc) return 'Backup: not run (BENCH_REPLICAS_PARTS).';
  const pct = (pick: (t: BackupTiming) => number): string => `${((pick(inc) / pick(full)) * 100).toFixed(1)} %`;
  return [
    'Backup of a 1 GiB volume into a directory repository, full, then incremental after 10 MiB (1 %) changed in 64 KiB regions. ' +
      '"Job" is the job\'s own record (its manifest\'s start and end: the drive taken, the snapshot, the image written and its checksum); ' +
      '"command" is around the whole `tricopy backup run`, including the CLI\'s start and the snapshot\'s deletion (goal: incremental ≤ 5 % of the full):',
    '',
    table(['backup', 'data copied', 'job s', 'command s'], [
      ['full', `${(full.dataBytes / MiB).toFixed(1)} MiB`, full.jobS.toFixed(2), full.commandS.toFixed(2)],
      ['incremental', `${(inc.dataBytes / MiB).toFixed(1)} MiB`, inc.jobS.toFixed(2), inc.commandS.toFixed(2)],
      ['incremental ÷ full', '', `**${pct((t) => t.jobS)}**`, pct((t) => t.commandS)],
    ]),
  ].join('\n');
}

export async function benchReplicas(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const runtimeSeconds = Number(process.env.BENCH_SECONDS ?? 5);
  const splitTrials = Number(process.env.BENCH_SPLIT_TRIALS ?? 5);
  const parts = benchParts(process.env.BENCH_REPLICAS_PARTS);
  if (args.includes('--write-docs') && parts.size < allParts.length) throw new Error('--write-docs needs every part: unset BENCH_REPLICAS_PARTS');
  const dir = await tempDir('bench-replicas');
  // The replica copy is throttled so a quick split is still copying through a whole fio run.
  const node = await NodeProcess.start({ name: 'bench', dataDir: path.join(dir, 'data'),
    execArgv: process.env.BENCH_NODE_PROFILE_DIR ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_NODE_PROFILE_DIR}`] : [],
    args: ['--replica-copy-rate', '32MiB', '--data-area', `fast=${path.join(dir, 'fast')}`, '--relocation-rate', '0', '--log-level', 'warn'] });
  const api = new HttpNodeClient(node.apiUrl);
  const tricopy = async (argv: string[]): Promise<string> => {
    // The backup catalog lives in the bench's directory, not the user's ~/.config.
    const r = await cli(['--node', node.apiUrl, ...argv], { TRICOPY_BACKUP_CATALOG: path.join(dir, 'catalog.json') });
    if (r.code !== 0) throw new Error(`tricopy ${argv.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const fill = async (volume: string, size: string, extra: string[] = []): Promise<void> => {
    await runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=${node.nbdUri(volume)}`,
    '--rw=write', '--bs=1M', `--size=${size}`, '--iodepth=8', '--output-format=terse', ...extra], { cwd: dir, timeoutMs: 600_000 });
  };
  const loadBefore = loadSummary();
  try {
    // 1. Quick split of 1 GiB and 16 GiB volumes, each holding 256 MiB spread over it.
    const splits: Array<[string, number[]]> = [];
    for (const sizeGiB of parts.has('split') ? [1, 16] : []) {
      const v = `q${sizeGiB}g`;
      await api.createVolume({ name: v, size: sizeGiB * GiB, thin: true });
      await fill(v, `${sizeGiB}G`, ['--io_size=256M', '--zonemode=strided', '--zonesize=1M', `--zonerange=${sizeGiB * 4}M`]);
      await api.createReplica({ name: `${v}-r1`, volume: v });
      await api.waitReplica(`${v}-r1`, 'duplex', 600_000);
      const times: number[] = [];
      for (let i = 0; i < splitTrials; i++) {
        const started = performance.now();
        await api.splitReplica(`${v}-r1`, { quick: true });
        times.push(performance.now() - started);
        await api.waitReplica(`${v}-r1`, 'split', 600_000);
        await api.resyncReplica(`${v}-r1`);
        await api.waitReplica(`${v}-r1`, 'duplex', 600_000);
      }
      splits.push([`${sizeGiB} GiB`, times]);
      process.stderr.write(`quick split ${sizeGiB} GiB: ${times.map((t) => t.toFixed(1)).join(', ')} ms\n`);
    }

    // 2. Host writes: plain, a quick-split replica copying, 10 snapshots.
    const writeVolumes = parts.has('writes') ? ['plain', 'copying', 'snapped'] : [];
    const backupVolumes = parts.has('backup') || parts.has('relocation') ? ['plain'] : [];
    for (const v of writeVolumes.length > 0 ? writeVolumes : backupVolumes) {
      await api.createVolume({ name: v, size: GiB });
      await fill(v, '1G');
    }
    let newestSnapshot = 0;
    for (; newestSnapshot < (parts.has('writes') ? 10 : 0); newestSnapshot++) await api.createSnapshot({ volumes: ['snapped'], name: `s${newestSnapshot + 1}` });
    const job: FioJob = { name: 'randwrite-4k-qd32', rw: 'randwrite', bs: '4k', iodepth: 32, size: '1g', runtimeSeconds };
    const results = new Map<string, FioResult[]>();
    for (let round = 1; round <= rounds; round++) {
      for (const v of writeVolumes) {
        if (v === 'snapped' && round > 1) {
          // The oldest snapshot goes and a new one comes: each run meets a newest snapshot that has
          // preserved nothing yet, as the replica's run meets a fresh quick split.
          await api.deleteSnapshot('snapped', `s${newestSnapshot - 9}`);
          await api.createSnapshot({ volumes: ['snapped'], name: `s${++newestSnapshot}` });
        }
        if (v === 'copying') {
          // A new replica split at once while its initial copy runs: the copy (1 GiB at 32 MiB/s)
          // outlasts the run, so host writes meet copy-on-write and the background copy throughout.
          if ((await api.listReplicas()).some((r) => r.name === 'copying-r1')) await api.deleteReplica('copying-r1', { deleteVolume: true, force: true });
          await api.createReplica({ name: 'copying-r1', volume: 'copying' });
          await api.splitReplica('copying-r1', { quick: true });
        }
        const r = await fio(node.nbdUri(v), job, dir, [{ label: 'node', pid: node.child.pid! }]);
        results.set(v, [...(results.get(v) ?? []), r]);
        const state = v === 'copying' ? ` (replica ${(await api.getReplica('copying-r1')).state} at the end)` : '';
        process.stderr.write(`round ${round} ${v}: ${r.iops.toFixed(0)} IOPS, p99 ${r.latP99Us.toFixed(0)} µs, node CPU ${fmtCpu(r.cpuUsPerIo.get('node'))} µs/write${state}, ` +
          `load ${loadSummary()}\n`);
      }
    }

    // 3. Backup of a 1 GiB volume: full, then incremental after 1 % changed.
    const timed = async (argv: string[]): Promise<number> => {
      const started = performance.now();
      await tricopy(argv);
      return (performance.now() - started) / 1000;
    };
    // A backup timed twice: by the bench around the whole command, and by the job's own record
    // (its manifest: from the drive taken to the image verified), which leaves out the CLI's start.
    const backupRun = async (): Promise<BackupTiming> => {
      const started = performance.now();
      const result = JSON.parse(await tricopy(['--json', 'backup', 'run', '--volume', 'plain', '--repo', 'bench', '--incremental'])) as BackupResult;
      const commandS = (performance.now() - started) / 1000;
      const m = result.manifest;
      return { commandS, jobS: (Date.parse(m.finishedAt) - Date.parse(m.startedAt)) / 1000, kind: m.kind, dataBytes: m.dataBytes };
    };
    let full: BackupTiming | undefined;
    let inc: BackupTiming | undefined;
    if (parts.has('backup')) {
      await tricopy(['backup', 'repo', 'add', 'bench', '--path', path.join(dir, 'repo'), '--drives', '1']);
      full = await backupRun();
      const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'plain' });
      for (let i = 0; i < 160; i++) await client.write(((i * 104729) % (GiB / (64 * 1024))) * 64 * 1024, randomBytes(64 * 1024)); // 10 MiB in 64 KiB regions
      await client.flush();
      await client.disconnect();
      inc = await backupRun();
      if (full.kind !== 'full' || inc.kind !== 'incremental') throw new Error(`backups taken: ${full.kind}, then ${inc.kind} (expected full, then incremental)`);
    }

    // 4. Relocation of the 1 GiB volume to the other data area, unthrottled, no host load.
    const relocS = parts.has('relocation') ? await timed(['volume', 'relocate', 'plain', '--tier', 'fast', '--wait']) : Number.NaN;

    const med = (v: string, pick: (r: FioResult) => number): number => median((results.get(v) ?? []).map(pick));
    const plainIops = med('plain', (r) => r.iops);
    const plainP99 = med('plain', (r) => r.latP99Us);
    const cpu = (r: FioResult): number => r.cpuUsPerIo.get('node') ?? Number.NaN;
    const plainCpu = med('plain', cpu);
    const writeRows = [['plain', 'a plain volume'], ['copying', 'a quick-split replica still copying'], ['snapped', '10 snapshots, the newest taken just before the run']].map(([v, label]) => [
      label!, med(v!, (r) => r.iops).toFixed(0), (med(v!, (r) => r.iops) / plainIops).toFixed(2), med(v!, (r) => r.latP99Us).toFixed(0), (med(v!, (r) => r.latP99Us) / plainP99).toFixed(2),
      fmtCpu(med(v!, cpu)), (med(v!, cpu) / plainCpu).toFixed(2),
    ]);
    const markdown = [
      `Command: \`npm run bench -- replicas\` (BENCH_ROUNDS=${rounds}, BENCH_SECONDS=${runtimeSeconds}, BENCH_SPLIT_TRIALS=${splitTrials}), run ${new Date().toISOString().slice(0, 10)}.`,
      `Machine: ${machineSummary()}. ${await toolVersion('fio', ['--version'])}. One node process and fio share the machine's cores; both data areas are on the same file system. ` +
        `Load average (1/5/15 min) before: ${loadBefore}; after: ${loadSummary()}.`,
      '',
      `Quick split (\`replica split --quick\`), ${splitTrials} trials per size, each volume holding 256 MiB spread over it (goal < 100 ms, independent of size):`,
      '',
      table(['volume', 'median ms', 'max ms'], splits.map(([label, t]) => [label, median(t).toFixed(1), Math.max(...t).toFixed(1)])),
      '',
      `Host writes: fio 4 KiB random writes, 32 in flight, ${runtimeSeconds} s per run, medians of ${rounds} interleaved rounds on 1 GiB volumes filled with data; ` +
        'for the replica, each run starts right after a new replica was created and quick-split at once, and its background copy (throttled to 32 MiB/s) runs throughout; ' +
        'for the snapshots, before each run the oldest of the 10 is deleted and a new one taken, so both meet first writes to regions throughout (goal ≥ 0.7 × the plain volume). ' +
        'CPU µs per write: user + system time of the node process (all threads, /proc/PID/stat) over fio\'s measured window, divided by the writes fio completed ' +
        '(for the replica it includes the background copy):',
      '',
      table(['volume', 'IOPS', 'IOPS ÷ plain', 'p99 µs', 'p99 ÷ plain', 'node CPU µs/write', 'CPU ÷ plain'], writeRows),
      '',
      backupTable(full, inc),
      '',
      `Relocation of the 1 GiB volume to another data area, unthrottled, no host load: ${relocS.toFixed(1)} s = ${(1024 / relocS).toFixed(0)} MiB/s (including the CLI's start and the switch).`,
    ].join('\n');
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('replicas', markdown);
  } finally {
    await node.stop().catch(() => undefined);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}
