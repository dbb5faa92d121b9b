// In-node replica pairs (spec 003 §5.1, the testable behaviours of §9 #1–#20) against a real volume
// store: the copy, dual write, split, quick split with copy-on-write and copy-on-read, writes to the
// replica, resync, restore, release, the pair event wait, a failing replica and a restart.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TricopyError } from '../../src/common/errors';
import { BlockDeviceError } from '../../src/volume/block-device';
import { MiB, KiB, Model, ReplicaHarness, readAll, region, rng, waitUntil } from '../support/replica-harness';

async function withHarness(fn: (h: ReplicaHarness) => Promise<void>): Promise<void> {
  const h = await ReplicaHarness.open();
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

const state = (h: ReplicaHarness, name: string): string => h.service.getReplica(name).state;

test('#1 #2: a replica smaller than the primary is refused and both volumes stay as they were', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB);
  await h.volume('small', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 128 * KiB);
  const small = new Model(h.store.volume('small'));
  await small.write(0, 64 * KiB, 7);
  await assert.rejects(h.service.createReplica({ name: 'small', volume: 'p', existing: true }), /smaller than p/);
  assert.deepEqual(await readAll(h.store.volume('p')), p.image());
  assert.deepEqual(await readAll(h.store.volume('small')), small.image());
  assert.equal(h.service.listReplicas().length, 0);
  // A replica is never in another storage: the API names only volumes of this node, and a missing one is refused.
  await assert.rejects(h.service.createReplica({ name: 'elsewhere', volume: 'p', existing: true }), /does not exist/);
}));

test('#3 #4: COPYING with dual write reaches DUPLEX and the replica equals the primary, writes during the copy included', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB); // 128 regions: two copy batches
  const p = new Model(h.store.volume('p'));
  for (let i = 0; i < 8 * MiB; i += 512 * KiB) await p.write(i + 1000, 3000);
  h.copyBudget = 1; // the first batch (regions 0–63) only
  const created = await h.service.createReplica({ name: 'r', volume: 'p' });
  assert.equal(created.state, 'copying');
  assert.equal(created.code, 'COPY');
  await waitUntil('the first batch', () => h.service.getReplica('r').regions.pending <= 64);
  // One write where the copy has passed, one where it has not, one across both.
  await p.write(100, 5000);
  await p.write(6 * MiB, 7000);
  await p.write(4 * MiB - 10, 20);
  assert.equal(state(h, 'r'), 'copying');
  h.copyBudget = Number.POSITIVE_INFINITY;
  await h.service.waitReplica('r', 'duplex', 10_000);
  assert.ok(h.events.some((e) => e.kind === 'replica-duplex' && e.subject === 'r'), 'a pair event is raised');
  // #5: in DUPLEX an acknowledged write is on the replica too.
  await p.write(3 * MiB + 7, 100_000);
  assert.deepEqual(await readAll(h.store.volume('r')), p.image());
}));

test('#7: a normal split while COPYING is PAIR_NOT_SYNCHRONIZED and the pair keeps copying', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB);
  await new Model(h.store.volume('p')).write(0, MiB);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await assert.rejects(h.service.split('r', false), (err: TricopyError) => err.code === 'conflict' && /PAIR_NOT_SYNCHRONIZED/.test(err.message));
  assert.equal(state(h, 'r'), 'copying');
  assert.throws(() => h.device('r'), /denied: replica r is copying/, 'hosts may not use a copying replica (#14)');
}));

test('#6: a split replica holds the primary of the split instant; later writes change the primary only', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 2 * MiB);
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.waitReplica('r', 'duplex', 10_000);
  await p.write(100 * KiB, 10 * KiB);
  const atSplit = p.image();
  const split = await h.service.split('r', false);
  assert.equal(split.state, 'split');
  assert.ok(split.splitAt, 'splitAt recorded');
  await p.write(0, 4 * MiB);
  assert.deepEqual(await readAll(h.device('r')), atSplit);
  assert.equal(h.service.getReplica('r').regions.dirtyPrimary, 64);
}));

