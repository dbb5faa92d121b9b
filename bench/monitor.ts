// `npm run bench -- monitor`: the manager's monitoring cost and speed (issue 10, spec 000 §8.2).
// Three real nodes (tokyo holds every primary; osaka the sync secondaries, sapporo the async ones,
// whose replication ports sit behind fault proxies) and a real manager with its embedded store hold
// N pairs. It counts the messages between the manager and the nodes while everything is healthy,
// first with the autonomous reports (the default) and then with the manager restarted in the prior
// art's polling mode, in the same run; the manager's CPU and memory in both; and the time from a
// SIGKILL of a secondary node, or a cut of its replication link, to the alert at the manager.
import { promises as fsp } from 'node:fs';
import type { Alert } from '../src/contracts/manager';
import { HttpNodeClient } from '../src/node/api-client';
import { Cluster } from '../test/support/cluster';
import { FaultProxy } from '../test/support/fault-proxy';
import { ManagerProcess } from '../test/support/manager-process';
import { apiRequests } from '../test/support/node-process';
import { fetchMetrics, metricValue, tempDir } from '../test/support/tools';
import { waitFor, within } from '../test/support/wait';
import { cpuSeconds, freePort, loadSummary, machineSummary, percentile, rssBytes, table, writeDocsSection } from './lib';

const MiB = 1024 * 1024;
const secondaries = ['osaka', 'sapporo'] as const;
type Secondary = (typeof secondaries)[number];
/** Pairs are created this many at a time: enough to overlap the round trips, few enough not to swamp two cores. */
const createConcurrency = 8;
/** Both the nodes and the manager log at warn: debug logging of 1,000 pairs would be most of the CPU measured. */
const logArgs = ['--log-level', 'warn'];

interface PairPlan {
  name: string;
  secondary: Secondary;
}

interface Counters {
  /** Control-API requests the three nodes answered, but /metrics: queries from the manager (and relays between nodes). */
  nodeRequests: number;
  /** Copy reports and pushed events the manager received. */
  reports: number;
  events: number;
  pollQueries: number;
  scrapes: number;
  managerCpu: number;
  atMs: number;
}

interface HealthyPhase {
  mode: string;
  seconds: number;
  perMinute: { nodeRequests: number; reports: number; events: number; pollQueries: number; scrapes: number; managerCpu: number };
  managerRss: number;
}

interface Trial {
  kind: 'SIGKILL' | 'cut link';
  target: Secondary;
  copies: number;
  /** Per affected copy: ms from the fault to its alert opening at the manager; missing copies are absent. */
  latenciesMs: number[];
  /** Per affected copy: ms from the fault to the node's monitor detecting it (the report's detectedAt). */
  detectedMs: number[];
  recoveryMs: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function counters(cluster: Cluster, manager: ManagerProcess): Promise<Counters> {
  const perNode = await Promise.all([...cluster.nodes.values()].map((n) => apiRequests(n.apiUrl)));
  const text = await fetchMetrics(manager.url);
  return {
    nodeRequests: perNode.reduce((sum, routes) => sum + Object.values(routes).reduce((a, b) => a + b, 0), 0),
    reports: metricValue(text, 'tricopy_manager_reports_total'),
    events: metricValue(text, 'tricopy_manager_node_events_total'),
    pollQueries: metricValue(text, 'tricopy_manager_poll_queries_total'),
    scrapes: metricValue(text, 'tricopy_manager_scrapes_total'),
    managerCpu: await cpuSeconds(manager.child.pid!),
    atMs: performance.now(),
  };
}

/**
 * Waits until setting up has stopped causing traffic: no node request (but /metrics and, when
 * polling, the poll queries themselves) and no pushed event or report for two seconds in a row.
 */
async function settle(cluster: Cluster, manager: ManagerProcess, polling: boolean): Promise<void> {
  const fingerprint = async (): Promise<string> => {
    const c = await counters(cluster, manager);
    return JSON.stringify([polling ? c.nodeRequests - c.pollQueries : c.nodeRequests, c.reports, c.events]);
  };
  let last = await fingerprint();
  let quietSince = performance.now();
  await waitFor('traffic from setting up to end', async () => {
    await sleep(500);
    const now = await fingerprint();
    if (now !== last) quietSince = performance.now();
    last = now;
    return performance.now() - quietSince >= 2000;
  }, { timeoutMs: 300_000, intervalMs: 0 });
}

async function healthyPhase(cluster: Cluster, manager: ManagerProcess, mode: string, seconds: number): Promise<HealthyPhase> {
  const before = await counters(cluster, manager);
  await sleep(seconds * 1000);
  const after = await counters(cluster, manager);
  const minutes = (after.atMs - before.atMs) / 60_000;
  const rate = (k: keyof Omit<Counters, 'atMs'>): number => (after[k] - before[k]) / minutes;
  const phase: HealthyPhase = {
    mode, seconds,
    perMinute: { nodeRequests: rate('nodeRequests'), reports: rate('reports'), events: rate('events'), pollQueries: rate('pollQueries'), scrapes: rate('scrapes'), managerCpu: rate('managerCpu') },
    managerRss: await rssBytes(manager.child.pid!),
  };
  process.stderr.write(`healthy (${mode}), ${seconds} s: ${JSON.stringify(phase.perMinute)} per minute, manager RSS ${(phase.managerRss / MiB).toFixed(0)} MiB, load ${loadSummary()}\n`);
  return phase;
}

/**
 * Waits for a polling cycle to begin (the query counter moves after a second without moving) and
 * returns how long it took to query every copy; NaN when the cycles never pause (a cycle takes
 * longer than the period).
 */
async function timePollCycle(manager: ManagerProcess, copies: number, pollSeconds: number): Promise<number> {
  const queries = async (): Promise<number> => metricValue(await fetchMetrics(manager.url), 'tricopy_manager_poll_queries_total');
  let value = await queries();
  let changedAt = performance.now();
  const deadline = performance.now() + 3 * pollSeconds * 1000;
  while (performance.now() < deadline) {
    await sleep(50);
    const now = await queries();
    if (now === value) continue;
    const idleMs = performance.now() - changedAt;
    changedAt = performance.now();
    if (idleMs < 1000) {
      value = now;
      continue;
    }
    const start = performance.now();
    await waitFor('a polling cycle to end', async () => (await queries()) >= value + copies, { timeoutMs: 3 * pollSeconds * 1000, intervalMs: 50 });
    return performance.now() - start;
  }
  return Number.NaN;
}

/** Runs `work` for every item, `limit` at a time. */
async function eachLimited<T>(items: T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) await work(items[next++]!);
  }));
}

