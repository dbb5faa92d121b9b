// Snapshots and changed-block bitmaps against a real volume store: many snapshots under writes each
// equal to their instant, deletion (oldest, middle, newest) that frees space and keeps the others
// exact, rollback, one instant across a group, frozen bitmaps, a restart, and snapshots of an
// earlier release (blocks in place) beside new ones after an upgrade.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { dirtyBitmapContextPrefix } from '../../src/replica/changed-blocks';
import { nodeDisk } from '../../src/common/disk';
import { maxSnapshotMapBits, snapshotBlockBytesFor } from '../../src/replica/limits';
import { SnapshotBlocks } from '../../src/replica/snapshot-blocks';
import { PersistentBitmap } from '../../src/volume/bitmap';
import { MiB, KiB, Model, ReplicaHarness, readAll, region, rng } from '../support/replica-harness';

async function withHarness(fn: (h: ReplicaHarness) => Promise<void>): Promise<void> {
  const h = await ReplicaHarness.open();
  try {
    await fn(h);
  } finally {
    await h.close();
  }
}

/** Bytes a file really holds (sparse files hold less than their size). */
async function allocated(file: string): Promise<number> {
  return (await fsp.stat(file)).blocks * 512;
}

test('20 snapshots under writes: each equals the volume at its instant; the space held is what changed', () => withHarness(async (h) => {
  const size = 8 * MiB;
  await h.volume('v', size);
  const v = new Model(h.store.volume('v'));
  await v.write(0, 4 * MiB);
  const random = rng(3);
  const images: Buffer[] = [];
  for (let i = 0; i < 20; i++) {
    await h.service.createSnapshot({ name: `s${i}`, volumes: ['v'] });
    images.push(v.image());
    for (let w = 0; w < 5; w++) {
      const offset = Math.floor(random() * (size - 100 * KiB));
      if (w === 4) await v.zero(offset, 70 * KiB);
      else await v.write(offset, 1 + Math.floor(random() * 100 * KiB));
    }
  }
  for (let i = 0; i < 20; i++) assert.ok((await readAll(h.device(`v@s${i}`))).equals(images[i]!), `snapshot s${i} equals its instant`);
  assert.deepEqual(await readAll(h.store.volume('v')), v.image());
  const list = h.service.listSnapshots('v');
  assert.deepEqual(list.map((s) => s.name), images.map((_, i) => `s${i}`));
  const used = list.reduce((sum, s) => sum + s.usedBytes, 0);
  assert.ok(used < 20 * size / 4, `space-efficient: ${used} bytes for 20 snapshots of ${size}`);
  assert.equal(h.device('v@s3').readOnly, true);
  await assert.rejects(h.device('v@s3').write(0, Buffer.alloc(512), { fua: false }), /read-only/);
}));

test('deleting the oldest, a middle and the newest snapshot keeps the others exact and frees the space', () => withHarness(async (h) => {
  const size = 4 * MiB;
  await h.volume('v', size);
  const v = new Model(h.store.volume('v'));
  await v.write(0, size);
  const images = new Map<string, Buffer>();
  for (const name of ['a', 'b', 'c', 'd', 'e']) {
    await h.service.createSnapshot({ name, volumes: ['v'] });
    images.set(name, v.image());
    await v.write(0, 2 * MiB); // every snapshot preserves the first half
    await v.write(3 * MiB + name.charCodeAt(0) * 1000, 5000);
  }
  const dir = path.join(h.dir, 'replica', 'volumes', 'v');
  const files = async (): Promise<string[]> => (await fsp.readdir(dir)).filter((f) => f.startsWith('snap-')).sort();
  const bytesOf = async (): Promise<number> => {
    let total = 0;
    for (const f of await files()) total += await allocated(path.join(dir, f));
    return total;
  };
  const before = await bytesOf();
  await h.service.deleteSnapshot('v', 'c'); // middle: b reads through it, so what b lacks moves to b
  await h.service.deleteSnapshot('v', 'a'); // oldest
  await h.service.deleteSnapshot('v', 'e'); // newest
  for (const name of ['b', 'd']) assert.ok((await readAll(h.device(`v@${name}`))).equals(images.get(name)!), `snapshot ${name} unchanged`);
  assert.throws(() => h.device('v@c'), /./, 'a deleted snapshot is no export');
  assert.ok((await bytesOf()) < before, 'space was freed');
  assert.equal((await files()).filter((f) => f.endsWith('.log')).length, 2);
  // Writes go on into what is now the newest.
  await v.write(0, size);
  assert.ok((await readAll(h.device('v@d'))).equals(images.get('d')!));
  await h.service.deleteSnapshot('v', 'b');
  await h.service.deleteSnapshot('v', 'd');
  assert.equal(h.store.volume('v').hooked, false, 'no snapshot left: the plain write path again');
  assert.deepEqual(await files(), []);
}));

