// The acknowledged-write checker of the crash and failover tests: it must catch a lost write and
// must not blame the order in which two concurrent writes to one block landed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { OrderedWorkload, type IssuedWrite } from '../support/ordered-writes';

function workloadWith(writes: Array<Omit<IssuedWrite, 'volume'>>): OrderedWorkload {
  const w = new OrderedWorkload([], { blockSize: 4096, blockCount: 8, queueDepth: 1, flushEvery: 0 });
  for (const x of writes) w.history.push({ ...x, volume: 0 });
  return w;
}

test('an acknowledged write overwritten by an older one is reported', () => {
  // 1 acknowledged (t2) before 2 was issued (t3): the block must hold 2.
  const w = workloadWith([
    { seq: 1, block: 0, acked: true, issuedAt: 1, ackedAt: 2 },
    { seq: 2, block: 0, acked: true, issuedAt: 3, ackedAt: 4 },
  ]);
  assert.throws(() => w.checkAllAcknowledgedPresent(new Map([['0:0', 1]])), /holds write 1 but write 2/);
  assert.throws(() => w.checkAllAcknowledgedPresent(new Map([['0:0', 0]])), /holds write 0/);
  w.checkAllAcknowledgedPresent(new Map([['0:0', 2]]));
});

test('two writes to one block in flight together may land in either order', () => {
  const w = workloadWith([
    { seq: 1, block: 0, acked: true, issuedAt: 1, ackedAt: 4 },
    { seq: 2, block: 0, acked: true, issuedAt: 2, ackedAt: 3 },
  ]);
  w.checkAllAcknowledgedPresent(new Map([['0:0', 1]]));
  w.checkAllAcknowledgedPresent(new Map([['0:0', 2]]));
  assert.throws(() => w.checkAllAcknowledgedPresent(new Map([['0:0', 3]])), /never issued/);
});
