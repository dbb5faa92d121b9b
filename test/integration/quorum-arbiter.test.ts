// Automatic failover with a spec 004 quorum pair as the arbiter, on three real nodes: topology apply
// creates the quorum pair tokyo (P-VOL) → osaka (S-VOL) and splits it to Suspend(normal); each
// contender's node hears the other over the hosts' network (its control API, through a fault
// proxy) and arbitrates through the quorum pair when that heartbeat is lost. The storage link is
// the proxy tokyo reaches osaka's replication port through.
//   - tokyo's hosts-side loss (its control API cut, the storage link up): osaka wins the quorum pair
//     (swap resync) and takes over; never two writable sites;
//   - the storage link cut: the quorum pair goes to Suspend(error), nothing fails over, never two
//     writable sites; the link back, tokyo recovers the quorum pair and writes again;
//   - the hosts' network cut both ways: both sites contend, exactly one wins (twice: at about the
//     same moment, and with osaka's command first);
//   - failback: automatic (the smallest delay): after tokyo's hosts-side loss and osaka's takeover,
//     tokyo heard again, osaka's node fails back by itself after the delay; tokyo has osaka's writes;
//   - tokyo's node killed: osaka cannot win (spec 004 E7), nothing fails over.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { performance } from 'node:perf_hooks';
import type { NodeEvent } from '../../src/contracts/node';
import { HttpQuorumClient } from '../../src/quorum/client';
import { type FailoverCluster as FC, FailoverCluster, type Site, TwoSiteChecker, quorumVolume } from '../support/failover';
import { killAllNodes } from '../support/node-process';
import { tempDir } from '../support/tools';
import { topo, topologyStatus } from '../support/topology';
import { minFailbackDelayMs } from '../../src/topology/topology-file';
import { waitFor } from '../support/wait';

const leaseMs = 3000;
const renewMs = 500;
const timings = { lease: '3s', renew: '500ms', fenceMargin: '1s' };
const MiB = 1024 * 1024;
let dir: string;
let fc: FC;

