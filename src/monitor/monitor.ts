// The node's monitor (spec 000 "Mgr" and the relay of Fig. 3): receives construct and release
// commands and relays them down their path while filling the management table; watches the copies
// this node executed and sends one report per entry into a monitored condition back along the
// command path; relays neighbours' reports towards the manager; keeps unroutable reports as local
// alerts. It learns of copy changes from the node's event journal and reads only this node's own
// pair and group status: it never asks another node anything, and nothing is sent while copies are
// healthy. Reports wait in durable per-destination queues while the next hop is down.
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import type { Clock, TimerHandle } from '../common/clock';
import type { Disk } from '../common/disk';
import { TricopyError, errorMessage } from '../common/errors';
import type { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import {
  type CommandResult, type CopyReport, type LocalAlert, type ManagerBinding, type ManagementTableEntry, type MonitorCommand, type MonitorStatus,
  type MonitoredSet, type NeighbourId, type NodeSnapshot, type PushedEvent, type RegisterManagerRequest, type ReportAck, type ReportBatch,
  defaultLinkDownSeconds, defaultMonitoredCodes, managerNeighbourPrefix,
} from '../contracts/monitor';
import type { NodeEvent } from '../contracts/node';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import { conditionOf, watchStep } from './copy-watch';
import { Outbox, type RetryPolicy, defaultRetryPolicy } from './outbox';
import { type Destination, ReportRouter } from './relay';
import { ManagementTable } from './table';
import type { MonitorTransport } from './transport';
import { ManagerUplink } from './uplink';

/** Reports queued per destination while it is down; beyond it the oldest recovery reports go first. */
export const reportQueueCapacity = 1000;
export const localAlertCapacity = 100;
/**
 * How often the copies this node executed are judged from local status (link, lag, journal): no
 * message is sent unless a condition is entered or left.
 */
export const localCheckIntervalMs = 1000;

export interface MonitorDeps {
  self: string;
  dataDir: string;
  disk: Disk;
  clock: Clock;
  log: Logger;
  events: EventJournal;
  transport: MonitorTransport;
  pair: (name: string) => PairStatus | undefined;
  group: (name: string) => GroupStatus | undefined;
  snapshot: () => Omit<NodeSnapshot, 'table'>;
  enrich: (event: NodeEvent) => PushedEvent;
  retry?: RetryPolicy;
}

export class NodeMonitor {
  private table!: ManagementTable;
  private router!: ReportRouter;
  private uplink!: ManagerUplink;
  private readonly outboxes = new Map<NeighbourId, Outbox<CopyReport>>();
  private readonly localAlerts: LocalAlert[] = [];
  private nextAlertId = 1;
  private readonly counts = { reportsSent: 0, reportsRelayed: 0, reportsDropped: 0 };
  /** One evaluation per copy at a time, so a burst of events yields one report. */
  private readonly evaluating = new Map<string, Promise<void>>();
  private unsubscribe: () => void = () => undefined;
  private thresholdTimer: TimerHandle | undefined;
  /** One-shot checks at the moment a lost link passes the link-down threshold. */
  private readonly linkTimers = new Set<TimerHandle>();
  /** Since when each copy's link to its target has been seen down (this process's memory only). */
  private readonly linkDownSince = new Map<string, number>();
  private closed = false;

  private constructor(private readonly deps: MonitorDeps) {}

  static async open(deps: MonitorDeps): Promise<NodeMonitor> {
    const m = new NodeMonitor(deps);
    const dir = path.join(deps.dataDir, 'monitor');
    m.table = await ManagementTable.open(dir, deps.disk);
    m.router = new ReportRouter(deps.self, m.table);
    m.uplink = await ManagerUplink.open({
      self: deps.self, dir, disk: deps.disk, clock: deps.clock, log: deps.log, events: deps.events, transport: deps.transport,
      retry: deps.retry ?? defaultRetryPolicy, incarnation: `${deps.self}-${randomUUID()}`,
      snapshot: () => ({ ...deps.snapshot(), table: m.table.all() }), enrich: deps.enrich,
    });
    for (const name of await deps.disk.list(path.join(dir, 'outbox'))) {
      if (name.endsWith('.json') && !name.startsWith('.')) await m.outboxFor(decodeURIComponent(name.slice(0, -5)), null);
    }
    m.unsubscribe = deps.events.subscribe((event) => {
      if (event.kind.startsWith('pair-') || event.kind === 'split-brain') m.evaluate(event.subject);
      else if (event.kind === 'peer-link-down') m.linkLost(event.subject);
    });
    // After a restart: copies whose condition changed while the node was down report now.
    for (const copyId of m.table.executed(deps.self).keys()) m.evaluate(copyId);
    m.scheduleThresholdCheck();
    return m;
  }

  registerManager(request: RegisterManagerRequest): Promise<ManagerBinding> {
    return this.uplink.register(request);
  }

  manager(): ManagerBinding | null {
    return this.uplink.current();
  }

  /** §6.2: record the command, then execute it here (last hop) or relay it to the next node. */
  async handleCommand(command: MonitorCommand): Promise<CommandResult> {
    const at = command.path.findIndex((h) => h.node === this.deps.self);
    if (at < 0) {
      throw new TricopyError('invalid-argument', `node ${this.deps.self} is not on the path of command ${command.commandId} (${command.path.map((h) => h.node).join(' → ')})`);
    }
    const last = at === command.path.length - 1;
    const receivedFrom = at === 0 ? `${managerNeighbourPrefix}${command.issuer}` : command.path[at - 1]!.node;
    const executor = command.path[command.path.length - 1]!.node;
    const next = last ? null : command.path[at + 1]!;
    if (command.type === 'construct') {
      const row: ManagementTableEntry = {
        receivedFrom, receivedFromUrl: at === 0 ? null : command.path[at - 1]!.url, sentTo: next === null ? this.deps.self : next.node,
        copy: command.copy, commandId: command.commandId, registeredAt: new Date(this.deps.clock.now()).toISOString(),
        monitored: command.monitored ?? defaultMonitoredSet(),
      };
      const outcome = await this.table.register(row);
      let relayed: CommandResult | null = null;
      if (next !== null) {
        try {
          relayed = await this.deps.transport.sendCommand(next.url, command);
        } catch (err) {
          // The path is not whole: leave no row that would route reports into a dead end.
          if (outcome === 'registered') await this.table.release(command.copy.copyId, receivedFrom);
          throw new TricopyError('unavailable', `cannot relay command ${command.commandId} to ${next.node} (${next.url}): ${errorMessage(err)}`,
            `start ${next.node} (or check the link to it) and repeat the command`);
        }
      }
      if (outcome === 'registered') {
        this.deps.events.emit('monitor-row-registered', command.copy.copyId, `construct ${command.commandId} from ${receivedFrom}`,
          { receivedFrom, sentTo: row.sentTo, commandId: command.commandId });
      }
      if (last) this.evaluate(command.copy.copyId);
      return { commandId: command.commandId, outcome, executor, relayed };
    }
    const removed = await this.table.release(command.copy.copyId, receivedFrom);
    if (removed.length > 0) {
      this.deps.events.emit('monitor-row-removed', command.copy.copyId, `release ${command.commandId} from ${receivedFrom}`, { receivedFrom });
    } else {
      this.deps.log.info({ copy: command.copy.copyId, from: receivedFrom }, 'release matched no management table row; relayed anyway');
    }
    // §5.2: a release is relayed even when this node had no row (the rest of the path may have one).
    const relayed = next === null ? null : await this.deps.transport.sendCommand(next.url, command);
    return { commandId: command.commandId, outcome: removed.length > 0 ? 'removed' : 'no-row', executor, relayed };
  }

  /** §6.3 steps 6–8: reports from a neighbour, each relayed on by the rows that name it. */
  async handleReports(batch: ReportBatch): Promise<ReportAck> {
    let accepted = 0;
    let duplicates = 0;
    for (const report of batch.reports) {
      const decision = this.router.relay(report, report.lastHop);
      if (decision.kind === 'drop') {
        if (decision.why === 'duplicate') duplicates++;
        else this.dropped(report, 'hop limit exceeded');
        continue;
      }
      accepted++;
      if (decision.kind === 'unroutable') {
        this.raiseLocalAlert(report, decision.why);
        continue;
      }
      this.counts.reportsRelayed++;
      this.deps.events.emit('copy-report-relayed', report.copy.copyId, `report ${report.reportId} from ${report.lastHop} relayed to ${decision.destinations.map((d) => d.neighbour).join(', ')}`,
        { origin: report.origin, hops: decision.report.hops, reportId: report.reportId });
      await this.sendTo(decision.destinations, decision.report);
    }
    return { accepted, duplicates };
  }

  status(): MonitorStatus {
    const copies = [...this.table.executed(this.deps.self).keys()].map((copyId) => {
      const condition = this.table.watchState(copyId)?.condition ?? null;
      return { copyId, inMonitoredState: condition !== null, condition };
    });
    return {
      node: this.deps.self, manager: this.uplink.current(), table: this.table.all(), copies, localAlerts: [...this.localAlerts],
      outboxes: [this.uplink.status(), ...[...this.outboxes.values()].map((o) => o.status())], ...this.counts,
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.unsubscribe();
    this.deps.clock.clearTimer(this.thresholdTimer);
    for (const t of this.linkTimers) this.deps.clock.clearTimer(t);
    await Promise.all([...this.evaluating.values()]);
    await this.uplink.close();
    for (const o of this.outboxes.values()) await o.close();
  }

  /** Re-judges one copy this node executed; sends a report when its condition entered or left the monitored set. */
  private evaluate(copyId: string): void {
    const previous = this.evaluating.get(copyId) ?? Promise.resolve();
    const run = previous.then(() => this.evaluateNow(copyId)).catch((err: unknown) => {
      this.deps.log.error({ err: errorMessage(err), copy: copyId }, 'copy monitor failed');
    });
    this.evaluating.set(copyId, run);
    void run.then(() => {
      if (this.evaluating.get(copyId) === run) this.evaluating.delete(copyId);
    });
  }

  private async evaluateNow(copyId: string): Promise<void> {
    if (this.closed) return;
    const executed = this.table.executed(this.deps.self).get(copyId);
    if (!executed) return;
    const pair = this.deps.pair(copyId);
    const group = pair?.group ? this.deps.group(pair.group) : undefined;
    const now = this.deps.clock.now();
    if (pair && !pair.peer.connected) {
      if (!this.linkDownSince.has(copyId)) this.linkDownSince.set(copyId, now);
    } else {
      this.linkDownSince.delete(copyId);
    }
    const condition = conditionOf(pair, group, executed.monitored, now - (this.linkDownSince.get(copyId) ?? now));
    const previous = this.table.watchState(copyId)?.condition ?? null;
    const step = watchStep(previous, condition);
    if (step.report === null) return;
    await this.table.setWatchState(copyId, { condition, since: new Date(this.deps.clock.now()).toISOString() });
    const report: CopyReport = {
      copy: executed.row.copy,
      status: {
        change: step.report.change, condition: step.report.condition, code: pair?.code ?? null, state: pair?.state ?? null,
        reason: pair?.reason ?? 'the pair no longer exists on this node', lagSeconds: group?.lag.seconds ?? pair?.lag?.seconds ?? null,
      },
      origin: this.deps.self, lastHop: this.deps.self, reportId: `${this.deps.self}-${randomUUID()}`,
      detectedAt: new Date(this.deps.clock.now()).toISOString(), hops: 0,
    };
    const decision = this.router.originate(report);
    if (decision.kind !== 'send') {
      if (decision.kind === 'unroutable') this.raiseLocalAlert(report, decision.why);
      return;
    }
    this.counts.reportsSent++;
    this.deps.events.emit('copy-report-sent', copyId, `${step.report.change} ${step.report.condition}: ${report.status.reason}`,
      { reportId: report.reportId, to: decision.destinations.map((d) => d.neighbour), change: step.report.change, condition: step.report.condition });
    await this.sendTo(decision.destinations, decision.report);
  }

  private async sendTo(destinations: Destination[], report: CopyReport): Promise<void> {
    for (const d of destinations) {
      const outbox = await this.outboxFor(d.neighbour, d.url);
      await outbox.push([report]);
    }
  }

  private async outboxFor(neighbour: NeighbourId, url: string | null): Promise<Outbox<CopyReport>> {
    const existing = this.outboxes.get(neighbour);
    if (existing) return existing;
    const toManager = neighbour.startsWith(managerNeighbourPrefix);
    // The neighbour's address is taken from the newest row naming it (it may move between restarts).
    const addressOf = (): string | null => url ?? this.table.all().find((r) => r.receivedFrom === neighbour)?.receivedFromUrl ?? null;
    const outbox = await Outbox.open<CopyReport>({
      destination: neighbour, capacity: reportQueueCapacity, maxBatch: 100,
      file: path.join(this.deps.dataDir, 'monitor', 'outbox', `${encodeURIComponent(neighbour)}.json`),
      disk: this.deps.disk, clock: this.deps.clock, retry: this.deps.retry ?? defaultRetryPolicy,
      priority: (r) => (r.status.change === 'recovered' ? 0 : 1),
      onDrop: (r) => this.dropped(r, `queue to ${neighbour} full (${reportQueueCapacity} reports)`),
      deliver: async (reports) => {
        if (reports.length === 0) return;
        if (toManager) {
          const binding = this.uplink.current();
          if (binding === null) throw new TricopyError('unavailable', 'no manager registered on this node');
          await this.deps.transport.sendReportsToManager(binding.urls, this.uplink.token(), { reports });
          this.uplink.kick(); // the manager answers again: push the events it missed now
          return;
        }
        const target = addressOf();
        if (target === null) throw new TricopyError('unavailable', `no address known for neighbour ${neighbour}`);
        await this.deps.transport.sendReportsToNode(target, { reports });
      },
    });
    await this.deps.disk.mkdirp(path.join(this.deps.dataDir, 'monitor', 'outbox'));
    this.outboxes.set(neighbour, outbox);
    return outbox;
  }

  private raiseLocalAlert(report: CopyReport, reason: string): void {
    const alert: LocalAlert = { id: this.nextAlertId++, time: new Date(this.deps.clock.now()).toISOString(), reason, report };
    this.localAlerts.push(alert);
    if (this.localAlerts.length > localAlertCapacity) this.localAlerts.shift();
    this.deps.events.emit('monitor-local-alert', report.copy.copyId, `report ${report.reportId} from ${report.origin} not routable: ${reason}`,
      { reportId: report.reportId, origin: report.origin, condition: report.status.condition, change: report.status.change });
  }

  private dropped(report: CopyReport, why: string): void {
    this.counts.reportsDropped++;
    this.deps.events.emit('monitor-report-dropped', report.copy.copyId, `report ${report.reportId} from ${report.origin} dropped: ${why}`);
  }

  /**
   * The replication link to `peer` was lost. Waiting for the once-a-second check would add up to a
   * second before the loss is first seen and up to another before the threshold is found passed
   * (an idle async copy's only report, spec 000 E5): the copies to that peer are timed from now and
   * judged again just after their link-down threshold.
   */
  private linkLost(peer: string): void {
    const now = this.deps.clock.now();
    const byThreshold = new Map<number, string[]>();
    for (const [copyId, { row, monitored }] of this.table.executed(this.deps.self)) {
      if (row.copy.target !== peer || monitored.linkDownSeconds === null) continue;
      if (!this.linkDownSince.has(copyId)) this.linkDownSince.set(copyId, now);
      byThreshold.set(monitored.linkDownSeconds, [...(byThreshold.get(monitored.linkDownSeconds) ?? []), copyId]);
    }
    for (const [seconds, copies] of byThreshold) {
      // Just past the threshold: the condition is "down longer than", and timers may fire a hair early.
      const timer = this.deps.clock.setTimer(seconds * 1000 + 20, () => {
        this.linkTimers.delete(timer);
        if (!this.closed) for (const copyId of copies) this.evaluate(copyId);
      });
      timer.unref();
      this.linkTimers.add(timer);
    }
  }

  /** The copies this node executed are judged every second from local status alone (link, lag, journal). */
  private scheduleThresholdCheck(): void {
    this.thresholdTimer = this.deps.clock.setTimer(localCheckIntervalMs, () => {
      if (this.closed) return;
      for (const [copyId, { monitored }] of this.table.executed(this.deps.self)) {
        if (monitored.lagSeconds !== null || monitored.journalPercent !== null || monitored.linkDownSeconds !== null) this.evaluate(copyId);
      }
      this.scheduleThresholdCheck();
    });
    this.thresholdTimer.unref();
  }
}

export function defaultMonitoredSet(): MonitoredSet {
  return { codes: [...defaultMonitoredCodes], lagSeconds: null, journalPercent: null, linkDownSeconds: defaultLinkDownSeconds };
}