test('#8 #9 #11 #12: a quick split of a new pair is usable at once; copy-on-write keeps the split image', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 8 * MiB);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p', readMissPolicy: 'pass-through' });
  const started = Date.now();
  const split = await h.service.split('r', true);
  assert.ok(Date.now() - started < 1000, 'returns at once');
  assert.equal(split.state, 'split-pending');
  assert.equal(split.code, 'PSUS(SP)');
  const atSplit = p.image();
  const replica = h.device('r');
  // Pass-through reads return the split image and copy nothing.
  assert.deepEqual(await replica.read(0, 3 * region), atSplit.subarray(0, 3 * region));
  assert.equal(h.service.getReplica('r').regions.pending, 128, 'pass-through does not mark regions copied');
  // #9: a write to an uncopied region of P: the replica keeps the old data, P has the new.
  const written = await p.write(5 * region + 100, 2000);
  assert.deepEqual(await replica.read(5 * region, region), atSplit.subarray(5 * region, 6 * region));
  assert.deepEqual(await h.store.volume('p').read(5 * region + 100, 2000), written);
  assert.equal(h.service.getReplica('r').regions.pending, 127, 'copy-on-write copied that region');
  h.copyBudget = Number.POSITIVE_INFINITY;
  await h.service.waitReplica('r', 'split', 10_000);
  // #11: no region of the replica holds data written after the split.
  await p.write(0, 8 * MiB);
  assert.deepEqual(await readAll(replica), atSplit);
}));

test('#12: with copy-on-read a read of an uncopied region copies it; both policies return the split image', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 4 * MiB);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.split('r', true);
  const atSplit = p.image();
  const replica = h.device('r');
  assert.deepEqual(await replica.read(region + 5, 2 * region), atSplit.subarray(region + 5, 3 * region + 5));
  assert.equal(h.service.getReplica('r').regions.pending, 64 - 3, 'the three regions read were copied');
  await p.write(region, 3 * region); // copied already: no copy-on-write needed, the image stays
  assert.deepEqual(await replica.read(0, 4 * region), atSplit.subarray(0, 4 * region));
}));

test('#13: random writes to P and random reads of S during SPLIT_PENDING always see the split image', () => withHarness(async (h) => {
  const size = 16 * MiB;
  await h.volume('p', size);
  const p = new Model(h.store.volume('p'));
  await p.write(0, size);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.split('r', true);
  const atSplit = p.image();
  const replica = h.device('r');
  h.copyBudget = 1; // the background copy runs slowly beside
  const random = rng(7);
  let stop = false;
  const trickle = (async () => {
    while (!stop) {
      h.copyBudget = 1;
      await new Promise((r) => setTimeout(r, 3));
    }
  })();
  const writers = Array.from({ length: 4 }, async () => {
    for (let i = 0; i < 60; i++) {
      const offset = Math.floor(random() * (size - 200 * KiB));
      await p.write(offset, 1 + Math.floor(random() * 200 * KiB));
    }
  });
  const readers = Array.from({ length: 4 }, async () => {
    for (let i = 0; i < 60; i++) {
      const offset = Math.floor(random() * (size - 300 * KiB));
      const length = 1 + Math.floor(random() * 300 * KiB);
      const got = await replica.read(offset, length);
      assert.ok(got.equals(atSplit.subarray(offset, offset + length)), `read ${offset}+${length} is the split image`);
    }
  });
  try {
    await Promise.all([...writers, ...readers]);
  } finally {
    stop = true;
    await trickle;
  }
  h.copyBudget = Number.POSITIVE_INFINITY;
  await h.service.waitReplica('r', 'split', 10_000);
  assert.deepEqual(await readAll(replica), atSplit);
  assert.deepEqual(await readAll(h.store.volume('p')), p.image());
}));

test('#14 #15: hosts write the replica only while split; a partial write keeps the rest of an uncopied region', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 4 * MiB);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p' });
  assert.throws(() => h.device('r'), /denied/, 'COPYING');
  await h.service.split('r', true);
  const image = p.image();
  const replica = h.device('r');
  const data = Buffer.alloc(1000, 0xab);
  await replica.write(3 * region + 500, data, { fua: false });
  data.copy(image, 3 * region + 500);
  assert.deepEqual(await replica.read(3 * region, region), image.subarray(3 * region, 4 * region));
  assert.equal(h.service.getReplica('r').regions.dirtySecondary, 1);
  h.copyBudget = Number.POSITIVE_INFINITY;
  await h.service.waitReplica('r', 'split', 10_000);
  assert.deepEqual(await readAll(replica), image);
  await h.service.resync('r', false);
  assert.throws(() => h.device('r'), /denied/, 'RESYNC');
  await assert.rejects(replica.write(0, Buffer.alloc(512), { fua: false }), (err: BlockDeviceError) => err.errno === 'EIO', 'an old handle cannot write either');
  await h.service.waitReplica('r', 'duplex', 10_000);
  assert.throws(() => h.device('r'), /denied/, 'DUPLEX');
}));

