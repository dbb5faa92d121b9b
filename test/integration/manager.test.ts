// The manager with its embedded store, against three real nodes with a multi-target topology:
// registration through the CLI, zero polling while healthy (no node's request counters move but
// /metrics, no reports), a cut link and a killed site reported within seconds by the node that
// sees it, a failure while the manager is down delivered when it returns (history intact), alerts
// acknowledged and cleared, and the new CLI commands with --json and their errors.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Alert, ManagerEvent, NodeRecord, StatusDocument } from '../../src/contracts/manager';
import type { MonitorStatus } from '../../src/contracts/monitor';
import { HttpNodeClient } from '../../src/node/api-client';
import { Cluster } from '../support/cluster';
import { FaultProxy } from '../support/fault-proxy';
import { ManagerProcess, killAllManagers } from '../support/manager-process';
import { freePort } from '../support/tools';
import { apiRequests, cli, cliPath, killAllNodes } from '../support/node-process';
import { topo } from '../support/topology';
import { waitFor } from '../support/wait';

/** How long the healthy cluster is watched for traffic (the drill uses 60 s: TRICOPY_IDLE_SECONDS=60). */
const idleSeconds = Number(process.env.TRICOPY_IDLE_SECONDS ?? '8');

async function monitorOf(url: string): Promise<MonitorStatus> {
  return new HttpNodeClient(url).monitorStatus();
}