before(async () => {
  dir = await tempDir('quorum-arbiter');
  fc = await FailoverCluster.start(dir, timings, 'quorum-pair');
  const out = await topo(['apply', fc.file, '--wait']);
  assert.match(out, /quorum pair erp-quorum: tokyo \(P-VOL\) → osaka \(S-VOL\), split to Suspend\(normal\)/);
  assert.match(out, /automatic failover: every site's node takes part \(arbiter quorum pair erp-quorum; lease 3000 ms/);
  assert.match(out, /tokyo holds the arbiter: writes are accepted there/);
});

after(async () => {
  await fc?.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function quorumLabel(s: Site): Promise<string> {
  return (await new HttpQuorumClient(fc.cluster.node(s).apiUrl, undefined, 5000).quorumStatus(quorumVolume)).label;
}

/** Events of the topology at `s` after event id `after`. */
async function eventsAt(s: Site, after: number): Promise<NodeEvent[]> {
  return (await fc.api(s).listEvents(after)).filter((e) => e.subject === 'erp');
}

async function lastEventId(s: Site): Promise<number> {
  return (await fc.api(s).listEvents(0)).at(-1)?.id ?? 0;
}

/** The quorum pair back in Suspend(normal) with tokyo as its P-VOL, tokyo holding and writing. */
async function settledAtTokyo(): Promise<void> {
  await waitFor('tokyo to hold the quorum pair in Suspend(normal)', async () => (await quorumLabel('tokyo')) === 'P-VOL, Suspend(normal)' &&
    (await quorumLabel('osaka')) === 'S-VOL, Suspend(normal)', { timeoutMs: 60_000 });
  const tokyo = await fc.waitArbiter('tokyo', 'holding');
  assert.equal(tokyo.writesAllowed, true, tokyo.reason);
  await waitFor('osaka to stand by for tokyo', async () => (await fc.arbiter('osaka'))?.state === 'standby');
}

test('apply: the quorum pair is split, tokyo (P-VOL) holds the arbiter and writes, osaka (S-VOL) stands by', async () => {
  await settledAtTokyo();
  const osaka = await fc.arbiter('osaka');
  assert.deepEqual([osaka?.holder, osaka?.writesAllowed, osaka?.arbiter], ['tokyo', false, 'quorum pair erp-quorum']);
  assert.match(osaka!.reason, /tokyo holds the quorum pair erp-quorum \(S-VOL, Suspend\(normal\) here\)/);
  assert.match(await topo(['arbiter', fc.file]), /tokyo\s+primary\s+holding\s+tokyo\s+accepted/);
});

test('tokyo\'s hosts-side loss (control API cut, storage link up): osaka wins the quorum pair and takes over; never two writable sites', async () => {
  const from = { tokyo: await lastEventId('tokyo'), osaka: await lastEventId('osaka') };
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.tokyoApi.cut();
    await waitFor('osaka to take writes', () => checker.ackedAt('osaka').length > 20, { timeoutMs: 60_000 });
    await checker.stop();
    checker.assertNoOverlap();
  } finally {
    await checker.stop();
    fc.tokyoApi.restore();
  }
  // osaka accepts writes from step 1003 on; the failover ends after the async leg is set up.
  await waitFor('osaka to finish the failover', async () => (await eventsAt('osaka', from.osaka)).some((e) => e.kind === 'failover-finished' || e.kind === 'failover-failed'));
  const kinds = (await eventsAt('osaka', from.osaka)).map((e) => e.kind);
  for (const k of ['heartbeat-lost', 'arbiter-contending', 'arbiter-acquired', 'failover-started', 'failover-finished']) assert.ok(kinds.includes(k), `osaka reported ${k}: ${kinds.join(' ')}`);
  assert.match(await quorumLabel('osaka'), /^P-VOL/, 'the swap resync made osaka the P-VOL');
  // tokyo's agent sees the swap at its next round (every renew interval).
  await waitFor('tokyo to see osaka hold the quorum pair', async () => /osaka holds the quorum pair/.test((await fc.arbiter('tokyo'))?.reason ?? ''), { timeoutMs: 10_000 });
  // The heartbeat back, osaka splits the quorum pair again (B10); a failback brings the application
  // back, and tokyo takes the quorum pair over (swap resync) because the application runs there.
  await waitFor('osaka to split the quorum pair back', async () => (await quorumLabel('osaka')) === 'P-VOL, Suspend(normal)', { timeoutMs: 30_000 });
  await topo(['failback', fc.file, '--to', 'tokyo', '--wait']);
  await settledAtTokyo();
  assert.ok((await eventsAt('tokyo', from.tokyo)).some((e) => e.kind === 'arbiter-acquired' && /swap resync ended normally/.test(e.reason)));
});

test('the storage link cut, hosts\' network up: the quorum pair goes to Suspend(error), nothing fails over, never two writable sites', async () => {
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.tokyoToOsaka.cut();
    await waitFor('the quorum pair to be in Suspend(error) at both nodes', async () =>
      (await quorumLabel('tokyo')) === 'P-VOL, Suspend(error)' && (await quorumLabel('osaka')) === 'S-VOL, Suspend(error)', { timeoutMs: 30_000 });
    const tokyo = await fc.waitArbiter('tokyo', 'fenced');
    assert.match(tokyo.reason, /Suspend\(error\) \(the storage link to osaka is down\): nothing can be arbitrated/);
    const cutAt = performance.now();
    await new Promise((r) => setTimeout(r, 3 * leaseMs));
    assert.equal(checker.ackedAt('osaka').length, 0, 'osaka accepted no write');
    assert.equal(checker.ackedAt('tokyo').filter((w) => w.issuedAt > cutAt).length, 0, 'tokyo accepted no write without the arbiter (and fence data)');
    assert.equal((await fc.arbiter('osaka'))?.state, 'unreachable');
    fc.tokyoToOsaka.restore();
    await settledAtTokyo();
    await waitFor('the sync copies resync', async () => (await fc.api('tokyo').listPairs()).filter((p) => p.purpose === 'data').every((p) => p.state === 'duplex'), { timeoutMs: 60_000 });
    const before = checker.ackedAt('tokyo').length;
    await waitFor('tokyo takes writes again', () => checker.ackedAt('tokyo').length > before + 10);
    await checker.stop();
    checker.assertNoOverlap();
    assert.equal(checker.ackedAt('osaka').length, 0);
    assert.ok((await eventsAt('tokyo', 0)).some((e) => e.kind === 'arbiter-recovered'), 'tokyo said it recovered the quorum pair');
  } finally {
    fc.tokyoToOsaka.restore();
    await checker.stop();
  }
});

/** Both sites hear each other again (the last heartbeat event of each, if any, is not a loss): one arbitration per loss. */
async function hearEachOther(): Promise<void> {
  for (const s of ['tokyo', 'osaka'] as const) {
    await waitFor(`${s} to hear the other site`, async () => (await eventsAt(s, 0)).filter((e) => e.kind.startsWith('heartbeat-')).at(-1)?.kind !== 'heartbeat-lost');
  }
}

/**
 * The hosts' network cut both ways, osaka's side `osakaLaterMs` after tokyo's: osaka arbitrates a
 * lease + two renew intervals after it stops hearing tokyo, tokyo (the holder) a lease after it
 * stops hearing osaka. The storage decides which command commits first; returns the winner.
 */
async function raceRound(osakaLaterMs: number): Promise<'tokyo' | 'osaka'> {
  await hearEachOther();
  const from = { tokyo: await lastEventId('tokyo'), osaka: await lastEventId('osaka') };
  const kindsAt = async (s: 'tokyo' | 'osaka'): Promise<string[]> => (await eventsAt(s, from[s])).map((e) => e.kind);
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  let winner: 'tokyo' | 'osaka';
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.tokyoApi.cut();
    await new Promise((r) => setTimeout(r, osakaLaterMs));
    fc.osakaApi.cut();
    await waitFor('a site to win the quorum pair', async () => (await kindsAt('tokyo')).includes('arbiter-acquired') || (await kindsAt('osaka')).includes('arbiter-acquired'),
      { timeoutMs: 30_000 });
    // The loser sent its command too and got CONFLICT, or saw the winner hold the P-VOL before its
    // own time came (then it has nothing to contend for). Nothing changes afterwards.
    await new Promise((r) => setTimeout(r, 2 * leaseMs));
    const kinds = { tokyo: await kindsAt('tokyo'), osaka: await kindsAt('osaka') };
    const count = (k: string[], kind: string): number => k.filter((x) => x === kind).length;
    const won = { tokyo: count(kinds.tokyo, 'arbiter-acquired'), osaka: count(kinds.osaka, 'arbiter-acquired') };
    assert.equal(won.tokyo + won.osaka, 1, `exactly one site won: tokyo ${kinds.tokyo.join(' ')}; osaka ${kinds.osaka.join(' ')}`);
    for (const site of ['tokyo', 'osaka'] as const) {
      assert.equal(count(kinds[site], 'arbiter-contending'), count(kinds[site], 'arbiter-acquired') + count(kinds[site], 'arbiter-conflict'), `${site}'s arbitration ended`);
    }
    winner = won.tokyo === 1 ? 'tokyo' : 'osaka';
    const labels = { tokyo: await quorumLabel('tokyo'), osaka: await quorumLabel('osaka') };
    assert.equal([labels.tokyo, labels.osaka].filter((l) => l.startsWith('P-VOL')).length, 1, 'one P-VOL');
    assert.match(labels[winner], /^P-VOL/, 'the winner holds the P-VOL');
    process.stderr.write(`race (osaka cut ${osakaLaterMs} ms later): ${winner} won (tokyo: ${kinds.tokyo.join(' ')}; osaka: ${kinds.osaka.join(' ')})\n`);
    // A winning osaka takes over while its own address in the file is cut too: it runs the failover through itself.
    if (winner === 'osaka') await waitFor('osaka to take writes after its takeover', () => checker.ackedAt('osaka').length > 10, { timeoutMs: 30_000 });
    await checker.stop();
    checker.assertNoOverlap();
  } finally {
    fc.tokyoApi.restore();
    fc.osakaApi.restore();
    await checker.stop();
  }
  if (winner === 'osaka') {
    await waitFor('osaka to finish the failover', async () => (await kindsAt('osaka')).includes('failover-finished'));
    await topo(['failback', fc.file, '--to', 'tokyo', '--wait']);
  }
  await settledAtTokyo();
  return winner;
}

