// In-node replica pairs on real node processes with real NBD clients: the CLI flow, a split with
// ordered writes in flight (the image is one instant, nothing torn), a quick split of an 8 GiB
// volume under fio random writes (copy-on-write keeps the image while the background copy runs),
// resync and restore data equality, SIGKILL during a quick split, and a replica of a volume that is
// also in a remote sync pair.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import type { ReplicaStatus } from '../../src/contracts/replicas';
import { HttpNodeClient } from '../../src/node/api-client';
import { Cluster } from '../support/cluster';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { OrderedWorkload, type IssuedWrite, decodeBlock } from '../support/ordered-writes';
import { contentDigest, run, runOk, sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
let dir: string;

before(async () => {
  dir = await tempDir('replica');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function startNode(name: string, args: string[] = []): Promise<{ node: NodeProcess; api: HttpNodeClient }> {
  const node = await NodeProcess.start({ name, dataDir: path.join(dir, name, 'data'), args });
  return { node, api: new HttpNodeClient(node.apiUrl) };
}

function connect(node: NodeProcess, exportName: string): Promise<NbdClient> {
  return NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName });
}

/** The logical time of the workload's history now (its clock counts issues and acknowledgements). */
function now(history: IssuedWrite[]): number {
  let t = 0;
  for (const w of history) t = Math.max(t, w.issuedAt, Number.isFinite(w.ackedAt) ? w.ackedAt : 0);
  return t;
}

test('CLI: create --wait, split with ordered writes in flight: the replica is the primary at one instant, nothing torn', async () => {
  const { node } = await startNode('split');
  const env = { TRICOPY_NODE: node.apiUrl };
  try {
    const blockSize = 4096;
    const blockCount = 2048; // 8 MiB
    assert.equal((await cli(['volume', 'create', 'db1', '--size', '8MiB'], env)).code, 0);
    const created = await cli(['replica', 'create', 'db1-r1', '--volume', 'db1', '--wait'], env);
    assert.equal(created.code, 0, created.stderr);
    assert.match(created.stdout, /replica db1-r1 is duplex \(PAIR\)/);
    const client = await connect(node, 'db1');
    const workload = new OrderedWorkload([client], { blockSize, blockCount, queueDepth: 8, flushEvery: 0, seed: 11 });
    const running = workload.run();
    await waitFor('writes in flight', () => workload.ackedCount > 1500);
    const before = now(workload.history);
    const split = await cli(['replica', 'split', 'db1-r1', '--json'], env);
    const afterSplit = now(workload.history);
    assert.equal(split.code, 0, split.stderr);
    assert.equal((JSON.parse(split.stdout) as ReplicaStatus).state, 'split');
    await waitFor('more writes after the split', () => workload.ackedCount > 3000);
    workload.stop();
    await running;
    assert.equal(workload.failures, 0);
    const replica = await connect(node, 'db1-r1');
    const contents = new Map<string, number>();
    for (let block = 0; block < blockCount; block++) contents.set(`0:${block}`, decodeBlock(await replica.read(block * blockSize, blockSize), 0, block));
    await replica.disconnect();
    const bySeq = new Map(workload.history.map((w) => [w.seq, w]));
    for (const [key, seq] of contents) {
      if (seq === 0) continue;
      assert.ok(bySeq.get(seq)!.issuedAt <= afterSplit, `block ${key} holds write ${seq}, issued after the split returned`);
    }
    // Every write acknowledged before the split was asked for is there (or a newer one to its block).
    const newest = new Map<string, IssuedWrite>();
    for (const w of workload.history) if (w.ackedAt <= before && (newest.get(`0:${w.block}`)?.issuedAt ?? -1) < w.issuedAt) newest.set(`0:${w.block}`, w);
    for (const [key, w] of newest) {
      const held = bySeq.get(contents.get(key)!);
      assert.ok(held && held.ackedAt >= w.issuedAt, `block ${key}: write ${w.seq} was acknowledged before the split but the replica holds ${held?.seq ?? 'nothing'} older`);
    }
    // And the whole image is one crash-consistent instant.
    workload.checkCrashConsistent(contents);
    const status = JSON.parse((await cli(['replica', 'status', 'db1-r1', '--json'], env)).stdout) as ReplicaStatus;
    assert.ok(status.regions.dirtyPrimary > 0 && status.exportUri?.endsWith('/db1-r1'));
    const info = JSON.parse((await runOk('qemu-img', ['info', '--output=json', node.nbdUri('db1-r1')])).stdout) as { 'virtual-size': number };
    assert.equal(info['virtual-size'], 8 * MiB);
    // A replica that is not split is not offered to hosts.
    assert.equal((await cli(['replica', 'resync', 'db1-r1', '--wait'], env)).code, 0);
    const refused = await run('qemu-img', ['info', node.nbdUri('db1-r1')]);
    assert.notEqual(refused.code, 0, 'a duplex replica is not exported');
    const list = await runOk('nbdinfo', ['--list', '--json', `nbd://127.0.0.1:${node.ports.nbdPort}`]);
    assert.ok(!list.stdout.includes('"db1-r1"'), 'nor listed');
  } finally {
    await node.stop();
  }
});

test('quick split of an 8 GiB volume returns at once; under fio random writes the image stays the split instant', async () => {
  const { node, api } = await startNode('quick');
  try {
    await api.createVolume({ name: 'big', size: 8 * GiB, thin: true });
    const uri = node.nbdUri('big');
    const digest = (name: string): Promise<string> => contentDigest(node.ports.nbdPort, name);
    // 128 MiB of data spread over the volume (1 MiB every 64 MiB), so the background copy has work to do.
    await runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--size=8G', '--io_size=128M',
      '--zonemode=strided', '--zonesize=1M', '--zonerange=64M', '--iodepth=8', '--output-format=terse'], { cwd: dir });
    const before = await digest('big');
    await api.createReplica({ name: 'big-r1', volume: 'big' });
    const started = performance.now();
    const split = await api.splitReplica('big-r1', { quick: true });
    const elapsedMs = performance.now() - started;
    assert.ok(elapsedMs < 1000, `quick split took ${elapsedMs.toFixed(0)} ms`);
    assert.ok(split.state === 'split-pending' || split.state === 'split', split.state);
    const fio = spawn('fio', ['--name=cow', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--size=8G', '--io_size=16M',
      '--iodepth=16', '--randrepeat=0', '--output-format=terse'], { cwd: dir, stdio: 'ignore' });
    const fioDone = new Promise<number | null>((resolve) => fio.on('exit', resolve));
    const during = await digest('big-r1');
    assert.equal(during, before, 'the replica read while the primary is written is the split image');
    assert.equal(await fioDone, 0);
    await api.waitReplica('big-r1', 'split', 120_000);
    assert.equal(await digest('big-r1'), before, 'after the background copy too');
    assert.notEqual(await digest('big'), before, 'the primary did change');
  } finally {
    await node.stop();
  }
});

