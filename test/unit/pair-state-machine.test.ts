// Every (role, state, command/event[, suspend cause]) of the pair state machine, with the expected outcome:
// the transitions of spec 001 §5.2 and the refusals with the words an operator reads.
import { swapFinishesAt } from '../../src/replication/pairs/interrupted-swap';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { allDecisions, decide, type Outcome, type PairEvent } from '../../src/replication/pairs/state-table';
import { type PairRole, type PairState, shortCode } from '../../src/replication/pairs/pair-model';

type Expect = string; // "-> state[/cause]" | "noop" | "refuse: <substring>"
/** A row that depends on why the pair is suspended: the expectation per cause, `other` for the rest. */
type ByCause = { byCause: Record<string, Expect> & { other: Expect } };

// The whole table, written out independently of the implementation. Mode-dependent rows list
// "sync | async".
const expected: Record<PairRole, Partial<Record<PairState, Partial<Record<PairEvent, Expect | [Expect, Expect] | ByCause>>>>> = {
  primary: {
    simplex: {
      split: 'refuse: not in a pair', resync: 'refuse: not in a pair', takeover: 'refuse: not in a pair', swap: 'refuse: not in a pair',
      delete: 'refuse: not in a pair', 'copy-complete': 'refuse: not in a pair', 'drain-complete': 'refuse: not in a pair',
      failure: 'refuse: not in a pair', 'peer-took-over': 'refuse: not in a pair',
    },
    'initial-copying': {
      split: '-> suspended/operator', resync: 'noop', takeover: 'refuse: run at the secondary', swap: 'refuse: initial copy has not finished',
      delete: '-> simplex', 'copy-complete': '-> duplex', 'drain-complete': 'refuse: no drain runs', failure: '-> suspended/failure',
      'peer-took-over': '-> suspended/takeover-by-peer',
    },
    duplex: {
      split: ['-> suspended/operator', '-> suspending/operator'], resync: 'noop', takeover: 'refuse: run at the secondary',
      swap: '-> duplex', delete: '-> simplex', 'copy-complete': 'refuse: no copy runs', 'drain-complete': 'refuse: no drain runs',
      failure: ['-> suspended/failure', '-> suspending/failure'], 'peer-took-over': '-> suspended/takeover-by-peer',
    },
    'duplex-pending': {
      split: '-> suspended/operator', resync: 'noop', takeover: 'refuse: run at the secondary', swap: 'refuse: resync has not finished',
      delete: '-> simplex', 'copy-complete': '-> duplex', 'drain-complete': 'refuse: no drain runs', failure: '-> suspended/failure',
      'peer-took-over': '-> suspended/takeover-by-peer',
    },
    suspending: {
      split: 'noop', resync: 'refuse: still suspending', takeover: 'refuse: run at the secondary', swap: 'refuse: suspending',
      delete: '-> simplex', 'copy-complete': 'refuse: no copy runs', 'drain-complete': '-> suspended', failure: '-> suspending/failure',
      'peer-took-over': '-> suspended/takeover-by-peer',
    },
    suspended: {
      // A split after a failure is the operator choosing to write on without the secondary.
      split: { byCause: { failure: '-> suspended/operator', 'crash-recovery': '-> suspended/operator', other: 'noop' } },
      resync: '-> duplex-pending', takeover: 'refuse: run at the secondary', swap: '-> duplex-pending',
      delete: '-> simplex', 'copy-complete': 'refuse: no copy runs', 'drain-complete': 'refuse: no drain runs', failure: 'noop',
      'peer-took-over': '-> suspended/takeover-by-peer',
    },
  },
  secondary: {
    'initial-copying': {
      split: '-> suspended/operator', resync: 'refuse: run at the primary', takeover: 'refuse: not a usable image',
      swap: 'refuse: not a usable image', delete: '-> simplex', 'copy-complete': '-> duplex', 'drain-complete': 'refuse: no drain runs',
      failure: '-> suspended/failure', 'peer-took-over': 'refuse: no peer that could take over',
    },
    duplex: {
      split: '-> suspended/operator', resync: 'refuse: run at the primary', takeover: '-> secondary-writable', swap: '-> duplex', delete: '-> simplex',
      'copy-complete': 'refuse: no copy runs', 'drain-complete': 'refuse: no drain runs', failure: '-> suspended/failure',
      'peer-took-over': 'refuse: no peer that could take over',
    },
    'duplex-pending': {
      split: '-> suspended/operator', resync: 'refuse: run at the primary', takeover: 'refuse: not a consistent image',
      swap: 'refuse: not a consistent image', delete: '-> simplex', 'copy-complete': '-> duplex', 'drain-complete': 'refuse: no drain runs',
      failure: '-> suspended/failure', 'peer-took-over': 'refuse: no peer that could take over',
    },
    suspending: {
      split: 'noop', resync: 'refuse: run at the primary', takeover: '-> secondary-writable', swap: 'refuse: suspending',
      delete: '-> simplex', 'copy-complete': 'refuse: no copy runs', 'drain-complete': '-> suspended', failure: '-> suspended/failure',
      'peer-took-over': 'refuse: no peer that could take over',
    },
    suspended: {
      split: 'noop', resync: 'refuse: run at the primary', takeover: '-> secondary-writable', swap: '-> duplex-pending',
      delete: '-> simplex', 'copy-complete': 'refuse: no copy runs', 'drain-complete': 'refuse: no drain runs', failure: 'noop',
      'peer-took-over': 'refuse: no peer that could take over',
    },
    'secondary-writable': {
      split: 'noop', resync: 'refuse: run swap here', takeover: 'noop', swap: '-> duplex-pending', delete: '-> simplex',
      'copy-complete': 'refuse: no copy runs', 'drain-complete': 'refuse: no drain runs', failure: 'noop',
      'peer-took-over': 'refuse: no peer that could take over',
    },
  },
};

