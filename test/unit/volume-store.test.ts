// The volume store: positional I/O, zeroes, allocation map, growth, validation and crash leftovers.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/log';
import { PersistentBitmap } from '../../src/volume/bitmap';
import { BlockDeviceError } from '../../src/volume/block-device';
import { VolumeStore } from '../../src/volume/store';
import { allocationChunkBytes } from '../../src/volume/volume';
import { tempDir } from '../support/tools';
import { systemClock } from '../../src/common/clock';
import { nodeDisk } from '../../src/common/disk';

const env = { disk: nodeDisk, clock: systemClock };

const MiB = 1024 * 1024;
const noFua = { fua: false };

async function withStore(fn: (store: VolumeStore, dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('store');
  const store = await VolumeStore.open(dir, env, silentLogger());
  try {
    await fn(store, dir);
  } finally {
    await store.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

test('writes read back at any offset; never-written regions read as zeroes', () => withStore(async (store) => {
  await store.create({ name: 'v', sizeBytes: 8 * MiB });
  const v = store.volume('v');
  const data = Buffer.from('hello, unaligned world');
  await v.write(12345, data, noFua);
  assert.deepEqual(await v.read(12345, data.length), data);
  assert.deepEqual(await v.read(0, 100), Buffer.alloc(100));
  assert.deepEqual(await v.read(8 * MiB - 10, 10), Buffer.alloc(10));
  // Scattered pieces are written contiguously.
  await v.write(MiB, [Buffer.from('ab'), Buffer.from('cd')], { fua: true });
  assert.equal((await v.read(MiB, 4)).toString(), 'abcd');
}));

test('allocation map reports written chunks as data and the rest as holes', () => withStore(async (store) => {
  await store.create({ name: 'v', sizeBytes: 4 * MiB });
  const v = store.volume('v');
  await v.write(allocationChunkBytes * 3 + 10, Buffer.alloc(100, 1), noFua);
  const extents = v.extents(0, 4 * MiB, 100);
  assert.deepEqual(extents.map((e) => [e.offset, e.length, e.allocated, e.zero]), [
    [0, 3 * allocationChunkBytes, false, true],
    [3 * allocationChunkBytes, allocationChunkBytes, true, false],
    [4 * allocationChunkBytes, 4 * MiB - 4 * allocationChunkBytes, false, true],
  ]);
  assert.equal(v.allocatedBytes, allocationChunkBytes);
  // maxExtents caps the answer but always gives at least one extent.
  assert.equal(v.extents(0, 4 * MiB, 1).length, 1);
}));

test('write zeroes reads back zeroes, and whole zeroed chunks become holes again', () => withStore(async (store) => {
  await store.create({ name: 'v', sizeBytes: 4 * MiB });
  const v = store.volume('v');
  await v.write(0, Buffer.alloc(3 * allocationChunkBytes, 0xee), noFua);
  await v.writeZeroes(100, 2 * allocationChunkBytes, { fua: false, noHole: false, fastOnly: false });
  const back = await v.read(0, 3 * allocationChunkBytes);
  assert.equal(back[99], 0xee);
  assert.ok(back.subarray(100, 100 + 2 * allocationChunkBytes).every((b) => b === 0));
  assert.equal(back[100 + 2 * allocationChunkBytes], 0xee);
  // Chunk 1 is wholly zeroed: it reads as a hole; chunks 0 and 2 still hold data.
  assert.deepEqual(v.extents(0, 3 * allocationChunkBytes, 10).map((e) => e.allocated), [true, false, true]);
  // NO_HOLE keeps the range allocated.
  await v.writeZeroes(allocationChunkBytes, allocationChunkBytes, { fua: false, noHole: true, fastOnly: false });
  assert.deepEqual(v.extents(0, 3 * allocationChunkBytes, 10).map((e) => e.allocated), [true]);
}));

test('fast zero succeeds on holes and refuses (ENOTSUP) without changing allocated data', () => withStore(async (store) => {
  await store.create({ name: 'v', sizeBytes: 4 * MiB });
  const v = store.volume('v');
  await v.writeZeroes(MiB, MiB, { fua: false, noHole: false, fastOnly: true });
  await v.write(0, Buffer.alloc(10, 7), noFua);
  await assert.rejects(v.writeZeroes(0, MiB, { fua: false, noHole: false, fastOnly: true }),
    (err: unknown) => err instanceof BlockDeviceError && err.errno === 'ENOTSUP');
  assert.equal((await v.read(0, 10))[9], 7);
}));

test('requests past the end are refused with the errno a block client expects', () => withStore(async (store) => {
  await store.create({ name: 'v', sizeBytes: MiB });
  const v = store.volume('v');
  await assert.rejects(v.write(MiB - 1, Buffer.alloc(2), noFua), (e: unknown) => e instanceof BlockDeviceError && e.errno === 'ENOSPC');
  await assert.rejects(v.read(MiB, 1), (e: unknown) => e instanceof BlockDeviceError && e.errno === 'EINVAL');
  await assert.rejects(v.trim(MiB - 1, 2, noFua), (e: unknown) => e instanceof BlockDeviceError && e.errno === 'EINVAL');
}));

test('names, sizes and duplicates are validated with clear errors', () => withStore(async (store) => {
  const rejectsWith = async (p: Promise<unknown>, code: string, pattern: RegExp): Promise<void> => {
    await assert.rejects(p, (e: unknown) => e instanceof TricopyError && e.code === code && pattern.test(`${e.message} ${e.hint ?? ''}`));
  };
  await rejectsWith(store.create({ name: '../etc', sizeBytes: MiB }), 'invalid-argument', /not a valid volume name/);
  await rejectsWith(store.create({ name: '', sizeBytes: MiB }), 'invalid-argument', /not a valid volume name/);
  await rejectsWith(store.create({ name: 'v', sizeBytes: 1000 }), 'invalid-argument', /outside the supported range/);
  await rejectsWith(store.create({ name: 'v', sizeBytes: MiB + 1 }), 'invalid-argument', /multiple of 512/);
  await rejectsWith(store.create({ name: 'v', sizeBytes: 2 ** 60 }), 'invalid-argument', /supported range/);
  await rejectsWith(store.create({ name: 'v', sizeBytes: 1024 ** 4 * 10 }), 'no-space', /--thin/);
  await store.create({ name: 'v', sizeBytes: MiB });
  await rejectsWith(store.create({ name: 'v', sizeBytes: MiB }), 'already-exists', /already exists/);
  await rejectsWith(store.resize('v', MiB / 2), 'invalid-argument', /shrinking/);
  await rejectsWith(store.resize('nope', MiB), 'not-found', /does not exist/);
}));

test('growing keeps data, extends the allocation map and survives reopen', async () => {
  const dir = await tempDir('grow');
  try {
    let store = await VolumeStore.open(dir, env, silentLogger());
    await store.create({ name: 'v', sizeBytes: MiB });
    await store.volume('v').write(10, Buffer.from('keep'), noFua);
    await store.resize('v', 3 * MiB);
    await store.volume('v').write(2 * MiB + 5, Buffer.from('tail'), noFua);
    await store.close();
    store = await VolumeStore.open(dir, env, silentLogger());
    const v = store.volume('v');
    assert.equal(v.sizeBytes, 3 * MiB);
    assert.equal((await v.read(10, 4)).toString(), 'keep');
    assert.equal((await v.read(2 * MiB + 5, 4)).toString(), 'tail');
    assert.deepEqual(v.extents(0, 3 * MiB, 10).filter((e) => e.allocated).map((e) => e.offset), [0, 2 * MiB]);
    await store.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('a crash mid-create leaves no half volume; a crash mid-grow is completed on open', async () => {
  const dir = await tempDir('crash');
  try {
    const volumes = path.join(dir, 'volumes');
    await fsp.mkdir(volumes, { recursive: true });
    // Half-created volume: data and map without metadata (metadata is the commit point).
    await fsp.writeFile(path.join(volumes, 'half.img'), '');
    (await PersistentBitmap.create(nodeDisk, path.join(volumes, 'half.alloc'), allocationChunkBytes, 16)).close();
    await fsp.writeFile(path.join(volumes, '.half.json.tmp-1-2'), '{');
    let store = await VolumeStore.open(dir, env, silentLogger());
    assert.deepEqual(store.list(), []);
    assert.deepEqual((await fsp.readdir(volumes)).sort(), []);
    // Grow interrupted after data file and map were extended but before metadata was committed.
    await store.create({ name: 'g', sizeBytes: MiB });
    const bitmap = store.volume('g').allocation;
    await bitmap.grow(Math.ceil((2 * MiB) / allocationChunkBytes), false);
    await fsp.truncate(path.join(volumes, 'g.img'), 2 * MiB);
    await store.close();
    store = await VolumeStore.open(dir, env, silentLogger());
    assert.equal(store.get('g').sizeBytes, 2 * MiB);
    await store.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('access rules: defaults to loopback, add and remove CIDRs and identities, refuse garbage', () => withStore(async (store) => {
  const meta = await store.create({ name: 'v', sizeBytes: MiB });
  assert.deepEqual(meta.access, { clients: ['127.0.0.0/8', '::1/128'], identities: [] });
  let m = await store.allow('v', { client: '10.0.0.0/8' });
  m = await store.allow('v', { identity: 'alice' });
  m = await store.allow('v', { client: '192.168.1.20' });
  assert.deepEqual(m.access.clients, ['127.0.0.0/8', '::1/128', '10.0.0.0/8', '192.168.1.20/32']);
  assert.deepEqual(m.access.identities, ['alice']);
  m = await store.disallow('v', { client: '10.0.0.0/8' });
  assert.ok(!m.access.clients.includes('10.0.0.0/8'));
  await assert.rejects(store.allow('v', { client: '10.0.0.0/99' }), /not an IP address or CIDR/);
  await assert.rejects(store.allow('v', { identity: 'bad identity!' }), /not a valid TLS identity/);
  await assert.rejects(store.disallow('v', { client: '1.2.3.4' }), /no access rule/);
}));

test('bitmap: set, clear, runs, merge and persistence across reopen', async () => {
  const dir = await tempDir('bitmap');
  try {
    const file = path.join(dir, 'b');
    const b = await PersistentBitmap.create(nodeDisk, file, 4096, 100);
    b.setRange(3, 5);
    b.setRange(50, 1);
    assert.equal(b.setBitCount, 6);
    assert.deepEqual([...b.setRuns()], [{ first: 3, count: 5 }, { first: 50, count: 1 }]);
    assert.deepEqual(b.runs(0, 100, 10).map((r) => [r.firstBit, r.bitCount, r.set]),
      [[0, 3, false], [3, 5, true], [8, 42, false], [50, 1, true], [51, 49, false]]);
    const other = b.snapshot();
    other.fill(0);
    other[12] = 0x01; // bit 96
    b.mergeFrom(other);
    b.clearRange(4, 1);
    await b.close();
    const again = await PersistentBitmap.open(nodeDisk, file, 4096);
    assert.deepEqual([...again.setRuns()], [{ first: 3, count: 1 }, { first: 5, count: 3 }, { first: 50, count: 1 }, { first: 96, count: 1 }]);
    await assert.rejects(PersistentBitmap.open(nodeDisk, file, 512), /chunk size/);
    assert.throws(() => again.setRange(99, 2), /outside bitmap/);
    await again.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
