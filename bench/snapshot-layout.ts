// Where a snapshot keeps preserved blocks, measured alone: the copies of first writes after a
// snapshot, 4 KiB at random blocks of a 1 GiB volume, 32 in flight, each followed by the shared
// (group-commit) sync it must wait for before its host write may go to the volume. Layouts: blocks
// at their own offsets of a sparse file (snapshots of releases before 2026-12-04) and blocks
// appended to a log with slot records (snapshot-blocks.ts). Same process, same disk, interleaved
// rounds. CPU is this process's user + system time (all threads: the syncs run on libuv's pool).
//
// BENCH_ROUNDS (3), BENCH_SNAPSHOT_WRITES (20000 per run).
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { type Disk, type DiskFile, type OpenFlags, nodeDisk } from '../src/common/disk';
import { SnapshotBlocks, type SnapshotBlocksLayout } from '../src/replica/snapshot-blocks';
import { tempDir } from '../test/support/tools';
import { loadSummary, machineSummary, median, table, writeDocsSection } from './lib';

const blockBytes = 4096;
const volumeBytes = 1024 ** 3;
const inFlight = 32;

interface LayoutRun {
  writesPerSecond: number;
  cpuUsPerWrite: number;
  syncs: number;
}

/** The node's disk, counting the datasyncs of the files that hold preserved blocks. */
function countingDisk(counter: { syncs: number }): Disk {
  const wrap = (inner: DiskFile, name: string): DiskFile => ({
    read: (...a) => inner.read(...a),
    writev: (...a) => inner.writev(...a),
    truncate: (n) => inner.truncate(n),
    sizeBytes: () => inner.sizeBytes(),
    close: () => inner.close(),
    datasync: () => {
      if (/\.(log|data)$/.test(name)) counter.syncs++;
      return inner.datasync();
    },
  });
  return { ...nodeDisk, open: async (file: string, flags: OpenFlags) => wrap(await nodeDisk.open(file, flags), file) };
}

async function openLayout(disk: Disk, dir: string, layout: SnapshotBlocksLayout): Promise<SnapshotBlocks> {
  const file = (what: string): string => path.join(dir, `snap-1.${what}`);
  if (layout === 'log') return SnapshotBlocks.create(disk, file, blockBytes, volumeBytes);
  const data = await fsp.open(file('data'), 'w+');
  await data.truncate(volumeBytes);
  await data.close();
  return SnapshotBlocks.open(disk, file, blockBytes, volumeBytes, await fsp.readdir(dir));
}

async function runLayout(layout: SnapshotBlocksLayout, writes: number): Promise<LayoutRun> {
  const dir = await tempDir('bench-snapshot-layout');
  try {
    const counter = { syncs: 0 };
    const blocks = await openLayout(countingDisk(counter), dir, layout);
    const data = randomBytes(blockBytes);
    let next = 0;
    const cpu = process.cpuUsage();
    const started = performance.now();
    await Promise.all(Array.from({ length: inFlight }, async () => {
      while (next < writes) {
        next++;
        await blocks.write(Math.floor(Math.random() * (volumeBytes / blockBytes)), data);
        await blocks.sync();
      }
    }));
    const seconds = (performance.now() - started) / 1000;
    const used = process.cpuUsage(cpu);
    await blocks.close();
    return { writesPerSecond: writes / seconds, cpuUsPerWrite: (used.user + used.system) / writes, syncs: counter.syncs };
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

export async function benchSnapshotLayout(args: string[]): Promise<void> {
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const writes = Number(process.env.BENCH_SNAPSHOT_WRITES ?? 20_000);
  const loadBefore = loadSummary();
  const layouts: SnapshotBlocksLayout[] = ['in-place', 'log'];
  const results = new Map<SnapshotBlocksLayout, LayoutRun[]>(layouts.map((l) => [l, []]));
  for (let round = 1; round <= rounds; round++) {
    for (const layout of layouts) {
      const r = await runLayout(layout, writes);
      results.get(layout)!.push(r);
      process.stderr.write(`round ${round} ${layout}: ${r.writesPerSecond.toFixed(0)} copies/s, CPU ${r.cpuUsPerWrite.toFixed(1)} µs/copy, ` +
        `${(writes / r.syncs).toFixed(1)} copies per sync, load ${loadSummary()}\n`);
    }
  }
  const med = (l: SnapshotBlocksLayout, pick: (r: LayoutRun) => number): number => median(results.get(l)!.map(pick));
  const rows = layouts.map((l) => [
    l === 'log' ? 'appended to a log, with slot records (this release)' : 'at their own offsets of a sparse file (earlier releases)',
    med(l, (r) => r.writesPerSecond).toFixed(0), med(l, (r) => r.cpuUsPerWrite).toFixed(1), (writes / med(l, (r) => r.syncs)).toFixed(1),
  ]);
  const speed = med('log', (r) => r.writesPerSecond) / med('in-place', (r) => r.writesPerSecond);
  const cpu = med('log', (r) => r.cpuUsPerWrite) / med('in-place', (r) => r.cpuUsPerWrite);
  const markdown = [
    `Command: \`npm run bench -- snapshot-layout\` (BENCH_ROUNDS=${rounds}, BENCH_SNAPSHOT_WRITES=${writes}), run ${new Date().toISOString().slice(0, 10)}.`,
    `Machine: ${machineSummary()}. Load average (1/5/15 min) before: ${loadBefore}; after: ${loadSummary()}.`,
    '',
    `The copies of first writes after a snapshot alone: ${writes} copies of 4 KiB at random blocks of a 1 GiB volume, ${inFlight} in flight, each waiting for ` +
      'the shared sync that must end before its host write may reach the volume; medians of interleaved rounds; CPU is the process\'s user + system time per copy:',
    '',
    table(['preserved blocks', 'copies/s', 'CPU µs per copy', 'copies per sync'], rows),
    '',
    `Log ÷ sparse file: **${speed.toFixed(2)} ×** the copies per second at **${cpu.toFixed(2)} ×** the CPU per copy.`,
  ].join('\n');
  console.log(markdown);
  if (args.includes('--write-docs')) await writeDocsSection('snapshot-layout', markdown);
}