function render(o: Outcome): string {
  if (o.kind === 'transition') return `-> ${o.to}${o.cause ? `/${o.cause}` : ''}`;
  if (o.kind === 'noop') return 'noop';
  return `refuse: ${o.message}`;
}

test('every (role, state, event, mode) has the outcome spec 001 §5 asks for', () => {
  let checked = 0;
  for (const d of allDecisions()) {
    const row = expected[d.role][d.state];
    if (!row) continue;
    const want = row[d.event];
    assert.ok(want !== undefined, `table entry for ${d.role}/${d.state}/${d.event} is written down`);
    const w = Array.isArray(want) ? want[d.mode === 'sync' ? 0 : 1]
      : typeof want === 'object' ? (want.byCause[d.cause ?? 'other'] ?? want.byCause.other) : want;
    const got = render(d.outcome);
    if (w.startsWith('refuse: ')) {
      assert.ok(got.startsWith('refuse: '), `${d.role}/${d.state}/${d.event}/${d.mode}: expected a refusal, got ${got}`);
      assert.ok(got.includes(w.slice(8)), `${d.role}/${d.state}/${d.event}/${d.mode}: "${got}" names the reason "${w.slice(8)}"`);
    } else {
      assert.equal(got, w, `${d.role}/${d.state}/${d.event}/${d.mode}`);
    }
    checked++;
  }
  assert.equal(checked, allDecisions().filter((d) => expected[d.role][d.state]).length);
  assert.ok(checked >= 200, `${checked} combinations checked`);
});

test('refusals read as instructions for the operator', () => {
  const o = decide('secondary', 'duplex-pending', 'takeover', 'async');
  assert.equal(o.kind, 'refuse');
  assert.match((o as { message: string }).message, /not a consistent image/);
  const r = decide('secondary', 'secondary-writable', 'resync', 'sync');
  assert.match((r as { message: string }).message, /run swap here to make it the primary/);
});