test('#16: resync from SPLIT copies only the regions changed on either side, and ends with S == P', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 8 * MiB);
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.waitReplica('r', 'duplex', 10_000);
  await h.service.split('r', false);
  await p.write(0, 10);               // region 0
  await p.write(10 * region, region); // region 10
  await p.write(20 * region - 1, 2);  // regions 19, 20
  await h.device('r').write(50 * region, Buffer.alloc(100, 1), { fua: false }); // region 50 on the replica
  await h.device('r').write(10 * region, Buffer.alloc(100, 1), { fua: false }); // region 10 again
  const before = h.service.getReplica('r').copiedBytes;
  const status = await h.service.resync('r', false);
  assert.equal(status.state, 'resync');
  await h.service.waitReplica('r', 'duplex', 10_000);
  assert.equal(h.service.getReplica('r').copiedBytes - before, 5 * region, 'regions 0, 10, 19, 20, 50');
  assert.deepEqual(await readAll(h.store.volume('r')), p.image());
}));

test('#17: resync from SPLIT_PENDING ends with S == P', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 8 * MiB);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.split('r', true);
  await p.write(3 * MiB, MiB);
  await h.device('r').write(7 * MiB, Buffer.alloc(4096, 9), { fua: false });
  await h.service.resync('r', false);
  h.copyBudget = Number.POSITIVE_INFINITY;
  await h.service.waitReplica('r', 'duplex', 10_000);
  await p.write(MiB, 77); // dual write again
  assert.deepEqual(await readAll(h.store.volume('r'), 8 * MiB), p.image());
}));

test('restore copies the replica\'s image back over the regions changed since the split, then duplex', () => withHarness(async (h) => {
  await h.volume('p', 8 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 8 * MiB);
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.waitReplica('r', 'duplex', 10_000);
  await h.service.split('r', false);
  const image = p.image();
  await p.write(MiB, 3 * MiB); // the "bad upgrade"
  await p.zero(6 * MiB, MiB);
  h.clients.set('p', 1);
  await assert.rejects(h.service.restore('r', false), /attached client/, 'refused with clients attached');
  h.copyBudget = 0;
  const before = h.service.getReplica('r').copiedBytes;
  const status = await h.service.restore('r', true);
  assert.equal(status.state, 'restoring');
  assert.ok(h.disconnected.includes('p'), 'the primary\'s clients were disconnected');
  assert.throws(() => h.device('p'), /being restored/, 'hosts may not attach the primary meanwhile');
  h.copyBudget = Number.POSITIVE_INFINITY;
  await h.service.waitReplica('r', 'duplex', 10_000);
  assert.deepEqual(await readAll(h.store.volume('p')), image);
  assert.equal(h.service.getReplica('r').copiedBytes - before, 64 * region, 'only the changed 4 MiB');
  assert.doesNotThrow(() => h.device('p'));
}));

test('#18: release dissolves the pair; later writes do not touch the replica, which can be paired again', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, MiB);
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.waitReplica('r', 'duplex', 10_000);
  const image = p.image();
  const waitGone = h.service.waitReplica('r', 'simplex', 10_000);
  await h.service.deleteReplica('r', {});
  assert.equal((await waitGone).state, 'simplex');
  await p.write(0, 4 * MiB);
  assert.deepEqual(await readAll(h.store.volume('r')), image, 'the replica volume stays, untouched');
  assert.equal(h.store.volume('p').hooked, false, 'the primary is back on the plain write path');
  await h.service.createReplica({ name: 'r', volume: 'p', existing: true });
  await h.service.waitReplica('r', 'duplex', 10_000);
  assert.deepEqual(await readAll(h.store.volume('r')), p.image());
  await h.service.deleteReplica('r', { deleteVolume: true });
  assert.equal(h.store.has('r'), false);
}));

