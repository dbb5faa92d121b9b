// The host control software of spec 004 (Figs. 5–6) against the in-memory model of two storage
// nodes over the pure Fig. 4 table: the testable behaviours of §9 that concern the host, the
// Figs. 7–13 sequence (each side winning), and randomised races of two and three contenders,
// spread over both sites, with and without bus device resets: exactly one GOOD each time.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PairVolumeControl, arbitrate } from '../../src/quorum/host-control';
import { type ModelNodeName, QuorumModel, seededRandom } from '../support/quorum-model';
import { figures7to13 } from '../support/quorum-scenario';

test('behaviour 5: a local RESERVE that conflicts sends neither an attribute query nor a pair command', async () => {
  const m = new QuorumModel();
  m.reservations.A.reserve('qd', 'other-host');
  const a = m.node('A');
  let queried = false;
  const spy = Object.assign(Object.create(a) as typeof a, { attribute: async () => { queried = true; return a.attribute(); } });
  const r = await new PairVolumeControl(spy, 'host10', 'qd').reserve();
  assert.equal(r.status, 'RESERVATION_CONFLICT');
  assert.deepEqual([queried, m.sent.length, r.steps.map((s) => s.step)], [false, 0, [110, 111, 116]]);
  assert.equal(m.reservations.A.holder('qd')?.holder, 'other-host', 'the other host keeps its reservation');
});

test('behaviours 6–8: P-VOL → one PAIR_RESYNC; S-VOL → one PAIR_SWAP_RESYNC; Simplex → none; GOOD only after NORMAL_END; a loser holds no reservation', async () => {
  for (const side of ['A', 'B'] as ModelNodeName[]) {
    const m = new QuorumModel();
    const r = await new PairVolumeControl(m.node(side), 'h', 'qd').reserve();
    assert.equal(r.status, 'GOOD');
    assert.deepEqual(m.sent, [{ node: side, command: side === 'A' ? 'resync' : 'swap-resync' }]);
    assert.deepEqual(r.steps.map((s) => s.step), [110, 111, 113, side === 'A' ? 114 : 115, 117]);
    assert.equal(r.answer?.result, 'NORMAL_END');
    assert.equal(m.truth.pvol, side, 'the winner\'s local volume is the P-VOL (§5.3)');
    assert.equal(m.truth.state, 'copy');
    assert.equal(m.reservations[side].holder('qd')?.holder, 'h', 'the winner keeps its local reservation');
  }
  const simplex = new QuorumModel(Math.random, 6, { state: 'simplex' });
  const r = await new PairVolumeControl(simplex.node('A'), 'h', 'qd').reserve();
  assert.deepEqual([r.status, simplex.sent.length, r.steps.map((s) => s.step)], ['RESERVATION_CONFLICT', 0, [110, 111, 113, 116, 116]]);
  assert.equal(simplex.reservations.A.holder('qd'), null, 'released before RESERVATION CONFLICT (B7)');
});

test('behaviour 11: in Pair, Copy, Suspend(error) or Simplex every RESERVE is a RESERVATION CONFLICT and the pair does not change', async () => {
  for (const state of ['pair', 'copy', 'suspend-error', 'simplex'] as const) {
    for (const side of ['A', 'B'] as ModelNodeName[]) {
      const m = new QuorumModel(Math.random, 6, { state });
      const before = JSON.stringify(m.truth);
      const r = await new PairVolumeControl(m.node(side), 'h', 'qd').reserve();
      assert.equal(r.status, 'RESERVATION_CONFLICT', `${state} at ${side}`);
      assert.equal(JSON.stringify(m.truth), before);
      assert.equal(m.reservations[side].holder('qd'), null);
      if (state !== 'simplex') assert.match(r.reason, /ended abnormally/);
    }
  }
});

test('behaviour 12: with the remote-copy link down nobody gets GOOD and the pair ends in Suspend(error)', async () => {
  const m = new QuorumModel();
  m.linkUp = false;
  const results = await Promise.all([new PairVolumeControl(m.node('A'), 'h10', 'qd').reserve(), new PairVolumeControl(m.node('B'), 'h11', 'qd').reserve()]);
  assert.deepEqual(results.map((r) => r.status), ['RESERVATION_CONFLICT', 'RESERVATION_CONFLICT']);
  assert.deepEqual([m.views.A.state, m.views.B.state, m.truth.state], ['suspend-error', 'suspend-error', 'suspend-error']);
});

