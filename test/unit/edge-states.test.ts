// The state tables of an edge (spec 002 §5.12): the edge's view of a pair (725) and the states of an
// order-guarantee id; every transition is an event; only states.ts changes them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { EventJournal } from '../../src/common/events';
import { silentLogger } from '../../src/common/log';
import { applyOrderEvent, applyPairEvent, nextOrderState, nextPairState } from '../../src/edge/states';
import type { PairRow, SourceCounters } from '../../src/edge/state';
import { repoRoot } from '../support/node-process';

test('725: created, announced, Failure Suspend, failover, deletion', () => {
  assert.equal(nextPairState('simplex', { kind: 'created', copy: true }), 'initial-copying', 'SE2/TE2');
  assert.equal(nextPairState('simplex', { kind: 'created', copy: false }), 'duplex');
  assert.equal(nextPairState('initial-copying', { kind: 'announced', state: 'duplex' }), 'duplex', 'SE3/TE3');
  assert.equal(nextPairState('failure-suspend', { kind: 'announced', state: 'duplex-pending' }), 'duplex-pending', 'SE6/TE9');
  assert.equal(nextPairState('duplex', { kind: 'announced', state: 'duplex' }), undefined, 'no change, no event');
  assert.equal(nextPairState('duplex', { kind: 'announced', state: 'bogus' }), undefined, 'only storage states are relayed');
  assert.equal(nextPairState('duplex', { kind: 'failure' }), 'failure-suspend', 'SE4/TE4');
  assert.equal(nextPairState('simplex', { kind: 'failure' }), undefined, 'E-19: nothing to suspend before the pair exists');
  assert.equal(nextPairState('duplex', { kind: 'suspend-instruction' }), 'suspend-waiting', 'TE5');
  assert.equal(nextPairState('suspend-waiting', { kind: 'failure' }), 'failure-suspend', 'TE7');
  assert.equal(nextPairState('duplex', { kind: 'deleted' }), 'deleted');
  assert.equal(nextPairState('deleted', { kind: 'announced', state: 'duplex' }), undefined, 'a deleted pair stays deleted');
});

test('order states: failure, resume, failover', () => {
  assert.equal(nextOrderState('active', 'failure'), 'failure-suspend');
  assert.equal(nextOrderState('failure-suspend', 'failure'), undefined);
  assert.equal(nextOrderState('failure-suspend', 'resume'), 'active');
  assert.equal(nextOrderState('active', 'suspend-instruction'), 'suspend-waiting');
  assert.equal(nextOrderState('failure-suspend', 'suspend-instruction'), undefined);
  assert.equal(nextOrderState('suspend-waiting', 'failover-done'), 'failure-suspend');
});

test('every transition is an event with its reason', () => {
  const events = new EventJournal(silentLogger());
  const row: PairRow = { order: 'erp', side: 'source', source: 'tokyo', target: 'sapporo', state: 'simplex', diff: [] };
  assert.equal(applyPairEvent(events, 'db1-far', row, { kind: 'created', copy: true }, 'PairCreate answered by sapporo'), true);
  assert.equal(applyPairEvent(events, 'db1-far', row, { kind: 'created', copy: true }, 'again'), false, 'no change, no event');
  const c: SourceCounters = { lastAssigned: 0, acked: 0, state: 'active', realignNext: false, reason: 'new' };
  assert.equal(applyOrderEvent(events, 'erp', 'source', c, 'failure', 'retransmission exhausted'), true);
  assert.equal(applyOrderEvent(events, 'erp', 'source', c, 'failure', 'again'), false);
  assert.deepEqual(events.since(0).map((e) => [e.kind, e.subject, e.reason, e.details?.from, e.details?.to]), [
    ['edge-pair-state', 'db1-far', 'PairCreate answered by sapporo', 'simplex', 'initial-copying'],
    ['order-state', 'erp', 'retransmission exhausted', 'active', 'failure-suspend'],
  ]);
});

test('only states.ts assigns the state of an edge pair or an order', async () => {
  const dir = path.join(repoRoot, 'src', 'edge');
  const offenders: string[] = [];
  for (const name of await fsp.readdir(dir)) {
    if (!name.endsWith('.ts') || name === 'states.ts') continue;
    (await fsp.readFile(path.join(dir, name), 'utf8')).split('\n').forEach((line, i) => {
      if (/\.(state|reason)\s*=(?!=)/.test(line) && !line.trimStart().startsWith('//')) offenders.push(`${name}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offenders, []);
});
