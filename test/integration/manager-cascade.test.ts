// Spec 000's cascade (§6.4) with real nodes: the manager talks to the primary only; the far copy's
// construct command is relayed by the primary to the middle node, so a failure between the middle
// and the far site is reported by the middle node and relayed by the primary (2 hops), duplicates
// are suppressed at the relay and at the manager, and a report whose path is gone becomes a local
// alert at the relay (which the manager hears of as an event).
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { MonitorStatus } from '../../src/contracts/monitor';
import { HttpNodeClient } from '../../src/node/api-client';
import { Cluster } from '../support/cluster';
import { ManagerProcess, killAllManagers } from '../support/manager-process';
import { killAllNodes } from '../support/node-process';
import { topo } from '../support/topology';
import { waitFor } from '../support/wait';

describe('manager: cascade relay through the primary (spec 000 §6.4)', { timeout: 240_000 }, () => {
  let dir: string;
  let cluster: Cluster;
  let manager: ManagerProcess;
  const far = 'erp.db1.osaka.sapporo';
  const near = 'erp.db1.osaka.tokyo';
  const node = (n: string): HttpNodeClient => new HttpNodeClient(cluster.node(n).apiUrl);
  const rows = async (n: string): Promise<string[]> => ((await node(n).monitorStatus()) as MonitorStatus).table
    .map((r) => `(${r.receivedFrom.startsWith('manager:') ? 'M' : r.receivedFrom},${r.sentTo},${r.copy.copyId})`).sort();

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-cascade-'));
    cluster = await Cluster.create(dir, ['tokyo', 'osaka', 'sapporo']);
    manager = await ManagerProcess.start({ name: 'm1', dir, args: ['--sample-interval', '0'] });
    const file = await cluster.topologyFile({ name: 'erp', layout: 'cascade', volumes: { db1: '32MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    await topo(['apply', file, '--wait']);
    for (const n of ['tokyo', 'osaka', 'sapporo']) await manager.client.addNode({ url: cluster.node(n).apiUrl });
    await manager.client.addTopology(await fsp.readFile(file, 'utf8'));
  });

  after(async () => {
    await cluster?.stopAll();
    await manager?.stop();
    killAllManagers();
    killAllNodes();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('fills the management tables as §6.4 says: the far copy\'s command went through the primary', async () => {
    await waitFor('the tables', async () => (await rows('osaka')).length === 1);
    assert.deepEqual(await rows('tokyo'), [`(M,osaka,${far})`, `(M,tokyo,${near})`]);
    assert.deepEqual(await rows('osaka'), [`(tokyo,osaka,${far})`]);
    assert.deepEqual(await rows('sapporo'), []);
  });

  it('a cut between the middle and the far site is reported by the middle node and relayed by the primary, once', async () => {
    cluster.freeze('sapporo');
    try {
      const alert = await manager.waitAlert('the far copy\'s alert', (a) => a.copy === far);
      const report = alert.lastReport!;
      assert.equal(alert.reportedBy, 'osaka');
      assert.equal(report.origin, 'osaka');
      assert.equal(report.lastHop, 'tokyo');
      assert.equal(report.hops, 1, 'relayed once: two hop messages in all');
      assert.equal((await node('tokyo').monitorStatus()).reportsRelayed, 1);
      // The same report again (a retry after a lost answer): the relay and the manager drop it.
      const original = { ...report, lastHop: 'osaka', hops: 0 };
      assert.deepEqual(await node('tokyo').sendReports({ reports: [original] }), { accepted: 0, duplicates: 1 });
      const direct = await fetch(`${manager.url}/v1/reports`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ reports: [report] }) });
      assert.deepEqual(await direct.json(), { accepted: 0, duplicates: 1 });
      const events = await manager.client.listEvents({ limit: 10_000 });
      assert.equal(events.filter((e) => e.kind === 'copy-report' && e.details?.reportId === report.reportId).length, 1);
      assert.equal((await manager.client.listAlerts()).filter((a) => a.copy === far).length, 1, 'one alert');
    } finally {
      cluster.thaw('sapporo');
    }
    await waitFor('the far copy\'s alert closed', async () => !(await manager.client.listAlerts()).some((a) => a.copy === far), { timeoutMs: 30_000 });
  });

  it('a report whose path is gone at the relay becomes a local alert there, and the manager hears of it', async () => {
    const { managerId } = await manager.client.info();
    // Release the far copy at the primary only: the middle node still routes its reports there.
    await node('tokyo').sendCommand({
      commandId: 'release-at-tokyo-only', type: 'release', issuer: managerId, path: [{ node: 'tokyo', url: cluster.node('tokyo').apiUrl }],
      copy: { copyId: far, source: 'osaka', target: 'sapporo', volume: 'db1', mode: 'async', topology: 'erp' },
    });
    assert.deepEqual(await rows('tokyo'), [`(M,tokyo,${near})`]);
    cluster.freeze('sapporo');
    try {
      const local = await waitFor('a local alert at the primary', async () => (await node('tokyo').monitorStatus()).localAlerts.find((a) => a.report.copy.copyId === far));
      assert.match(local.reason, /no management table row for copy erp\.db1\.osaka\.sapporo sent to osaka/);
      const alert = await manager.waitAlert('the unroutable-report alert', (a) => a.kind === 'unroutable-report' && a.copy === far);
      assert.equal(alert.reportedBy, 'tokyo');
    } finally {
      cluster.thaw('sapporo');
    }
  });
});
