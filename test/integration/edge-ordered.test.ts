// Ordered delivery through a remote copy network (spec 002 §5.5, §9 items 19–23, 59): a host writes
// self-describing blocks one after another at the primary while the core, the target edge and the
// source edge are SIGKILLed in turn and restarted on the same ports. While a relay is down the
// secondary is read once it is quiet: it must hold an exact prefix of the write history (nothing
// applied out of order). After each restart it catches up; at the end it equals the primary.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { NbdClient } from '../../src/nbd/client';
import { killAllNodes } from '../support/node-process';
import { type IssuedWrite, OrderedWorkload, encodeBlock, readContents } from '../support/ordered-writes';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const blockSize = 4096;
const blockCount = 256;
let dir: string;

before(async () => {
  dir = await tempDir('edge-ordered');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  if (!process.env.KEEP_TEST_DIR) await fsp.rm(dir, { recursive: true, force: true });
  else console.log(`kept ${dir}`);
});

/** One write at a time (so the write history is the order the edge numbers them in); failures are counted, not fatal. */
class SequentialWriter {
  readonly checks = new OrderedWorkload([], { blockSize, blockCount, queueDepth: 1, flushEvery: 0 });
  private seq = 1;
  private clock = 0;
  private rng = 4242;
  private stopped = false;
  private done: Promise<void> = Promise.resolve();
  failures = 0;

  constructor(private client: NbdClient) {}

  get history(): IssuedWrite[] {
    return this.checks.history;
  }

  get acked(): number {
    return this.history.filter((w) => w.acked).length;
  }

  start(): void {
    this.stopped = false;
    this.done = this.loop();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      this.rng = (this.rng * 1103515245 + 12345) & 0x7fffffff;
      const block = this.rng % blockCount;
      const w: IssuedWrite = { seq: this.seq++, volume: 0, block, acked: false, issuedAt: ++this.clock, ackedAt: Number.POSITIVE_INFINITY };
      this.history.push(w);
      try {
        await this.client.write(block * blockSize, encodeBlock(blockSize, w.seq, 0, block));
        w.acked = true;
        w.ackedAt = ++this.clock;
        // An application's pace, below what the target storage applies: the backlog of an outage drains.
        await new Promise((r) => setTimeout(r, 2));
      } catch {
        this.failures++;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
}

/** The target edge has stopped applying (its counter stands still for a second). */
async function quiet(rcn: Rcn): Promise<number> {
  let last = -1;
  let since = Date.now();
  return waitFor('the target edge to stop applying', async () => {
    const s = await rcn.relay('e-sapporo').api.status().catch(() => undefined);
    const reflected = s?.orders.find((o) => o.id === 'erp' && o.side === 'target')?.reflected ?? -2;
    if (reflected !== last) {
      last = reflected;
      since = Date.now();
      return undefined;
    }
    return Date.now() - since > 1000 ? reflected : undefined;
  }, { timeoutMs: 60_000, intervalMs: 100 });
}

async function secondaryPrefix(rcn: Rcn, writer: SequentialWriter, what: string): Promise<number> {
  const reader = await rcn.cluster.client('sapporo', 'db1');
  try {
    const contents = await readContents([reader], blockSize, blockCount);
    const k = writer.checks.checkExactPrefix(contents);
    assert.ok(k <= writer.history.length, `${what}: prefix ${k} of ${writer.history.length} writes`);
    return k;
  } finally {
    await reader.disconnect();
  }
}

/** Applies the network, pairs tokyo's db1 with sapporo through order erp, and starts writing to it. */
async function writingThroughTheNetwork(rcn: Rcn): Promise<{ client: NbdClient; writer: SequentialWriter }> {
  await rcn.apply();
  await rcn.cluster.volume('tokyo', 'db1', 4 * MiB);
  await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
  const client = await rcn.cluster.client('tokyo', 'db1');
  const writer = new SequentialWriter(client);
  writer.start();
  return { client, writer };
}

test('ordered writes through the network: SIGKILL of the core, the target edge and the source edge in turn; the secondary holds a prefix, then everything', async () => {
  const rcn = await Rcn.create(path.join(dir, 'kills'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '1s', max: '2s', giveUp: '120s' } } },
  });
  try {
    const { client, writer } = await writingThroughTheNetwork(rcn);
    let previous = 0;
    for (const relay of ['c-1', 'e-sapporo', 'e-tokyo']) {
      await waitFor('writes flowing', () => writer.acked >= previous + 150, { timeoutMs: 60_000 });
      await rcn.killRelay(relay);
      const ackedAtKill = writer.acked;
      if (relay !== 'e-tokyo') {
        // The source edge still acknowledges: the host goes on writing while the network is broken.
        await waitFor(`writes acknowledged while ${relay} is down`, () => writer.acked >= ackedAtKill + 50, { timeoutMs: 30_000 });
      }
      await quiet(rcn);
      const k = await secondaryPrefix(rcn, writer, `${relay} down`);
      assert.ok(k >= previous, `the secondary never goes back (${k} after ${previous})`);
      previous = k;
      await rcn.restartRelay(relay);
      // It catches up: the pair is duplex (after a resync, when the primary lost its edge) and the
      // target applied everything the source edge had numbered by then (a resync's copies included:
      // until they are applied the secondary is no prefix, by the nature of a resync).
      await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 90_000);
      const numbered = (await rcn.order('e-tokyo', 'erp', 'source')).generated;
      await waitFor(`the target applying again after ${relay} restarted`, async () => {
        const o = await rcn.order('e-sapporo', 'erp', 'target').catch(() => undefined);
        return o !== undefined && o.reflected >= numbered;
      }, { timeoutMs: 90_000, intervalMs: 200 });
    }
    await writer.stop();
    await client.flush();
    await client.disconnect();
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 60_000);
    await rcn.drained('erp');
    await quiet(rcn);
    // Writes the primary refused while its edge was down are in the history but nowhere else, so the
    // end is checked as: every acknowledged write is on the secondary, which equals the primary.
    const reader = await rcn.cluster.client('sapporo', 'db1');
    writer.checks.checkAllAcknowledgedPresent(await readContents([reader], blockSize, blockCount));
    await reader.disconnect();
    assert.ok(writer.failures > 0 || writer.acked === writer.history.length);
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
    // The source edge was killed after answering writes it had not delivered: they arrived exactly once, in order.
    const src = await rcn.order('e-tokyo', 'erp', 'source');
    const tgt = await rcn.order('e-sapporo', 'erp', 'target');
    assert.equal(tgt.reflected, src.generated);
  } finally {
    await rcn.stopAll();
  }
});

