// Clone sets against a real volume store and snapshots: a writable clone reads its instant, keeps
// its own writes (partial regions keep the instant's bytes around them) while the volume goes on
// changing underneath, survives a restart, refuses deleting its snapshot, and ends without a
// trace; a set the node stopped creating is undone when it opens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { systemClock } from '../../src/common/clock';
import { nodeDisk } from '../../src/common/disk';
import { silentLogger } from '../../src/common/log';
import { CloneService } from '../../src/replica/clones';
import { KiB, MiB, Model, ReplicaHarness, readAll } from '../support/replica-harness';

async function openClones(h: ReplicaHarness, holds: string[][] = []): Promise<CloneService> {
  const clones = await CloneService.open(h.dir, {
    disk: nodeDisk, clock: systemClock, log: silentLogger(), snapshots: h.service,
    host: {
      hasVolume: (name) => h.store.has(name),
      volumeSize: (name) => h.store.get(name).sizeBytes,
      holdApply: async (volumes) => {
        holds.push(volumes);
        return () => undefined;
      },
      disconnect: (name) => h.host().disconnect(name),
      clientsOf: (name) => h.clients.get(name) ?? 0,
      exportUri: (name) => `nbd://test/${name}`,
      emit: (kind, subject, reason) => void h.events.push({ kind, subject, reason }),
    },
  });
  h.service.snapshotInUse = (volume, snapshot) => clones.snapshotUser(volume, snapshot); // as the node wires it
  return clones;
}

function cloneDevice(clones: CloneService, name: string) {
  const answer = clones.lookup(name);
  assert.ok(answer && answer.status === 'ok', `clone ${name} is exported`);
  return answer.device;
}

test('a clone reads its instant, keeps its writes while the volume changes, survives a restart and ends without a trace', async () => {
  const h = await ReplicaHarness.open();
  let clones: CloneService | undefined;
  try {
    const size = 4 * MiB;
    await h.volume('v', size);
    const volume = new Model(h.store.volume('v'));
    await volume.write(0, 3 * MiB);
    const holds: string[][] = [];
    clones = await openClones(h, holds);
    const set = await clones.create({ name: 'd1', volumes: ['v'], drill: { topology: 'erp', site: 'sapporo', pairs: [{ name: 'erp.v.sapporo.tokyo', code: 'PAIR' }] } });
    assert.deepEqual(holds, [['v']], 'the apply into the volume is held while the snapshot is taken');
    assert.deepEqual(set.clones.map((c) => c.exportName), ['v@d1']);
    const clone = new Model(cloneDevice(clones, 'v@d1'));
    volume.image().copy(clone.data);
    // Partial regions (the rest must keep the instant's bytes), a whole region, a span of several, zeroes.
    await clone.write(100, 3000);
    await clone.write(64 * KiB, 64 * KiB);
    await clone.write(200 * KiB + 17, 300 * KiB);
    await clone.zero(3 * MiB + 5, 9 * KiB);
    // The volume goes on changing underneath (replication applying): the clone does not see it.
    await volume.write(0, 1 * MiB);
    await volume.write(2 * MiB + 3, 70 * KiB);
    // Two connections (each its own device) write the two halves of one fresh region at once: both stay.
    const [a, b] = [randomBytes(32 * KiB), randomBytes(32 * KiB)];
    await Promise.all([cloneDevice(clones, 'v@d1').write(2 * MiB + 256 * KiB, a, { fua: false }), cloneDevice(clones, 'v@d1').write(2 * MiB + 288 * KiB, b, { fua: false })]);
    a.copy(clone.data, 2 * MiB + 256 * KiB);
    b.copy(clone.data, 2 * MiB + 288 * KiB);
    assert.ok((await readAll(clone.device)).equals(clone.image()), 'the clone is its instant plus its own writes');
    assert.ok((await readAll(h.store.volume('v'))).equals(volume.image()), 'the volume is untouched by the clone');
    assert.equal(clones.get('d1').clones[0]!.writtenBytes, 9 * 64 * KiB, 'the clone holds the regions it wrote');
    await assert.rejects(h.service.deleteSnapshot('v', 'd1.base'), /in use: clone v@d1 reads it/);

    // Restart: the clone is kept with what it wrote.
    await clones.close();
    await h.restart();
    clones = await openClones(h);
    assert.ok((await readAll(cloneDevice(clones, 'v@d1'))).equals(clone.image()), 'after a restart the clone holds its writes');
    await cloneDevice(clones, 'v@d1').write(4 * KiB, randomBytes(4 * KiB), { fua: true });

    h.clients.set('v@d1', 1);
    await assert.rejects(clones.delete('d1', {}), /1 attached client/);
    const ended = await clones.delete('d1', { force: true, result: 'passed' });
    assert.equal(ended.disconnected, 1);
    assert.equal(clones.lookup('v@d1'), undefined);
    assert.deepEqual(h.service.listSnapshots('v'), [], 'the snapshot went with the clone');
    assert.deepEqual(await fsp.readdir(path.join(h.dir, 'replica', 'clones')), ['sets.json'], 'the overlay went with the clone');
    assert.ok((await readAll(h.store.volume('v'))).equals(volume.image()));
    const kinds = h.events.map((e) => e.kind);
    assert.ok(kinds.includes('drill-started') && kinds.includes('drill-ended'), kinds.join(' '));
    assert.match(h.events.find((e) => e.kind === 'drill-ended')!.reason, /DR drill of erp at sapporo ended after [\d.]+ s, result passed/);
  } finally {
    await clones?.close();
    await h.close();
  }
});

