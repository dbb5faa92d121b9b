// Online verify on the real replication core over the simulator's disks, network and clock: bytes
// flipped behind tricopy's back in the secondary's volume file are found (exactly their regions,
// recorded and reported) while hosts keep writing elsewhere; host writes racing the compare are
// never reported as differences, for sync and async pairs; a resync of the duplex pair copies the
// recorded regions and the copies are byte-equal again. Refusals name the command to run instead.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { InvariantError, invariantObservers } from '../../src/common/errors';
import type { PairStatus } from '../../src/contracts/pairs';
import { RatePacer } from '../../src/replication/copy/verify';
import { decide } from '../../src/replication/pairs/state-table';
import { deltaBlockBytes, diffChunkBytes } from '../../src/replication/limits';
import type { ReplicationService } from '../../src/replication/service';
import { Cluster } from '../../sim/cluster';

const MiB = 1024 * 1024;
const volumeBytes = 8 * MiB;
/** Hosts write everywhere but here; the flips are here. */
const quiet = { offset: 6 * MiB, length: MiB };
/** Three regions: two flips in one 4 KiB block, one in another block of the same region, one in a third region. */
const flips = [quiet.offset + 100, quiet.offset + 101, quiet.offset + 5 * 4096 + 7, quiet.offset + 3 * diffChunkBytes + 4095, quiet.offset + 9 * diffChunkBytes];

interface Fixture {
  cluster: Cluster;
  service: (node: string) => ReplicationService;
  status: () => PairStatus;
  invariantFailures: InvariantError[];
  close: () => void;
}

async function fixture(mode: 'sync' | 'async'): Promise<Fixture> {
  const cluster = new Cluster(7, ['tokyo', 'osaka'], [{ name: 'db', index: 1, sizeBytes: volumeBytes }],
    [{ name: 'db', volume: 'db', from: 'tokyo', to: 'osaka', mode, fence: mode === 'sync' ? 'data' : 'never' }],
    { verbose: false, journalBytes: 64 * MiB, autoResync: false });
  const invariantFailures: InvariantError[] = [];
  const observe = (err: InvariantError): void => {
    invariantFailures.push(err);
  };
  invariantObservers.add(observe);
  await cluster.startAll();
  const service = (node: string): ReplicationService => cluster.node(node).service!;
  const created = await cluster.command('tokyo', 'volume create', () => cluster.node('tokyo').store!.create({ name: 'db', sizeBytes: volumeBytes }));
  assert.ok(created.ok);
  // Data everywhere first, so the flipped regions are allocated (read, not taken for holes).
  const front = cluster.node('tokyo').front('db')!;
  const filled = await cluster.scheduler.runUntilSettled(front.write(0, randomBytes(volumeBytes), { fua: false }), cluster.scheduler.now + 60_000);
  assert.ok(filled.done && !('error' in filled && filled.error));
  const pair = await cluster.command('tokyo', 'pair create', (s) => s.createPair({
    name: 'db', volume: 'db', peer: { node: 'osaka', host: 'osaka', replPort: 7000 }, mode, fence: mode === 'sync' ? 'data' : 'never',
    group: mode === 'async' ? 'g' : undefined,
  }));
  assert.ok(pair.ok, pair.ok ? '' : pair.error);
  const status = (): PairStatus => service('tokyo').get('db');
  assert.ok(await cluster.scheduler.runUntilTrue(() => status().state === 'duplex', cluster.scheduler.now + 120_000), 'duplex after the initial copy');
  return { cluster, service, status, invariantFailures, close: () => invariantObservers.delete(observe) };
}

/** Hosts writing 4 KiB blocks at random outside the quiet range until stopped; counts writes and errors. */
function hostWrites(f: Fixture): { stop: () => void; writes: () => number; errors: string[] } {
  const errors: string[] = [];
  let writes = 0;
  let stopped = false;
  const blocks = volumeBytes / deltaBlockBytes;
  const rng = f.cluster.rng.fork();
  const client = async (): Promise<void> => {
    while (!stopped) {
      let block = rng.int(blocks);
      if (block * deltaBlockBytes >= quiet.offset && block * deltaBlockBytes < quiet.offset + quiet.length) block = (block + quiet.length / deltaBlockBytes) % blocks;
      await f.cluster.node('tokyo').front('db')!.write(block * deltaBlockBytes, randomBytes(deltaBlockBytes), { fua: false })
        .then(() => writes++, (err: unknown) => errors.push(String(err)));
      await new Promise<void>((r) => f.cluster.scheduler.schedule(rng.int(5), r));
    }
  };
  for (let i = 0; i < 4; i++) void client();
  return { stop: () => (stopped = true), writes: () => writes, errors };
}