test('resync and restore end with equal data (sha256 over NBD)', async () => {
  const { node, api } = await startNode('resync');
  try {
    await api.createVolume({ name: 'v', size: 64 * MiB });
    const uri = node.nbdUri('v');
    const src = path.join(dir, 'v.img');
    await fsp.writeFile(src, Buffer.concat([randomBytes(8 * MiB), Buffer.alloc(48 * MiB), randomBytes(8 * MiB)]));
    await runOk('nbdcopy', [src, uri]);
    await api.createReplica({ name: 'v-r', volume: 'v' });
    await api.waitReplica('v-r', 'duplex', 60_000);
    await api.splitReplica('v-r');
    const atSplit = await sha256Export(node.nbdUri('v-r'), dir);
    assert.equal(atSplit, await sha256Export(uri, dir));
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 1M 3M', '-c', 'write -z 40M 2M', uri]);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x6b 50M 1M', node.nbdUri('v-r')]);
    const changed = await api.getReplica('v-r');
    assert.equal(changed.regions.dirtyPrimary, 80);
    assert.equal(changed.regions.dirtySecondary, 16);
    // Restore: the primary gets the replica's image (with its own change at 50M).
    const replicaImage = await sha256Export(node.nbdUri('v-r'), dir);
    await api.restoreReplica('v-r');
    await api.waitReplica('v-r', 'duplex', 60_000);
    assert.equal(await sha256Export(uri, dir), replicaImage);
    // Resync: the replica gets the primary's image.
    await api.splitReplica('v-r');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7c 10M 1M', uri]);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x7d 60M 1M', node.nbdUri('v-r')]);
    const copiedBefore = (await api.getReplica('v-r')).copiedBytes;
    await api.resyncReplica('v-r');
    await api.waitReplica('v-r', 'duplex', 60_000);
    assert.equal((await api.getReplica('v-r')).copiedBytes - copiedBefore, 2 * MiB, 'only the regions changed on either side');
    await api.splitReplica('v-r');
    assert.equal(await sha256Export(node.nbdUri('v-r'), dir), await sha256Export(uri, dir));
  } finally {
    await node.stop();
  }
});