test('the hosts\' network cut both ways (storage link up): both sites contend, exactly one wins, never two writable sites — at about the same moment, and with osaka ahead', async () => {
  await raceRound(2 * renewMs);
  // osaka's side cut three renew intervals later: osaka's command goes first.
  await raceRound(2 * renewMs + 1500);
});

test('failback: automatic with the quorum pair — tokyo\'s hosts-side loss, osaka takes over; tokyo heard again, osaka fails back by itself after the delay; osaka\'s writes are at tokyo; never two writable sites', async () => {
  await hearEachOther();
  await settledAtTokyo();
  await fc.writeTopology({ ...timings, failbackDelay: `${minFailbackDelayMs}ms` });
  await topo(['apply', fc.file, '--wait']);
  const settings = (await fc.arbiter('osaka'))!.failback;
  assert.deepEqual([settings.mode, settings.delayMs], ['automatic', minFailbackDelayMs]);
  const from = { tokyo: await lastEventId('tokyo'), osaka: await lastEventId('osaka') };
  const checker = new TwoSiteChecker(fc, 'log1', ['tokyo', 'osaka']);
  checker.start();
  let writtenAtOsaka: Buffer;
  let restoredAt: number;
  try {
    await waitFor('tokyo to take writes', () => checker.ackedAt('tokyo').length > 20);
    fc.tokyoApi.cut();
    await waitFor('osaka to take writes', () => checker.ackedAt('osaka').length > 20, { timeoutMs: 60_000 });
    await waitFor('osaka to finish the failover', async () => (await eventsAt('osaka', from.osaka)).some((e) => e.kind === 'failover-finished'), { timeoutMs: 60_000 });
    writtenAtOsaka = await fc.writeRandom('osaka', 'db1', 4 * MiB, 2 * MiB);
    await waitFor('osaka to watch for tokyo', async () => (await fc.arbiter('osaka'))?.failback.state === 'watching');
    assert.equal(checker.ackedAt('tokyo').filter((w) => w.issuedAt > checker.ackedAt('osaka')[0]!.issuedAt).length, 0, 'tokyo stopped when osaka took over');
    fc.tokyoApi.restore();
    restoredAt = performance.now();
    // Nobody runs the failback but osaka's node.
    await fc.waitArbiter('tokyo', 'holding', 120_000);
    const tokyoAfter = performance.now();
    await waitFor('tokyo to take writes again', () => checker.ackedAt('tokyo').some((w) => w.issuedAt > tokyoAfter) && checker.ackedAt('tokyo').length > 40, { timeoutMs: 30_000 });
    await checker.stop();
    checker.assertHandovers(['tokyo', 'osaka', 'tokyo']);
  } finally {
    fc.tokyoApi.restore();
    await checker.stop();
  }
  assert.ok(performance.now() - restoredAt >= minFailbackDelayMs, 'the application did not move before tokyo had been back for the delay');
  await waitFor('osaka to report the failback finished', async () => (await eventsAt('osaka', from.osaka)).some((e) => e.kind === 'failback-finished'), { timeoutMs: 60_000 });
  const events = await eventsAt('osaka', from.osaka);
  const at = (kind: string): NodeEvent => {
    const e = events.find((x) => x.kind === kind);
    assert.ok(e, `osaka reported ${kind}: ${events.map((x) => x.kind).join(' ')}`);
    return e;
  };
  assert.match(at('failback-pending').reason, /tokyo is back and sees osaka hold the arbiter/);
  assert.ok(Date.parse(at('failback-started').time) - Date.parse(at('failback-pending').time) >= minFailbackDelayMs - 50, 'the failback waited for the delay');
  assert.match(at('failback-finished').reason, /failed back to tokyo in .* s/);
  const decisions = (await fc.arbiter('osaka'))!.decisions.map((d) => d.kind);
  for (const k of ['failover-finished', 'failback-started', 'failback-finished']) assert.ok(decisions.includes(k), `osaka's status keeps ${k}: ${decisions.join(' ')}`);
  // tokyo holds the quorum pair again (it took it over because the application runs there).
  await settledAtTokyo();
  assert.ok((await eventsAt('tokyo', from.tokyo)).some((e) => e.kind === 'arbiter-acquired' && /swap resync ended normally/.test(e.reason)));
  assert.deepEqual(await fc.readAt('tokyo', 'db1', 4 * MiB, 2 * MiB), writtenAtOsaka, 'tokyo has what the application wrote at osaka');
  await assert.rejects(fc.writeRandom('osaka', 'db1', 8 * MiB, 4096), 'osaka refuses writes again');
  assert.equal((await topologyStatus(fc.file)).activeSite, 'tokyo');
});