test('a secondary that stepped down in a swap nobody finished may become the primary again; one being copied into may not', () => {
  for (const mode of ['sync', 'async'] as const) {
    const swap = decide('secondary', 'duplex-pending', 'swap', mode, null, { awaitingNewPrimary: true });
    assert.equal(swap.kind, 'transition');
    assert.deepEqual([(swap as { to: string }).to, (swap as { role?: string }).role, (swap as { generation?: string }).generation], ['duplex-pending', 'primary', 'bump']);
    const takeover = decide('secondary', 'duplex-pending', 'takeover', mode, null, { awaitingNewPrimary: true });
    assert.equal(takeover.kind, 'transition');
    assert.equal((takeover as { to: string }).to, 'secondary-writable');
    for (const event of ['swap', 'takeover'] as const) {
      const o = decide('secondary', 'duplex-pending', event, mode, null, { awaitingNewPrimary: false });
      assert.equal(o.kind, 'refuse', `${event} of a secondary being copied into is refused`);
    }
  }
});

test('an interrupted swap is finished at its requester; otherwise where the generation is newer', () => {
  const stepped = { node: 'a', generation: 5, awaitingNewPrimary: true };
  const requester = { node: 'b', generation: 4, awaitingNewPrimary: false };
  assert.equal(swapFinishesAt(stepped, requester).node, 'b');
  assert.equal(swapFinishesAt(requester, stepped).node, 'b');
  const clean = { node: 'a', generation: 5, awaitingNewPrimary: false };
  assert.equal(swapFinishesAt(clean, requester).node, 'a');
  assert.equal(swapFinishesAt(requester, clean).node, 'a');
});

test('short codes follow Hitachi CCI', () => {
  assert.equal(shortCode({ role: 'primary', state: 'simplex', suspendCause: null }), 'SMPL');
  assert.equal(shortCode({ role: 'primary', state: 'initial-copying', suspendCause: null }), 'COPY');
  assert.equal(shortCode({ role: 'secondary', state: 'duplex-pending', suspendCause: null }), 'COPY');
  assert.equal(shortCode({ role: 'primary', state: 'duplex', suspendCause: null }), 'PAIR');
  assert.equal(shortCode({ role: 'primary', state: 'suspended', suspendCause: 'operator' }), 'PSUS');
  assert.equal(shortCode({ role: 'secondary', state: 'suspended', suspendCause: 'operator' }), 'SSUS');
  assert.equal(shortCode({ role: 'primary', state: 'suspended', suspendCause: 'failure' }), 'PSUE');
  assert.equal(shortCode({ role: 'primary', state: 'suspended', suspendCause: 'journal-full' }), 'PSUE');
  assert.equal(shortCode({ role: 'secondary', state: 'suspended', suspendCause: 'failure' }), 'PSUE');
  assert.equal(shortCode({ role: 'secondary', state: 'secondary-writable', suspendCause: null }), 'SSWS');
});

