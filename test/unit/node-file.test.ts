// Real files on every I/O path the node can take: native inline (addon), pure-JS inline, and the
// thread pool only; short reads, errors with fs-style codes, the fall-back to the pool when the page
// cache cannot serve a read, and the back-off to the pool after a slow inline write.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { type DiskFile, createNodeDisk, diskErrorCode, readFully, writeAll } from '../../src/common/disk';
import { EAGAIN, type NativeIo, nativeIo } from '../../src/common/native-io';
import { inlineWriteMaxBytes, slowInlineMs, slowInlineWritesInARow, NodeFile } from '../../src/common/node-file';
import { tempDir } from '../support/tools';

const paths: Array<{ name: string; native: NativeIo | undefined; inline: boolean }> = [
  { name: 'pure-JS inline', native: undefined, inline: true },
  { name: 'thread pool only', native: undefined, inline: false },
];
if (nativeIo) paths.unshift({ name: 'native inline', native: nativeIo, inline: true });
else if (process.env.TRICOPY_NATIVE !== '0') test('the native addon is built (run npm ci or make build)', () => assert.fail('native/volio not loaded'));

async function withFile(fn: (file: DiskFile, dir: string) => Promise<void>, options: { native: NativeIo | undefined; inline: boolean }): Promise<void> {
  const dir = await tempDir('node-file');
  const file = await createNodeDisk(options).open(path.join(dir, 'f'), 'w+');
  try {
    await fn(file, dir);
  } finally {
    await file.close();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

for (const p of paths) {
  test(`${p.name}: vectored writes read back, small and past the inline limit; zeroes past the end`, () => withFile(async (file) => {
    const small = [randomBytes(100), randomBytes(4096), randomBytes(3)];
    await writeAll(file, small, 5);
    const big = randomBytes(inlineWriteMaxBytes + 4096);
    await writeAll(file, [big], 1 << 20);
    assert.deepEqual(await readFully(file, Buffer.alloc(4199), 4199, 5), Buffer.concat(small));
    assert.deepEqual(await readFully(file, Buffer.alloc(big.length), big.length, 1 << 20), big);
    const end = (1 << 20) + big.length;
    assert.equal(await file.sizeBytes(), end);
    assert.equal(await file.read(Buffer.alloc(10), 0, 10, end), 0, 'a read at the end of the file returns 0');
    assert.deepEqual(await readFully(file, Buffer.alloc(20, 0xff), 20, end - 10), Buffer.concat([big.subarray(-10), Buffer.alloc(10)]));
    await file.datasync();
  }, p));

  test(`${p.name}: errors carry the errno code the fs module would give`, async () => {
    const dir = await tempDir('node-file');
    try {
      await fsp.writeFile(path.join(dir, 'ro'), 'x');
      const file = await createNodeDisk(p).open(path.join(dir, 'ro'), 'r');
      await assert.rejects(file.writev([Buffer.from('y')], 0), (err) => diskErrorCode(err) === 'EBADF');
      await file.close();
      await assert.rejects(createNodeDisk(p).open(path.join(dir, 'missing'), 'r'), (err) => diskErrorCode(err) === 'ENOENT');
    } finally {
      await fsp.rm(dir, { recursive: true, force: true });
    }
  });
}

test('a read the page cache cannot serve (EAGAIN) and a short inline read are completed on the thread pool', () => withFile(async (file) => {
  const data = randomBytes(64 * 1024);
  await writeAll(file, [data], 0);
  const fd = (file as NodeFile).fd;
  let calls = 0;
  const fake: NativeIo = {
    // First call: only 1000 bytes "cached"; afterwards nothing is.
    preadNowait: (f, target, offset, length, position) => (calls++ === 0 ? fs.readSync(f, target, offset, Math.min(length, 1000), position) : -EAGAIN),
    pwritev: () => assert.fail('not used'),
    tuneMalloc: () => false,
  };
  const viaFake = new NodeFile(fd, { native: fake, inline: true });
  assert.deepEqual(await readFully(viaFake, Buffer.alloc(data.length), data.length, 0), data);
  assert.equal(calls, 2, 'one short inline read, one EAGAIN, then the pool');
}, { native: undefined, inline: true }));

test('slow inline writes in a row send the file\'s writes to the thread pool for a while; one alone does not', () => withFile(async (file) => {
  const fd = (file as NodeFile).fd;
  let inlineWrites = 0;
  let slowWrites = true;
  let clock = 0;
  const fake: NativeIo = {
    preadNowait: () => -EAGAIN,
    pwritev: (f, pieces, position) => {
      inlineWrites++;
      if (slowWrites) clock += slowInlineMs + 1; // a write the page cache pushed back on
      return fs.writevSync(f, pieces as Uint8Array[], position);
    },
    tuneMalloc: () => false,
  };
  const slow = new NodeFile(fd, { native: fake, inline: true, now: () => clock });
  // A slow write between fast ones (the event loop was preempted) changes nothing.
  await writeAll(slow, [Buffer.from('a')], 0);
  slowWrites = false;
  await writeAll(slow, [Buffer.from('b')], 1);
  slowWrites = true;
  for (let i = 0; i < slowInlineWritesInARow; i++) await writeAll(slow, [Buffer.from('first')], 0);
  assert.equal(inlineWrites, 2 + slowInlineWritesInARow);
  await writeAll(slow, [Buffer.from('second')], 100);
  assert.equal(inlineWrites, 2 + slowInlineWritesInARow, 'the next write went to the thread pool');
  const back = Buffer.alloc(6);
  assert.deepEqual(await readFully(slow, back, 6, 100), Buffer.from('second'));
}, { native: undefined, inline: true }));