test('a core failure with an alternative route (§5.7): SIGKILL of the route\'s core, entries take the other core without loss or reordering; the secondary equals the primary', async () => {
  const rcn = await Rcn.create(path.join(dir, 'reroute'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1', 'c-2'],
    links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo'], ['e-tokyo', 'c-2'], ['c-2', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '1s', max: '2s', giveUp: '120s' } } },
  });
  try {
    const { client, writer } = await writingThroughTheNetwork(rcn);
    await waitFor('writes flowing', () => writer.acked >= 150, { timeoutMs: 60_000 });
    // The route takes c-1 (the fewest cores, then the name); c-2 is its detour.
    assert.equal((await rcn.status('c-2')).counters.entriesForwarded, 0, 'nothing goes through c-2 while c-1 is up');
    await rcn.killRelay('c-1');
    const ackedAtKill = writer.acked;
    // Not restarted: the target keeps applying through c-2 what the source edge numbers.
    await waitFor('writes acknowledged after the core died', () => writer.acked >= ackedAtKill + 150, { timeoutMs: 60_000 });
    const numbered = (await rcn.order('e-tokyo', 'erp', 'source')).generated;
    await waitFor('the target applying through c-2', async () => (await rcn.order('e-sapporo', 'erp', 'target')).reflected >= numbered,
      { timeoutMs: 60_000, intervalMs: 200 });
    assert.ok((await rcn.status('c-2')).counters.entriesForwarded > 0, 'c-2 carried the entries');
    await writer.stop();
    await client.flush();
    await client.disconnect();
    await rcn.drained('erp');
    await quiet(rcn);
    const reader = await rcn.cluster.client('sapporo', 'db1');
    const contents = await readContents([reader], blockSize, blockCount);
    await reader.disconnect();
    writer.checks.checkAllAcknowledgedPresent(contents);
    assert.equal(writer.checks.checkExactPrefix(contents), writer.history.length, 'the secondary holds every write, in order');
    assert.equal(writer.failures, 0, 'the host never saw a failure');
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
    const src = await rcn.order('e-tokyo', 'erp', 'source');
    assert.equal((await rcn.order('e-sapporo', 'erp', 'target')).reflected, src.generated, 'every numbered entry applied exactly once');
  } finally {
    await rcn.stopAll();
  }
});
