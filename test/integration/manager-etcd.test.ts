// Two managers sharing Debian's etcd: one leads (a leader key on an etcd lease), the other answers
// reads from the store and forwards writes; SIGKILL of the leader lets the other lead within 10 s
// with the whole history, and a failure after that is reported to it once (no duplicate alert).
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { HttpNodeClient } from '../../src/node/api-client';
import { Cluster } from '../support/cluster';
import { EtcdProcess, ManagerProcess, killAllManagers } from '../support/manager-process';
import { killAllNodes } from '../support/node-process';
import { waitFor } from '../support/wait';

describe('manager with etcd: two managers, one leader', { timeout: 240_000 }, () => {
  let dir: string;
  let etcd: EtcdProcess;
  let cluster: Cluster;
  let managers: ManagerProcess[];

  const leaderOf = async (): Promise<ManagerProcess[]> => {
    const infos = await Promise.all(managers.map((m) => m.client.info().catch(() => undefined)));
    return managers.filter((_, i) => infos[i]?.leader === true);
  };

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-etcd-'));
    etcd = await EtcdProcess.start(path.join(dir, 'etcd'));
    const args = ['--store', 'etcd', '--etcd', etcd.url, '--leader-ttl', '3', '--sample-interval', '0'];
    managers = [await ManagerProcess.start({ name: 'm1', dir, args }), await ManagerProcess.start({ name: 'm2', dir, args })];
    cluster = await Cluster.create(dir, ['tokyo', 'osaka']);
    await cluster.volume('tokyo', 'db', 16 * 1024 * 1024);
    await cluster.pair({ name: 'db', primary: 'tokyo', secondary: 'osaka', volume: 'db', mode: 'sync' });
    await cluster.waitState('tokyo', 'db', 'duplex');
  });

  after(async () => {
    await cluster?.stopAll();
    for (const m of managers ?? []) await m.stop().catch(() => undefined);
    killAllManagers();
    killAllNodes();
    await etcd?.stop();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('one manager leads; the other answers reads and forwards writes to it', async () => {
    const [leader] = await waitFor('a leader', async () => ((await leaderOf()).length === 1 ? leaderOf() : undefined));
    const follower = managers.find((m) => m !== leader)!;
    const info = await follower.client.info();
    assert.equal(info.leader, false);
    assert.equal(info.leaderUrl, leader!.url);
    assert.deepEqual(info.managers.sort(), managers.map((m) => m.url).sort());
    // Registration through the follower: forwarded to the leader.
    for (const n of ['tokyo', 'osaka']) await follower.client.addNode({ url: cluster.node(n).apiUrl });
    const binding = (await new HttpNodeClient(cluster.node('tokyo').apiUrl).monitorStatus()).manager;
    assert.deepEqual(binding?.urls.sort(), managers.map((m) => m.url).sort(), 'the node knows every manager');
    await waitFor('the copy registered at the primary', async () => (await new HttpNodeClient(cluster.node('tokyo').apiUrl).monitorStatus()).table.length === 1);
    await waitFor('the follower reads the pushed state from etcd', async () => (await follower.client.status()).pairs.length === 2);
  });

  it('SIGKILL of the leader: the other leads within 10 s with the whole history, and a new failure is reported once', async () => {
    // Under load a lease may lapse and be taken again: start from a moment with exactly one leader.
    const [leader] = await waitFor('one leader', async () => {
      const leaders = await leaderOf();
      return leaders.length === 1 ? leaders : undefined;
    });
    const survivor = managers.find((m) => m !== leader)!;
    const before = await survivor.client.listEvents({ limit: 10_000 });
    assert.ok(before.length > 0);
    const killedAt = Date.now();
    await leader!.kill();
    await waitFor('the survivor to lead', async () => (await survivor.client.info()).leader, { timeoutMs: 10_000, intervalMs: 100 });
    const seconds = (Date.now() - killedAt) / 1000;
    assert.ok(seconds <= 10, `took the lead after ${seconds} s`);
    const events = await survivor.client.listEvents({ limit: 10_000 });
    for (const e of before) assert.ok(events.some((x) => x.seq === e.seq && x.kind === e.kind), `event ${e.seq} kept`);
    assert.ok(events.some((e) => e.kind === 'manager-leading' && e.subject === survivor.url));
    await cluster.kill('osaka');
    const alert = await survivor.waitAlert('the copy\'s alert at the new leader', (a) => a.copy === 'db');
    assert.equal(alert.reportedBy, 'tokyo');
    await new Promise((r) => setTimeout(r, 1500)); // any retried or second delivery would have arrived by now
    const alerts = (await survivor.client.listAlerts({ all: true })).filter((a) => a.copy === 'db');
    assert.equal(alerts.length, 1, 'one alert for the failure');
    const reports = (await survivor.client.listEvents({ limit: 10_000 })).filter((e) => e.kind === 'copy-report' && e.subject === 'db');
    assert.equal(reports.length, 1, 'one report taken');
  });
});
