// The web console in a real browser (Debian's chromium, driven by playwright-core; no browser is
// downloaded) and procedures run through the manager: the topology is applied with `--manager`
// (history kept), the page shows sites, nodes, pairs and alerts, a failure appears without a
// reload, an alert is acknowledged from the page, a failover is run from the page after its
// confirmation and completes, the Backups panel shows a policy with its next run, a job waiting
// for a drive and then its result, and the page logs no error. A second topology with failover:
// automatic (a quorum-pair arbiter) has an Arbiter panel: who holds it, each site's agent, the
// decisions as the nodes reported them (tokyo's loss makes osaka arbitrate and lose). A screenshot
// is kept with the test output (var/test-output/manager-console.png).
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { type Browser, type Page, chromium } from 'playwright-core';
import { DriveQueue } from '../../src/backup/drives';
import type { ProcedureRun } from '../../src/contracts/manager';
import { Cluster } from '../support/cluster';
import { ManagerProcess, killAllManagers } from '../support/manager-process';
import { cli, killAllNodes, repoRoot } from '../support/node-process';
import { runOk } from '../support/tools';
import { waitFor } from '../support/wait';

const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const screenshotDir = path.join(repoRoot, 'var', 'test-output');

describe('web console in headless Chromium, procedures through the manager', { timeout: 300_000 }, () => {
  let dir: string;
  let cluster: Cluster;
  let manager: ManagerProcess;
  let browser: Browser;
  let page: Page;
  const pageErrors: string[] = [];

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-console-'));
    cluster = await Cluster.create(dir, ['tokyo', 'osaka', 'sapporo']);
    manager = await ManagerProcess.start({ name: 'm1', dir, args: ['--sample-interval', '1s'] });
    for (const n of ['tokyo', 'osaka', 'sapporo']) await manager.client.addNode({ url: cluster.node(n).apiUrl });
    browser = await chromium.launch({ executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu'] });
    page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
    page.on('console', (msg) => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });
    page.on('pageerror', (err) => pageErrors.push(err.message));
  });

  after(async () => {
    await browser?.close();
    await cluster?.stopAll();
    await manager?.stop();
    killAllManagers();
    killAllNodes();
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  });

  it('applies the topology through the manager: the run and its steps are in the history', async () => {
    const file = await cluster.topologyFile({ name: 'erp', volumes: { db1: '32MiB' }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    // As the issue writes it: the manager from TRICOPY_MANAGER, --manager last.
    const r = await cli(['topology', 'apply', file, '--wait', '--manager'], { TRICOPY_MANAGER: manager.url });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /manager run r\S+: apply erp[\s\S]*every copy is duplex/);
    const runs = await manager.client.listProcedures();
    assert.equal(runs[0]?.procedure, 'apply');
    assert.equal(runs[0]?.state, 'succeeded');
    const events = await manager.client.listEvents({ limit: 10_000 });
    assert.ok(events.some((e) => e.kind === 'procedure-step' && /step 306/.test(e.reason)));
    assert.ok(events.some((e) => e.kind === 'procedure-succeeded'));
    const shown = await cli(['--manager', manager.url, 'manager', 'procedure', runs[0]!.id, '--json']);
    assert.equal((JSON.parse(shown.stdout) as ProcedureRun).output.some((l) => l.includes('step 310')), true);
  });

  it('a topology with failover: automatic (quorum-pair arbiter) gets an Arbiter panel: the holder, each site\'s agent, the decisions', async () => {
    const file = path.join(dir, 'hr.json');
    await fsp.writeFile(file, JSON.stringify({
      name: 'hr', volumes: { hr1: '8MiB' }, primary: { site: 'tokyo', node: cluster.node('tokyo').apiUrl },
      sync: { site: 'osaka', node: cluster.node('osaka').apiUrl, fence: 'data' }, async: { site: 'sapporo', node: cluster.node('sapporo').apiUrl },
      failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'hr-quorum' } }, lease: '3s', renew: '500ms', 'fence-margin': '1s',
    }));
    const r = await cli(['topology', 'apply', file, '--wait', '--manager'], { TRICOPY_MANAGER: manager.url });
    assert.equal(r.code, 0, r.stderr);
    // The manager's route, from the agents' events alone.
    const board = await waitFor('the manager to learn tokyo holds hr\'s arbiter', async () => {
      const b = await manager.client.arbiterBoard('hr');
      return b.holder === 'tokyo' && b.sites.find((x) => x.site === 'osaka')?.state === 'standby' ? b : undefined;
    }, { timeoutMs: 30_000 });
    assert.deepEqual([board.failover, board.arbiter, board.leaseMs, board.renewMs, board.fenceMarginMs], ['automatic', 'quorum pair hr-quorum', 3000, 500, 1000]);
    assert.deepEqual(board.sites.map((x) => [x.site, x.role, x.state]), [['tokyo', 'primary', 'holding'], ['osaka', 'sync', 'standby'], ['sapporo', 'async', 'observer']]);
    assert.ok(board.decisions.some((d) => d.site === 'tokyo' && d.kind === 'agent-state' && /holds the quorum pair hr-quorum/.test(d.reason)), JSON.stringify(board.decisions));
    assert.equal((await manager.client.arbiterBoard('erp')).failover, 'manual');
    // The console shows it.
    await page.goto(manager.url);
    const panel = page.locator('[data-arbiter="hr"]');
    await panel.locator('.holder[data-holder="tokyo"]').waitFor({ timeout: 20_000 });
    assert.match(await panel.innerText(), /quorum pair hr-quorum · holder tokyo · lease 3 s \(renew 0\.5 s, fence margin 1 s\) · failback manual/);
    assert.match(await panel.locator('tr[data-site="tokyo"]').innerText(), /tokyo\s+primary\s+holding/);
    assert.match(await panel.locator('tr[data-site="osaka"]').innerText(), /osaka\s+sync\s+standby/);
    await panel.locator('.arbiter-decisions li[data-kind="agent-state"][data-site="tokyo"]', { hasText: 'holds the quorum pair hr-quorum' }).first().waitFor();
    assert.match(await page.locator('[data-arbiter="erp"]').innerText(), /failover: manual/);
  });

  it('shows the three sites, nodes, pairs; a failure appears live; an alert is acknowledged from the page', async () => {
    await page.goto(manager.url);
    await page.locator('[data-topology="erp"] .site.active[data-site="tokyo"]').waitFor();
    assert.equal(await page.locator('#nodes tbody tr').count(), 3);
    await page.locator('#pairs tbody tr', { hasText: 'erp.db1.osaka.tokyo' }).first().waitFor();
    assert.match(await page.locator('[data-topology="erp"]').innerText(), /application at tokyo/);
    await cluster.kill('sapporo');
    const row = page.locator('#alerts tbody tr', { hasText: 'erp.db1.sapporo.tokyo' });
    await row.waitFor({ timeout: 20_000 });
    await page.locator('#events li', { hasText: 'alert-opened' }).first().waitFor();
    await row.locator('button[data-ack]').click();
    await page.locator('#alerts tbody tr', { hasText: 'erp.db1.sapporo.tokyo' }).locator('td.state-acknowledged').waitFor();
    const acked = (await manager.client.listAlerts()).find((a) => a.copy === 'erp.db1.sapporo.tokyo');
    assert.equal(acked?.state, 'acknowledged');
    assert.equal(acked?.acknowledgedBy, 'console');
    await cluster.restart('sapporo');
  });

  it('runs a failover from the page after a confirmation that says what would be lost, and shows its steps', async () => {
    await cluster.kill('tokyo');
    await manager.waitAlert('the primary\'s loss', (a) => a.kind === 'node-unreachable' && a.subject === 'tokyo');
    await page.locator('[data-topology="erp"] [data-action="failover-osaka"]').click();
    const dialog = page.locator('dialog#confirm');
    await dialog.waitFor();
    assert.match(await page.locator('#confirm-loss').innerText(), /What a move to osaka would lose now: /);
    await page.locator('#confirm-ok').click();
    await page.locator('#procedure-title[data-state="succeeded"]').waitFor({ timeout: 90_000 });
    assert.match(await page.locator('#procedure-output').innerText(), /\[1\]/);
    await page.locator('[data-topology="erp"] .site.active[data-site="osaka"]').waitFor({ timeout: 30_000 });
    // hr's agents saw tokyo go too: osaka lost its heartbeat and arbitrated, and could not win
    // (spec 004 E7: the P-VOL's node is gone). The panel shows it live.
    await page.locator('[data-arbiter="hr"] .arbiter-decisions li[data-kind="arbiter-conflict"][data-site="osaka"]').first().waitFor({ timeout: 30_000 });
    const runs = await manager.client.listProcedures();
    assert.equal(runs[0]?.procedure, 'failover');
    assert.equal(runs[0]?.startedBy, 'console');
    await fsp.mkdir(screenshotDir, { recursive: true });
    const shot = path.join(screenshotDir, 'manager-console.png');
    await page.screenshot({ path: shot, fullPage: true });
    assert.ok((await fsp.stat(shot)).size > 10_000);
    assert.deepEqual(pageErrors, [], 'no errors in the page log');
  });

  it('the status reflects the failover without asking any node (topology status --manager)', async () => {
    await waitFor('the manager\'s view', async () => (await manager.client.status()).topologies[0]?.activeSite === 'osaka');
    const r = await cli(['topology', 'status', 'erp', '--json', '--manager'], { TRICOPY_MANAGER: manager.url });
    assert.equal(r.code, 0, r.stderr);
    assert.equal((JSON.parse(r.stdout) as { activeSite: string }).activeSite, 'osaka');
  });

  it('the Backups panel shows a policy with its next run, a job waiting for a drive, then its result', async () => {
    const osaka = cluster.node('osaka');
    await cluster.volume('osaka', 'logs', 8 * 1024 * 1024);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 0 1M', osaka.nbdUri('logs')]);
    await waitFor('the volume at the manager', async () => (await manager.client.status()).volumes.some((v) => v.name === 'logs'));
    const repoDir = path.join(dir, 'console-repo');
    await manager.client.addBackupRepo({ name: 'vault', path: repoDir, drives: 1 });
    const policy = await manager.client.addBackupPolicy({ name: 'logs-nightly', volume: 'logs', repo: 'vault', schedule: '0 2 * * *' });
    assert.equal(policy.node, 'osaka');
    const policyRow = page.locator('#backup-policies tbody tr', { hasText: 'logs-nightly' });
    await policyRow.waitFor();
    assert.ok((await policyRow.innerText()).includes(policy.nextRunAt!), 'the next run is shown');

    // The test holds the repository's only drive: the job waits, and the panel says so.
    const held = await new DriveQueue(repoDir, 1).acquire('console-test-holds-the-drive');
    const job = await manager.client.runBackupPolicy('logs-nightly', 'console-test');
    await page.locator('#backup-running tbody tr', { hasText: job.id }).filter({ hasText: 'waiting for a drive (1 ahead)' }).waitFor({ timeout: 20_000 });
    await held.release();
    const row = page.locator('#backup-jobs tbody tr', { hasText: job.id });
    await row.locator('td[data-state="succeeded"]').waitFor({ timeout: 30_000 });
    assert.match(await row.innerText(), /logs-nightly\s+logs\s+full[\s\S]*1\.0 MiB/);
    assert.equal(await page.locator('#backup-running tbody tr', { hasText: job.id }).count(), 0, 'no longer running');
    await page.locator('#events li[data-kind="backup-job-succeeded"]').first().waitFor();
    await page.screenshot({ path: path.join(screenshotDir, 'manager-console-backups.png'), fullPage: true });
    assert.deepEqual(pageErrors, [], 'no errors in the page log');
  });
});
