// The manager's only periodic traffic to nodes, both optional: the /metrics scrape (one request per
// node per --sample-interval: performance samples, lag figures, and node liveness, spec 000 E5)
// and, for comparison only, the prior art's polling (--poll-interval: one status query per copy per
// cycle to the copy's source node, spec 000 §6.1, which opens and closes alerts the same way
// reports do). Neither asks a node about its copies unless polling is switched on.
import { errorMessage } from '../common/errors';
import type { PerfSample } from '../contracts/manager';
import type { ManagerContext } from './context';
import {
  type VolumeCounters, groupFigures, parseMetrics, samplesBetween, thinnedKeys, unreachableAfterFailures, volumeCounters,
} from './sampler';

/** How often old samples are thinned to the coarser resolutions. */
const thinIntervalMs = 600_000;

export class Scraper {
  private timer: NodeJS.Timeout | undefined;
  private pollTimer: NodeJS.Timeout | undefined;
  private readonly previous = new Map<string, { atMs: number; counters: Map<string, VolumeCounters> }>();
  private readonly failures = new Map<string, number>();
  private lastThinMs = 0;

  constructor(private readonly ctx: ManagerContext) {}

  start(): void {
    const { sampleIntervalMs, pollIntervalMs } = this.ctx.config;
    if (sampleIntervalMs > 0) this.timer = setInterval(() => void this.scrapeAll(), sampleIntervalMs);
    if (pollIntervalMs !== null) this.pollTimer = setInterval(() => void this.pollAll(), pollIntervalMs);
  }

  stop(): void {
    clearInterval(this.timer);
    clearInterval(this.pollTimer);
  }

  async scrapeAll(): Promise<void> {
    if (!this.ctx.leadership.isLeader()) return;
    const nodes = await this.ctx.store.listNodes();
    await Promise.all(nodes.map((n) => this.scrape(n.name).catch((err: unknown) => this.ctx.log.debug({ err: errorMessage(err) }, 'scrape failed'))));
    if (Date.now() - this.lastThinMs > thinIntervalMs) {
      this.lastThinMs = Date.now();
      await this.thin().catch((err: unknown) => this.ctx.log.warn({ err: errorMessage(err) }, 'thinning samples failed'));
    }
  }

  private async scrape(name: string): Promise<void> {
    const { store, writer, alerts, model, metrics } = this.ctx;
    const node = await store.getNode(name);
    if (!node) return;
    let text: string;
    try {
      text = await this.ctx.clientFor(node).metricsText({ timeoutMs: 5000 });
    } catch (err) {
      metrics.scrapes.inc({ result: 'failed' });
      const failures = (this.failures.get(name) ?? 0) + 1;
      this.failures.set(name, failures);
      if (failures === unreachableAfterFailures) {
        await writer.run(async (tx) => {
          tx.ops.push(store.putNode({ ...node, reachable: false, lastError: errorMessage(err) }));
          tx.event({ kind: 'node-unreachable', node: name, subject: name, reason: `${unreachableAfterFailures} scrapes failed: ${errorMessage(err)}` });
          tx.alert(alerts.raise({ key: `node:${name}`, kind: 'node-unreachable', severity: 'critical', subject: name,
            message: `node ${name} (${node.url}, site ${node.site}) does not answer: ${errorMessage(err)}`, copy: null, reportedBy: null, topology: null, report: null }));
        });
      }
      return;
    }
    metrics.scrapes.inc({ result: 'ok' });
    this.failures.set(name, 0);
    const series = parseMetrics(text);
    const counters = volumeCounters(series);
    const groups = groupFigures(series);
    const nowMs = Date.now();
    const before = this.previous.get(name);
    this.previous.set(name, { atMs: nowMs, counters });
    model.updateLag(name, new Map([...groups].map(([k, g]) => [k, { ...g }])));
    const samples: PerfSample[] = before ? samplesBetween(name, new Date(nowMs).toISOString(), (nowMs - before.atMs) / 1000, before.counters, counters, groups) : [];
    await writer.run(async (tx) => {
      tx.ops.push(...samples.map((s) => store.putSample(s)), ...model.stateOps(name));
      if (!node.reachable) {
        tx.ops.push(store.putNode({ ...node, reachable: true, lastError: null, lastSeenAt: new Date(nowMs).toISOString() }));
        tx.event({ kind: 'node-reachable', node: name, subject: name, reason: 'answers again' });
        tx.alert(alerts.clear(`node:${name}`, `${name} answers again`));
      }
    });
  }

  /** Keeps samples at decreasing resolution with age (sampler.ts tiers). */
  private async thin(): Promise<void> {
    const rows = await this.ctx.store.listSamples('');
    const dels = thinnedKeys(rows.map(({ key, sample }) => ({ key, series: `${sample.node}/${sample.subject}`, timeMs: Date.parse(sample.time) })), Date.now());
    if (dels.length > 0) await this.ctx.store.commit(dels.map((key) => ({ type: 'del' as const, key })));
  }

  /** Prior-art polling: a status query per copy to its source node, every cycle, healthy or not. */
  async pollAll(): Promise<void> {
    if (!this.ctx.leadership.isLeader()) return;
    const { store, writer, alerts, model, metrics } = this.ctx;
    for (const node of await store.listNodes()) {
      const state = model.get(node.name);
      const api = this.ctx.clientFor(node);
      for (const copy of state?.pairs.filter((p) => p.role === 'primary') ?? []) {
        metrics.pollQueries.inc();
        const answer = await api.getPair(copy.name).catch(() => undefined);
        const failed = answer === undefined || answer.code === 'PSUE';
        const open = alerts.activeAlerts().some((a) => a.key === `copy:${copy.name}`);
        if (failed === open) continue; // nothing new: the alert is already open, or there is none to close
        await writer.run(async (tx) => {
          if (failed) {
            tx.alert(alerts.raise({ key: `copy:${copy.name}`, kind: 'copy-failed', severity: 'critical', subject: copy.name,
              message: `copy ${copy.name} (${node.name} → ${copy.peer.node}) ${answer ? `is ${answer.code}: ${answer.reason}` : 'did not answer'} (polling)`,
              copy: copy.name, reportedBy: node.name, topology: null, report: null }));
          } else if (answer?.code === 'PAIR') {
            tx.alert(alerts.clear(`copy:${copy.name}`, 'polling finds it in step'));
          }
        });
      }
    }
  }
}