function flipOnDisk(f: Fixture, node: string, offsets: number[]): void {
  const n = f.cluster.node(node);
  assert.ok(n.disk.exists(n.volumeFile('db')), 'the volume file exists');
  n.disk.corruptNow(n.volumeFile('db'), offsets, 0x20);
}

async function runVerify(f: Fixture): Promise<PairStatus> {
  const started = await f.cluster.command('tokyo', 'pair verify', (s) => s.verify('db', { rateMiBPerSecond: 50 }));
  assert.ok(started.ok, started.ok ? '' : started.error);
  assert.equal(started.value.verify?.state, 'running');
  assert.ok(await f.cluster.scheduler.runUntilTrue(() => f.status().verify?.state !== 'running', f.cluster.scheduler.now + 600_000), 'verify ends');
  return f.status();
}

function verifyEvents(f: Fixture): Array<{ reason: string; details: Record<string, unknown> }> {
  return f.cluster.node('tokyo').events!.since(0).filter((e) => e.kind === 'pair-verify').map((e) => ({ reason: e.reason, details: e.details ?? {} }));
}

for (const mode of ['sync', 'async'] as const) {
  test(`${mode}: verify finds exactly the flipped regions while hosts write elsewhere; resync copies them; the copies are equal`, async () => {
    const f = await fixture(mode);
    try {
      const hosts = hostWrites(f);
      await f.cluster.run(200);
      flipOnDisk(f, 'osaka', flips);
      const s = await runVerify(f);
      const v = s.verify!;
      assert.equal(v.state, 'finished', v.reason);
      assert.equal(v.doneBytes, volumeBytes);
      assert.equal(v.skippedBytes, 0);
      assert.equal(v.differingRegions, 3, v.reason);
      assert.deepEqual(v.ranges, [
        { offset: quiet.offset, length: deltaBlockBytes }, { offset: quiet.offset + 5 * 4096, length: deltaBlockBytes },
        { offset: quiet.offset + 3 * diffChunkBytes, length: deltaBlockBytes }, { offset: quiet.offset + 9 * diffChunkBytes, length: deltaBlockBytes },
      ]);
      assert.equal(v.differingBytes, 4 * deltaBlockBytes);
      assert.equal(s.state, 'duplex', 'verify changes no state');
      assert.equal(s.differentialBytes, 3 * diffChunkBytes, 'the differing regions are recorded');
      const events = verifyEvents(f);
      assert.deepEqual(events.map((e) => e.details.outcome), ['started', 'finished']);
      assert.equal(events[1]!.details.differingRegions, 3);
      assert.match(events[1]!.reason, /3 regions of 64KiB differ .*tricopy pair resync db/);
      assert.ok(hosts.writes() > 100, `hosts kept writing (${hosts.writes()})`);
      // Resync copies what verify recorded (and only that), while hosts go on writing.
      const resync = await f.cluster.command('tokyo', 'pair resync', (x) => x.resync('db', {}));
      assert.ok(resync.ok, resync.ok ? '' : resync.error);
      assert.equal(resync.value.state, 'duplex-pending');
      assert.match(resync.value.reason, /192KiB of regions online verify found different/);
      assert.ok(await f.cluster.scheduler.runUntilTrue(() => f.status().state === 'duplex', f.cluster.scheduler.now + 120_000), 'duplex after the resync');
      assert.equal(f.status().differentialBytes, 0);
      hosts.stop();
      await f.cluster.run(2000); // writes in flight finish; async secondaries apply what they received
      assert.deepEqual(hosts.errors, [], 'no host write failed');
      assert.ok(f.cluster.node('osaka').read('db', 0, volumeBytes).equals(f.cluster.node('tokyo').read('db', 0, volumeBytes)), 'byte-equal after the resync');
      // A second verify finds nothing.
      const again = await runVerify(f);
      assert.equal(again.verify!.state, 'finished');
      assert.equal(again.verify!.differingRegions, 0, again.verify!.reason);
      assert.deepEqual(f.invariantFailures, []);
    } finally {
      f.close();
    }
  });

  test(`${mode}: host writes racing the compare everywhere are never reported as differences`, async () => {
    const f = await fixture(mode);
    try {
      // Hosts write all over the volume (the quiet range too, here: nothing is flipped), over a
      // link slow enough that many writes are in flight to the secondary at any moment.
      f.cluster.network.setProfile('tokyo', 'osaka', { delayMs: 3, jitterMs: 4 });
      let stopped = false;
      let writes = 0;
      const errors: string[] = [];
      const rng = f.cluster.rng.fork();
      const client = async (): Promise<void> => {
        while (!stopped) {
          const block = rng.int(volumeBytes / deltaBlockBytes);
          const length = rng.chance(0.5) ? deltaBlockBytes : Math.min(diffChunkBytes, volumeBytes - block * deltaBlockBytes);
          await f.cluster.node('tokyo').front('db')!.write(block * deltaBlockBytes, randomBytes(length), { fua: false })
            .then(() => writes++, (err: unknown) => errors.push(String(err)));
          await new Promise<void>((r) => f.cluster.scheduler.schedule(rng.int(4), r));
        }
      };
      for (let i = 0; i < (mode === 'sync' ? 16 : 3); i++) void client();
      const s = await runVerify(f);
      stopped = true;
      assert.equal(s.verify!.state, 'finished', s.verify!.reason);
      assert.equal(s.verify!.differingRegions, 0, s.verify!.reason);
      assert.equal(s.verify!.skippedBytes, 0);
      assert.equal(s.differentialBytes, 0);
      assert.ok(writes > 200, `hosts wrote during the verify (${writes})`);
      await f.cluster.run(2000);
      assert.deepEqual(errors, []);
      assert.deepEqual(f.invariantFailures, []);
    } finally {
      f.close();
    }
  });
}

