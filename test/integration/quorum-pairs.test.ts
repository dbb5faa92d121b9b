// Quorum pair volumes (spec 004) on two real nodes: `pair create --mode quorum`, the Fig. 4 table
// at both nodes in every state the pair can be brought to (with the state unchanged after every
// abnormal end), split from either node, Suspend(error) when the link is lost and the recovery,
// reservations through the CLI, the Figs. 7–13 sequence with the host control software, and
// randomised races of two and three contenders: exactly one GOOD each time.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import type { NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import type { CommandAnswer, QuorumCommand } from '../../src/contracts/quorum';
import { HttpQuorumClient } from '../../src/quorum/client';
import { PairVolumeControl, arbitrate } from '../../src/quorum/host-control';
import { Cluster } from '../support/cluster';
import type { FaultProxy } from '../support/fault-proxy';
import { cli, killAllNodes } from '../support/node-process';
import { seededRandom } from '../support/quorum-model';
import { figures7to13 } from '../support/quorum-scenario';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;
let cluster: Cluster;
let q1: HttpQuorumClient;
let q2: HttpQuorumClient;
let proxies: FaultProxy[];

before(async () => {
  dir = await tempDir('quorum');
  cluster = await Cluster.create(path.join(dir, 'c'), ['dc1', 'dc2'], ['--peer-timeout', '3s']);
  q1 = new HttpQuorumClient(cluster.node('dc1').apiUrl);
  q2 = new HttpQuorumClient(cluster.node('dc2').apiUrl);
  await cluster.volume('dc1', 'qd', 32 * MiB);
  ({ proxies } = await cluster.pair({ name: 'q', primary: 'dc1', secondary: 'dc2', volume: 'qd', mode: 'sync', purpose: 'quorum', viaProxy: true }));
  await cluster.waitState('dc1', 'q', 'duplex');
  await cluster.waitState('dc2', 'q', 'duplex');
});

