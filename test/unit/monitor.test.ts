// Spec 000's testable behaviours (§9) on the node monitor: three monitors in one process joined by
// an in-memory network (each message counted), the Cascade example of §6.4, reports and relays,
// deduplication, hop limit, release, unroutable reports, and delivery to a manager that was down.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, beforeEach, describe, it } from 'node:test';
import { systemClock } from '../../src/common/clock';
import { nodeDisk } from '../../src/common/disk';
import { EventJournal } from '../../src/common/events';
import { silentLogger } from '../../src/common/log';
import type { CommandResult, CopyDescriptor, CopyReport, IngestBatch, MonitorCommand, ReportBatch } from '../../src/contracts/monitor';
import type { PairStatus, ShortCode } from '../../src/contracts/pairs';
import { NodeMonitor } from '../../src/monitor/monitor';
import { maxReportHops } from '../../src/monitor/relay';
import type { MonitorTransport } from '../../src/monitor/transport';
import { waitFor } from '../support/wait';

const M = 'M';

/** The network between the monitors and the manager: messages are counted and can fail. */
class FakeNet implements MonitorTransport {
  readonly monitors = new Map<string, NodeMonitor>();
  readonly atManager: CopyReport[] = [];
  readonly nodeMessages: Array<{ to: string; reports: CopyReport[] }> = [];
  managerDown = false;

  async sendCommand(url: string, command: MonitorCommand): Promise<CommandResult> {
    return this.monitors.get(url)!.handleCommand(command);
  }

  async sendReportsToNode(url: string, batch: ReportBatch): Promise<void> {
    this.nodeMessages.push({ to: url, reports: batch.reports });
    await this.monitors.get(url)!.handleReports(batch);
  }

  async sendReportsToManager(urls: string[], _token: string | undefined, batch: ReportBatch): Promise<string> {
    if (this.managerDown) throw new Error('manager down');
    this.atManager.push(...batch.reports);
    return urls[0]!;
  }

  async ingest(urls: string[], _token: string | undefined, _batch: IngestBatch): Promise<string> {
    if (this.managerDown) throw new Error('manager down');
    return urls[0]!;
  }
}

interface TestNode {
  name: string;
  events: EventJournal;
  pairs: Map<string, PairStatus>;
  monitor: NodeMonitor;
}

function pairStatus(name: string, code: ShortCode): PairStatus {
  const state = { PAIR: 'duplex', PSUE: 'suspended', PSUS: 'suspended', COPY: 'initial-copying', SMPL: 'simplex', SSUS: 'suspended', SSWS: 'secondary-writable' }[code];
  return { name, role: 'primary', code, state, mode: 'sync', group: null, reason: `now ${code}`, lag: null, journal: null, peer: { connected: true } } as unknown as PairStatus;
}

const C1: CopyDescriptor = { copyId: 'C1', source: 'ST1', target: 'ST2', volume: 'V', mode: 'sync', topology: 't' };
const C2: CopyDescriptor = { copyId: 'C2', source: 'ST2', target: 'ST3', volume: 'V', mode: 'async', topology: 't' };
const hop = (n: string): { node: string; url: string } => ({ node: n, url: `http://${n}` });
let seq = 0;
const command = (type: 'construct' | 'release', copy: CopyDescriptor, path: string[], commandId = `cmd-${++seq}`): MonitorCommand =>
  ({ commandId, type, copy, issuer: M, path: path.map(hop) });

