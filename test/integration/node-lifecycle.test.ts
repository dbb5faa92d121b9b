// Node life cycle and faults: a full disk, clean shutdown with requests in flight, metrics, restart.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { NbdClient, NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { NodeProcess, killAllNodes } from '../support/node-process';
import { fetchMetrics, metricValue, runOk, tempDir } from '../support/tools';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('lifecycle');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a full disk gives ENOSPC to the writer, loses nothing written before, and the node keeps serving', async () => {
  const mount = path.join(dir, 'small');
  await fsp.mkdir(mount);
  // A real full filesystem: a 24 MiB tmpfs holds the data directory (needs root, as CI runs).
  await runOk('mount', ['-t', 'tmpfs', '-o', 'size=24m', 'tmpfs', mount]);
  try {
    const node = await NodeProcess.start({ name: 'full', dataDir: path.join(mount, 'data') });
    const refused = await node.api.createVolume({ name: 'big', size: 64 * MiB }).catch((e: Error) => e);
    assert.match(String(refused), /does not fit/);
    await node.api.createVolume({ name: 'other', size: 2 * MiB });
    await node.api.createVolume({ name: 'big', size: 64 * MiB, thin: true });
    const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'big' });
    const written: Array<{ offset: number; data: Buffer }> = [];
    let enospc: NbdClientError | undefined;
    for (let offset = 0; offset < 64 * MiB; offset += MiB) {
      const data = randomBytes(MiB);
      try {
        await client.write(offset, data);
        written.push({ offset, data });
      } catch (err) {
        enospc = err as NbdClientError;
        break;
      }
    }
    assert.ok(enospc, 'the disk filled up');
    assert.equal(enospc.errno, c.NBD_ENOSPC);
    assert.ok(written.length >= 10, `${written.length} MiB written before the disk filled`);
    for (const w of written) assert.ok((await client.read(w.offset, MiB)).equals(w.data), `data at ${w.offset} intact`);
    // Another client on another volume is unaffected; the API still answers.
    const other = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'other' });
    assert.deepEqual(await other.read(0, 4096), Buffer.alloc(4096));
    await other.disconnect();
    await client.disconnect();
    const info = await node.api.nodeInfo();
    assert.equal(info.volumeCount, 2);
    assert.equal((await node.stop()).code, 0);
  } finally {
    await runOk('umount', ['-l', mount]);
  }
});

test('SIGTERM with requests in flight: they complete, data is flushed, exit code 0, data there after restart', async () => {
  let node = await NodeProcess.start({ name: 'term', dataDir: path.join(dir, 'term') });
  await node.api.createVolume({ name: 'v', size: 64 * MiB });
  const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  const blocks = Array.from({ length: 64 }, () => randomBytes(MiB));
  let firstAck: () => void = () => undefined;
  const acked = new Promise<void>((resolve) => (firstAck = resolve));
  const writes = blocks.map((b, i) => client.write(i * MiB, b).then(() => {
    firstAck();
    return 'ok';
  }, (e: Error) => e.message));
  await acked;
  const exit = node.stop();
  const results = await Promise.all(writes);
  assert.equal((await exit).code, 0, 'clean exit');
  node = await node.restart();
  const reader = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'v' });
  for (let i = 0; i < blocks.length; i++) {
    if (results[i] === 'ok') assert.ok((await reader.read(i * MiB, MiB)).equals(blocks[i]!), `acknowledged block ${i} survived`);
  }
  assert.ok(results.filter((r) => r === 'ok').length > 0, 'some writes were acknowledged before shutdown');
  await reader.disconnect();
  assert.equal((await node.stop()).code, 0);
});

test('metrics: per-volume operations, bytes, latency histograms and connected clients', async () => {
  const node = await NodeProcess.start({ name: 'metrics', dataDir: path.join(dir, 'metrics') });
  await node.api.createVolume({ name: 'm', size: 16 * MiB });
  const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'm' });
  for (let i = 0; i < 10; i++) await client.write(i * 4096, Buffer.alloc(4096, i));
  for (let i = 0; i < 5; i++) await client.read(i * 4096, 4096);
  await client.flush();
  const text = await fetchMetrics(node.apiUrl);
  assert.equal(metricValue(text, 'tricopy_nbd_requests_total', { volume: 'm', op: 'write', result: 'ok' }), 10);
  assert.equal(metricValue(text, 'tricopy_nbd_requests_total', { volume: 'm', op: 'read', result: 'ok' }), 5);
  assert.equal(metricValue(text, 'tricopy_nbd_bytes_total', { volume: 'm', op: 'write' }), 40960);
  assert.equal(metricValue(text, 'tricopy_nbd_bytes_total', { volume: 'm', op: 'read' }), 20480);
  assert.equal(metricValue(text, 'tricopy_nbd_request_duration_seconds_count', { volume: 'm', op: 'flush' }), 1);
  assert.equal(metricValue(text, 'tricopy_nbd_clients', { volume: 'm' }), 1);
  assert.equal(metricValue(text, 'tricopy_volume_size_bytes', { volume: 'm' }), 16 * MiB);
  assert.equal(metricValue(text, 'tricopy_volume_allocated_bytes', { volume: 'm' }), 64 * 1024);
  await client.disconnect();
  assert.equal((await node.stop()).code, 0);
});