test('tokyo\'s node killed: osaka cannot win the quorum pair (spec 004 E7), nothing fails over', async () => {
  // The precondition: tokyo holds the quorum pair (on a loaded machine a slow heartbeat may have
  // moved the application since the last test; automatic failback brings it back).
  await settledAtTokyo();
  await hearEachOther();
  const from = await lastEventId('osaka');
  const labelsBefore = `tokyo ${await quorumLabel('tokyo')}, osaka ${await quorumLabel('osaka')}`;
  await fc.cluster.kill('tokyo');
  await waitFor('osaka to arbitrate and lose', async () => (await eventsAt('osaka', from)).some((e) => e.kind === 'arbiter-conflict'), { timeoutMs: 30_000 })
    .catch(async (err: unknown) => {
      throw new Error(`${String(err)}; osaka: ${JSON.stringify(await fc.arbiter('osaka'))}; events: ${(await eventsAt('osaka', from)).map((e) => `${e.kind}: ${e.reason}`).join(' | ')}`);
    });
  const osaka = await fc.arbiter('osaka');
  assert.notEqual(osaka?.state, 'holding');
  assert.equal(osaka?.writesAllowed, false);
  assert.ok(!(await eventsAt('osaka', from)).some((e) => e.kind === 'failover-started'), 'no failover');
  const events = async (): Promise<string> => (await fc.api('osaka').listEvents(0)).slice(-40).map((e) => `${e.id} ${e.kind} ${e.subject}: ${e.reason}`).join('\n');
  assert.match(await quorumLabel('osaka'), /^S-VOL/, `before the kill: ${labelsBefore}; osaka's last events:\n${await events()}`);
});