// The internal events the first table left to hand-written code, now in the table too.
const newEvents: Record<PairRole, Partial<Record<PairState, Partial<Record<PairEvent, Expect | ByCause>>>>> = {
  primary: {
    'initial-copying': { 'journal-full': '-> suspended/journal-full', 'crash-recovery': '-> suspended/crash-recovery', 'peer-dissolved': '-> suspended/takeover-by-peer',
      'drain-failed': 'refuse: no drain runs', 'peer-state': 'refuse: does not follow', 'peer-resumed': 'refuse: does not follow' },
    duplex: { 'journal-full': '-> suspended/journal-full', 'crash-recovery': '-> suspended/crash-recovery', 'peer-dissolved': '-> suspended/takeover-by-peer',
      'drain-failed': 'refuse: no drain runs', 'peer-state': 'refuse: does not follow', 'peer-resumed': 'refuse: does not follow' },
    'duplex-pending': { 'journal-full': '-> suspended/journal-full', 'crash-recovery': '-> suspended/crash-recovery', 'peer-dissolved': '-> suspended/takeover-by-peer',
      'drain-failed': 'refuse: no drain runs' },
    suspending: { 'journal-full': '-> suspended/journal-full', 'crash-recovery': 'noop', 'peer-dissolved': '-> suspended/takeover-by-peer',
      'drain-failed': '-> suspended' },
    suspended: {
      'journal-full': 'noop', 'crash-recovery': 'noop', 'drain-failed': 'refuse: no drain runs',
      'peer-dissolved': { byCause: { 'takeover-by-peer': 'noop', other: '-> suspended/takeover-by-peer' } },
    },
  },
  secondary: {
    'initial-copying': { 'peer-dissolved': '-> simplex', 'journal-full': 'refuse: not possible', 'crash-recovery': 'refuse: not possible' },
    duplex: { 'peer-dissolved': '-> simplex', 'peer-resumed': 'refuse: does not follow' },
    suspended: { 'peer-dissolved': '-> simplex', 'peer-resumed': '-> duplex-pending' },
    'secondary-writable': { 'peer-dissolved': 'noop', 'peer-resumed': 'refuse: does not follow' },
  },
};

test('internal events once built by hand (crash recovery, journal full, failed drains, a dissolved peer) follow the table', () => {
  let checked = 0;
  for (const d of allDecisions(['journal-full', 'crash-recovery', 'peer-dissolved', 'drain-failed', 'peer-state', 'peer-resumed'])) {
    const want = newEvents[d.role][d.state]?.[d.event];
    if (want === undefined) continue;
    const w = typeof want === 'object' ? (want.byCause[d.cause ?? 'other'] ?? want.byCause.other) : want;
    const got = render(d.outcome);
    if (w.startsWith('refuse: ')) assert.ok(got.startsWith('refuse: ') && got.includes(w.slice(8)), `${d.role}/${d.state}/${d.event}: ${got}`);
    else assert.equal(got, w, `${d.role}/${d.state}/${d.event}/${d.mode}/${d.cause ?? '-'}`);
    checked++;
  }
  assert.ok(checked >= 60, `${checked} combinations checked`);
});

test('a secondary follows the state its primary reports, and nothing a secondary cannot be', () => {
  for (const state of ['initial-copying', 'duplex', 'duplex-pending', 'suspending', 'suspended'] as const) {
    const o = decide('secondary', 'duplex', 'peer-state', 'sync', null, { peerState: state, peerCause: state.startsWith('suspend') ? 'operator' : null });
    assert.equal(render(o), `-> ${state}${state.startsWith('suspend') ? '/operator' : ''}`);
  }
  assert.equal(decide('secondary', 'duplex', 'peer-state', 'sync', null, { peerState: 'secondary-writable' }).kind, 'refuse');
});

test('a swap reverses roles: the new primary bumps the generation, the old primary adopts it; dirty swaps copy', () => {
  const here = decide('secondary', 'duplex', 'swap', 'sync', null, { clean: true });
  assert.deepEqual(here.kind === 'transition' && [here.to, here.role, here.generation], ['duplex', 'primary', 'bump']);
  const dirty = decide('secondary', 'secondary-writable', 'swap', 'async', null, { clean: true });
  assert.deepEqual(dirty.kind === 'transition' && [dirty.to, dirty.role], ['duplex-pending', 'primary'], 'after a takeover a swap always copies');
  const away = decide('primary', 'duplex', 'swap', 'sync', null, { clean: false });
  assert.deepEqual(away.kind === 'transition' && [away.to, away.role, away.generation], ['duplex-pending', 'secondary', 'adopt']);
  const takeover = decide('secondary', 'suspended', 'takeover', 'async', 'failure');
  assert.equal(takeover.kind === 'transition' && takeover.generation, 'bump');
});