describe('node monitor (spec 000 §9)', () => {
  let dir: string;
  let net: FakeNet;
  let nodes: Map<string, TestNode>;

  async function open(name: string, existing?: TestNode): Promise<TestNode> {
    const events = existing?.events ?? new EventJournal(silentLogger());
    const pairs = existing?.pairs ?? new Map<string, PairStatus>();
    const monitor = await NodeMonitor.open({
      self: name, dataDir: path.join(dir, name), disk: nodeDisk, clock: systemClock, log: silentLogger(), events, transport: net,
      pair: (p) => pairs.get(p), group: () => undefined,
      snapshot: () => ({ info: {} as never, volumes: [], pairs: [...pairs.values()], groups: [] }), enrich: (event) => ({ event }),
      retry: { initialDelayMs: 20, maxDelayMs: 100 },
    });
    net.monitors.set(`http://${name}`, monitor);
    const node = { name, events, pairs, monitor };
    nodes.set(name, node);
    return node;
  }

  /** The node's copy changes state: its pair-state event is what the monitor hears. */
  function setCode(node: string, copy: string, code: ShortCode): void {
    const n = nodes.get(node)!;
    n.pairs.set(copy, pairStatus(copy, code));
    n.events.emit('pair-state', copy, `now ${code}`, { code });
  }

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-monitor-'));
  });
  after(async () => {
    for (const n of nodes.values()) await n.monitor.close();
    await fsp.rm(dir, { recursive: true, force: true });
  });
  beforeEach(async () => {
    for (const n of nodes?.values() ?? []) await n.monitor.close();
    await fsp.rm(dir, { recursive: true, force: true });
    net = new FakeNet();
    nodes = new Map();
    for (const n of ['ST1', 'ST2', 'ST3']) {
      const node = await open(n);
      await node.monitor.registerManager({ managerId: M, urls: ['http://m'] });
      node.pairs.set(n === 'ST1' ? 'C1' : 'C2', pairStatus(n === 'ST1' ? 'C1' : 'C2', 'PAIR'));
    }
    // §6.4 construction: C1 executed by ST1; C2 sent through ST1 to ST2.
    await nodes.get('ST1')!.monitor.handleCommand(command('construct', C1, ['ST1']));
    await nodes.get('ST1')!.monitor.handleCommand(command('construct', C2, ['ST1', 'ST2']));
  });

  const rows = (n: string): string[] => nodes.get(n)!.monitor.status().table.map((r) => `(${r.receivedFrom.replace(/^manager:/, '')},${r.sentTo},${r.copy.copyId})`).sort();

  it('fills the tables of the Cascade example exactly (§9.1, §9.2, §9.5)', () => {
    assert.deepEqual(rows('ST1'), ['(M,ST1,C1)', '(M,ST2,C2)']);
    assert.deepEqual(rows('ST2'), ['(ST1,ST2,C2)']);
    assert.deepEqual(rows('ST3'), []);
  });

  it('keeps one row when the same construction arrives twice (§9.3)', async () => {
    const again = command('construct', C1, ['ST1'], 'repeat-1');
    assert.equal((await nodes.get('ST1')!.monitor.handleCommand(again)).outcome, 'registered');
    assert.equal((await nodes.get('ST1')!.monitor.handleCommand(again)).outcome, 'already-registered');
    assert.deepEqual(rows('ST1'), ['(M,ST1,C1)', '(M,ST2,C2)']);
  });

  it('relays a middle node\'s report through the primary: one message per hop, one report at the manager (§9.7)', async () => {
    setCode('ST2', 'C2', 'PSUE');
    await waitFor('the report at the manager', () => net.atManager.length === 1);
    const r = net.atManager[0]!;
    assert.equal(r.copy.copyId, 'C2');
    assert.equal(r.status.condition, 'PSUE');
    assert.equal(r.origin, 'ST2');
    assert.equal(r.lastHop, 'ST1');
    assert.equal(r.hops, 1);
    assert.deepEqual(net.nodeMessages.map((m) => m.to), ['http://ST1']);
    assert.equal(nodes.get('ST1')!.monitor.status().reportsRelayed, 1);
  });

  it('reports a primary\'s own copy straight to the manager; the target says nothing (§9.8)', async () => {
    setCode('ST1', 'C1', 'PSUE');
    await waitFor('the report at the manager', () => net.atManager.length === 1);
    assert.equal(net.atManager[0]!.origin, 'ST1');
    assert.equal(net.atManager[0]!.hops, 0);
    assert.equal(net.nodeMessages.length, 0);
  });

  it('sends nothing for a state outside the monitored set, and one report per entry (§9.9, §9.10, §9.6)', async () => {
    setCode('ST1', 'C1', 'PSUS');
    setCode('ST1', 'C1', 'PSUE');
    setCode('ST1', 'C1', 'PSUE');
    await waitFor('the report', () => net.atManager.length >= 1);
    setCode('ST1', 'C1', 'PAIR');
    await waitFor('the recovery', () => net.atManager.length >= 2);
    setCode('ST1', 'C1', 'PSUE');
    await waitFor('the second entry', () => net.atManager.length >= 3);
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(net.atManager.map((r) => `${r.status.change} ${r.status.condition}`), ['entered PSUE', 'recovered PSUE', 'entered PSUE']);
  });

  it('sends nothing for a released copy (§9.4, §9.11)', async () => {
    await nodes.get('ST1')!.monitor.handleCommand(command('release', C2, ['ST1', 'ST2']));
    assert.deepEqual(rows('ST1'), ['(M,ST1,C1)']);
    assert.deepEqual(rows('ST2'), []);
    setCode('ST2', 'C2', 'PSUE');
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(net.nodeMessages.length, 0);
    assert.equal(net.atManager.length, 0);
  });

  it('drops a report it already relayed and one past the hop limit (§9.12)', async () => {
    const report: CopyReport = {
      copy: C2, status: { change: 'entered', condition: 'PSUE', code: 'PSUE', state: 'suspended', reason: 'x', lagSeconds: null },
      origin: 'ST2', lastHop: 'ST2', reportId: 'r-1', detectedAt: new Date().toISOString(), hops: 0,
    };
    const st1 = nodes.get('ST1')!.monitor;
    assert.deepEqual(await st1.handleReports({ reports: [report] }), { accepted: 1, duplicates: 0 });
    assert.deepEqual(await st1.handleReports({ reports: [report] }), { accepted: 0, duplicates: 1 });
    await st1.handleReports({ reports: [{ ...report, reportId: 'r-2', hops: maxReportHops }] });
    await waitFor('the one report at the manager', () => net.atManager.length === 1);
    assert.equal(st1.status().reportsDropped, 1);
  });

  it('reports a copy in step whose link is down (an idle async copy never suspends), from local status alone', async () => {
    const st1 = nodes.get('ST1')!;
    await st1.monitor.handleCommand({ ...command('construct', C1, ['ST1']), monitored: { codes: ['PSUE'], lagSeconds: null, journalPercent: null, linkDownSeconds: 0 } });
    const down = pairStatus('C1', 'PAIR');
    (down.peer as { connected: boolean }).connected = false;
    st1.pairs.set('C1', down); // no event: the once-a-second local check sees it
    await waitFor('the link-down report', () => net.atManager.length === 1, { timeoutMs: 5000 });
    assert.equal(net.atManager[0]!.status.condition, 'link-down');
    assert.equal(net.atManager[0]!.status.code, 'PAIR');
  });

  it('reports a lost link as soon as it has been down for the threshold, not at the next once-a-second check', async () => {
    const st1 = nodes.get('ST1')!;
    await st1.monitor.handleCommand({ ...command('construct', C1, ['ST1']), monitored: { codes: ['PSUE'], lagSeconds: null, journalPercent: null, linkDownSeconds: 0.3 } });
    const down = pairStatus('C1', 'PAIR');
    (down.peer as { connected: boolean }).connected = false;
    st1.pairs.set('C1', down);
    const lostAt = Date.now();
    st1.events.emit('peer-link-down', 'ST2', 'replication link to ST2 lost: test');
    await waitFor('the link-down report', () => net.atManager.length === 1, { timeoutMs: 5000, intervalMs: 5 });
    const after = Date.now() - lostAt;
    assert.equal(net.atManager[0]!.status.condition, 'link-down');
    assert.ok(after >= 300, `reported after ${after} ms, before the threshold`);
    // The once-a-second check alone first sees the link down at a tick and the threshold passed at the next: ≥ 1 s.
    assert.ok(after < 900, `reported after ${after} ms`);
  });

  it('keeps a report that matches no row as a local alert (E1)', async () => {
    const report: CopyReport = {
      copy: { ...C2, copyId: 'C9' }, status: { change: 'entered', condition: 'PSUE', code: 'PSUE', state: 'suspended', reason: 'x', lagSeconds: null },
      origin: 'ST2', lastHop: 'ST2', reportId: 'r-9', detectedAt: new Date().toISOString(), hops: 0,
    };
    await nodes.get('ST1')!.monitor.handleReports({ reports: [report] });
    const alerts = nodes.get('ST1')!.monitor.status().localAlerts;
    assert.equal(alerts.length, 1);
    assert.match(alerts[0]!.reason, /no management table row for copy C9 sent to ST2/);
    assert.equal(net.atManager.length, 0);
  });

  it('keeps reports while the manager is down, across a restart of the node, and delivers them when it is back (E4)', async () => {
    net.managerDown = true;
    setCode('ST1', 'C1', 'PSUE');
    await waitFor('the report queued', () => nodes.get('ST1')!.monitor.status().outboxes.some((o) => o.queued === 1 && o.failures > 0));
    const st1 = nodes.get('ST1')!;
    await st1.monitor.close();
    const reopened = await open('ST1', st1);
    assert.equal(reopened.monitor.status().outboxes.find((o) => o.destination.startsWith('manager:'))?.queued, 1, 'the queue is on disk');
    net.managerDown = false;
    await waitFor('the report at the manager', () => net.atManager.length === 1);
    // The restarted node does not report the same entry again: it remembers what it reported.
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(net.atManager.length, 1);
  });
});
