// `npm run bench -- failover [--trials N] [--write-docs]`: automatic failover with each arbiter, on
// three nodes on this machine (test/support/failover.ts): etcd (Debian's) and a spec 004 quorum pair.
// For each arbiter, measures
// (1) the time from the failure of the primary, under a steady write load, to the first write
//     acknowledged at the sync site, over N trials (N: --trials, else BENCH_TRIALS, else 8; the
//     primary returns and a failback follows each). The failure is the one each arbiter decides:
//     with etcd, SIGKILL of the primary's node; with the quorum pair, the primary's hosts' network
//     cut (its control API, through a fault proxy) with the storage link up — a killed primary
//     node cannot be failed over by a quorum pair (spec 004 E7: the P-VOL's node decides);
// (2) what holding the arbiter costs host writes at the primary: QD1 4 KiB write latency with the
//     same topology applied with failover: manual and with failover: automatic, alternated.
import { promises as fsp } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { NbdClient } from '../src/nbd/client';
import { HttpQuorumClient } from '../src/quorum/client';
import { type ArbiterKind, FailoverCluster, type FailoverTimings, firstAcceptedWrite, quorumVolume } from '../test/support/failover';
import { cli } from '../test/support/node-process';
import { SiteWorkload } from '../test/support/site-workload';
import { tempDir } from '../test/support/tools';
import { waitFor } from '../test/support/wait';
import { loadSummary, machineSummary, median, percentile, table, writeDocsSection } from './lib';

const timings: FailoverTimings = { lease: '5s', renew: '1s', fenceMargin: '1s' };
const defaultTrials = 8;
const latencyRounds = 2;
const writesPerRound = 2000;

interface ArbiterResult {
  kind: ArbiterKind;
  /** Milliseconds from the failure to the first write acknowledged at osaka, per trial. */
  takeoverMs: number[];
  /** QD1 write latencies (µs) at tokyo. */
  manualUs: number[];
  automaticUs: number[];
}