after(async () => {
  await cluster.stopAll();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function ok(args: string[]): Promise<string> {
  const r = await cli(args);
  assert.equal(r.code, 0, `tricopy ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function fails(args: string[], code: number, pattern: RegExp): Promise<string> {
  const r = await cli(args);
  assert.equal(r.code, code, `tricopy ${args.join(' ')} (stdout: ${r.stdout}, stderr: ${r.stderr})`);
  assert.match(r.stdout + r.stderr, pattern);
  return r.stdout;
}

const labels = async (): Promise<[string, string]> => [(await q1.attribute('qd')).label, (await q2.attribute('qd')).label];

/** Sends `command` to `volume` at `client` and checks the Fig. 4 row, the result and that nothing changed. */
async function expectAbnormal(client: HttpQuorumClient, command: QuorumCommand, row: number): Promise<CommandAnswer> {
  const before = await labels();
  const answer = command === 'resync' ? await client.pairResync('qd') : await client.pairSwapResync('qd');
  assert.deepEqual([answer.result, answer.row], ['ABNORMAL_END', row], `${command} at ${client.address}: ${answer.reason}`);
  assert.deepEqual(await labels(), before, `${command} row ${row} left the pair as it was`);
  return answer;
}

test('pair create --mode quorum: a small sync pair; quorum status shows the 9-value attribute; what a quorum pair refuses', async () => {
  const dc1 = cluster.node('dc1').apiUrl;
  const dc2 = cluster.node('dc2').apiUrl;
  await cluster.volume('dc1', 'qc', 8 * MiB);
  await cluster.volume('dc1', 'big', 2048 * MiB);
  await cluster.volume('dc1', 'qg', 8 * MiB);
  assert.match(await ok(['--node', dc1, 'pair', 'create', 'qc', '--volume', 'qc', '--to', dc2, '--mode', 'quorum', '--wait']), /pair qc is duplex \(PAIR\)/);
  assert.match(await ok(['--node', dc1, 'pair', 'status']), /qc\s+P\s+qc\s+dc2:qc\s+quorum\s+never\s+duplex\s+PAIR/);
  const status = JSON.parse(await ok(['--node', dc2, 'pair', 'status', 'qc', '--json'])) as { purpose: string; mode: string; role: string };
  assert.deepEqual([status.purpose, status.mode, status.role], ['quorum', 'sync', 'secondary']);
  assert.match(await ok(['--node', dc1, 'quorum', 'status']), /^VOLUME\s+ATTRIBUTE\s+PAIR\s+PEER\s+EPOCH\s+RESERVED BY\n(.*\n)*qc\s+P-VOL, Pair\s+qc\s+dc2\s+1\s+-/m);
  assert.match(await ok(['--node', dc2, 'quorum', 'status', 'qc']), /qc\s+S-VOL, Pair\s+qc\s+dc1/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'big', '--to', dc2, '--mode', 'quorum'], 2, /a quorum volume holds at most 1GiB/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'qg', '--to', dc2, '--mode', 'quorum', '--group', 'g'], 2, /no consistency group/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'qc', '--to', dc2, '--mode', 'async'], 1, /quorum volume of pair qc|already has a pair/);
  // A quorum pair is never taken over, its S-VOL never written, and it is split at (or through) its P-VOL node.
  await fails(['--node', dc2, 'pair', 'takeover', 'qc'], 1, /never taken over/);
  await fails(['--node', dc1, 'pair', 'split', 'qc', '--rw'], 1, /never accepts host writes/);
  await fails(['--node', dc2, 'pair', 'resync', 'qc'], 1, /Fig\. 4 row 7: pair resync on a S-VOL, Pair ends abnormally/);
  await fails(['--node', dc2, 'quorum', 'resync', '--volume', 'qc'], 1, /ABNORMAL_END \(Fig\. 4 row 7\)/);
  await fails(['--node', dc1, 'quorum', 'swap-resync', '--volume', 'qc'], 1, /ABNORMAL_END \(Fig\. 4 row 12\)/);
  // Behaviour 17: a split sent at the S-VOL's node acts on the whole pair.
  assert.match(await ok(['--node', dc2, 'quorum', 'split', '--volume', 'qc']), /qc is S-VOL, Suspend\(normal\)/);
  assert.match(await ok(['--node', dc1, 'quorum', 'status', 'qc', '--json']), /"label": "P-VOL, Suspend\(normal\)"/);
  await ok(['--node', dc1, 'pair', 'delete', 'qc']);
  assert.match(await ok(['--node', dc2, 'quorum', 'status', 'qc']), /qc\s+Simplex\s+-/);
});

test('reservations through the CLI: RESERVE, RESERVATION CONFLICT, RELEASE by the holder only, reset, status; local to one node', async () => {
  const dc1 = cluster.node('dc1').apiUrl;
  const dc2 = cluster.node('dc2').apiUrl;
  assert.match(await ok(['--node', dc1, 'quorum', 'reserve', '--volume', 'qd', '--as', 'host10']), /^GOOD: reserved by host10/);
  assert.match(await ok(['--node', dc1, 'quorum', 'reserve', '--volume', 'qd', '--as', 'host10']), /^GOOD/, 'again from the holder');
  await fails(['--node', dc1, 'quorum', 'reserve', '--volume', 'qd', '--as', 'host12'], 1, /^RESERVATION CONFLICT: reserved by host10/);
  // Not replicated: the S-VOL's node has its own reservation (spec 004 [0016]).
  assert.match(await ok(['--node', dc2, 'quorum', 'reserve', '--volume', 'qd', '--as', 'host11']), /^GOOD/);
  assert.match(await ok(['--node', dc1, 'quorum', 'status', 'qd']), /qd\s+P-VOL, Pair\s+q\s+dc2\s+\d+\s+host10 since/);
  assert.match(await ok(['--node', dc1, 'quorum', 'release', '--volume', 'qd', '--as', 'host12']), /held by host10, not host12: nothing released/);
  assert.match(await ok(['--node', dc1, 'quorum', 'release', '--volume', 'qd', '--as', 'host10']), /released by host10/);
  assert.match(await ok(['--node', dc1, 'quorum', 'reserve', '--volume', 'qd', '--as', 'host12']), /^GOOD/);
  assert.match(await ok(['--node', dc1, 'quorum', 'reset', '--volume', 'qd', '--as', 'host10']), /reset by host10: the reservation of host12 was cleared/);
  const view = JSON.parse(await ok(['--node', dc1, 'quorum', 'status', 'qd', '--json'])) as { reservation: unknown; attribute: unknown };
  assert.deepEqual([view.reservation, view.attribute], [null, { role: 'pvol', state: 'pair' }]);
  await ok(['--node', dc2, 'quorum', 'reset', '--volume', 'qd', '--as', 'host11']);
  await fails(['--node', dc1, 'quorum', 'reserve', '--volume', 'nope', '--as', 'h'], 1, /volume nope does not exist/);
  await fails(['--node', dc1, 'quorum', 'reserve', '--volume', 'qd', '--as', 'bad host'], 2, /not a valid host identity/);
  const events = await ok(['--node', dc1, 'events', '--json']);
  assert.match(events, /"kind":"quorum-reservation-conflict"/);
});

test('Fig. 4 at both nodes in Simplex, Pair, Suspend(normal), Copy and Suspend(error): only rows 4 and 17 end normally', async () => {
  await cluster.volume('dc1', 'solo', 8 * MiB);
  assert.equal((await q1.pairResync('solo')).row, 1);
  assert.equal((await q1.pairSwapResync('solo')).row, 10);
  // Pair: rows 3, 7, 12, 16.
  assert.deepEqual(await labels(), ['P-VOL, Pair', 'S-VOL, Pair']);
  await expectAbnormal(q1, 'resync', 3);
  await expectAbnormal(q2, 'resync', 7);
  await expectAbnormal(q1, 'swap-resync', 12);
  await expectAbnormal(q2, 'swap-resync', 16);
  // Fig. 10 from the S-VOL's node (behaviour 17).
  assert.equal((await q2.pairSplit('qd')).label, 'S-VOL, Suspend(normal)');
  assert.deepEqual(await labels(), ['P-VOL, Suspend(normal)', 'S-VOL, Suspend(normal)']);
  // Suspend(normal): the wrong side refuses (rows 8 and 13).
  await expectAbnormal(q2, 'resync', 8);
  await expectAbnormal(q1, 'swap-resync', 13);
  // The owner writes its P-VOL while split (not mirrored: E12); the S-VOL refuses host writes (E14).
  const writer = await cluster.client('dc1', 'qd');
  for (let i = 0; i < 32; i++) await writer.write(i * MiB, randomBytes(MiB));
  await writer.flush();
  await writer.disconnect();
  const reader = await cluster.client('dc2', 'qd');
  await assert.rejects(reader.write(0, Buffer.alloc(4096)), (e: NbdClientError) => e.errno === c.NBD_EPERM);
  await reader.disconnect();
  // Row 4, with the link slowed so that Copy lasts: then rows 2, 6, 11, 15 (behaviour 4).
  for (const p of proxies) p.setDelay(400);
  try {
    const won = await q1.pairResync('qd');
    assert.deepEqual([won.result, won.row, won.before.label, won.after.label], ['NORMAL_END', 4, 'P-VOL, Suspend(normal)', 'P-VOL, Copy']);
    assert.equal((await q2.attribute('qd')).label, 'S-VOL, Copy', 'the S-VOL\'s node had the new state before NORMAL_END');
    const racing = await Promise.all([q1.pairResync('qd'), q2.pairResync('qd'), q1.pairSwapResync('qd'), q2.pairSwapResync('qd')]);
    assert.deepEqual(racing.map((a) => [a.result, a.row]), [['ABNORMAL_END', 2], ['ABNORMAL_END', 6], ['ABNORMAL_END', 11], ['ABNORMAL_END', 15]]);
    assert.deepEqual(await labels(), ['P-VOL, Copy', 'S-VOL, Copy'], 'still copying: the racing commands changed nothing');
  } finally {
    for (const p of proxies) p.setDelay(0);
  }
  // Behaviour 2: Copy → Pair, roles kept; both volumes equal.
  await cluster.waitState('dc1', 'q', 'duplex');
  await cluster.waitState('dc2', 'q', 'duplex');
  assert.deepEqual(await labels(), ['P-VOL, Pair', 'S-VOL, Pair']);
  assert.equal(await sha256Export(cluster.node('dc1').nbdUri('qd'), dir), await sha256Export(cluster.node('dc2').nbdUri('qd'), dir));
  // Row 17: split, then a swap resync at the S-VOL; the roles swap (behaviour 3).
  await q1.pairSplit('qd');
  const swapped = await q2.pairSwapResync('qd');
  assert.deepEqual([swapped.result, swapped.row, swapped.after.label], ['NORMAL_END', 17, 'P-VOL, Copy']);
  assert.match((await q1.attribute('qd')).label, /^S-VOL, (Copy|Pair)$/);
  await cluster.waitState('dc2', 'q', 'duplex');
  await cluster.waitState('dc1', 'q', 'duplex');
  assert.deepEqual(await labels(), ['S-VOL, Pair', 'P-VOL, Pair']);
  const epochs = [(await q1.attribute('qd')).epoch, (await q2.attribute('qd')).epoch];
  assert.equal(epochs[0], epochs[1], 'both nodes report the same epoch (behaviour 20)');
  // Split at the new S-VOL's node (dc1) is forwarded to dc2.
  assert.equal((await q1.pairSplit('qd')).label, 'S-VOL, Suspend(normal)');
  // Suspend(error): the link is lost while the pair rests in Suspend(normal) (E5) — rows 5, 9, 14, 18.
  for (const p of proxies) p.cut();
  try {
    await waitFor('both nodes record Suspend(error)', async () => (await labels()).join() === 'S-VOL, Suspend(error),P-VOL, Suspend(error)', { timeoutMs: 20_000 });
    await expectAbnormal(q2, 'resync', 5);
    await expectAbnormal(q1, 'resync', 9);
    await expectAbnormal(q2, 'swap-resync', 14);
    await expectAbnormal(q1, 'swap-resync', 18);
    // No automatic resync (E3), and a split cannot reach the P-VOL's node from here.
    await assert.rejects(q1.pairSplit('qd'), /split of quorum pair q/);
  } finally {
    for (const p of proxies) p.restore();
  }
  await waitFor('the link is back', async () => (await cluster.pairStatus('dc1', 'q')).peer.connected);
  assert.deepEqual(await labels(), ['S-VOL, Suspend(error)', 'P-VOL, Suspend(error)'], 'Suspend(error) stays until an operator recovers it (E3)');
  // Recovery: a split at either node once both reach each other.
  assert.equal((await q1.pairSplit('qd')).label, 'S-VOL, Suspend(normal)');
  assert.deepEqual(await labels(), ['S-VOL, Suspend(normal)', 'P-VOL, Suspend(normal)']);
});

test('behaviour 12: a command whose peer cannot be reached ends abnormally and leaves Suspend(error); nothing is decided locally', async () => {
  for (const who of ['P-VOL', 'S-VOL'] as const) {
    assert.deepEqual(await labels(), ['S-VOL, Suspend(normal)', 'P-VOL, Suspend(normal)']);
    // The link goes silent without closing: the command finds the pair still in Suspend(normal).
    for (const p of proxies) p.blackhole();
    try {
      const answer = who === 'P-VOL' ? await q2.pairResync('qd') : await q1.pairSwapResync('qd');
      assert.deepEqual([answer.result, answer.row], ['ABNORMAL_END', who === 'P-VOL' ? 4 : 17]);
      assert.equal(answer.after.label, `${who}, Suspend(error)`, answer.reason);
      await waitFor('both nodes record Suspend(error)', async () => (await labels()).every((l) => l.endsWith('Suspend(error)')), { timeoutMs: 20_000 });
    } finally {
      for (const p of proxies) p.restore();
    }
    await waitFor('the link is back', async () => (await cluster.pairStatus('dc2', 'q')).peer.connected && (await cluster.pairStatus('dc1', 'q')).peer.connected);
    assert.deepEqual(await labels(), ['S-VOL, Suspend(error)', 'P-VOL, Suspend(error)'], 'the roles never moved');
    await q2.pairSplit('qd');
    await waitFor('recovered at both nodes', async () => (await labels()).join() === 'S-VOL, Suspend(normal),P-VOL, Suspend(normal)');
  }
});

test('Figs. 7–13 on two real nodes: host 10 (P-VOL side) wins both rounds; its writes reach the S-VOL once in Pair', async () => {
  // Put the P-VOL back at dc1 for the figures: host 10 sits at the P-VOL's site.
  const back = await arbitrate(new PairVolumeControl(q1, 'setup', 'qd'), { split: true });
  assert.equal(back.status, 'GOOD');
  await q1.release('qd', 'setup');
  assert.deepEqual(await labels(), ['P-VOL, Suspend(normal)', 'S-VOL, Suspend(normal)']);
  const info = Buffer.alloc(4096, 0x10);
  const run = await figures7to13(q1, q2, {
    writeClusterInfo: async (host) => {
      const nbd = await cluster.client(host === 'host10' ? 'dc1' : 'dc2', 'qd');
      await nbd.write(0, info, { fua: true });
      await nbd.disconnect();
    },
    waitPair: async () => {
      await cluster.waitState('dc1', 'q', 'duplex');
      await cluster.waitState('dc2', 'q', 'duplex');
    },
  });
  assert.deepEqual(run.figures.map((f) => [f.fig, f.state]),
    [[7, 'Suspend(normal)'], [8, 'Pair'], [9, 'Pair'], [10, 'Suspend(normal)'], [11, 'Suspend(normal)'], [12, 'Pair'], [13, 'Pair']]);
  assert.deepEqual(run.rounds.map((r) => r.map((x) => x.status)), [['GOOD', 'RESERVATION_CONFLICT'], ['GOOD', 'RESERVATION_CONFLICT']]);
  assert.deepEqual(run.rounds[1]!.map((r) => r.steps[0]!.what.startsWith('bus device reset')), [true, true], 'Fig. 12: a reset before RESERVE');
  assert.deepEqual(run.figures.find((f) => f.fig === 9)!.running, { host10: true, host11: true });
  assert.deepEqual(run.figures.find((f) => f.fig === 13)!.running, { host10: true, host11: false });
  // Behaviour 15: the winner's write is on the S-VOL now that the pair is in Pair.
  const reader = await cluster.client('dc2', 'qd');
  assert.deepEqual(await reader.read(0, 4096), info);
  await reader.disconnect();
  // After Fig. 13 the owner splits again (B10), ready for the next failure.
  await q1.pairSplit('qd');
  for (const h of ['host10']) await q1.release('qd', h);
  assert.deepEqual(await labels(), ['P-VOL, Suspend(normal)', 'S-VOL, Suspend(normal)']);
});

test('tricopy quorum arbitrate: GOOD, the winner splits back to Suspend(normal); with the pair left in Pair the other host gets RESERVATION CONFLICT', async () => {
  const dc1 = cluster.node('dc1').apiUrl;
  const dc2 = cluster.node('dc2').apiUrl;
  const won = JSON.parse(await ok(['--node', dc2, 'quorum', 'arbitrate', '--volume', 'qd', '--as', 'host11', '--json'])) as
    { status: string; command: string; split: { label: string } | null; steps: Array<{ step: number }> };
  assert.deepEqual([won.status, won.command, won.split?.label], ['GOOD', 'swap-resync', 'P-VOL, Suspend(normal)']);
  assert.deepEqual(won.steps.map((s) => s.step).filter((s) => s > 0), [110, 111, 113, 115, 117]);
  await ok(['--node', dc2, 'quorum', 'release', '--volume', 'qd', '--as', 'host11']);
  // Host 10 wins next (the pair was split back), and leaves the pair to copy into Pair (--no-split) ...
  const again = await ok(['--node', dc1, 'quorum', 'arbitrate', '--volume', 'qd', '--as', 'host10', '--verbose', '--no-split']);
  assert.match(again, /113\s+attribute of qd: S-VOL, Suspend\(normal\)\n115\s+PAIR_SWAP_RESYNC: NORMAL_END \(Fig\. 4 row 17/);
  // ... so host 11 cannot win (E1/E2) and gives its local reservation back.
  const lost = await fails(['--node', dc2, 'quorum', 'arbitrate', '--volume', 'qd', '--as', 'host11', '--verbose'], 1, /RESERVATION CONFLICT: the pair command ended abnormally/);
  assert.match(lost, /114\s+PAIR_RESYNC: ABNORMAL_END \(Fig\. 4 row 1[56]|113\s+attribute of qd: S-VOL, (Copy|Pair)\n115\s+PAIR_SWAP_RESYNC: ABNORMAL_END \(Fig\. 4 row 1[56]/);
  assert.match(lost, /116\s+RELEASE qd/);
  assert.equal((await q2.quorumStatus('qd')).reservation, null);
  await new PairVolumeControl(q1, 'host10', 'qd').splitWhenPaired(60_000);
  await q1.release('qd', 'host10');
});

test('randomised races of two and three contenders on two real nodes: exactly one GOOD each time', async () => {
  const trials = Number(process.env.QUORUM_RACES ?? 100);
  const random = seededRandom(Number(process.env.QUORUM_SEED ?? 11));
  const clients = { dc1: q1, dc2: q2 } as const;
  // Whatever the last test left: back to Suspend(normal).
  await waitFor('the pair settles', async () => {
    const [a, b] = await labels();
    if (a.endsWith('Copy') || b.endsWith('Copy')) return false;
    if (a.endsWith('Pair')) await q1.pairSplit('qd');
    return true;
  });
  for (const n of ['dc1', 'dc2'] as const) for (const h of ['host10', 'host11', 'setup']) await clients[n].release('qd', h);
  let three = 0;
  for (let trial = 0; trial < trials; trial++) {
    const contenders = random() < 0.5 ? 2 : 3;
    if (contenders === 3) three++;
    const hosts = Array.from({ length: contenders }, (_, i) => ({ host: `t${trial}h${i}`, node: (random() < 0.5 ? 'dc1' : 'dc2') as 'dc1' | 'dc2', reset: random() < 0.3, jitterMs: Math.floor(random() * 15) }));
    const results = await Promise.all(hosts.map(async (h) => {
      await new Promise((r) => setTimeout(r, h.jitterMs));
      return arbitrate(new PairVolumeControl(clients[h.node], h.host, 'qd'), { reset: h.reset, split: false });
    }));
    const winners = results.filter((r) => r.status === 'GOOD');
    const summary = results.map((r, i) => `${r.host}@${hosts[i]!.node}${hosts[i]!.reset ? '+reset' : ''}:${r.status}(${r.answer?.reason ?? r.reason})`).join(' | ');
    assert.equal(winners.length, 1, `trial ${trial}: ${summary}`);
    const winner = hosts[results.indexOf(winners[0]!)]!;
    const other = winner.node === 'dc1' ? 'dc2' : 'dc1';
    assert.match((await clients[winner.node].attribute('qd')).label, /^P-VOL, (Copy|Pair)$/, `trial ${trial}: the winner's volume is the P-VOL`);
    assert.match((await clients[other].attribute('qd')).label, /^S-VOL, (Copy|Pair)$/, `trial ${trial}: the other is the S-VOL`);
    for (const [i, r] of results.entries()) {
      if (r.status !== 'GOOD') assert.notEqual((await clients[hosts[i]!.node].quorumStatus('qd')).reservation?.holder, r.host, `trial ${trial}: loser ${r.host} released`);
    }
    // The winner splits back once in Pair (B10), and gives its local reservation back for the next trial.
    await new PairVolumeControl(clients[winner.node], winner.host, 'qd').splitWhenPaired(60_000);
    for (const n of ['dc1', 'dc2'] as const) await clients[n].reset('qd', 'harness');
    await waitFor('Suspend(normal) at both nodes', async () => (await labels()).every((l) => l.endsWith('Suspend(normal)'))).catch(async (err: unknown) => {
      const [a, b] = await labels();
      throw new Error(`trial ${trial} (${summary}): ${(err as Error).message}; dc1 ${a}, dc2 ${b}: ${await ok(['--node', cluster.node('dc1').apiUrl, 'pair', 'status', 'q'])} ${await ok(['--node', cluster.node('dc2').apiUrl, 'pair', 'status', 'q'])}`);
    });
  }
  assert.ok(trials < 10 || three > 0, 'three contenders were raced too');
});
