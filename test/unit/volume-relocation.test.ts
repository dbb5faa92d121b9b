// Online relocation of a volume between data areas (spec 003 Fig. 15), below the node: the range
// lock, the state table, and moves of real volumes while writers change them (data read back equals
// data written; the file ends in the target area; stops and crashes leave the volume where it was).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { systemClock } from '../../src/common/clock';
import { type Disk, nodeDisk } from '../../src/common/disk';
import { TricopyError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/log';
import { loadConfigFile, resolveNodeConfig } from '../../src/node/config';
import { NodeRelocations } from '../../src/node/relocations';
import { RangeLock } from '../../src/volume/range-lock';
import { allRelocationEvents, allRelocationStates, nextRelocationState, relocationOver } from '../../src/volume/relocation-states';
import { VolumeStore } from '../../src/volume/store';
import type { Volume } from '../../src/volume/volume';
import { tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const noFua = { fua: false };
const zeroOpts = { fua: false, noHole: false, fastOnly: false };

interface Setup {
  dir: string;
  areas: { fast: string; slow: string };
  store: VolumeStore;
  relocations: NodeRelocations;
  events: Array<{ kind: string; subject: string }>;
}

async function open(dir: string, options: { rate?: number; chunk?: number; disk?: Disk } = {}): Promise<Setup> {
  const areas = { fast: path.join(dir, 'nvme'), slow: path.join(dir, 'hdd') };
  const store = await VolumeStore.open(path.join(dir, 'data'), { disk: options.disk ?? nodeDisk, clock: systemClock }, silentLogger(),
    [{ tier: 'fast', dir: areas.fast }, { tier: 'slow', dir: areas.slow }]);
  const events: Setup['events'] = [];
  const relocations = new NodeRelocations(store, { rateBytesPerSecond: options.rate ?? 0, chunkBytes: options.chunk ?? MiB }, systemClock, silentLogger(),
    (kind, subject) => events.push({ kind, subject }));
  return { dir, areas, store, relocations, events };
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('relocate');
  try {
    await fn(dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Writes random blocks and zero ranges, keeping what the volume must hold in `model`, until `stop()`. */
function writer(volume: Volume, model: Buffer, seed: number): { stop: () => Promise<number> } {
  let running = true;
  let ops = 0;
  const loop = (async () => {
    let i = seed;
    while (running) {
      // Each writer owns every fourth 64 KiB chunk: no two writes overlap, so the model is exact.
      const chunk = ((i * 7919) % (model.length / (64 * 1024) / 4)) * 4 + (seed % 4);
      const offset = chunk * 64 * 1024 + ((i * 4096) % (64 * 1024));
      if (i % 11 === 0) {
        await volume.writeZeroes(chunk * 64 * 1024, 64 * 1024, zeroOpts);
        model.fill(0, chunk * 64 * 1024, (chunk + 1) * 64 * 1024);
      } else {
        const data = randomBytes(4096);
        await volume.write(offset, data, noFua);
        data.copy(model, offset);
      }
      ops++;
      i++;
      // Small writes complete inline (node-file.ts); a host's next request comes from the network.
      await new Promise((resolve) => setImmediate(resolve));
    }
  })();
  return { stop: async () => {
    running = false;
    await loop;
    return ops;
  } };
}

test('range lock: overlapping holders take turns in arrival order; disjoint ones run together', async () => {
  const lock = new RangeLock(64 * 1024);
  const order: string[] = [];
  const a = await lock.acquire(0, 128 * 1024);
  const b = lock.acquire(64 * 1024, 4096).then((release) => { order.push('b'); return release; });
  const c = lock.acquire(64 * 1024 + 8192, 4096).then((release) => { order.push('c'); return release; });
  const d = await lock.acquire(256 * 1024, 4096); // disjoint: at once
  order.push('d');
  assert.deepEqual(order, ['d']);
  a();
  (await b)();
  (await c)();
  d();
  assert.deepEqual(order, ['d', 'b', 'c']);
  assert.equal(lock.busyUnits, 0);
});

test('relocation state table: copying → switching → done; failures and stops end it; final states take no event', () => {
  assert.equal(nextRelocationState('copying', 'copied'), 'switching');
  assert.equal(nextRelocationState('switching', 'switched'), 'done');
  assert.equal(nextRelocationState('copying', 'error'), 'failed');
  assert.equal(nextRelocationState('switching', 'stopped'), 'interrupted');
  assert.equal(nextRelocationState('copying', 'switched'), undefined);
  for (const s of allRelocationStates) {
    const over = relocationOver(s);
    assert.equal(over, s === 'done' || s === 'failed' || s === 'interrupted', s);
    if (over) for (const e of allRelocationEvents) assert.equal(nextRelocationState(s, e), undefined, `${s} on ${e}`);
  }
});

test('a volume moves to another area while writers change it: data equal, file in the target area, old one gone, survives reopen', () => withDir(async (dir) => {
  let s = await open(dir, { rate: 16 * MiB });
  await s.store.create({ name: 'db1', sizeBytes: 16 * MiB });
  const volume = s.store.volume('db1');
  const model = Buffer.alloc(16 * MiB);
  const initial = randomBytes(12 * MiB);
  await volume.write(0, initial, noFua);
  initial.copy(model, 0);
  const writers = [0, 1, 2, 3].map((w) => writer(volume, model, w));
  const started = await s.relocations.start('db1', 'fast');
  assert.equal(started.state, 'copying');
  assert.throws(() => s.relocations.refuseWhileMoving('db1', 'deleted'), (err: TricopyError) => err.code === 'busy');
  await assert.rejects(s.relocations.start('db1', 'slow'), (err: TricopyError) => err.code === 'busy' && /moving to tier fast already/.test(err.message));
  const done = await waitFor('the move to finish', () => {
    const v = s.relocations.view('db1');
    return v && v.state !== 'copying' && v.state !== 'switching' ? v : undefined;
  }, { timeoutMs: 30_000 });
  const ops = (await Promise.all(writers.map((w) => w.stop()))).reduce((a, b) => a + b, 0);
  assert.equal(done.state, 'done', done.error ?? '');
  assert.ok(ops > 100, `writers ran during the move (${ops} writes)`);
  assert.ok(done.bytesPerSecond > 0 && done.holdMs !== null);
  assert.equal(s.store.get('db1').tier, 'fast');
  assert.ok((await volume.read(0, 16 * MiB)).equals(model), 'the volume reads what was written');
  await waitFor('the old file to be removed', async () => !(await fsp.readdir(path.join(dir, 'data', 'volumes'))).includes('db1.img'));
  assert.deepEqual((await fsp.readdir(s.areas.fast)).sort(), ['db1.img']);
  // The event follows the old file's removal (the move reports once it has finished).
  await waitFor('the relocated event', () => s.events.length >= 2);
  assert.deepEqual(s.events.map((e) => e.kind), ['volume-relocation-started', 'volume-relocated']);
  // Writes after the move land in the new file.
  await volume.write(5 * MiB, Buffer.alloc(4096, 9), noFua);
  Buffer.alloc(4096, 9).copy(model, 5 * MiB);
  await s.store.close();
  s = await open(dir);
  assert.equal(s.store.get('db1').tier, 'fast');
  assert.ok((await s.store.volume('db1').read(0, 16 * MiB)).equals(model), 'the reopened volume reads what was written');
  // And back, unthrottled, to the data directory.
  await s.relocations.start('db1', 'default');
  await waitFor('the move back', () => s.relocations.view('db1')?.state === 'done');
  assert.ok((await s.store.volume('db1').read(0, 16 * MiB)).equals(model));
  await s.store.close();
}));

test('refusals: unknown tier, the current tier, not enough space in the target area', () => withDir(async (dir) => {
  const s = await open(dir);
  await s.store.create({ name: 'v', sizeBytes: 4 * MiB, tier: 'slow' });
  await s.store.volume('v').write(0, randomBytes(2 * MiB), noFua);
  await assert.rejects(s.relocations.start('v', 'tape'), (err: TricopyError) => err.code === 'invalid-argument' && /tier tape is not a data area/.test(err.message) && /default, fast, slow/.test(err.hint ?? ''));
  await assert.rejects(s.relocations.start('v', 'slow'), (err: TricopyError) => err.code === 'conflict' && /in tier slow already/.test(err.message));
  await assert.rejects(s.relocations.start('nope', 'fast'), (err: TricopyError) => err.code === 'not-found');
  await s.store.close();
  const tight = await open(dir, { disk: { ...nodeDisk, freeBytes: async () => MiB } });
  await assert.rejects(tight.relocations.start('v', 'fast'), (err: TricopyError) => err.code === 'no-space' && /data area fast has 1 ?MiB free/.test(err.message));
  assert.equal(tight.store.get('v').tier, 'slow');
  assert.deepEqual(await fsp.readdir(tight.areas.fast), []);
  await tight.store.close();
}));

test('a stop during the move leaves the volume in its tier with its data; the next open reports it interrupted; it can be run again', () => withDir(async (dir) => {
  let s = await open(dir, { rate: 2 * MiB });
  await s.store.create({ name: 'v', sizeBytes: 8 * MiB });
  const data = randomBytes(8 * MiB);
  await s.store.volume('v').write(0, data, noFua);
  await s.relocations.start('v', 'slow');
  await waitFor('some copying', () => (s.relocations.view('v')?.passedBytes ?? 0) >= MiB);
  await s.relocations.stop();
  assert.equal(s.relocations.view('v')?.state, 'interrupted');
  assert.ok((await s.store.volume('v').read(0, 8 * MiB)).equals(data));
  await s.store.close();
  assert.deepEqual(await fsp.readdir(s.areas.slow), ['v.img'], 'the partial target stays until the next open (like after a crash)');
  s = await open(dir);
  assert.deepEqual(s.store.interruptedRelocations(), [{ volume: 'v', from: 'default', to: 'slow' }]);
  assert.equal(s.relocations.view('v')?.state, 'interrupted');
  assert.deepEqual(s.events.map((e) => e.kind), ['volume-relocation-interrupted']);
  assert.deepEqual(await fsp.readdir(s.areas.slow), [], 'the partial target is removed');
  assert.equal(s.store.get('v').tier, 'default');
  assert.ok((await s.store.volume('v').read(0, 8 * MiB)).equals(data));
  await s.relocations.start('v', 'slow');
  await waitFor('the move', () => s.relocations.view('v')?.state === 'done');
  assert.ok((await s.store.volume('v').read(0, 8 * MiB)).equals(data));
  await s.store.close();
}));

test('data areas and the relocation rate are validated once, from flags or the config file', async () => {
  const base = { name: 'n1', dataDir: '/srv/n1' };
  const c = resolveNodeConfig({}, { ...base, dataAreas: ['fast=/mnt/nvme/t', 'slow=/srv/hdd/t'], relocationRate: '64MiB' });
  assert.deepEqual(c.dataAreas, [{ tier: 'fast', dir: '/mnt/nvme/t' }, { tier: 'slow', dir: '/srv/hdd/t' }]);
  assert.equal(c.relocationRateBytesPerSecond, 64 * MiB);
  assert.deepEqual(resolveNodeConfig({}, base).dataAreas, []);
  assert.throws(() => resolveNodeConfig({}, { ...base, dataAreas: ['fast'] }), /is not NAME=DIRECTORY/);
  assert.throws(() => resolveNodeConfig({}, { ...base, dataAreas: ['default=/x'] }), /is the data directory itself/);
  assert.throws(() => resolveNodeConfig({}, { ...base, dataAreas: ['Fast=/x'] }), /not a valid tier name/);
  assert.throws(() => resolveNodeConfig({}, { ...base, dataAreas: ['a=/x', 'b=/x'] }), /which another area uses already/);
  assert.throws(() => resolveNodeConfig({}, { ...base, dataAreas: ['a=/x', 'a=/y'] }), /named twice/);
  assert.throws(() => resolveNodeConfig({}, { ...base, relocationRate: '100KiB' }), /relocation rate is at least 1MiB/);
  await withDir(async (dir) => {
    const file = path.join(dir, 'node.yaml');
    await fsp.writeFile(file, 'name: n1\ndataDir: data\ndataAreas:\n  fast: nvme\n  slow: /srv/hdd\nrelocationRate: 200MiB\n');
    const fromFile = resolveNodeConfig(await loadConfigFile(file), {});
    assert.deepEqual(fromFile.dataAreas, [{ tier: 'fast', dir: path.join(dir, 'nvme') }, { tier: 'slow', dir: '/srv/hdd' }]);
    assert.equal(fromFile.relocationRateBytesPerSecond, 200 * MiB);
    // Flags win over the file, as for every setting.
    assert.deepEqual(resolveNodeConfig(await loadConfigFile(file), { dataAreas: ['cold=/cold'] }).dataAreas, [{ tier: 'cold', dir: '/cold' }]);
  });
});

test('a failing target stops the move: host writes go on, the volume stays in its tier with its data, the target is removed', () => withDir(async (dir) => {
  // The NVMe area's files fail writes after 2 MiB (a full or failing device).
  const failing: Disk = {
    ...nodeDisk,
    open: async (file, flags) => {
      const f = await nodeDisk.open(file, flags);
      if (!file.startsWith(path.join(dir, 'nvme'))) return f;
      let written = 0;
      return { ...f, read: f.read.bind(f), datasync: f.datasync.bind(f), truncate: f.truncate.bind(f), sizeBytes: f.sizeBytes.bind(f), close: f.close.bind(f),
        writev: async (pieces: Buffer[], position: number) => {
          written += pieces.reduce((n, p) => n + p.length, 0);
          if (written > 2 * MiB) throw Object.assign(new Error('EIO: i/o error'), { code: 'EIO' });
          return f.writev(pieces, position);
        } };
    },
  };
  const s = await open(dir, { disk: failing, rate: 4 * MiB });
  await s.store.create({ name: 'v', sizeBytes: 8 * MiB });
  const volume = s.store.volume('v');
  const model = Buffer.alloc(8 * MiB);
  const data = randomBytes(8 * MiB);
  await volume.write(0, data, noFua);
  data.copy(model);
  const w = writer(volume, model, 1);
  await s.relocations.start('v', 'fast');
  const end = await waitFor('the move to end', () => {
    const v = s.relocations.view('v');
    return v && v.state !== 'copying' && v.state !== 'switching' ? v : undefined;
  }, { timeoutMs: 30_000 });
  await w.stop();
  assert.equal(end.state, 'failed');
  assert.match(end.error ?? '', /EIO/);
  assert.equal(s.store.get('v').tier, 'default');
  assert.equal(s.store.get('v').relocatingTo, undefined, 'the record of the move is gone');
  assert.ok((await volume.read(0, 8 * MiB)).equals(model), 'every host write landed');
  assert.deepEqual(await fsp.readdir(s.areas.fast), []);
  await waitFor('the failed event', () => s.events.length >= 2); // reported once the move has finished
  assert.deepEqual(s.events.map((e) => e.kind), ['volume-relocation-started', 'volume-relocation-failed']);
  await s.store.close();
}));