test('verify refuses what is not a connected duplex primary, naming the command to run instead; cancel stops it', async () => {
  const f = await fixture('sync');
  try {
    const atSecondary = await f.cluster.command('osaka', 'pair verify', (s) => s.verify('db', {}));
    assert.ok(!atSecondary.ok);
    assert.match(atSecondary.error, /verify is run at the primary node \(tokyo\)/);
    const badRate = await f.cluster.command('tokyo', 'pair verify', (s) => s.verify('db', { rateMiBPerSecond: 0 }));
    assert.ok(!badRate.ok);
    assert.match(badRate.error, /whole number of MiB\/s/);
    // Cancel: slow enough to still be running.
    const started = await f.cluster.command('tokyo', 'pair verify', (s) => s.verify('db', { rateMiBPerSecond: 1 }));
    assert.ok(started.ok);
    const twice = await f.cluster.command('tokyo', 'pair verify', (s) => s.verify('db', {}));
    assert.ok(!twice.ok);
    assert.match(twice.error, /already running/);
    await f.cluster.run(1000);
    const cancelled = await f.cluster.command('tokyo', 'pair verify --cancel', (s) => s.cancelVerify('db'));
    assert.ok(cancelled.ok);
    assert.equal(cancelled.value.verify?.state, 'cancelled');
    assert.ok(cancelled.value.verify!.doneBytes > 0 && cancelled.value.verify!.doneBytes < volumeBytes);
    // Split: verify refused with the resync to run; a verify running when the pair leaves duplex is aborted.
    const running = await f.cluster.command('tokyo', 'pair verify', (s) => s.verify('db', { rateMiBPerSecond: 1 }));
    assert.ok(running.ok);
    await f.cluster.run(500);
    const split = await f.cluster.command('tokyo', 'pair split', (s) => s.split('db', { secondaryWritable: false }));
    assert.ok(split.ok);
    assert.ok(await f.cluster.scheduler.runUntilTrue(() => f.status().verify?.state !== 'running', f.cluster.scheduler.now + 10_000));
    assert.equal(f.status().verify!.state, 'aborted');
    assert.match(f.status().verify!.reason, /left duplex, it is suspended \(PSUS\)/);
    const refused = await f.cluster.command('tokyo', 'pair verify', (s) => s.verify('db', {}));
    assert.ok(!refused.ok);
    assert.match(refused.error, /suspended \(PSUS\).*verify compares a pair in duplex/);
    assert.deepEqual(f.invariantFailures, []);
  } finally {
    f.close();
  }
});

test('the rate pacer holds a verify to its rate', async () => {
  let now = 0;
  const slept: number[] = [];
  const clock = {
    now: () => now, setTimer: () => ({ unref: () => undefined }), clearTimer: () => undefined, defer: () => undefined,
    sleep: async (ms: number) => {
      slept.push(ms);
      now += ms;
    },
  };
  const pacer = new RatePacer(clock, 10 * MiB);
  for (let i = 0; i < 10; i++) await pacer.pace(MiB);
  // 10 MiB at 10 MiB/s: the tenth MiB may start at 900 ms.
  assert.equal(now, 900);
  assert.equal(slept.length, 9);
});

test('the table: resync of a duplex primary copies the regions verify recorded, and is a no-op without them', () => {
  for (const mode of ['sync', 'async'] as const) {
    const copy = decide('primary', 'duplex', 'resync', mode, null, { clean: false });
    assert.equal(copy.kind, 'transition');
    assert.equal(copy.kind === 'transition' && copy.to, 'duplex-pending');
    assert.equal(decide('primary', 'duplex', 'resync', mode).kind, 'noop');
    assert.equal(decide('secondary', 'duplex', 'resync', mode, null, { clean: false }).kind, 'refuse', 'at the secondary resync is the wrong node');
  }
});