test('rollback writes the snapshot\'s image back; newer snapshots stay exact', () => withHarness(async (h) => {
  await h.volume('v', 4 * MiB);
  const v = new Model(h.store.volume('v'));
  await v.write(0, 2 * MiB);
  await h.service.createSnapshot({ name: 'pre-upgrade', volumes: ['v'] });
  const old = v.image();
  await v.write(MiB, 2 * MiB);
  await v.zero(0, 512 * KiB);
  await h.service.createSnapshot({ name: 'broken', volumes: ['v'] });
  const broken = v.image();
  await v.write(3 * MiB, 64 * KiB);
  h.clients.set('v', 2);
  await assert.rejects(h.service.rollback('v', 'pre-upgrade', false), /attached client/);
  await h.service.rollback('v', 'pre-upgrade', true);
  assert.ok(h.disconnected.includes('v'));
  assert.deepEqual(await readAll(h.store.volume('v')), old);
  assert.ok((await readAll(h.device('v@broken'))).equals(broken), 'the newer snapshot keeps its image');
  assert.ok((await readAll(h.device('v@pre-upgrade'))).equals(old));
}));

test('a group snapshot is one instant across volumes, with writes in flight', () => withHarness(async (h) => {
  await h.volume('a', 2 * MiB);
  await h.volume('b', 2 * MiB);
  h.groups.set('erp', ['a', 'b']);
  // One writer: each step writes its sequence number to a then to b (a "transaction" across both).
  const block = 4096;
  const a = h.store.volume('a');
  const b = h.store.volume('b');
  let seq = 0;
  let stop = false;
  const writer = (async () => {
    while (!stop) {
      seq++;
      const payload = Buffer.alloc(block);
      payload.writeUInt32BE(seq, 0);
      const slot = (seq % 256) * block;
      await a.write(slot, payload, { fua: false });
      await b.write(slot, payload, { fua: false });
      // The volume's I/O may complete inline: let timers and the snapshot command run.
      if (seq % 4 === 0) await new Promise((r) => setImmediate(r));
    }
  })();
  await new Promise((r) => setTimeout(r, 30));
  const taken = await h.service.createSnapshot({ name: 'consistent', group: 'erp' });
  stop = true;
  await writer;
  assert.deepEqual(taken.map((s) => `${s.exportName} ${s.group}`), ['a@consistent erp', 'b@consistent erp']);
  const imageA = await readAll(h.device('a@consistent'));
  const imageB = await readAll(h.device('b@consistent'));
  const newest = (img: Buffer): number => Math.max(...Array.from({ length: 256 }, (_, i) => img.readUInt32BE(i * block)));
  const lastA = newest(imageA);
  const lastB = newest(imageB);
  // The instant lies between two writes: b can lag a by the one write in flight between them, never lead.
  assert.ok(lastA > 0 && (lastB === lastA || lastB === lastA - 1), `a's newest write ${lastA}, b's ${lastB}`);
  for (let i = 0; i < 256; i++) {
    const sa = imageA.readUInt32BE(i * block);
    const sb = imageB.readUInt32BE(i * block);
    if (sa !== sb) assert.equal(sa, lastA, 'only the write in flight differs');
  }
}));