describe('manager (embedded store): autonomous reports, zero polling, history', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: Cluster;
  let manager: ManagerProcess;
  let file: string;
  /** Every replication connection to osaka (the sync site) goes through it. */
  let osakaProxy: FaultProxy;
  const m = (args: string[]): ReturnType<typeof cli> => cli(['--manager', manager.url, ...args]);
  const json = async <T>(args: string[]): Promise<T> => {
    const r = await m([...args, '--json']);
    assert.equal(r.code, 0, `tricopy manager ${args.join(' ')}: ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  };

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-manager-'));
    cluster = await Cluster.create(dir, ['tokyo', 'sapporo']);
    const osakaRepl = await freePort();
    osakaProxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: osakaRepl });
    cluster.proxies.push(osakaProxy);
    await cluster.start('osaka', { nbdPort: 0, apiPort: 0, replPort: osakaRepl }, ['--advertise-repl-port', String(osakaProxy.port)]);
    manager = await ManagerProcess.start({ name: 'm1', dir, args: ['--sample-interval', '1s'] });
    file = await cluster.topologyFile({ name: 'erp', volumes: { db1: '32MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    await topo(['apply', file, '--wait']);
  });

  after(async () => {
    await cluster?.stopAll();
    await manager?.stop();
    killAllManagers();
    killAllNodes();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('registers nodes and a topology; node list, topology list and status answer in --json', async () => {
    for (const name of ['tokyo', 'osaka', 'sapporo']) {
      const n = await json<NodeRecord>(['manager', 'node', 'add', cluster.node(name).apiUrl]);
      assert.equal(n.name, name);
      assert.equal(n.site, name);
    }
    const t = await json<{ name: string; layout: string }>(['manager', 'topology', 'add', file]);
    assert.deepEqual([t.name, t.layout], ['erp', 'multi-target']);
    const { nodes } = await json<{ nodes: NodeRecord[] }>(['manager', 'node', 'list']);
    assert.deepEqual(nodes.map((n) => n.name).sort(), ['osaka', 'sapporo', 'tokyo']);
    assert.equal((await json<{ topologies: unknown[] }>(['manager', 'topology', 'list'])).topologies.length, 1);
    // The primary executes both copies (multi-target): two rows from the manager, none elsewhere.
    await waitFor('the primary\'s management table', async () => (await monitorOf(cluster.node('tokyo').apiUrl)).table.length === 2);
    assert.equal((await monitorOf(cluster.node('osaka').apiUrl)).table.length, 0);
    await waitFor('a healthy status from pushed state', async () => {
      const s = await manager.client.status();
      return s.topologies[0]?.healthy && s.pairs.length === 4;
    });
    const status = await json<StatusDocument>(['manager', 'status']);
    assert.equal(status.topologies[0]!.activeSite, 'tokyo');
    assert.equal(status.dataAtRisk.find((d) => d.site === 'osaka')?.bytes, 0);
    const human = await m(['manager', 'status']);
    assert.match(human.stdout, /topology erp \(multi-target\): application at tokyo — healthy/);
  });

  it(`sends nothing while healthy: over ${idleSeconds} s no node request counter moves but /metrics, no reports, no events`, async () => {
    const urls = ['tokyo', 'osaka', 'sapporo'].map((n) => cluster.node(n).apiUrl);
    // Let the registration's own traffic end first.
    const last = async (): Promise<number> => (await manager.client.listEvents({ limit: 10_000 })).at(-1)?.seq ?? 0;
    let quiet = await last();
    await waitFor('registration traffic to end', async () => {
      await new Promise((r) => setTimeout(r, 1000));
      const now = await last();
      const settled = now === quiet;
      quiet = now;
      return settled;
    }, { timeoutMs: 20_000 });
    const before = await Promise.all(urls.map(apiRequests));
    const seqBefore = await last();
    await new Promise((r) => setTimeout(r, idleSeconds * 1000));
    const afterwards = await Promise.all(urls.map(apiRequests));
    assert.deepEqual(afterwards, before, 'no node answered any request but /metrics');
    const events = await manager.client.listEvents({ afterSeq: seqBefore });
    assert.deepEqual(events.map((e) => e.kind), [], 'no report, no pushed event');
    assert.equal(manager.client.address, manager.url);
  });

  it('learns of a cut link between the primary and the sync site within seconds, from the primary', async () => {
    const cutAt = Date.now();
    osakaProxy.cut();
    const alert = await manager.waitAlert('an alert for the cut copy', (a) => a.copy === 'erp.db1.osaka.tokyo' && a.kind === 'copy-failed');
    const seconds = (Date.now() - cutAt) / 1000;
    assert.ok(seconds < 10, `reported after ${seconds} s`);
    assert.equal(alert.reportedBy, 'tokyo');
    assert.equal(alert.lastReport?.origin, 'tokyo');
    assert.equal(alert.lastReport?.hops, 0, 'the primary executes the copy: one hop to the manager');
    osakaProxy.restore();
    await waitFor('the alert closed once the copy is in step', async () =>
      (await manager.client.listAlerts({ all: true })).find((a) => a.id === alert.id)?.state === 'closed', { timeoutMs: 30_000 });
  });

  it('SIGKILL of the sync site: an alert names the copy and the reporting node; acknowledged from the CLI, closed when it returns', async () => {
    const follow = spawn(process.execPath, [cliPath, '--manager', manager.url, 'manager', 'events', '--follow', '--since', '1s', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let followed = '';
    follow.stdout.on('data', (d: Buffer) => (followed += d.toString()));
    try {
      await cluster.kill('osaka');
      const alert = await manager.waitAlert('an alert for the sync copy', (a) => a.copy === 'erp.db1.osaka.tokyo');
      assert.equal(alert.reportedBy, 'tokyo');
      assert.match(alert.message, /erp\.db1\.osaka\.tokyo .*PSUE.*reported by tokyo/);
      await manager.waitAlert('the node-unreachable alert (per node, from its /metrics)', (a) => a.kind === 'node-unreachable' && a.subject === 'osaka');
      const acked = await json<Alert>(['manager', 'alert', 'ack', alert.id, '--by', 'test']);
      assert.equal(acked.state, 'acknowledged');
      assert.equal(acked.acknowledgedBy, 'test');
      await waitFor('the stream to show the failure and the acknowledgement', () =>
        followed.includes('"alert-opened"') && followed.includes('"alert-acknowledged"'), { timeoutMs: 10_000 });
      await cluster.restart('osaka');
      await waitFor('the alert closed', async () => (await json<{ alerts: Alert[] }>(['manager', 'alerts', '--all'])).alerts.find((a) => a.id === alert.id)?.state === 'closed',
        { timeoutMs: 30_000 });
    } finally {
      follow.kill();
    }
  });

  it('a failure while the manager is down is there when it returns, with the history before it', async () => {
    const before = await manager.client.listEvents({ limit: 10_000 });
    await manager.kill();
    await cluster.kill('sapporo');
    // The idle async copy stays PAIR; its link is down, which the primary's monitor reports (link-down).
    await waitFor('the report queued at the primary', async () =>
      (await monitorOf(cluster.node('tokyo').apiUrl)).outboxes.some((o) => o.destination.startsWith('manager:') && o.queued > 0 && o.failures > 0));
    manager = await manager.restart();
    const alert = await manager.waitAlert('the async copy\'s alert after the restart', (a) => a.copy === 'erp.db1.sapporo.tokyo');
    assert.equal(alert.reportedBy, 'tokyo');
    assert.equal(alert.lastReport?.status.condition, 'link-down');
    const events = await manager.client.listEvents({ limit: 10_000 });
    for (const e of before) assert.ok(events.some((x) => x.seq === e.seq && x.kind === e.kind), `event ${e.seq} (${e.kind}) kept`);
    assert.ok(events.some((e: ManagerEvent) => e.kind === 'copy-report' && e.subject === 'erp.db1.sapporo.tokyo'));
    const recent = await json<{ events: ManagerEvent[] }>(['manager', 'events', '--since', '1m']);
    assert.ok(recent.events.every((e) => Date.parse(e.time) >= Date.now() - 70_000));
    await cluster.restart('sapporo');
  });

  it('CLI errors say what to do', async () => {
    const ack = await m(['manager', 'alert', 'ack', '99999']);
    assert.equal(ack.code, 1);
    assert.match(ack.stderr, /no alert 99999/);
    const missing = await m(['manager', 'topology', 'add', path.join(dir, 'nope.yaml')]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read topology file/);
    const since = await m(['manager', 'events', '--since', 'yesterday-ish']);
    assert.equal(since.code, 2);
    assert.match(since.stderr, /not a duration/);
    const unreachable = await m(['manager', 'node', 'add', 'http://127.0.0.1:1']);
    assert.equal(unreachable.code, 1);
    assert.match(unreachable.stderr, /cannot reach a node at http:\/\/127\.0\.0\.1:1/);
    const noManager = await cli(['--manager', 'http://127.0.0.1:1', 'manager', 'status']);
    assert.equal(noManager.code, 1);
    assert.match(noManager.stderr, /cannot reach the manager[\s\S]*hint: is `tricopy manager run` running there/);
    const noTopology = await m(['topology', 'failover', 'nosuch', '--to', 'osaka', '--manager']);
    assert.notEqual(noTopology.code, 0);
  });
});
