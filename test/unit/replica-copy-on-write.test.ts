// Copy-on-write under concurrent first writes: many host writes to different regions right after a
// snapshot or a quick split share their syncs (group commit), and still none of them is issued to
// the volume before what a power loss would need is on stable storage: the region's old contents in
// the snapshot or the replica, and the records that say where they are. The order is checked on a
// disk that records when each write and each fdatasync started and ended.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Disk, DiskFile, OpenFlags } from '../../src/common/disk';
import { nodeDisk } from '../../src/common/disk';
import { PersistentBitmap, bitmapHeaderBytes } from '../../src/volume/bitmap';
import { RecordingDisk, type RecordedOp } from '../support/recording-disk';
import { MiB, KiB, Model, ReplicaHarness, readAll, region } from '../support/replica-harness';
import { tempDir } from '../support/tools';
import { maxDeferredWritesPerVolume } from '../../src/replica/limits';
import { decodeSlotRecord } from '../../src/replica/snapshot-blocks';

const concurrentWrites = 32;
const snapshotBlock = 4 * 1024;

/** 4 KiB writes, one in each of `count` different regions, all issued in the same turn. */
async function firstWrites(volume: Model, count: number): Promise<void> {
  await Promise.all(Array.from({ length: count }, (_, i) => volume.write(i * 2 * region + (i % 16) * 4 * KiB, 4 * KiB)));
}

/** The host writes of the volume file issued after `since`, each with the region it changes. */
function hostWrites(disk: RecordingDisk, volumeFile: string, since: number): Array<{ op: RecordedOp; region: number }> {
  return disk.ops.filter((op) => op.kind === 'write' && op.file === volumeFile && op.startedAt > since)
    .map((op) => ({ op, region: Math.floor(op.position / region) }));
}

/** The bit of `regionIndex` was written as set in a bitmap file and that write was durable before `at`. */
function bitDurableBefore(disk: RecordingDisk, file: string, regionIndex: number, at: number): boolean {
  const byte = bitmapHeaderBytes + (regionIndex >>> 3);
  return disk.writesCovering((f) => f === file, byte, at)
    .some((w) => (w.bytes[byte - w.position]! & (1 << (regionIndex & 7))) !== 0 && disk.durableBefore(w, at));
}

test('a snapshot: concurrent first writes to different regions are each issued only after the old contents and the map are durable', async () => {
  const disk = new RecordingDisk();
  const h = await ReplicaHarness.open(undefined, disk);
  try {
    await h.volume('v', 8 * MiB);
    const v = new Model(h.store.volume('v'));
    await v.write(0, 8 * MiB);
    await h.service.createSnapshot({ name: 's', volumes: ['v'] });
    const atSnapshot = v.image();
    const since = disk.tick();
    await firstWrites(v, concurrentWrites);
    await h.store.volume('v').flush(); // answered writes may still wait for their copies; a FLUSH waits for them

    assert.ok((await readAll(h.device('v@s'))).equals(atSnapshot), 'the snapshot is the volume at its instant');
    assert.ok((await readAll(h.store.volume('v'))).equals(v.image()), 'the volume has every write');
    const volumeFile = path.join(h.dir, 'volumes', 'v.img');
    const dir = path.join(h.dir, 'replica', 'volumes', 'v');
    const writes = hostWrites(disk, volumeFile, since);
    assert.equal(writes.length, concurrentWrites);
    const map = disk.ops.find((o) => o.file.startsWith(dir) && o.file.endsWith('.map'))!.file;
    const slotRecords = disk.ops.filter((o) => o.kind === 'write' && o.file.startsWith(dir) && o.file.endsWith('.slots') && o.startedAt > since);
    for (const { op } of writes) {
      // A snapshot preserves 4 KiB blocks: a 4 KiB write copies its own block only, appended to the
      // log, with a slot record that says where.
      const block = op.position / snapshotBlock;
      const record = slotRecords.find((r) => decodeSlotRecord(r.bytes)?.firstBlock === block);
      assert.ok(record && disk.durableBefore(record, op.startedAt), `block ${block}: its slot record durable before the host write`);
      const slot = decodeSlotRecord(record.bytes)!.firstSlot;
      const copies = disk.writesCovering((f) => f.startsWith(dir) && f.endsWith('.log'), slot * snapshotBlock, op.startedAt);
      assert.ok(copies.some((c) => disk.durableBefore(c, op.startedAt) && c.bytes.subarray(slot * snapshotBlock - c.position, (slot + 1) * snapshotBlock - c.position)
        .equals(atSnapshot.subarray(op.position, op.position + snapshotBlock))), `block ${block}: old contents durable in the log before the host write`);
      assert.ok(bitDurableBefore(disk, map, block, op.startedAt), `block ${block}: recorded as preserved, durably, before the host write`);
    }
    let copiedBytes = 0;
    for (const op of disk.ops) if (op.kind === 'write' && op.file.startsWith(dir) && op.file.endsWith('.log') && op.startedAt > since) copiedBytes += op.bytes.length;
    assert.equal(copiedBytes, concurrentWrites * 4 * KiB, 'each first write copied the 4 KiB it overwrites, no more');
  } finally {
    await h.close();
  }
});