async function createPairs(cluster: Cluster, proxies: Map<Secondary, FaultProxy>, count: number): Promise<PairPlan[]> {
  // Every other pair is a sync copy to osaka or an async copy to sapporo (one consistency group),
  // the two legs of a multi-target layout; tokyo executes every copy, as a primary site does.
  const plan: PairPlan[] = Array.from({ length: count }, (_, i) => ({ name: `mon-${String(i).padStart(4, '0')}`, secondary: secondaries[i % 2]! }));
  const tokyo = cluster.node('tokyo').api;
  await eachLimited(plan, createConcurrency, async (p) => {
    await tokyo.createVolume({ name: p.name, size: MiB, thin: true });
    await tokyo.createPair({
      name: p.name, volume: p.name, peer: { node: p.secondary, host: '127.0.0.1', replPort: proxies.get(p.secondary)!.port },
      mode: p.secondary === 'osaka' ? 'sync' : 'async', ...(p.secondary === 'sapporo' ? { group: 'mon' } : { fence: 'data' as const }),
    });
  });
  return plan;
}

/** Waits until every planned pair is duplex at tokyo. */
async function allDuplex(cluster: Cluster, plan: PairPlan[], timeoutMs: number): Promise<void> {
  const names = new Set(plan.map((p) => p.name));
  let last = '';
  await waitFor(`all ${plan.length} pairs to be duplex`, async () => {
    const pairs = (await cluster.node('tokyo').api.listPairs()).filter((p) => names.has(p.name));
    const notYet = pairs.filter((p) => p.code !== 'PAIR');
    last = notYet.slice(0, 3).map((p) => `${p.name} ${p.code}`).join(', ');
    return pairs.length === names.size && notYet.length === 0;
  }, { timeoutMs, intervalMs: 250 }).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; still not duplex: ${last}`);
  });
}

/** Copy alerts (not closed) by copy name. */
async function openCopyAlerts(manager: ManagerProcess): Promise<Map<string, Alert>> {
  return new Map((await manager.client.listAlerts()).filter((a) => a.copy !== null).map((a) => [a.copy!, a]));
}

async function runTrial(cluster: Cluster, manager: ManagerProcess, proxies: Map<Secondary, FaultProxy>, plan: PairPlan[],
  kind: Trial['kind'], target: Secondary): Promise<Trial> {
  const affected = plan.filter((p) => p.secondary === target).map((p) => p.name);
  const faultAt = Date.now();
  if (kind === 'SIGKILL') await cluster.kill(target);
  else proxies.get(target)!.cut();
  // The alert's openedAt is the manager's clock when it took the report (same machine, same clock
  // as faultAt), so the latency does not depend on how often this loop asks.
  const seen = new Map<string, number>();
  const detected = new Map<string, number>();
  await waitFor(`alerts for the ${affected.length} copies to ${target}`, async () => {
    const open = await openCopyAlerts(manager);
    for (const copy of affected) {
      const a = open.get(copy);
      if (a && !seen.has(copy) && Date.parse(a.openedAt) >= faultAt) {
        seen.set(copy, Date.parse(a.openedAt) - faultAt);
        if (a.lastReport) detected.set(copy, Date.parse(a.lastReport.detectedAt) - faultAt);
      }
    }
    return seen.size === affected.length;
  }, { timeoutMs: 30_000, intervalMs: 100 }).catch((err: unknown) => {
    process.stderr.write(`trial ${kind} ${target}: ${(err as Error).message} (${seen.size} of ${affected.length} alerted)\n`);
  });
  const recoverAt = performance.now();
  if (kind === 'SIGKILL') await cluster.restart(target);
  else proxies.get(target)!.restore();
  // The next trial starts from a healthy cluster: every copy duplex and its alert closed by the
  // recovery report.
  const restartedMs = performance.now() - recoverAt;
  await allDuplex(cluster, plan, 300_000);
  const duplexMs = performance.now() - recoverAt;
  await waitFor('copy alerts to close', async () => (await openCopyAlerts(manager)).size === 0, { timeoutMs: 120_000, intervalMs: 250 });
  const trial: Trial = { kind, target, copies: affected.length, latenciesMs: [...seen.values()], detectedMs: [...detected.values()], recoveryMs: performance.now() - recoverAt };
  const l = trial.latenciesMs;
  process.stderr.write(`trial ${kind} ${target}: ${l.length}/${trial.copies} alerted, first ${fmtS(Math.min(...l))}, last ${fmtS(Math.max(...l))} ` +
    `(detected by tokyo: first ${fmtS(Math.min(...trial.detectedMs))}, last ${fmtS(Math.max(...trial.detectedMs))}); ` +
    `recovered in ${fmtS(trial.recoveryMs)} (${kind === 'SIGKILL' ? `restarted ${fmtS(restartedMs)}, ` : ''}duplex ${fmtS(duplexMs)})\n`);
  return trial;
}

function fmtS(ms: number): string {
  return Number.isFinite(ms) ? `${(ms / 1000).toFixed(2)} s` : '–';
}

function fmtRate(n: number): string {
  return n < 10 ? n.toFixed(1) : n.toFixed(0);
}

async function stopManager(manager: ManagerProcess | undefined): Promise<void> {
  if (!manager) return;
  await within('the manager to stop', manager.stop(), 15_000).catch(() => manager.kill());
}

export async function benchMonitor(args: string[]): Promise<void> {
  const pairCount = Number(process.env.BENCH_MONITOR_PAIRS ?? 1000);
  const seconds = Number(process.env.BENCH_SECONDS ?? 60);
  const trialCount = Number(process.env.BENCH_MONITOR_TRIALS ?? 20);
  const pollInterval = process.env.BENCH_MONITOR_POLL ?? '10s';
  const pollSeconds = Number(/^(\d+)s$/.exec(pollInterval)?.[1] ?? Number.NaN);
  if (!Number.isFinite(pollSeconds)) throw new Error(`BENCH_MONITOR_POLL must be whole seconds like 10s, not ${pollInterval}`);
  const dir = await tempDir('bench-monitor');
  let cluster: Cluster | undefined;
  let manager: ManagerProcess | undefined;
  const proxies = new Map<Secondary, FaultProxy>();
  const started = performance.now();
  try {
    cluster = await Cluster.create(dir, ['tokyo'], logArgs);
    for (const site of secondaries) {
      // The secondary advertises the proxy's port, so every replication connection to it (first
      // dial and reconnections) goes through the proxy and a cut severs all of them.
      const replPort = await freePort();
      const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: replPort });
      cluster.proxies.push(proxy);
      proxies.set(site, proxy);
      await cluster.start(site, { nbdPort: 0, apiPort: 0, replPort }, ['--advertise-repl-port', String(proxy.port)]);
    }
    const managerSpec = { name: 'manager', dir, args: logArgs };
    manager = await ManagerProcess.start(managerSpec);
    for (const n of cluster.nodes.values()) await manager.client.addNode({ url: n.apiUrl });

    // Pairs are created after registration, as an operator adds volumes to a running system: each
    // pair-created event makes the manager register the copy's command path with tokyo.
    const createStart = performance.now();
    const plan = await createPairs(cluster, proxies, pairCount);
    const createMs = performance.now() - createStart;
    await allDuplex(cluster, plan, 600_000);
    const duplexMs = performance.now() - createStart;
    await waitFor('the manager to register every copy\'s command path', async () =>
      (await new HttpNodeClient(cluster!.node('tokyo').apiUrl).monitorStatus()).table.length >= pairCount, { timeoutMs: 600_000, intervalMs: 500 });
    const registeredMs = performance.now() - createStart;
    process.stderr.write(`${pairCount} pairs: created in ${fmtS(createMs)}, duplex after ${fmtS(duplexMs)}, command paths registered after ${fmtS(registeredMs)}\n`);

    // 1. Healthy, autonomous reports (the default), then the prior art's polling in the same run.
    await settle(cluster, manager, false);
    const autonomous = await healthyPhase(cluster, manager, 'autonomous reports (default)', seconds);
    await stopManager(manager);
    manager = await ManagerProcess.start({ ...managerSpec, port: manager.port, args: [...logArgs, '--poll-interval', pollInterval] });
    await settle(cluster, manager, true);
    // Start measuring half a period after a cycle began: a window of whole periods then holds
    // exactly that many cycles, provided a cycle takes less than half a period (printed below).
    const cycleMs = await timePollCycle(manager, pairCount, pollSeconds);
    await sleep(Math.max(0, (pollSeconds * 1000) / 2 - cycleMs));
    const polling = await healthyPhase(cluster, manager, `polling every ${pollInterval}`, seconds);
    await stopManager(manager);
    manager = await ManagerProcess.start({ ...managerSpec, port: manager.port });
    await settle(cluster, manager, false);

    // 2. Detection latency: alternately SIGKILL a secondary and cut its link, osaka (sync) and
    // sapporo (async) in turn, with the default (autonomous) manager.
    const trials: Trial[] = [];
    for (let i = 0; i < trialCount; i++) {
      const kind: Trial['kind'] = i % 2 === 0 ? 'SIGKILL' : 'cut link';
      const target = secondaries[Math.floor(i / 2) % 2]!;
      trials.push(await runTrial(cluster, manager, proxies, plan, kind, target));
    }
    const totalMs = performance.now() - started;

    const markdown = report({ pairCount, seconds, trialCount, pollInterval, pollSeconds, cycleMs, createMs, duplexMs, registeredMs, autonomous, polling, trials, totalMs });
    console.log(markdown);
    if (args.includes('--write-docs')) await writeDocsSection('monitor', markdown);
  } finally {
    // Every process this bench started goes, whatever failed: the proxies and nodes, then the manager.
    await cluster?.stopAll();
    await stopManager(manager);
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

interface Results {
  pairCount: number;
  seconds: number;
  trialCount: number;
  pollInterval: string;
  pollSeconds: number;
  cycleMs: number;
  createMs: number;
  duplexMs: number;
  registeredMs: number;
  autonomous: HealthyPhase;
  polling: HealthyPhase;
  trials: Trial[];
  totalMs: number;
}

function report(r: Results): string {
  const copies = r.pairCount;
  // Spec 000 §8.2: a query and its answer per copy per cycle.
  const expectedPolling = 2 * copies * (60 / r.pollSeconds);
  const messages = (p: HealthyPhase): number => 2 * p.perMinute.nodeRequests + p.perMinute.reports + p.perMinute.events;
  const healthyRow = (p: HealthyPhase, expected: number): string[] => [p.mode, fmtRate(p.perMinute.nodeRequests), fmtRate(p.perMinute.reports + p.perMinute.events),
    fmtRate(messages(p)), fmtRate(expected), fmtRate(p.perMinute.scrapes), p.perMinute.managerCpu.toFixed(2), (p.managerRss / MiB).toFixed(0)];
  const ratio = messages(r.autonomous) > 0 ? `${(messages(r.polling) / messages(r.autonomous)).toFixed(0)} : 1` : `${fmtRate(messages(r.polling))} : 0`;

  const all: [string, Trial[]] = ['all trials', r.trials];
  const groups: Array<[string, Trial[]]> = [
    all,
    ...(['SIGKILL', 'cut link'] as const).flatMap((kind) => secondaries.map((t): [string, Trial[]] => [`${kind} ${t} (${t === 'osaka' ? 'sync' : 'async'})`,
      r.trials.filter((x) => x.kind === kind && x.target === t)])),
  ].filter(([, ts]) => ts.length > 0);
  const latencyRow = ([label, ts]: [string, Trial[]]): string[] => {
    // Per trial, the time until the last affected copy's alert is open (a missing alert counts as never).
    const worst = ts.map((t) => (t.latenciesMs.length === t.copies ? Math.max(...t.latenciesMs) : Number.POSITIVE_INFINITY));
    const first = ts.map((t) => Math.min(...t.latenciesMs));
    const all = ts.flatMap((t) => t.latenciesMs);
    const detected = ts.flatMap((t) => t.detectedMs);
    const missing = ts.reduce((n, t) => n + t.copies - t.latenciesMs.length, 0);
    return [label, String(ts.length), fmtS(percentile(first, 50)), fmtS(percentile(worst, 50)), fmtS(percentile(worst, 99)), fmtS(Math.max(...worst)),
      `${fmtS(percentile(all, 50))} / ${fmtS(percentile(all, 99))}`, `${fmtS(percentile(detected, 50))} / ${fmtS(percentile(detected, 99))}`, String(missing), fmtS(percentile(ts.map((t) => t.recoveryMs), 50))];
  };

  return [
    `Command: \`npm run bench -- monitor\` (BENCH_MONITOR_PAIRS=${r.pairCount}, BENCH_SECONDS=${r.seconds}, BENCH_MONITOR_TRIALS=${r.trialCount}, ` +
      `BENCH_MONITOR_POLL=${r.pollInterval}), run ${new Date().toISOString().slice(0, 10)}; the whole run took ${(r.totalMs / 60_000).toFixed(1)} min.`,
    `Machine: ${machineSummary()}. Three nodes, the manager (embedded store) and the bench share the machine on loopback; load average (1/5/15 min) at the end: ${loadSummary()}.`,
    '',
    `${r.pairCount} pairs of 1 MiB thin volumes, all with their primary at tokyo: half sync to osaka (fence data), half async to sapporo (one consistency group), ` +
      `created through tokyo's API ${createConcurrency} at a time after the nodes were registered with the manager: created in ${fmtS(r.createMs)}, all duplex after ${fmtS(r.duplexMs)}, ` +
      `every command path registered at tokyo by the manager after ${fmtS(r.registeredMs)}.`,
    '',
    `Healthy cluster, ${r.seconds} s each, the same pairs and nodes; the manager restarted between the modes (same store and port). ` +
      '"Queries" are the control-API requests the three nodes answered (`tricopy_api_requests_total`, every route but `/metrics`); "pushed" are the copy reports and events ' +
      'the manager received (`tricopy_manager_reports_total`, `tricopy_manager_node_events_total`); messages count a query and its answer as two (spec 000 §8.2). ' +
      'The `/metrics` scrapes (one per node per 10 s, for samples and node liveness; the same in both modes) are shown apart. Manager CPU is user + system from /proc/PID/stat.',
    '',
    table(['mode', 'queries / min', 'pushed / min', 'messages / min', 'spec 000 §8.2 expects', '/metrics scrapes / min', 'manager CPU s / min', 'manager RSS MiB'], [
      healthyRow(r.autonomous, 0),
      healthyRow(r.polling, expectedPolling),
    ]),
    '',
    `Polling : autonomous messages per minute = ${ratio}. A polling cycle (one query per copy, one after another) took ${fmtS(r.cycleMs)}; ` +
      `the window held ${((r.polling.perMinute.pollQueries * r.seconds) / 60 / copies).toFixed(2)} cycles.`,
    '',
    `Detection: ${r.trials.length} trials, alternately a SIGKILL of a secondary node (then restarted) and a cut of its replication link (the fault proxy in front of it resets ` +
      'every connection and refuses new ones; then restored), osaka and sapporo in turn, each affecting every pair to that node. Latency is from the fault to the alert being ' +
      'opened at the manager (its `openedAt`); "all copies" is when the last affected copy\'s alert was open; "detected by tokyo" is the report\'s `detectedAt` ' +
      '(tokyo\'s monitor judged the copy failed and queued the report). After each trial the bench waits until every pair is duplex and every alert closed.',
    '',
    table(['faults', 'trials', 'first alert p50', 'all copies p50', 'all copies p99', 'all copies max', 'per copy p50 / p99', 'detected by tokyo p50 / p99', 'alerts missing', 'recovery p50'], groups.map(latencyRow)),
  ].join('\n');
}
