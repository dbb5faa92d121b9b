// The store of a snapshot's preserved blocks: slot records are pure bytes; blocks appended in any
// order read back after a reopen; what a power loss can leave at the end of the files (a torn
// record, a record whose data never reached the log) is ignored; snapshots of earlier releases
// (blocks in place in a sparse file) are read and written where they are.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { nodeDisk } from '../../src/common/disk';
import { SnapshotBlocks, decodeSlotRecord, encodeSlotRecord, slotRecordBytes } from '../../src/replica/snapshot-blocks';
import { tempDir } from '../support/tools';

const block = 4096;

async function withDir(body: (file: (what: string) => string, dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('snapshot-blocks');
  try {
    await body((what) => path.join(dir, `snap-1.${what}`), dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

test('a slot record round-trips; zeroes and any changed byte are not a record', () => {
  const r = { firstBlock: 262_143, blockCount: 16, firstSlot: 7 };
  const bytes = encodeSlotRecord(r);
  assert.equal(bytes.length, slotRecordBytes);
  assert.deepEqual(decodeSlotRecord(bytes), r);
  assert.equal(decodeSlotRecord(Buffer.alloc(slotRecordBytes)), undefined);
  for (let i = 0; i < slotRecordBytes; i++) {
    const damaged = Buffer.from(bytes);
    damaged[i]! ^= 0x10;
    assert.equal(decodeSlotRecord(damaged), undefined, `byte ${i} changed`);
  }
});

test('blocks appended in any order, concurrently, read back by volume offset, also after a reopen', () => withDir(async (file, dir) => {
  const size = 64 * block + 1000; // a short last block
  const image = Buffer.alloc(size);
  const blocks = await SnapshotBlocks.create(nodeDisk, file, block, size);
  const runs: Array<[number, number]> = [[40, 3], [2, 1], [64, 1], [10, 8], [3, 1], [50, 2]];
  await Promise.all(runs.map(async ([first, count]) => {
    const data = randomBytes(Math.min(size, (first + count) * block) - first * block);
    data.copy(image, first * block);
    await blocks.write(first, data);
  }));
  await blocks.sync();
  const check = async (b: SnapshotBlocks): Promise<void> => {
    for (const [first, count] of runs) {
      const from = first * block;
      const to = Math.min(size, (first + count) * block);
      const got = Buffer.alloc(to - from);
      await b.read(from, got);
      assert.ok(got.equals(image.subarray(from, to)), `blocks ${first}+${count}`);
      const part = Buffer.alloc(Math.min(100, to - from - 50)); // inside a run, across block boundaries
      await b.read(from + 50, part);
      assert.ok(part.equals(image.subarray(from + 50, from + 50 + part.length)));
    }
    const adjacent = Buffer.alloc(2 * block); // blocks 2 and 3: neighbours on the volume, not in the log
    await b.read(2 * block, adjacent);
    assert.ok(adjacent.equals(image.subarray(2 * block, 4 * block)));
    await assert.rejects(b.read(30 * block, Buffer.alloc(block)), /invariant violated: snapshot block 30 has a record/, 'a block never preserved is never read here');
  };
  await check(blocks);
  await blocks.close();
  const reopened = await SnapshotBlocks.open(nodeDisk, file, block, size, await fsp.readdir(dir));
  assert.equal(reopened.layout, 'log');
  await check(reopened);
  await reopened.close();
  assert.equal((await fsp.stat(file('log'))).size, (3 + 1 + 1 + 8 + 1 + 2) * block, 'the log holds what was preserved (a slot per block), no more');
}));

test('after a power loss: a torn record, a record past the log and garbage are ignored; appending goes on after them', () => withDir(async (file, dir) => {
  const size = 32 * block;
  const blocks = await SnapshotBlocks.create(nodeDisk, file, block, size);
  const first = randomBytes(2 * block);
  await blocks.write(5, first);
  await blocks.sync();
  await blocks.close();
  // What a power loss can leave: a record whose data never reached the log (slots 2–3 are past the
  // log's end), garbage where a record was being written, and half a record.
  const slots = await fsp.open(file('slots'), 'a');
  await slots.write(encodeSlotRecord({ firstBlock: 5, blockCount: 2, firstSlot: 2 }));
  await slots.write(randomBytes(slotRecordBytes));
  await slots.write(encodeSlotRecord({ firstBlock: 9, blockCount: 1, firstSlot: 0 }).subarray(0, 9));
  await slots.close();
  const reopened = await SnapshotBlocks.open(nodeDisk, file, block, size, await fsp.readdir(dir));
  const got = Buffer.alloc(2 * block);
  await reopened.read(5 * block, got);
  assert.ok(got.equals(first), 'blocks 5–6 are where their valid record says');
  const later = randomBytes(block);
  await reopened.write(9, later);
  await reopened.sync();
  await reopened.close();
  const again = await SnapshotBlocks.open(nodeDisk, file, block, size, await fsp.readdir(dir));
  const nine = Buffer.alloc(block);
  await again.read(9 * block, nine);
  assert.ok(nine.equals(later), 'a block appended after the torn tail reads back after another reopen');
  await again.read(5 * block, got);
  assert.ok(got.equals(first));
  await again.close();
}));

test('a hole of the volume is recorded as one: it reads as zeroes, also over a copy an interrupted first write left', () => withDir(async (file, dir) => {
  const size = 16 * block;
  const blocks = await SnapshotBlocks.create(nodeDisk, file, block, size);
  await blocks.write(4, randomBytes(block)); // a copy whose bit a power loss would have taken
  await blocks.writeHole(3, 3);
  await blocks.sync();
  const check = async (b: SnapshotBlocks): Promise<void> => {
    const got = Buffer.alloc(3 * block, 9);
    await b.read(3 * block, got);
    assert.ok(got.equals(Buffer.alloc(3 * block)));
  };
  await check(blocks);
  await blocks.close();
  const reopened = await SnapshotBlocks.open(nodeDisk, file, block, size, await fsp.readdir(dir));
  await check(reopened);
  await reopened.close();
  assert.equal((await fsp.stat(file('log'))).size, block, 'a hole takes no room in the log');
}));

test('a snapshot of an earlier release (no slot records) is read and written in place in its sparse data file', () => withDir(async (file, dir) => {
  const size = 16 * block;
  const old = randomBytes(block);
  const data = await fsp.open(file('data'), 'w+');
  await data.truncate(size);
  await data.write(old, 0, block, 3 * block);
  await data.close();
  const blocks = await SnapshotBlocks.open(nodeDisk, file, block, size, await fsp.readdir(dir));
  assert.equal(blocks.layout, 'in-place');
  const got = Buffer.alloc(block);
  await blocks.read(3 * block, got);
  assert.ok(got.equals(old));
  const newer = randomBytes(block);
  await blocks.write(7, newer);
  await blocks.sync();
  await blocks.close();
  const onDisk = await fsp.readFile(file('data'));
  assert.ok(onDisk.subarray(7 * block, 8 * block).equals(newer), 'written at its own offset');
  assert.deepEqual((await fsp.readdir(dir)).sort(), ['snap-1.data'], 'no log is made for it');
}));
