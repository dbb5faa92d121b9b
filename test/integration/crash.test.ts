// Durability across SIGKILL: multi-connection FLUSH, and a fio write workload killed mid-stream.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import { NodeProcess, killAllNodes } from '../support/node-process';
import { OrderedWorkload, readContents } from '../support/ordered-writes';
import { acknowledgedPrefixBlocks, fetchMetrics, metricValue, parseFioJson, run, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('crash');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

function block(i: number, size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let at = 0; at < size; at += 8) b.writeUInt32BE(i, at), b.writeUInt32BE(0xc0ffee00 + (at & 0xff), at + 4);
  return b;
}

test('multi-conn: write on one connection, FLUSH on another, SIGKILL, restart: data present', async () => {
  let node = await NodeProcess.start({ name: 'mc', dataDir: path.join(dir, 'mc') });
  await node.api.createVolume({ name: 'v', size: 32 * MiB });
  const writer = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  const flusher = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  const blockSize = 64 * 1024;
  await Promise.all(Array.from({ length: 200 }, (_, i) => writer.write(i * blockSize, block(i, blockSize))));
  await flusher.flush();
  await node.kill();
  node = await node.restart();
  const reader = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  for (let i = 0; i < 200; i++) assert.ok((await reader.read(i * blockSize, blockSize)).equals(block(i, blockSize)), `block ${i}`);
  assert.deepEqual(await reader.read(200 * blockSize, 4096), Buffer.alloc(4096), 'beyond the writes: zeroes');
  await reader.disconnect();
  assert.equal((await node.stop()).code, 0);
});

test('SIGKILL during a fio write workload with periodic flushes: every completed write reads back after restart', async () => {
  let node = await NodeProcess.start({ name: 'fio-crash', dataDir: path.join(dir, 'fc') });
  await node.api.createVolume({ name: 'v', size: 1024 * MiB });
  const uri = node.nbdUri('v');
  // Sequential writes, a FLUSH every 16: fio records which writes completed when the node dies.
  const common = [`--name=crash`, '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=64k', '--iodepth=16',
    '--size=1024M', '--verify=crc32c', '--fsync=16'];
  const completions = path.join(dir, 'crash-writes');
  const fio = spawn('fio', [...common, '--verify_state_save=1', '--output-format=json', `--write_lat_log=${completions}`, '--log_offset=1'],
    { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
  let fioOut = '';
  fio.stdout.on('data', (d: Buffer) => (fioOut += d.toString()));
  const fioExit = new Promise<number | null>((resolve) => fio.on('exit', (code) => resolve(code)));
  // Kill once a good part of the volume has been written, while fio is still going.
  await waitFor('fio to write 128 MiB', async () =>
    metricValue(await fetchMetrics(node.apiUrl), 'tricopy_nbd_bytes_total', { volume: 'v', op: 'write' }) >= 128 * MiB,
  { timeoutMs: 120_000, intervalMs: 20 });
  await node.kill();
  const code = await fioExit;
  assert.notEqual(code, 0, 'fio saw the node die mid-run');
  const written = parseFioJson<{ jobs: Array<{ write: { io_bytes: number } }> }>(fioOut).jobs[0]!.write.io_bytes;
  // The node counted 128 MiB received; up to a queue depth of them (16 × 64 KiB) were not yet answered.
  assert.ok(written >= 127 * MiB && written < 1024 * MiB, `fio completed ${written} bytes before the crash`);
  node = await node.restart();
  // Every write acknowledged before the crash must read back: verify the longest run of
  // acknowledged blocks from the start (writes complete out of order, so fio's byte count is not one).
  const blockBytes = 64 * 1024;
  const verifyBytes = (await acknowledgedPrefixBlocks(completions, blockBytes)) * blockBytes;
  assert.ok(verifyBytes >= 64 * MiB && verifyBytes <= written, `${verifyBytes} bytes acknowledged in a row of ${written}`);
  const verify = await run('fio', [...common.map((a) => (a === '--size=1024M' ? `--size=${verifyBytes}` : a)),
    '--verify_only=1', '--verify_state_save=0', '--verify_fatal=1', '--output-format=json'], { cwd: dir });
  assert.equal(verify.code, 0, `fio verify_only failed:\n${verify.stdout.slice(-3000)}\n${verify.stderr}`);
  const verified = parseFioJson<{ jobs: Array<{ read: { io_bytes: number } }> }>(verify.stdout).jobs[0]!.read.io_bytes;
  assert.equal(verified, verifyBytes);
  assert.equal((await node.stop()).code, 0);
});

test('SIGKILL during random writes with flushes: every acknowledged write is on disk after restart', async () => {
  let node = await NodeProcess.start({ name: 'ordered-crash', dataDir: path.join(dir, 'oc') });
  const blockSize = 4096;
  const blockCount = 2048;
  await node.api.createVolume({ name: 'v', size: blockSize * blockCount });
  const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  const workload = new OrderedWorkload([client], { blockSize, blockCount, queueDepth: 16, flushEvery: 64 });
  const running = workload.run();
  await waitFor('5000 acknowledged writes', () => workload.ackedCount >= 5000, { timeoutMs: 120_000, intervalMs: 10 });
  await node.kill();
  await running;
  assert.ok(workload.failures > 0, 'writes were in flight when the node died');
  assert.ok(workload.lastFlushedSeq > 0, 'flushes completed before the crash');
  node = await node.restart();
  const reader = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  workload.checkAllAcknowledgedPresent(await readContents([reader], blockSize, blockCount));
  await reader.disconnect();
  assert.equal((await node.stop()).code, 0);
});