test('#19: waitPairEvent resolves on the state and rejects at its deadline', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  await new Model(h.store.volume('p')).write(0, MiB);
  h.copyBudget = 0;
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await assert.rejects(h.service.waitReplica('r', 'duplex', 100), (err: TricopyError) => err.code === 'unavailable' && /did not reach duplex within 100 ms/.test(err.message));
  const waiting = h.service.waitReplica('r', 'duplex', 10_000);
  h.copyBudget = Number.POSITIVE_INFINITY;
  assert.equal((await waiting).state, 'duplex');
}));

test('#20: a failing replica write suspends the pair with an event; host writes go on; resync recovers', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, MiB);
  await h.service.createReplica({ name: 'r', volume: 'p' });
  await h.service.waitReplica('r', 'duplex', 10_000);
  const replica = h.store.volume('r');
  const realWrite = replica.write.bind(replica);
  replica.write = () => Promise.reject(new BlockDeviceError('EIO', 'injected: the replica\'s disk failed'));
  await p.write(2 * MiB, 4096); // acknowledged: the primary has it
  await h.service.waitReplica('r', 'suspended', 10_000);
  const event = h.events.find((e) => e.kind === 'replica-suspended');
  assert.ok(event && /injected: the replica's disk failed/.test(event.reason), 'the event names what failed');
  assert.equal(h.service.getReplica('r').code, 'PSUE');
  await p.write(3 * MiB, 4096);
  await assert.rejects(h.service.split('r', true), /resync it first/);
  replica.write = realWrite;
  await h.service.resync('r', false);
  await h.service.waitReplica('r', 'duplex', 10_000);
  assert.deepEqual(await readAll(replica), p.image());
}));

test('a pair survives a restart: a quick split\'s image and its background copy go on', async () => {
  const h = await ReplicaHarness.open();
  try {
    await h.volume('p', 8 * MiB);
    const p = new Model(h.store.volume('p'));
    await p.write(0, 8 * MiB);
    h.copyBudget = 0;
    await h.service.createReplica({ name: 'r', volume: 'p' });
    await h.service.split('r', true);
    const image = p.image();
    await p.write(MiB, MiB);
    const split = h.service.getReplica('r');
    await h.restart();
    const after = h.service.getReplica('r');
    assert.equal(after.state, 'split-pending');
    assert.equal(after.splitAt, split.splitAt);
    assert.deepEqual(await readAll(h.device('r')), image);
    await h.store.volume('p').write(5 * MiB, Buffer.alloc(MiB, 3), { fua: false });
    h.copyBudget = Number.POSITIVE_INFINITY;
    await h.service.waitReplica('r', 'split', 10_000);
    assert.deepEqual(await readAll(h.device('r')), image);
  } finally {
    await h.close();
  }
});

test('a volume has up to three replicas, each with its own state', () => withHarness(async (h) => {
  await h.volume('p', 4 * MiB);
  const p = new Model(h.store.volume('p'));
  await p.write(0, 2 * MiB);
  for (const r of ['r1', 'r2', 'r3']) await h.service.createReplica({ name: r, volume: 'p' });
  await assert.rejects(h.service.createReplica({ name: 'r4', volume: 'p' }), /3 replicas/);
  for (const r of ['r1', 'r2', 'r3']) await h.service.waitReplica(r, 'duplex', 10_000);
  await h.service.split('r1', false);
  const first = p.image();
  await p.write(0, MiB);
  await h.service.split('r2', true);
  const second = p.image();
  await p.write(MiB, MiB);
  assert.deepEqual(await readAll(h.device('r1')), first);
  assert.deepEqual(await readAll(h.device('r2')), second);
  assert.deepEqual(await readAll(h.store.volume('r3')), p.image());
  await assert.rejects(h.service.createReplica({ name: 'rr', volume: 'r1' }), /is itself the replica/);
  assert.throws(() => h.service.refuseVolumeChange('p', 'delete'), /has replicas/);
  assert.throws(() => h.service.refuseVolumeChange('r1', 'resize'), /replica of p/);
}));
