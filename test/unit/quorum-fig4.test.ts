// Spec 004 Fig. 4, row by row, written out here independently of src/quorum/fig4.ts; then every
// (command, state, side) of a quorum pair through the real pair state table with the quorum overlay,
// including every refusal, and the engine's guard for nodes without the overlay.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PairRole, PairState, SuspendCause } from '../../src/contracts/pairs';
import type { QuorumCommand, VolumeAttribute } from '../../src/contracts/quorum';
import { attributeLabel, attributeOf, fig4, fig4Rows, volumeAttributes } from '../../src/quorum/fig4';
import { quorumOverlay } from '../../src/quorum/pair-overlay';
import { type Outcome, type PairEvent, decide, noOverlay } from '../../src/replication/pairs/state-table';

// §5.2, as the spec prints it: [row, command, attribute, normal end?]
const spec: Array<[number, QuorumCommand, string, boolean]> = [
  [1, 'resync', 'Simplex', false],
  [2, 'resync', 'P-VOL, Copy', false],
  [3, 'resync', 'P-VOL, Pair', false],
  [4, 'resync', 'P-VOL, Suspend(normal)', true],
  [5, 'resync', 'P-VOL, Suspend(error)', false],
  [6, 'resync', 'S-VOL, Copy', false],
  [7, 'resync', 'S-VOL, Pair', false],
  [8, 'resync', 'S-VOL, Suspend(normal)', false],
  [9, 'resync', 'S-VOL, Suspend(error)', false],
  [10, 'swap-resync', 'Simplex', false],
  [11, 'swap-resync', 'P-VOL, Copy', false],
  [12, 'swap-resync', 'P-VOL, Pair', false],
  [13, 'swap-resync', 'P-VOL, Suspend(normal)', false],
  [14, 'swap-resync', 'P-VOL, Suspend(error)', false],
  [15, 'swap-resync', 'S-VOL, Copy', false],
  [16, 'swap-resync', 'S-VOL, Pair', false],
  [17, 'swap-resync', 'S-VOL, Suspend(normal)', true],
  [18, 'swap-resync', 'S-VOL, Suspend(error)', false],
];

test('Fig. 4: 18 rows, exactly rows 4 and 17 end normally, each found by (command, attribute)', () => {
  assert.equal(fig4Rows.length, 18);
  for (const [row, command, label, normal] of spec) {
    const r = fig4Rows[row - 1]!;
    assert.deepEqual([r.row, r.command, attributeLabel(r.attribute), r.result], [row, command, label, normal ? 'NORMAL_END' : 'ABNORMAL_END'], `row ${row}`);
    assert.equal(fig4(command, r.attribute).row, row);
    assert.ok(r.reason.length > 10, `row ${row} says why`);
  }
  assert.deepEqual(fig4Rows.filter((r) => r.result === 'NORMAL_END').map((r) => r.row), [4, 17]);
});

test('§4.2: the attribute query has 9 values, and both normal ends need the one shared state Suspend(normal)', () => {
  assert.deepEqual(volumeAttributes.map(attributeLabel), spec.slice(0, 9).map(([, , label]) => label));
  for (const r of fig4Rows.filter((x) => x.result === 'NORMAL_END')) assert.equal(r.attribute.state, 'suspend-normal');
});

// Every record state of spec 001 and the attribute spec 004 names it by.
const records: Array<{ role: PairRole; state: PairState; cause: SuspendCause | null; attribute: string }> = [];
for (const role of ['primary', 'secondary'] as const) {
  const side = role === 'primary' ? 'P-VOL' : 'S-VOL';
  records.push({ role, state: 'initial-copying', cause: null, attribute: `${side}, Copy` });
  records.push({ role, state: 'duplex-pending', cause: null, attribute: `${side}, Copy` });
  records.push({ role, state: 'duplex', cause: null, attribute: `${side}, Pair` });
  records.push({ role, state: 'suspended', cause: 'operator', attribute: `${side}, Suspend(normal)` });
  for (const cause of ['failure', 'crash-recovery', 'takeover-by-peer', 'journal-full'] as const) {
    records.push({ role, state: 'suspended', cause, attribute: `${side}, Suspend(error)` });
  }
}

test('attributeOf: every record state maps to one of the 9 attributes', () => {
  assert.equal(attributeLabel(attributeOf(undefined)), 'Simplex');
  for (const r of records) assert.equal(attributeLabel(attributeOf({ role: r.role, state: r.state, suspendCause: r.cause })), r.attribute, `${r.role} ${r.state} ${r.cause}`);
});

function quorumDecide(role: PairRole, state: PairState, cause: SuspendCause | null, event: PairEvent, extra: { secondaryWritable?: boolean } = {}): Outcome {
  return quorumOverlay({ role, state, event, mode: 'sync', cause, extra }, decide(role, state, event, 'sync', cause, extra));
}

function rowOf(command: QuorumCommand, label: string): number {
  return spec.find(([, c, l]) => c === command && l === label)![0];
}

