// Online relocation between data areas on real nodes (spec 003 Fig. 15, §9 #57): under fio verify
// load with the volume in a sync pair; SIGKILL during a move; refusals; relocation throughput.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { VolumeView } from '../../src/contracts/node';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { fetchMetrics, metricValue, parseFioJson, sha256Export, tempDir } from '../support/tools';
import { waitFor, within } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('relocate');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

function areaArgs(base: string): { args: string[]; fast: string; slow: string } {
  const fast = path.join(base, 'nvme');
  const slow = path.join(base, 'hdd');
  return { args: ['--data-area', `fast=${fast}`, '--data-area', `slow=${slow}`], fast, slow };
}

async function relocateCli(apiUrl: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return cli(['--node', apiUrl, 'volume', 'relocate', ...args]);
}

async function volumeJson(apiUrl: string, name: string): Promise<VolumeView> {
  const out = await cli(['--node', apiUrl, '--json', 'volume', 'show', name]);
  assert.equal(out.code, 0, out.stderr);
  return JSON.parse(out.stdout) as VolumeView;
}

function mibPerSecond(v: VolumeView): string {
  return ((v.relocation?.bytesPerSecond ?? 0) / MiB).toFixed(1);
}

test('relocation under fio verify load, volume in a sync pair: no fio error, pair duplex throughout, secondary equal, file moved', async () => {
  const base = path.join(dir, 'load');
  const areas = areaArgs(base);
  const cluster = await Cluster.create(base, []);
  try {
    await cluster.start('tokyo', undefined, [...areas.args, '--relocation-rate', '32MiB']);
    await cluster.start('osaka');
    const tokyo = cluster.node('tokyo');
    const created = await cli(['--node', tokyo.apiUrl, 'volume', 'create', 'db1', '--size', '128MiB', '--thin', '--tier', 'fast']);
    assert.equal(created.code, 0, created.stderr);
    await cluster.volume('osaka', 'db1', 128 * MiB);
    await cluster.pair({ name: 'db1-osaka', primary: 'tokyo', secondary: 'osaka', volume: 'db1', mode: 'sync', fence: 'data' });
    await cluster.waitState('tokyo', 'db1-osaka', 'duplex');
    assert.deepEqual(await fsp.readdir(areas.fast), ['db1.img']);

    const fio = spawn('fio', ['--name=relocate', '--ioengine=nbd', `--uri=${tokyo.nbdUri('db1')}`, '--rw=randwrite', '--bs=4k', '--iodepth=16',
      '--size=128M', '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'], { cwd: base, stdio: ['ignore', 'pipe', 'pipe'] });
    let fioOut = '';
    let fioErr = '';
    fio.stdout.on('data', (d: Buffer) => (fioOut += d.toString()));
    fio.stderr.on('data', (d: Buffer) => (fioErr += d.toString()));
    const fioExit = new Promise<number | null>((resolve) => fio.on('exit', resolve));
    let fioDone = false;
    void fioExit.then(() => (fioDone = true));
    await waitFor('fio wrote 8 MiB through the pair', async () =>
      metricValue(await fetchMetrics(tokyo.apiUrl), 'tricopy_nbd_bytes_total', { volume: 'db1', op: 'write' }) >= 8 * MiB, { timeoutMs: 60_000, intervalMs: 20 });

    // Watch the pair while the volume moves: it must never leave duplex.
    const pairStates = new Set<string>();
    let watching = true;
    const watcher = (async () => {
      while (watching) {
        pairStates.add((await tokyo.api.getPair('db1-osaka')).state);
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    const moved = await relocateCli(tokyo.apiUrl, ['db1', '--tier', 'slow', '--wait']);
    const fioRanThroughout = !fioDone;
    watching = false;
    await watcher;
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stdout, /volume db1 moved to tier slow/);
    assert.ok(fioRanThroughout, 'fio was still writing when the move ended (the move ran under load)');

    const code = await within('fio to finish', fioExit, 300_000);
    assert.equal(code, 0, `fio failed: ${fioOut.slice(-2000)} ${fioErr}`);
    const job = parseFioJson<{ jobs: Array<{ error: number; write: { io_bytes: number }; read: { io_bytes: number } }> }>(fioOut).jobs[0]!;
    assert.equal(job.error, 0);
    assert.equal(job.write.io_bytes, 128 * MiB);
    assert.equal(job.read.io_bytes, 128 * MiB, 'fio verified every block it wrote');
    assert.deepEqual([...pairStates], ['duplex'], 'the pair stayed duplex during the move');
    assert.equal((await tokyo.api.getPair('db1-osaka')).state, 'duplex');

    const v = await volumeJson(tokyo.apiUrl, 'db1');
    assert.equal(v.tier, 'slow');
    assert.equal(v.relocation?.state, 'done');
    assert.deepEqual(await fsp.readdir(areas.slow), ['db1.img']);
    await waitFor('the old file removed', async () => (await fsp.readdir(areas.fast)).length === 0);
    assert.equal(await sha256Export(tokyo.nbdUri('db1'), base), await sha256Export(cluster.node('osaka').nbdUri('db1'), base), 'primary equals secondary');
    process.stderr.write(`relocation of 128 MiB under fio randwrite load in a sync pair: ${mibPerSecond(v)} MiB/s (limit 32 MiB/s), writes held ${v.relocation?.holdMs} ms at the switch\n`);
  } finally {
    await cluster.stopAll();
  }
});

test('SIGKILL during a relocation: the restarted node has the volume intact where it was, reports the move interrupted, and it can be rerun', async () => {
  const base = path.join(dir, 'kill');
  const areas = areaArgs(base);
  const cluster = await Cluster.create(base, []);
  try {
    await cluster.start('n1', undefined, [...areas.args, '--relocation-rate', '8MiB']);
    const n1 = cluster.node('n1');
    await n1.api.createVolume({ name: 'v', size: 64 * MiB, thin: true });
    const expected = randomBytes(64 * MiB);
    const client = await cluster.client('n1', 'v');
    for (let off = 0; off < expected.length; off += 4 * MiB) await client.write(off, expected.subarray(off, off + 4 * MiB));
    await client.flush();
    const started = await relocateCli(n1.apiUrl, ['v', '--tier', 'slow']);
    assert.equal(started.code, 0, started.stderr);
    assert.match(started.stdout, /volume v is moving from tier default to tier slow/);
    await waitFor('the copy under way', async () => ((await n1.api.getVolume('v')).relocation?.progressPercent ?? 0) >= 15, { timeoutMs: 30_000, intervalMs: 20 });
    // Writes during the move, on both sides of the copy cursor, flushed (acknowledged as durable).
    for (const off of [0, 2 * MiB, 40 * MiB, 63 * MiB]) {
      const data = randomBytes(256 * 1024);
      await client.write(off, data);
      data.copy(expected, off);
    }
    await client.flush();
    const during = await n1.api.getVolume('v');
    assert.equal(during.relocation?.state, 'copying', 'the node is killed in the middle of the move');
    await cluster.kill('n1');
    await client.disconnect().catch(() => undefined);

    const back = await cluster.restart('n1');
    const v = await volumeJson(back.apiUrl, 'v');
    assert.equal(v.tier, 'default', 'the volume stayed in its tier');
    assert.equal(v.relocation?.state, 'interrupted');
    const show = await cli(['--node', back.apiUrl, 'volume', 'show', 'v']);
    assert.match(show.stdout, /relocation:\s+interrupted: the move from tier default to tier slow stopped \(the node stopped or crashed during the move\); the volume stayed in tier default/);
    assert.deepEqual(await fsp.readdir(areas.slow), [], 'the partial target is gone');
    const events = await back.api.listEvents(0);
    assert.ok(events.some((e) => e.kind === 'volume-relocation-interrupted' && e.subject === 'v'), 'an event says the move was interrupted');
    const reader = await cluster.client('n1', 'v');
    assert.ok((await reader.read(0, 32 * MiB)).equals(expected.subarray(0, 32 * MiB)) && (await reader.read(32 * MiB, 32 * MiB)).equals(expected.subarray(32 * MiB)),
      'every acknowledged write is there');
    await reader.disconnect();

    const rerun = await relocateCli(back.apiUrl, ['v', '--tier', 'slow', '--wait']);
    assert.equal(rerun.code, 0, rerun.stderr);
    assert.equal((await back.api.getVolume('v')).tier, 'slow');
    assert.deepEqual(await fsp.readdir(areas.slow), ['v.img']);
    const after = await cluster.client('n1', 'v');
    assert.ok((await after.read(0, 32 * MiB)).equals(expected.subarray(0, 32 * MiB)) && (await after.read(32 * MiB, 32 * MiB)).equals(expected.subarray(32 * MiB)));
    await after.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('refusals say what to do: unknown tier, the current tier; unthrottled relocation throughput', async () => {
  const base = path.join(dir, 'errors');
  const areas = areaArgs(base);
  const cluster = await Cluster.create(base, []);
  try {
    await cluster.start('n2', undefined, areas.args);
    const n2 = cluster.node('n2');
    await n2.api.createVolume({ name: 'big', size: 256 * MiB, thin: true });
    const unknown = await relocateCli(n2.apiUrl, ['big', '--tier', 'tape']);
    assert.notEqual(unknown.code, 0);
    assert.match(unknown.stderr, /tier tape is not a data area of this node/);
    assert.match(unknown.stderr, /default, fast, slow/);
    const same = await relocateCli(n2.apiUrl, ['big', '--tier', 'default']);
    assert.notEqual(same.code, 0);
    assert.match(same.stderr, /volume big is in tier default already/);
    const missing = await relocateCli(n2.apiUrl, ['nope', '--tier', 'fast']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /volume nope does not exist/);

    const client = await cluster.client('n2', 'big');
    const block = randomBytes(4 * MiB);
    for (let off = 0; off < 256 * MiB; off += 4 * MiB) await client.write(off, block);
    await client.flush();
    await client.disconnect();
    const moved = await relocateCli(n2.apiUrl, ['big', '--tier', 'fast', '--wait']);
    assert.equal(moved.code, 0, moved.stderr);
    const v = await volumeJson(n2.apiUrl, 'big');
    assert.equal(v.tier, 'fast');
    process.stderr.write(`relocation of 256 MiB (all allocated), idle, unthrottled: ${mibPerSecond(v)} MiB/s, writes held ${v.relocation?.holdMs} ms at the switch\n`);
  } finally {
    await cluster.stopAll();
  }
});