test('SIGKILL right after copy-on-write writes and during the background copy loses nothing', async () => {
  // Copies at 16 MiB/s: the 64 MiB background copy is still running when the node is killed.
  const { node, api } = await startNode('crash', ['--replica-copy-rate', '16MiB']);
  let current = node;
  try {
    await api.createVolume({ name: 'v', size: 64 * MiB });
    const uri = node.nbdUri('v');
    await runOk('fio', ['--name=fill', '--ioengine=nbd', `--uri=${uri}`, '--rw=write', '--bs=1M', '--size=64M', '--iodepth=8', '--output-format=terse'], { cwd: dir });
    const image = await sha256Export(uri, dir);
    await api.createReplica({ name: 'v-r', volume: 'v' });
    await api.splitReplica('v-r', { quick: true });
    // Acknowledged writes to regions not copied yet: each copied the old data first (spec §9 #10).
    const writes = ['write -P 0x11 50M 64k', 'write -P 0x22 60M 4k', 'write -P 0x33 20M 1M'];
    await runOk('qemu-io', ['-f', 'raw', ...writes.flatMap((w) => ['-c', w]), uri]);
    await current.kill();
    current = await current.restart();
    const again = new HttpNodeClient(current.apiUrl);
    const status = await again.getReplica('v-r');
    assert.equal(status.state, 'split-pending', 'killed during the background copy');
    assert.equal(await sha256Export(current.nbdUri('v-r'), dir), image, 'the replica holds the split image');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'read -P 0x11 50M 64k', '-c', 'read -P 0x22 60M 4k', '-c', 'read -P 0x33 20M 1M', current.nbdUri('v')]);
    await again.waitReplica('v-r', 'split', 120_000);
    assert.equal(await sha256Export(current.nbdUri('v-r'), dir), image);
    // The job can be rerun: resync and split again.
    await again.resyncReplica('v-r');
    await again.waitReplica('v-r', 'duplex', 120_000);
  } finally {
    await current.stop();
  }
});

test('a replica of a volume in a remote sync pair: both copies stay right', async () => {
  const cluster = await Cluster.create(path.join(dir, 'remote'), ['tokyo', 'osaka']);
  try {
    await cluster.volume('tokyo', 'db', 32 * MiB);
    await cluster.pair({ name: 'db-osaka', primary: 'tokyo', secondary: 'osaka', volume: 'db', mode: 'sync', fence: 'data' });
    await cluster.waitState('tokyo', 'db-osaka', 'duplex');
    const tokyo = new HttpNodeClient(cluster.node('tokyo').apiUrl);
    const uri = cluster.node('tokyo').nbdUri('db');
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x41 0 8M', uri]);
    await tokyo.createReplica({ name: 'db-r', volume: 'db' });
    await tokyo.waitReplica('db-r', 'duplex', 60_000);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x42 4M 8M', uri]);
    await tokyo.splitReplica('db-r', { quick: true });
    const atSplit = await sha256Export(uri, dir);
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x43 0 16M', uri]);
    assert.equal(await sha256Export(cluster.node('tokyo').nbdUri('db-r'), dir), atSplit);
    await cluster.waitState('tokyo', 'db-osaka', 'duplex');
    // The remote secondary holds every write, including those that copied old data to the replica first.
    const osaka = new HttpNodeClient(cluster.node('osaka').apiUrl);
    await osaka.createSnapshot({ name: 'check', volumes: ['db'] }); // a snapshot at the secondary, replication going on
    assert.equal(await sha256Export(cluster.node('osaka').nbdUri('db@check'), dir), await sha256Export(uri, dir));
    await runOk('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 20M 1M', uri]);
    await cluster.waitState('tokyo', 'db-osaka', 'duplex');
    assert.notEqual(await sha256Export(cluster.node('osaka').nbdUri('db@check'), dir), await sha256Export(uri, dir), 'the snapshot stays while the secondary applies');
    // A replica volume cannot be paired remotely.
    await assert.rejects(tokyo.createPair({ name: 'x', volume: 'db-r', peer: { node: 'osaka', host: '127.0.0.1', replPort: cluster.node('osaka').ports.replPort }, mode: 'sync' }),
      /in-node replica/);
  } finally {
    await cluster.stopAll();
  }
});