test('a quick split: concurrent first writes are each issued only after the copy, its copied bit and the change record are durable', async () => {
  const disk = new RecordingDisk();
  const h = await ReplicaHarness.open(undefined, disk);
  try {
    await h.volume('p', 8 * MiB);
    const p = new Model(h.store.volume('p'));
    await p.write(0, 8 * MiB);
    h.copyBudget = 0; // no background copy: every region is copied by copy-on-write
    await h.service.createReplica({ name: 'r', volume: 'p', readMissPolicy: 'pass-through' });
    await h.service.split('r', true);
    const atSplit = p.image();
    const since = disk.tick();
    await firstWrites(p, concurrentWrites);

    assert.equal(h.service.getReplica('r').regions.pending, 128 - concurrentWrites, 'each first write copied its region once');
    assert.ok((await readAll(h.device('r'))).equals(atSplit), 'the replica is the primary at the split');
    const pairs = path.join(h.dir, 'replica', 'pairs');
    const writes = hostWrites(disk, path.join(h.dir, 'volumes', 'p.img'), since);
    assert.equal(writes.length, concurrentWrites);
    for (const { op, region: r } of writes) {
      const copies = disk.writesCovering((f) => f === path.join(h.dir, 'volumes', 'r.img'), r * region, op.startedAt);
      assert.ok(copies.some((c) => disk.durableBefore(c, op.startedAt)), `region ${r}: the split image durable in the replica before the host write`);
      assert.ok(bitDurableBefore(disk, path.join(pairs, 'r.copied'), r, op.startedAt), `region ${r}: copied, durably, before the host write`);
      assert.ok(bitDurableBefore(disk, path.join(pairs, 'r.dirtyp'), r, op.startedAt), `region ${r}: the change recorded, durably, before the host write`);
    }
  } finally {
    h.copyBudget = Number.POSITIVE_INFINITY;
    await h.close();
  }
});

/** The real disk, with every datasync (or those of the files `holdWhere` picks) held until the test lets it go. */
class HeldSyncDisk {
  held: Array<() => void> = [];
  syncsStarted = 0;
  hold = false;
  holdWhere: ((file: string) => boolean) | null = null;
  /** Datasyncs of these files fail (EIO). */
  failWhere: ((file: string) => boolean) | null = null;

  disk(): Disk {
    return { ...nodeDisk, open: async (file: string, flags: OpenFlags): Promise<DiskFile> => this.file(await nodeDisk.open(file, flags), file) };
  }

