// Online verify between two real nodes: a pair in duplex (sync, then async) with hosts writing over
// NBD, a few bytes flipped directly in the secondary's volume file (silent divergence behind
// tricopy's back); `pair verify --wait` finds exactly those regions (event, status, differential
// record) while the writes go on without an error; `pair resync` copies them; both exports are
// byte-equal again.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import type { PairStatus } from '../../src/contracts/pairs';
import type { NbdClient } from '../../src/nbd/client';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const KiB = 1024;
const MiB = 1024 * KiB;
let dir: string;

before(async () => {
  dir = await tempDir('verify');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Hosts writing 4–64 KiB at random offsets of [0, limit) over NBD until stopped. */
function workload(clients: NbdClient[], limitBytes: number): { stop: () => Promise<void>; writes: () => number; errors: string[] } {
  let stopped = false;
  let writes = 0;
  const errors: string[] = [];
  const loops = clients.map(async (c) => {
    while (!stopped) {
      const length = (1 + Math.floor(Math.random() * 16)) * 4 * KiB;
      const offset = Math.floor(Math.random() * ((limitBytes - length) / (4 * KiB))) * 4 * KiB;
      await c.write(offset, randomBytes(length)).then(() => writes++, (err: unknown) => errors.push(String(err)));
      await new Promise((r) => setTimeout(r, 1)); // leave the (shared) CPU to the nodes too
    }
  });
  return { stop: async () => {
    stopped = true;
    await Promise.all(loops);
  }, writes: () => writes, errors };
}

async function flipBytes(file: string, offsets: number[]): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  try {
    for (const at of offsets) {
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, at);
      b[0] = b[0]! ^ 0x01;
      await fh.write(b, 0, 1, at);
    }
  } finally {
    await fh.close();
  }
}

async function flipVerifyResync(mode: 'sync' | 'async', size: number): Promise<void> {
  const cluster = await Cluster.create(path.join(dir, mode), ['vp', 'vs']);
  try {
    await cluster.volume('vp', 'v', size);
    const filler = await cluster.client('vp', 'v');
    for (let off = 0; off < size; off += 4 * MiB) await filler.write(off, randomBytes(4 * MiB)); // allocated everywhere
    await filler.disconnect();
    await cluster.pair({ name: 'v', primary: 'vp', secondary: 'vs', volume: 'v', mode, fence: mode === 'sync' ? 'data' : 'never' });
    await cluster.waitState('vp', 'v', 'duplex', 60_000);
    const primary = cluster.node('vp').apiUrl;

    // Hosts write the lower half; the flips are in the upper half, which nobody writes.
    const clients = await Promise.all([1, 2, 3, 4].map(() => cluster.client('vp', 'v')));
    const hosts = workload(clients, size / 2);
    const flips = [size / 2 + 8 * MiB + 123, size / 2 + 8 * MiB + 5 * 64 * KiB + 4000, size - 14 * MiB + 1, size - MiB + 64 * KiB - 1];
    await flipBytes(path.join(cluster.node('vs').spec.dataDir, 'volumes', 'v.img'), flips);

    const writesBefore = hosts.writes();
    const verify = await cli(['--node', primary, 'pair', 'verify', 'v', '--wait', '--rate', '64', '--json']);
    assert.equal(verify.code, 0, verify.stderr);
    const status = JSON.parse(verify.stdout) as PairStatus;
    const v = status.verify!;
    assert.equal(v.state, 'finished', v.reason);
    assert.equal(v.doneBytes, size);
    assert.equal(v.differingRegions, 4, v.reason);
    assert.deepEqual(v.ranges, [...flips].sort((a, b) => a - b).map((at) => ({ offset: Math.floor(at / (4 * KiB)) * 4 * KiB, length: 4 * KiB })));
    assert.ok(hosts.writes() > writesBefore + 50, `hosts kept writing during the verify (${hosts.writes() - writesBefore} writes)`);

    // Recorded in the differential record, reported as an event, shown by pair status; still duplex.
    const after = await cluster.pairStatus('vp', 'v');
    assert.equal(after.state, 'duplex');
    assert.equal(after.differentialBytes, 4 * 64 * KiB);
    const events = (await cluster.node('vp').api.listEvents(0)).filter((e) => e.kind === 'pair-verify');
    const finished = events.find((e) => e.details?.outcome === 'finished');
    assert.ok(finished, JSON.stringify(events));
    assert.equal(finished.details!.differingRegions, 4);
    assert.equal((finished.details!.ranges as unknown[]).length, 4);
    assert.match(finished.reason, /4 regions of 64KiB differ .*tricopy pair resync v/);
    const table = await cli(['--node', primary, 'pair', 'status']);
    assert.equal(table.code, 0, table.stderr);
    assert.match(table.stdout, new RegExp(`v: verify finished, ${size / MiB}MiB compared: 4 regions of 64KiB differ`));

    // Resync copies those regions (the pair goes through COPY and back), hosts still writing.
    const resync = await cli(['--node', primary, 'pair', 'resync', 'v', '--wait']);
    assert.equal(resync.code, 0, resync.stderr);
    assert.equal((await cluster.pairStatus('vp', 'v')).differentialBytes, 0);
    const resynced = (await cluster.node('vp').api.listEvents(0)).find((e) => e.kind === 'pair-state' && e.subject === 'v' && e.details?.event === 'resync');
    assert.match(resynced?.reason ?? '', /resync: copying 256KiB of regions online verify found different/);

    await hosts.stop();
    assert.deepEqual(hosts.errors, [], 'no host write failed');
    for (const c of clients) await c.disconnect();
    if (mode === 'async') await waitFor('the secondary applied every entry', async () => (await cluster.pairStatus('vp', 'v')).lag?.entries === 0 || undefined);
    assert.equal(await sha256Export(cluster.node('vs').nbdUri('v'), dir), await sha256Export(cluster.node('vp').nbdUri('v'), dir), 'byte-equal after the resync');

    // A verify of a suspended pair is refused with the command to run instead.
    assert.equal((await cli(['--node', primary, 'pair', 'split', 'v'])).code, 0);
    const refused = await cli(['--node', primary, 'pair', 'verify', 'v']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /verify compares a pair in duplex/);
    assert.match(refused.stderr, /tricopy pair resync v --wait/);
  } finally {
    await cluster.stopAll();
  }
}

test('sync pair: verify finds bytes flipped in the secondary\'s file while hosts write; resync makes the copies equal', () => flipVerifyResync('sync', 64 * MiB));

test('async pair: verify at a journal point finds the flipped bytes, not the writes in flight; resync makes the copies equal', () => flipVerifyResync('async', 32 * MiB));
