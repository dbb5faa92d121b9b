// Real NBD clients against a real node process: qemu-img, qemu-io, nbdinfo, nbdcopy, fio.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { NodeProcess } from '../support/node-process';
import { parseFioJson, run, runOk, sha256Export, sha256File, tempDir } from '../support/tools';

const MiB = 1024 * 1024;
let dir: string;
let node: NodeProcess;

before(async () => {
  dir = await tempDir('interop');
  node = await NodeProcess.start({ name: 'interop', dataDir: path.join(dir, 'data') });
});

after(async () => {
  const exit = await node.stop();
  assert.equal(exit.code, 0, 'node exits 0 on SIGTERM');
  await fsp.rm(dir, { recursive: true, force: true });
});

async function volume(name: string, sizeBytes: number): Promise<string> {
  await node.api.createVolume({ name, size: sizeBytes });
  return node.nbdUri(name);
}

test('qemu-img info, convert and compare', async () => {
  const uri = await volume('qimg', 32 * MiB);
  const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', uri])).stdout) as { 'virtual-size': number; format: string };
  assert.equal(info['virtual-size'], 32 * MiB);
  assert.equal(info.format, 'raw');
  const src = path.join(dir, 'src.img');
  const content = Buffer.alloc(32 * MiB);
  randomBytes(5 * MiB).copy(content, 3 * MiB); // data surrounded by holes
  randomBytes(MiB).copy(content, 20 * MiB + 12345);
  await fsp.writeFile(src, content);
  await runOk('qemu-img', ['convert', '-n', '-f', 'raw', '-O', 'raw', src, uri]);
  await runOk('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', src, uri]);
  // compare notices a difference (the test can fail).
  const other = path.join(dir, 'other.img');
  content[20 * MiB + 20000] ^= 0xff;
  await fsp.writeFile(other, content);
  const differs = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', other, uri]);
  assert.equal(differs.code, 1, 'qemu-img compare reports the changed byte');
});

test('qemu-io pattern writes and reads at unaligned offsets', async () => {
  const uri = await volume('qio', 16 * MiB);
  const cmds = [
    'write -P 0x5a 1234567 77777',
    'write -P 0xa5 3 509',
    'write -P 0x11 8388607 2',
    'read -P 0x5a 1234567 77777',
    'read -P 0xa5 3 509',
    'read -P 0x11 8388607 2',
    'read -P 0 0 3',
    'read -P 0 512 1234055',
    'read -P 0 1312344 1000',
    'writev -P 0x33 4001 1001 2002',
    'readv -P 0x33 4001 3003',
  ];
  const result = await runOk('qemu-io', ['-f', 'raw', ...cmds.flatMap((c) => ['-c', c]), uri]);
  assert.doesNotMatch(result.stdout + result.stderr, /Pattern verification failed|error/i);
  assert.equal((result.stdout.match(/^read \d+\/\d+ bytes/gm) ?? []).length, 7);
  // A wrong pattern fails: the check above can fail.
  const wrong = await run('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5b 1234567 10', uri]);
  assert.match(wrong.stdout + wrong.stderr, /Pattern verification failed/);
});

test('nbdinfo --list and --map show exports and holes', async () => {
  const uri = await volume('mapped', 8 * MiB);
  await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 1 2M 100k', uri]);
  const list = await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${node.ports.nbdPort}`]);
  const exports = (JSON.parse(list.stdout) as { exports: Array<{ 'export-name': string; 'export-size': number }> }).exports;
  const mapped = exports.find((e) => e['export-name'] === 'mapped');
  assert.ok(mapped, 'export listed');
  assert.equal(mapped['export-size'], 8 * MiB);
  const map = JSON.parse((await runOk('nbdinfo', ['--map', '--json', uri])).stdout) as Array<{ offset: number; length: number; type: number; description: string }>;
  const data = map.filter((e) => e.type === 0);
  assert.deepEqual(data.map((e) => [e.offset, e.length]), [[2 * MiB, 128 * 1024]], 'only the written chunks are data');
  assert.ok(map.some((e) => e.description === 'hole,zero' && e.offset === 0), 'unwritten start is a hole');
  assert.equal(map.reduce((s, e) => s + e.length, 0), 8 * MiB);
});

test('nbdcopy out and back in gives equal sha256', async () => {
  const uriA = await volume('copyA', 24 * MiB);
  const uriB = await volume('copyB', 24 * MiB);
  const src = path.join(dir, 'copy-src.img');
  const content = Buffer.alloc(24 * MiB);
  randomBytes(7 * MiB).copy(content, MiB + 333);
  await fsp.writeFile(src, content);
  await runOk('nbdcopy', [src, uriA]);
  const out = path.join(dir, 'copy-out.img');
  await runOk('nbdcopy', [uriA, out]);
  assert.equal(await sha256File(out), await sha256File(src));
  await runOk('nbdcopy', ['--connections=4', uriA, uriB]);
  assert.equal(await sha256Export(uriB, dir), await sha256File(src));
});

test('fio ioengine=nbd random writes verify with crc32c', async () => {
  const uri = await volume('fio', 64 * MiB);
  const result = await run('fio', ['--name=verify', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k',
    '--iodepth=32', '--size=64M', '--io_size=48M', '--verify=crc32c', '--do_verify=1', '--verify_fatal=1',
    '--verify_state_save=0', `--directory=${dir}`, '--output-format=json'], { cwd: dir });
  assert.equal(result.code, 0, result.stderr);
  const job = (parseFioJson(result.stdout) as { jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }> }).jobs[0]!;
  assert.equal(job.error, 0);
  assert.equal(job.write.io_bytes, 48 * MiB);
  assert.ok(job.read.io_bytes > 0, 'verification read the data back');
});