  private file(inner: DiskFile, name: string): DiskFile {
    return {
      read: (...a) => inner.read(...a),
      writev: (...a) => inner.writev(...a),
      truncate: (n) => inner.truncate(n),
      sizeBytes: () => inner.sizeBytes(),
      close: () => inner.close(),
      datasync: async () => {
        this.syncsStarted++;
        if (this.hold || this.holdWhere?.(name)) await new Promise<void>((resolve) => this.held.push(resolve));
        if (this.failWhere?.(name)) throw Object.assign(new Error(`EIO: i/o error, fdatasync ${name}`), { code: 'EIO' });
        await inner.datasync();
      },
    };
  }

  releaseOne(): void {
    this.held.shift()!();
  }

  /** Stops holding and lets every held datasync go. */
  releaseAll(): void {
    this.hold = false;
    this.holdWhere = null;
    for (const resolve of this.held.splice(0)) resolve();
  }
}

/** The log a snapshot appends preserved blocks to (its slot records are synced beside it). */
const snapshotData = (file: string): boolean => /snap-\d+\.log$/.test(file);

async function turns(n = 20): Promise<void> {
  for (let i = 0; i < n; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** A volume of `sizeBytes`, written all over, with a snapshot `s`; returns the model and the image at the snapshot. */
async function snapshotted(h: ReplicaHarness, sizeBytes: number): Promise<{ v: Model; atSnapshot: Buffer; file: string }> {
  await h.volume('v', sizeBytes);
  const v = new Model(h.store.volume('v'));
  await v.write(0, sizeBytes);
  await h.store.volume('v').flush();
  await h.service.createSnapshot({ name: 's', volumes: ['v'] });
  return { v, atSnapshot: v.image(), file: path.join(h.dir, 'volumes', 'v.img') };
}

async function fileRange(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await fsp.open(file, 'r');
  try {
    const out = Buffer.alloc(length);
    await handle.read(out, 0, length, offset);
    return out;
  } finally {
    await handle.close();
  }
}

test('a snapshot: a first write is answered before its copy is durable, read back at once, and reaches the volume only after the copy; a FLUSH waits for it', async () => {
  const held = new HeldSyncDisk();
  const h = await ReplicaHarness.open(undefined, held.disk());
  try {
    const { v, atSnapshot, file } = await snapshotted(h, 4 * MiB);
    held.holdWhere = snapshotData;
    const at = region + 8 * KiB;
    const written = await v.write(at, 4 * KiB); // answered with the copy's datasync held
    await waitFor(() => held.held.length === 1);
    assert.ok((await fileRange(file, at, 4 * KiB)).equals(atSnapshot.subarray(at, at + 4 * KiB)), 'the volume file is unchanged while the copy is not durable');
    assert.ok((await h.store.volume('v').read(at - 1024, 8 * KiB)).equals(v.image().subarray(at - 1024, at + 7 * KiB)), 'a read sees the answered write');
    let flushed = false;
    const flush = h.store.volume('v').flush().then(() => (flushed = true));
    const snapshotRead = readAll(h.device('v@s'));
    await turns();
    assert.equal(flushed, false, 'a FLUSH waits for the answered write to reach the volume');
    held.releaseAll();
    await flush;
    assert.ok((await fileRange(file, at, 4 * KiB)).equals(written), 'after the FLUSH the volume file holds the write');
    assert.ok((await snapshotRead).equals(atSnapshot), 'the snapshot is the volume at its instant');
    assert.ok((await readAll(h.store.volume('v'))).equals(v.image()));
  } finally {
    held.releaseAll();
    await h.close();
  }
});

test('a snapshot: FUA writes, and writes past the bound of answered ones, wait for their copies', async () => {
  const held = new HeldSyncDisk();
  const h = await ReplicaHarness.open(undefined, held.disk());
  try {
    const regions = maxDeferredWritesPerVolume + 2;
    const { v } = await snapshotted(h, regions * region);
    held.holdWhere = snapshotData;
    let fuaDone = false;
    const device = h.store.volume('v');
    const fua = device.write(0, Buffer.alloc(4 * KiB, 1), { fua: true }).then(() => (fuaDone = true));
    await waitFor(() => held.held.length === 1);
    for (let i = 1; i <= maxDeferredWritesPerVolume; i++) await v.write(i * region, 4 * KiB); // each answered at once
    let lastDone = false;
    const last = v.write((maxDeferredWritesPerVolume + 1) * region, 4 * KiB).then(() => (lastDone = true));
    await turns();
    assert.equal(fuaDone, false, 'a FUA write waits for its copy');
    assert.equal(lastDone, false, `past ${maxDeferredWritesPerVolume} answered writes the next one waits`);
    assert.equal(device.overlay.size, maxDeferredWritesPerVolume);
    held.releaseAll();
    await Promise.all([fua, last]);
    await device.flush();
    assert.equal(device.overlay.size, 0);
    const image = v.image();
    image.fill(1, 0, 4 * KiB);
    assert.ok((await readAll(device)).equals(image));
  } finally {
    held.releaseAll();
    await h.close();
  }
});

test('a snapshot: when an answered write\'s copy cannot be made durable, the write stays readable, the snapshot intact, and every later flush and change fails', async () => {
  const held = new HeldSyncDisk();
  const h = await ReplicaHarness.open(undefined, held.disk());
  try {
    const { v, atSnapshot, file } = await snapshotted(h, 4 * MiB);
    held.failWhere = snapshotData;
    const at = 3 * region;
    await v.write(at, 4 * KiB);
    const device = h.store.volume('v');
    await assert.rejects(device.flush(), /could not be completed.*EIO.*refuses changes until the node restarts/);
    await assert.rejects(device.write(0, Buffer.alloc(4 * KiB), { fua: false }), /could not be completed/);
    assert.ok((await readAll(device)).equals(v.image()), 'the answered write is still read back');
    assert.ok((await fileRange(file, at, 4 * KiB)).equals(atSnapshot.subarray(at, at + 4 * KiB)), 'it never reached the volume file');
    held.failWhere = null;
    assert.ok((await readAll(h.device('v@s'))).equals(atSnapshot), 'the snapshot is intact');
    // With the snapshot gone the volume has no hooks, and still refuses changes: a later write
    // must never be shadowed by the answered one that stays in memory.
    await h.service.deleteSnapshot('v', 's');
    assert.equal(device.hooked, false);
    await assert.rejects(device.write(at, Buffer.alloc(4 * KiB, 7), { fua: false }), /could not be completed/);
    await assert.rejects(device.writeZeroes(at, 4 * KiB, { fua: false, noHole: false, fastOnly: false }), /could not be completed/);
    await assert.rejects(device.flush(), /could not be completed/);
    assert.ok((await readAll(device)).equals(v.image()));
  } finally {
    held.releaseAll();
    await h.close();
  }
});

test('bitmap syncs are a group commit: callers that arrive during a datasync share exactly one more', async () => {
  const dir = await tempDir('bitmap-group');
  const held = new HeldSyncDisk();
  const bits = await PersistentBitmap.create(held.disk(), path.join(dir, 'b.bits'), region, 1024);
  const before = held.syncsStarted;
  held.hold = true;
  let done = 0;
  bits.setRange(0, 1);
  const first = bits.sync().then(() => done++);
  await waitFor(() => held.held.length === 1);
  // Arrive while the first datasync runs: it may have started before their bits were written.
  const later = Array.from({ length: 10 }, (_, i) => {
    bits.setRange(1 + i, 1);
    return bits.sync().then(() => done++);
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(held.syncsStarted - before, 1, 'one datasync at a time');
  held.releaseOne();
  await first;
  await waitFor(() => held.held.length === 1);
  assert.equal(done, 1, 'the later callers wait for a datasync that covers their bits');
  held.releaseOne();
  await Promise.all(later);
  assert.equal(held.syncsStarted - before, 2, 'eleven callers, two datasyncs');
  held.hold = false;
  await bits.close();
  const reopened = await PersistentBitmap.open(nodeDisk, path.join(dir, 'b.bits'), region);
  assert.equal(reopened.setBitCount, 11);
  await reopened.close();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function waitFor(check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}