async function topo(args: string[]): Promise<string> {
  const r = await cli(['topology', ...args]);
  if (r.code !== 0) throw new Error(`tricopy topology ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
  return r.stdout;
}

/** QD1 write latencies (µs) of `count` 4 KiB writes at tokyo. */
async function qd1Latencies(fc: FailoverCluster, count: number): Promise<number[]> {
  const client = await NbdClient.connect({ host: '127.0.0.1', port: fc.cluster.node('tokyo').ports.nbdPort, exportName: 'db1' });
  const block = Buffer.alloc(4096, 0x5a);
  const out: number[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const t = performance.now();
      await client.write((i % 2048) * 4096, block);
      out.push((performance.now() - t) * 1000);
    }
  } finally {
    client.destroy();
  }
  return out;
}

/** What each arbiter decides: the failure a trial makes, and how tokyo comes back from it. */
function failureOf(fc: FailoverCluster): { fail: () => Promise<void>; recover: () => Promise<void> } {
  if (fc.arbiterKind === 'etcd') {
    return {
      fail: () => fc.cluster.kill('tokyo'),
      recover: async () => {
        await fc.cluster.restart('tokyo');
      },
    };
  }
  return {
    fail: async () => fc.tokyoApi.cut(),
    recover: async () => {
      fc.tokyoApi.restore();
      // osaka splits the quorum pair back once it hears tokyo (B10): only then can tokyo take it over after the failback.
      await waitFor('osaka to split the quorum pair back', async () => (await quorumLabel(fc, 'osaka')) === 'P-VOL, Suspend(normal)', { timeoutMs: 60_000 });
    },
  };
}

async function quorumLabel(fc: FailoverCluster, s: 'tokyo' | 'osaka'): Promise<string> {
  return (await new HttpQuorumClient(fc.cluster.node(s).apiUrl, undefined, 5000).quorumStatus(quorumVolume)).label;
}

/** tokyo holds the arbiter and takes writes, osaka stands by (with a quorum pair: Suspend(normal), so the next failure can be arbitrated). */
async function settledAtTokyo(fc: FailoverCluster): Promise<void> {
  await waitFor('tokyo to hold the arbiter and take writes', async () => {
    const a = await fc.arbiter('tokyo');
    return a?.state === 'holding' && a.writesAllowed;
  }, { timeoutMs: 60_000 });
  await waitFor('osaka to stand by', async () => (await fc.arbiter('osaka'))?.state === 'standby', { timeoutMs: 60_000 });
  if (fc.arbiterKind === 'quorum-pair') {
    await waitFor('the quorum pair in Suspend(normal) at both ends', async () => (await quorumLabel(fc, 'tokyo')) === 'P-VOL, Suspend(normal)' &&
      (await quorumLabel(fc, 'osaka')) === 'S-VOL, Suspend(normal)', { timeoutMs: 60_000 });
  }
}

async function benchArbiter(kind: ArbiterKind, trials: number): Promise<ArbiterResult> {
  const dir = await tempDir(`bench-failover-${kind}`);
  const fc = await FailoverCluster.start(dir, timings, kind);
  try {
    // (2) the cost of holding the arbiter, first (the layout is fresh).
    const manualUs = [] as number[];
    const automaticUs = [] as number[];
    const doc = JSON.parse(await fsp.readFile(fc.file, 'utf8')) as Record<string, unknown>;
    const files = { manual: `${fc.file}.manual.json`, automatic: fc.file };
    await fsp.writeFile(files.manual, JSON.stringify({ ...doc, failover: 'manual' }));
    for (let round = 0; round < latencyRounds; round++) {
      await topo(['apply', files.manual, '--wait']);
      manualUs.push(...await qd1Latencies(fc, writesPerRound));
      await topo(['apply', files.automatic, '--wait']);
      await settledAtTokyo(fc);
      automaticUs.push(...await qd1Latencies(fc, writesPerRound));
    }
    console.log(`${kind}: QD1 4 KiB writes at tokyo: manual p50 ${median(manualUs).toFixed(0)} µs p99 ${percentile(manualUs, 99).toFixed(0)} µs; automatic p50 ${median(automaticUs).toFixed(0)} µs p99 ${percentile(automaticUs, 99).toFixed(0)} µs`);

    // (1) the failure → first write at osaka.
    const failure = failureOf(fc);
    const takeoverMs: number[] = [];
    for (let trial = 0; trial < trials; trial++) {
      const workload = new SiteWorkload({ volumes: ['db1', 'log1'], blockSize: 4096, blockCount: 256, writesPerSecond: 100, seed: trial + 1 });
      await workload.start(fc.cluster.node('tokyo').ports.nbdPort);
      await workload.progress(100, 30_000);
      await failure.fail();
      const ms = await firstAcceptedWrite(fc, 'osaka', 'db1', 28 * 1024 * 1024, 60_000);
      await workload.stop();
      takeoverMs.push(ms);
      console.log(`${kind} trial ${trial + 1}/${trials}: osaka accepted a write ${(ms / 1000).toFixed(2)} s after the failure`);
      await waitFor('osaka to finish the failover', async () => (await fc.arbiter('osaka'))?.state === 'holding', { timeoutMs: 60_000 });
      await failure.recover();
      await topo(['failback', fc.file, '--to', 'tokyo', '--wait']);
      await settledAtTokyo(fc);
    }
    return { kind, takeoverMs, manualUs, automaticUs };
  } finally {
    await fc.stop();
  }
}

function markdownOf(results: ArbiterResult[], trials: number): string {
  const s = (ms: number): string => `${(ms / 1000).toFixed(2)} s`;
  const us = (v: number): string => `${v.toFixed(0)} µs`;
  const failureText: Record<ArbiterKind, string> = {
    'etcd': 'etcd: SIGKILL of the primary\'s node',
    'quorum-pair': 'quorum pair: the primary\'s hosts\' network cut (storage link up)',
  };
  return [
    '## Automatic failover (`npm run bench -- failover`)',
    '',
    `Machine: ${machineSummary()}. Three nodes (tokyo primary, osaka sync, sapporo async), the arbiter (Debian's etcd, or a spec 004 quorum pair between tokyo and osaka) and the load generator share the machine on loopback; ${loadSummary()}.`,
    `Settings for both arbiters: lease ${timings.lease}, renew ${timings.renew}, fence margin ${timings.fenceMargin}, node --peer-timeout 1s.`,
    '',
    `**The primary's failure → first write acknowledged at the sync site** (${trials} trials per arbiter, \`BENCH_TRIALS\` or \`--trials\`; 200 writes/s of 4 KiB (100 per volume) at tokyo when it failed; tokyo returns and a failback follows each trial). Each arbiter is measured on the failure it decides: a quorum pair cannot fail over a killed primary node (spec 004 E7).`,
    '',
    table(['arbiter and failure', 'trials', 'min', 'median', 'p99', 'max', 'goal p99'], results.map((r) => [
      failureText[r.kind], String(r.takeoverMs.length), s(Math.min(...r.takeoverMs)), s(median(r.takeoverMs)), s(percentile(r.takeoverMs, 99)), s(Math.max(...r.takeoverMs)), '≤ 10 s',
    ])),
    '',
    `With etcd the time is the lease (${timings.lease}, until etcd lets the key go) plus up to three renew intervals (the sync site looks every renew, and waits two for a key left free) plus the failover procedure (takeover and the async leg's delta resync, about a second). With the quorum pair it is the heartbeat silence the sync site waits for (lease + 2 × renew, counted from tokyo's last answer, which came up to one renew before the cut), up to one renew more until its next round, the arbitration (a swap resync decided at tokyo's node, over the storage link) and the same failover procedure. A shorter lease shortens both, at the price of acting on a shorter outage.`,
    '',
    `**What holding the arbiter costs host writes** at the primary: QD1 4 KiB writes to a topology volume, ${(latencyRounds * writesPerRound).toLocaleString('en-US')} per setting in ${latencyRounds} alternated rounds, per arbiter:`,
    '',
    table(['arbiter', 'failover', 'p50', 'p99'], results.flatMap((r) => [
      [r.kind, 'manual', us(median(r.manualUs)), us(percentile(r.manualUs, 99))],
      [r.kind, 'automatic (holding the arbiter)', us(median(r.automaticUs)), us(percentile(r.automaticUs, 99))],
    ])),
    '',
    'The write path asks the gate once when a write starts and once before it is acknowledged: with etcd a comparison with the hold\'s end time, with the quorum pair the local quorum volume\'s attribute; both kept in memory. Renewals and heartbeats run beside the writes, never in their path.',
  ].join('\n');
}

export async function benchFailover(args: string[]): Promise<void> {
  const at = args.indexOf('--trials');
  const trials = at >= 0 ? Number(args[at + 1]) : Number(process.env.BENCH_TRIALS ?? defaultTrials);
  if (!Number.isInteger(trials) || trials < 1) throw new Error(`the number of trials must be a whole number from 1 (got ${at >= 0 ? args[at + 1] : process.env.BENCH_TRIALS})`);
  const results: ArbiterResult[] = [];
  for (const kind of ['etcd', 'quorum-pair'] as const) results.push(await benchArbiter(kind, trials));
  const markdown = markdownOf(results, trials);
  console.log(`\n${markdown}`);
  if (args.includes('--write-docs')) await writeDocsSection('failover', markdown);
}