test('snapshots and bitmaps survive a restart', async () => {
  const h = await ReplicaHarness.open();
  try {
    await h.volume('v', 4 * MiB);
    const v = new Model(h.store.volume('v'));
    await v.write(0, 2 * MiB);
    await h.service.addBitmap('v', 'nightly');
    await h.service.createSnapshot({ name: 's1', volumes: ['v'] });
    const image = v.image();
    await v.write(MiB, 3 * 4096);
    await h.restart();
    assert.ok((await readAll(h.device('v@s1'))).equals(image));
    assert.equal(h.service.listBitmaps('v')[0]!.dirtyBytes, region);
    await h.store.volume('v').write(0, Buffer.alloc(4096, 1), { fua: false });
    assert.ok((await readAll(h.device('v@s1'))).equals(image), 'writes after the restart are preserved from too');
    assert.equal(h.service.listBitmaps('v')[0]!.dirtyBytes, 2 * region);
  } finally {
    await h.close();
  }
});

test('changed-block bitmaps record exactly the written regions; a snapshot can freeze and clear them at one instant', () => withHarness(async (h) => {
  await h.volume('v', 4 * MiB);
  const v = new Model(h.store.volume('v'));
  await v.write(0, 4 * MiB); // before the bitmap: not recorded
  await h.service.addBitmap('v', 'nightly');
  await h.service.addBitmap('v', 'other');
  await v.write(region + 10, 100);           // region 1
  await v.write(10 * region - 1, 2);         // regions 9 and 10
  await v.zero(20 * region, 2 * region);     // regions 20, 21
  const device = h.service.decorate('v', h.store.volume('v'));
  assert.deepEqual(device.metaContexts?.(), [`${dirtyBitmapContextPrefix}nightly`, `${dirtyBitmapContextPrefix}other`]);
  const runs = device.contextRuns!(`${dirtyBitmapContextPrefix}nightly`, 0, 4 * MiB, 100);
  assert.deepEqual(runs, [
    { length: region, flags: 0 }, { length: region, flags: 1 }, { length: 7 * region, flags: 0 }, { length: 2 * region, flags: 1 },
    { length: 9 * region, flags: 0 }, { length: 2 * region, flags: 1 }, { length: 42 * region, flags: 0 },
  ]);
  assert.equal(device.contextRuns!('qemu:dirty-bitmap:missing', 0, 100, 10), undefined);
  // Freeze into a snapshot: the snapshot offers what changed up to it; the live bitmap starts over.
  await h.service.createSnapshot({ name: 'backup1', volumes: ['v'], bitmaps: ['nightly'] });
  assert.equal(h.service.listBitmaps('v').find((b) => b.name === 'nightly')!.dirtyBytes, 0);
  assert.equal(h.service.listBitmaps('v').find((b) => b.name === 'other')!.dirtyBytes, 5 * region, 'a bitmap not named stays');
  const snap = h.device('v@backup1');
  assert.deepEqual(snap.metaContexts?.(), [`${dirtyBitmapContextPrefix}nightly`]);
  assert.deepEqual(snap.contextRuns!(`${dirtyBitmapContextPrefix}nightly`, 0, 4 * MiB, 100), runs);
  await v.write(30 * region, 1);
  assert.deepEqual(device.contextRuns!(`${dirtyBitmapContextPrefix}nightly`, 30 * region, region, 10), [{ length: region, flags: 1 }]);
  await h.service.clearBitmap('v', 'other');
  assert.equal(h.service.listBitmaps('v').find((b) => b.name === 'other')!.dirtyBytes, 0);
  await h.service.deleteBitmap('v', 'other');
  await assert.rejects(h.service.addBitmap('v', 'nightly'), /already/);
  await assert.rejects(h.service.addBitmap('v', 'bad name'), /not a valid bitmap name/);
}));