test('behaviours 13–14: two hosts of one site without a reset: at most one passes step 112; a reset lets another host reserve', async () => {
  const m = new QuorumModel();
  const [x, y] = await Promise.all([new PairVolumeControl(m.node('A'), 'x', 'qd').reserve(), new PairVolumeControl(m.node('A'), 'y', 'qd').reserve()]);
  const passed = [x, y].filter((r) => r.steps.some((s) => s.step === 113));
  assert.equal(passed.length, 1);
  const loser = [x, y].find((r) => !r.steps.some((s) => s.step === 113))!;
  assert.deepEqual(loser.steps.map((s) => s.step), [110, 111, 116]);
  const storage = m.node('A');
  assert.equal((await storage.reserve('qd', 'z')).status, 'RESERVATION_CONFLICT');
  await storage.reset('qd');
  assert.equal((await storage.reserve('qd', 'z')).status, 'GOOD');
  // Fig. 6: release and reset pass through unchanged; no pair command reaches the storage.
  const control = new PairVolumeControl(storage, 'z', 'qd');
  await control.release();
  await control.reset();
  assert.equal(m.reservations.A.holder('qd'), null);
  assert.deepEqual(m.sent.filter((s) => s.command !== 'resync'), []);
});

for (const first of ['host10', 'host11'] as const) {
  test(`Figs. 7–13 (behaviour 19), ${first}'s command first`, async () => {
    const m = new QuorumModel(seededRandom(first === 'host10' ? 7 : 13));
    const written: string[] = [];
    const run = await figures7to13(m.node('A'), m.node('B'), {
      writeClusterInfo: async (host) => {
        written.push(host);
      },
      waitPair: async () => m.finishCopy(),
    }, first);
    const other = first === 'host10' ? 'host11' : 'host10';
    assert.deepEqual(run.figures.map((f) => [f.fig, f.state]),
      [[7, 'Suspend(normal)'], [8, 'Pair'], [9, 'Pair'], [10, 'Suspend(normal)'], [11, 'Suspend(normal)'], [12, 'Pair'], [13, 'Pair']]);
    assert.deepEqual(run.rounds.map((round) => round.map((r) => `${r.host}:${r.status}`)),
      [['host10', 'host11'].map((h) => `${h}:${h === first ? 'GOOD' : 'RESERVATION_CONFLICT'}`), ['host10', 'host11'].map((h) => `${h}:${h === first ? 'GOOD' : 'RESERVATION_CONFLICT'}`)]);
    assert.deepEqual(written, [first], 'the winner initialised the cluster information (Fig. 8)');
    // Both local reserves succeeded in both rounds (one host per site); the loser's pair command failed.
    for (const round of run.rounds) for (const r of round) assert.ok(r.steps.some((s) => s.step === 111 && /: GOOD/.test(s.what)), `${r.host} reserved locally`);
    assert.deepEqual(run.figures.find((f) => f.fig === 9)!.running, { host10: true, host11: true }, 'the start-up loser runs as a member (B9)');
    assert.deepEqual(run.figures.find((f) => f.fig === 13)!.running, { [first]: true, [other]: false }, 'the failure loser stopped everything');
    assert.equal(run.figures.find((f) => f.fig === 13)!.owner, first);
    assert.equal(m.truth.pvol, first === 'host10' ? 'A' : 'B', 'the winner\'s volume is the P-VOL');
  });
}

test('200 randomised races of two and three contenders over both sites: exactly one GOOD each time, the winner holds the P-VOL', async () => {
  const random = seededRandom(2026);
  let three = 0;
  let sameSite = 0;
  for (let trial = 0; trial < 200; trial++) {
    const m = new QuorumModel(random, 8, { pvol: random() < 0.5 ? 'A' : 'B' });
    const contenders = random() < 0.5 ? 2 : 3;
    if (contenders === 3) three++;
    // Each host at a random site; resets at random (E8: a reset can let two hosts of a site pass 112).
    const hosts = Array.from({ length: contenders }, (_, i) => ({ host: `h${i}`, site: (random() < 0.5 ? 'A' : 'B') as ModelNodeName, reset: random() < 0.3 }));
    if (new Set(hosts.map((h) => h.site)).size < hosts.length) sameSite++;
    const results = await Promise.all(hosts.map((h) => arbitrate(new PairVolumeControl(m.node(h.site), h.host, 'qd'), { reset: h.reset, split: false })));
    const winners = results.filter((r) => r.status === 'GOOD');
    assert.equal(winners.length, 1, `trial ${trial}: ${results.map((r) => `${r.host}@${hosts.find((h) => h.host === r.host)!.site}:${r.status}`).join(' ')}`);
    assert.equal(m.commits.length, 1, `trial ${trial}: one pair command committed`);
    const winner = hosts.find((h) => h.host === winners[0]!.host)!;
    assert.equal(m.truth.pvol, winner.site, `trial ${trial}: the winner's local volume is the P-VOL`);
    for (const r of results.filter((x) => x.status !== 'GOOD')) {
      const h = hosts.find((x) => x.host === r.host)!;
      assert.notEqual(m.reservations[h.site].holder('qd')?.holder, r.host, `trial ${trial}: loser ${r.host} holds no reservation (E10)`);
    }
  }
  assert.ok(three > 50 && sameSite > 50, `the races covered three contenders (${three}) and hosts sharing a site (${sameSite})`);
});