test('quorum pair table: resync and swap at each side and in each state answer as Fig. 4 (rows 2–9, 11–18)', () => {
  for (const r of records) {
    // pair resync sent to this volume
    const resync = quorumDecide(r.role, r.state, r.cause, 'resync');
    const resyncRow = rowOf('resync', r.attribute);
    if (resyncRow === 4) {
      assert.equal(resync.kind, 'transition', `${r.attribute}: resync goes on`);
      assert.deepEqual(resync.kind === 'transition' && [resync.to, resync.role ?? r.role], ['duplex-pending', 'primary'], 'Copy, roles kept');
    } else {
      assert.equal(resync.kind, 'refuse', `${r.attribute}: resync refused`);
      assert.match(resync.kind === 'refuse' ? resync.message : '', new RegExp(`^Fig\\. 4 row ${resyncRow}: pair resync on a ${r.attribute.replace(/[()]/g, '\\$&')} ends abnormally`));
    }
    if (r.role === 'secondary') {
      // pair swap resync sent to the S-VOL (rows 15–18): decided first here, then at the P-VOL's node
      const swap = quorumDecide(r.role, r.state, r.cause, 'swap');
      const swapRow = rowOf('swap-resync', r.attribute);
      if (swapRow === 17) {
        assert.equal(swap.kind, 'transition');
        assert.deepEqual(swap.kind === 'transition' && [swap.to, swap.role], ['duplex-pending', 'primary'], 'Copy, the S-VOL becomes the P-VOL');
      } else {
        assert.equal(swap.kind, 'refuse', `${r.attribute}: swap refused`);
        assert.match(swap.kind === 'refuse' ? swap.message : '', new RegExp(`^Fig\\. 4 row ${swapRow}:`));
      }
    } else {
      // At the P-VOL's node the swap event is the authority deciding a swap resync the S-VOL's node
      // forwarded: only Suspend(normal) goes on (row 17 seen from the pair's state here). Row 13 (a
      // swap resync sent to the P-VOL itself) is refused before any transition: see storage tests.
      const swap = quorumDecide(r.role, r.state, r.cause, 'swap');
      const sState = r.attribute.replace('P-VOL', 'S-VOL');
      if (rowOf('swap-resync', sState) === 17) {
        assert.deepEqual(swap.kind === 'transition' && [swap.to, swap.role], ['duplex-pending', 'secondary'], 'the old P-VOL steps down');
      } else {
        assert.equal(swap.kind, 'refuse', `${r.attribute}: the authority refuses the swap`);
        assert.match(swap.kind === 'refuse' ? swap.message : '', new RegExp(`^Fig\\. 4 row ${rowOf('swap-resync', sState)}: the P-VOL node finds the pair in`));
      }
    }
  }
});

test('quorum pair table: takeover never, split only at the P-VOL out of Pair or Suspend(error), -rw never, a lost link makes Suspend(normal) Suspend(error)', () => {
  for (const r of records) {
    const takeover = quorumDecide(r.role, r.state, r.cause, 'takeover');
    assert.equal(takeover.kind, 'refuse');
    assert.match(takeover.kind === 'refuse' ? takeover.message : '', /never taken over/);

    const split = quorumDecide(r.role, r.state, r.cause, 'split');
    if (r.role === 'secondary') {
      assert.deepEqual(split.kind === 'refuse' && [split.wrongSide, /P-VOL node/.test(split.message)], [true, true], `${r.attribute}: split forwarded, not applied at the S-VOL`);
    } else if (r.attribute.endsWith('Copy')) {
      assert.match(split.kind === 'refuse' ? split.message : '', /once it is in Pair/);
    } else if (r.attribute.endsWith('Pair') || (r.attribute.endsWith('Suspend(error)') && (r.cause === 'failure' || r.cause === 'crash-recovery'))) {
      assert.deepEqual(split.kind === 'transition' && [split.to, split.cause], ['suspended', 'operator'], `${r.attribute} (${r.cause}): → Suspend(normal)`);
    } else {
      assert.notEqual(split.kind, 'transition', `${r.attribute} (${r.cause}): split changes nothing`);
    }
    const rw = quorumDecide(r.role, r.state, r.cause, 'split', { secondaryWritable: true });
    assert.match(rw.kind === 'refuse' ? rw.message : '', /never accepts host writes/);

    const failure = quorumDecide(r.role, r.state, r.cause, 'failure');
    if (r.attribute.endsWith('Suspend(normal)')) {
      assert.deepEqual(failure.kind === 'transition' && [failure.to, failure.cause], ['suspended', 'failure'], `${r.role}: Suspend(normal) → Suspend(error)`);
    } else {
      assert.deepEqual(failure, decide(r.role, r.state, 'failure', 'sync', r.cause), `${r.attribute}: a failure as for any sync pair`);
    }
  }
});

test('a node without the quorum overlay refuses operator commands on quorum pairs (delete aside)', () => {
  const base = decide('primary', 'suspended', 'resync', 'sync', 'operator');
  assert.equal(base.kind, 'transition');
  assert.match((noOverlay('quorum', 'resync', base) as { message: string }).message, /without support for quorum pairs/);
  assert.equal(noOverlay('quorum', 'delete', decide('primary', 'duplex', 'delete', 'sync')).kind, 'transition');
  assert.equal(noOverlay('quorum', 'failure', decide('primary', 'duplex', 'failure', 'sync')).kind, 'transition');
});

test('fig4 refuses an attribute outside the 9', () => {
  assert.throws(() => fig4('resync', { role: 'pvol' } as VolumeAttribute), /no Fig\. 4 row/);
});
