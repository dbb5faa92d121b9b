// Every (state, command/event) of the in-node replica pair state machine (spec 003 §5.1), with the
// expected outcome written out independently of the implementation.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { type ReplicaState, replicaStates } from '../../src/contracts/replicas';
import { type ReplicaEvent, allReplicaEvents, decideReplica, replicaCode } from '../../src/replica/state-table';

type Expect = string; // "-> state" | "noop" | "refuse: <substring>"; [in sync, not in sync] when it depends

const expected: Record<ReplicaState, Record<ReplicaEvent, Expect | [Expect, Expect]>> = {
  copying: {
    split: 'refuse: PAIR_NOT_SYNCHRONIZED', 'quick-split': ['-> split', '-> split-pending'], resync: 'noop',
    restore: 'refuse: nothing to restore', delete: '-> simplex', 'copy-complete': '-> duplex', failure: '-> suspended',
  },
  duplex: {
    split: '-> split', 'quick-split': ['-> split', '-> split-pending'], resync: 'noop', restore: 'refuse: Split first',
    delete: '-> simplex', 'copy-complete': 'noop', failure: '-> suspended',
  },
  'split-pending': {
    split: 'noop', 'quick-split': 'noop', resync: '-> resync', restore: 'refuse: background copy is still running',
    delete: '-> simplex', 'copy-complete': '-> split', failure: '-> suspended',
  },
  split: {
    split: 'noop', 'quick-split': 'noop', resync: '-> resync', restore: '-> restoring', delete: '-> simplex',
    'copy-complete': 'noop', failure: 'noop',
  },
  resync: {
    split: 'refuse: PAIR_NOT_SYNCHRONIZED', 'quick-split': ['-> split', '-> split-pending'], resync: 'noop',
    restore: 'refuse: no longer holds its split image', delete: '-> simplex', 'copy-complete': '-> duplex', failure: '-> suspended',
  },
  restoring: {
    split: 'refuse: restore is still running', 'quick-split': 'refuse: restore is still running', resync: 'refuse: restore is running',
    restore: 'noop', delete: '-> simplex', 'copy-complete': '-> duplex', failure: '-> suspended',
  },
  suspended: {
    split: 'refuse: resync it first', 'quick-split': 'refuse: resync it first', resync: '-> resync',
    restore: 'refuse: nothing to restore', delete: '-> simplex', 'copy-complete': 'noop', failure: 'noop',
  },
};

function describe(state: ReplicaState, event: ReplicaEvent, inSync: boolean): string {
  const o = decideReplica(state, event, { inSync });
  if (o.kind === 'transition') return `-> ${o.to}`;
  if (o.kind === 'noop') return 'noop';
  return `refuse: ${o.code}: ${o.message}`;
}

test('the replica state table matches spec 003 §5.1 for every state and event', () => {
  for (const state of replicaStates) {
    for (const event of allReplicaEvents) {
      const want = expected[state][event];
      for (const inSync of [true, false]) {
        const w = Array.isArray(want) ? want[inSync ? 0 : 1] : want;
        const got = describe(state, event, inSync);
        if (w.startsWith('refuse:')) assert.ok(got.startsWith('refuse:') && got.includes(w.slice('refuse: '.length)), `${state} + ${event}: want ${w}, got ${got}`);
        else assert.equal(got, w, `${state} + ${event} (in sync: ${inSync})`);
      }
    }
  }
});

test('every refusal says what to do instead, every transition says why', () => {
  for (const state of replicaStates) {
    for (const event of allReplicaEvents) {
      const o = decideReplica(state, event, { inSync: false });
      if (o.kind === 'refuse') assert.ok(o.message.length > 30, `${state} + ${event} refusal is explained`);
      if (o.kind === 'transition' || o.kind === 'noop') assert.ok(o.note.length > 10, `${state} + ${event} has a note`);
    }
  }
});

test('a normal split before duplex is PAIR_NOT_SYNCHRONIZED (spec 003 §9 #7)', () => {
  const o = decideReplica('copying', 'split', { inSync: false });
  assert.equal(o.kind, 'refuse');
  assert.equal(o.kind === 'refuse' && o.code, 'PAIR_NOT_SYNCHRONIZED');
});

test('ShadowImage codes', () => {
  assert.deepEqual(replicaStates.map(replicaCode), ['COPY', 'PAIR', 'PSUS(SP)', 'PSUS', 'COPY(RS)', 'COPY(RS-R)', 'PSUE']);
});

test('no code outside the state table assigns a replica state', async () => {
  const { promises: fsp } = await import('node:fs');
  const path = await import('node:path');
  const dir = path.resolve(__dirname, '..', '..', '..', 'src', 'replica');
  for (const file of await fsp.readdir(dir)) {
    const text = await fsp.readFile(path.join(dir, file), 'utf8');
    const assignments = text.split('\n').filter((line) => /\.state\s*=[^=]/.test(line) || /record\.state\s*=[^=]/.test(line));
    assert.deepEqual(assignments, [], `${file} assigns a state outside the transition`);
  }
});