test('a clone set the node stopped creating is undone when it opens; names that a snapshot would hide are refused', async () => {
  const h = await ReplicaHarness.open();
  let clones: CloneService | undefined;
  try {
    await h.volume('v', 1 * MiB);
    await h.service.createSnapshot({ name: 'x.base', volumes: ['v'] });
    const dir = path.join(h.dir, 'replica', 'clones');
    await fsp.mkdir(path.join(dir, 'x'), { recursive: true });
    await fsp.writeFile(path.join(dir, 'sets.json'), JSON.stringify({ sets: [{ name: 'x', state: 'creating', createdAt: new Date().toISOString(), volumes: ['v'], drill: null }] }));
    clones = await openClones(h);
    assert.deepEqual(clones.list(), []);
    assert.deepEqual(h.service.listSnapshots('v'), [], 'the half-made set\'s snapshot is deleted');
    await h.service.createSnapshot({ name: 'pre', volumes: ['v'] });
    await assert.rejects(clones.create({ name: 'pre', volumes: ['v'] }), /snapshot named pre, which the clone would hide/);
    await assert.rejects(clones.create({ name: 'a.b', volumes: ['v'] }), /not a valid clone set name/);
    await assert.rejects(clones.create({ name: 'y', volumes: ['nope'] }), /volume nope does not exist/);
    assert.deepEqual(h.service.listSnapshots('v').map((s) => s.name), ['pre'], 'a refused set leaves nothing');
  } finally {
    await clones?.close();
    await h.close();
  }
});

test('a clone of an existing snapshot reads it, survives a restart, and leaves it when the set ends or is undone', async () => {
  const h = await ReplicaHarness.open();
  let clones: CloneService | undefined;
  try {
    await h.volume('v', 1 * MiB);
    const volume = new Model(h.store.volume('v'));
    await volume.write(0, 512 * KiB);
    const [s1] = await h.service.createSnapshot({ name: 's1', volumes: ['v'] });
    const atS1 = Buffer.from(volume.image());
    await volume.write(128 * KiB, 256 * KiB); // after the snapshot
    const holds: string[][] = [];
    clones = await openClones(h, holds);
    const set = await clones.create({ name: 'old', volumes: ['v'], snapshot: 's1' });
    assert.deepEqual(holds, [], 'nothing is held: no snapshot is taken');
    assert.equal(set.createdAt, s1!.createdAt, 'the set shows the snapshot\'s instant');
    assert.equal(set.clones[0]!.snapshot, 'v@s1');
    assert.ok((await readAll(cloneDevice(clones, 'v@old'))).equals(atS1), 'the clone reads the snapshot');
    await assert.rejects(h.service.deleteSnapshot('v', 's1'), /in use: clone v@old reads it/);
    await assert.rejects(clones.create({ name: 'x', volumes: ['v'], snapshot: 'nosuch' }), /volume v has no snapshot named nosuch/);
    const own = await clones.create({ name: 'now', volumes: ['v'] });
    await assert.rejects(clones.create({ name: 'x', volumes: ['v'], snapshot: own.clones[0]!.snapshot.split('@')[1]! }), /belongs to clone set now/);

    await clones.close();
    await h.restart();
    clones = await openClones(h);
    assert.ok((await readAll(cloneDevice(clones, 'v@old'))).equals(atS1), 'kept across a restart');
    await clones.delete('old', {});
    await clones.delete('now', {});
    assert.deepEqual(h.service.listSnapshots('v').map((s) => s.name), ['s1'], 'the operator\'s snapshot stays; the set\'s own base goes');

    // A set from s1 caught half-created is undone without touching s1.
    await clones.close();
    await fsp.writeFile(path.join(h.dir, 'replica', 'clones', 'sets.json'),
      JSON.stringify({ sets: [{ name: 'y', state: 'creating', createdAt: s1!.createdAt, volumes: ['v'], drill: null, snapshot: 's1' }] }));
    clones = await openClones(h);
    assert.deepEqual(clones.list(), []);
    assert.deepEqual(h.service.listSnapshots('v').map((s) => s.name), ['s1']);
  } finally {
    await clones?.close();
    await h.close();
  }
});