test('a snapshot chain preserves 4 KiB blocks; very large volumes use larger blocks so that a map stays at most 512 KiB, up to one region', () => {
  const GiB = 1024 * MiB;
  assert.equal(snapshotBlockBytesFor(GiB), 4096);
  assert.equal(snapshotBlockBytesFor(16 * GiB), 4096);
  assert.equal(snapshotBlockBytesFor(16 * GiB + 1), 8192);
  assert.equal(snapshotBlockBytesFor(256 * GiB), 64 * 1024);
  assert.equal(snapshotBlockBytesFor(16 * 1024 * GiB), 64 * 1024);
  for (const size of [MiB, 3 * GiB, 100 * GiB, 200 * GiB]) assert.ok(Math.ceil(size / snapshotBlockBytesFor(size)) <= maxSnapshotMapBits);
});

test('after an upgrade, a snapshot of an earlier release (blocks in place in a sparse file) is read, preserves into, and merges with newer log snapshots', async () => {
  const h = await ReplicaHarness.open();
  try {
    const size = 4 * MiB;
    await h.volume('v', size);
    const before = new Model(h.store.volume('v'));
    await before.write(0, 3 * MiB);
    await h.service.createSnapshot({ name: 'old', volumes: ['v'] });
    const atOld = before.image();
    await before.write(100 * KiB, 300 * KiB);
    // Stopped, the snapshot is rewritten as an earlier release left it: its blocks at their own
    // offsets of snap-1.data (a sparse file the volume's size), no log and no slot records.
    await h.service.close();
    await h.store.close();
    const dir = path.join(h.dir, 'replica', 'volumes', 'v');
    const blockBytes = snapshotBlockBytesFor(size);
    const blocks = await SnapshotBlocks.open(nodeDisk, (what) => path.join(dir, `snap-1.${what}`), blockBytes, size, await fsp.readdir(dir));
    const map = await PersistentBitmap.open(nodeDisk, path.join(dir, 'snap-1.map'), blockBytes);
    const sparse = await fsp.open(path.join(dir, 'snap-1.data'), 'wx');
    await sparse.truncate(size);
    for (const run of map.setRuns()) {
      const data = Buffer.alloc(Math.min(size, (run.first + run.count) * blockBytes) - run.first * blockBytes);
      await blocks.read(run.first * blockBytes, data);
      await sparse.write(data, 0, data.length, run.first * blockBytes);
    }
    await sparse.sync();
    await sparse.close();
    await map.close();
    await blocks.close();
    await fsp.rm(path.join(dir, 'snap-1.log'));
    await fsp.rm(path.join(dir, 'snap-1.slots'));
    await h.start();
    const v = new Model(h.store.volume('v')); // the volume reopened, with the same contents
    before.data.copy(v.data);
    assert.ok((await readAll(h.store.volume('v'))).equals(v.image()));

    assert.ok((await readAll(h.device('v@old'))).equals(atOld), 'the earlier release\'s snapshot reads as its instant');
    await v.write(2 * MiB, 200 * KiB); // preserved in place into the old snapshot, still the newest
    assert.ok((await readAll(h.device('v@old'))).equals(atOld));
    await h.service.createSnapshot({ name: 'new', volumes: ['v'] });
    const atNew = v.image();
    await v.write(0, size);
    assert.ok((await readAll(h.device('v@old'))).equals(atOld), 'reads through the newer log snapshot');
    assert.ok((await readAll(h.device('v@new'))).equals(atNew));
    const files = (await fsp.readdir(dir)).sort();
    assert.ok(files.includes('snap-1.data') && files.includes('snap-2.log') && files.includes('snap-2.slots') && !files.includes('snap-1.log'), files.join(' '));
    await h.service.deleteSnapshot('v', 'new'); // what old reads through it moves into old's sparse file
    assert.ok((await readAll(h.device('v@old'))).equals(atOld), 'after the newer one merged into it');
    await h.restart();
    assert.ok((await readAll(h.device('v@old'))).equals(atOld), 'and after a restart');
  } finally {
    await h.close();
  }
});
