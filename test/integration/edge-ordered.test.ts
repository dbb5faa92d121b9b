// Ordered delivery through a remote copy network (spec 002 §5.5, §9 items 19–23, 59; issue 15): a host writes
// self-describing blocks one after another at the primary while the core, the target edge and the
// source edge are SIGKILLed in turn and restarted on the same ports. While a relay is down the
// secondary is read once it is quiet: it must hold an exact prefix of the write history (nothing
// applied out of order). After each restart it catches up; at the end it equals the primary.
// With two cores, a dead core (§5.7) and a cut link whose core stays up (issue 15) are routed around.
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
  // A test that failed left its writer going: stopped here, or the file never ends.
  for (const w of writers) void w.stop();
  killAllRelays();
  killAllNodes();
  if (!process.env.KEEP_TEST_DIR) await fsp.rm(dir, { recursive: true, force: true });
  else console.log(`kept ${dir}`);
});

const writers = new Set<SequentialWriter>();

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
    writers.add(this);
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

/** The async secondary has stopped applying journal entries (its applied position stands still for a second). */
async function quietAsync(rcn: Rcn): Promise<number> {
  let last = -1;
  let since = Date.now();
  return waitFor('the async secondary to stop applying', async () => {
    const applied = (await rcn.cluster.node('sapporo').api.getGroup('db1-far').catch(() => undefined))?.appliedSeq ?? -2;
    if (applied !== last) {
      last = applied;
      since = Date.now();
      return undefined;
    }
    return Date.now() - since > 1000 ? applied : undefined;
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

/** The source edge sends toward e-sapporo through `core`. */
async function pathVia(rcn: Rcn, core: string): Promise<boolean> {
  return pathIs(rcn, ['e-tokyo', core, 'e-sapporo']);
}

/** The source edge sends toward e-sapporo along `hops`. */
async function pathIs(rcn: Rcn, hops: string[]): Promise<boolean> {
  return (await rcn.status('e-tokyo')).paths?.toward.find((p) => p.to === 'e-sapporo')?.hops.join() === hops.join();
}

/**
 * With writes flowing along `route`, `fault` breaks one of its links: the source edge takes
 * `detour`, the host's writes go on, the target applies every numbered entry, the order never
 * enters Failure Suspend and the pair stays duplex; then the secondary equals the primary. The
 * detour must be taken within `detourWithinMs` of the fault.
 */
async function detourAround(rcn: Rcn, route: string[], detour: string[], fault: () => void, detourWithinMs = 30_000): Promise<void> {
  const { client, writer } = await writingThroughTheNetwork(rcn);
  await waitFor('writes flowing', () => writer.acked >= 150, { timeoutMs: 60_000 });
  await waitFor('the source edge on the route', () => pathIs(rcn, route), { timeoutMs: 60_000, intervalMs: 200 });
  fault();
  const ackedAtFault = writer.acked;
  await waitFor('the source edge on the detour', () => pathIs(rcn, detour), { timeoutMs: detourWithinMs, intervalMs: 100 });
  await waitFor('writes acknowledged after the fault', () => writer.acked >= ackedAtFault + 300, { timeoutMs: 60_000 });
  const numbered = (await rcn.order('e-tokyo', 'erp', 'source')).generated;
  await waitFor('the target applying through the detour', async () => (await rcn.order('e-sapporo', 'erp', 'target')).reflected >= numbered,
    { timeoutMs: 60_000, intervalMs: 200 });
  const tokyo = await rcn.status('e-tokyo');
  assert.ok(tokyo.counters.reroutes >= 1, 'the change of path is counted');
  assert.equal((await rcn.order('e-tokyo', 'erp', 'source')).state, 'active', 'the order never entered Failure Suspend');
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 5_000);
  await stopAndCompare(rcn, writer, client, dir);
  await appliedExactlyOnce(rcn);
}

/**
 * Two edges joined through two cores (c-1 on the route, c-2 beside it), one link behind the fault
 * proxy. The order gives up well below the tests' deadlines: a wait for the link instead of a detour
 * would fail it.
 */
function twoCoreNetwork(name: string, proxied: [string, string]): Promise<Rcn> {
  return Rcn.create(path.join(dir, name), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1', 'c-2'],
    links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo'], ['e-tokyo', 'c-2'], ['c-2', 'e-sapporo']], proxied: [proxied],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '1s', max: '2s', giveUp: '20s' } } },
  });
}

/**
 * Stops the writer, lets the order drain, and checks sapporo: every acknowledged write present, an
 * exact prefix in order, no failure seen by the host, and the same bytes as tokyo.
 */
async function stopAndCompare(rcn: Rcn, writer: SequentialWriter, client: NbdClient, dir: string, mode: 'sync' | 'async' = 'sync'): Promise<void> {
  await writer.stop();
  await client.flush();
  await client.disconnect();
  await rcn.drained('erp');
  await quiet(rcn);
  if (mode === 'async') {
    // The journal batches travel unnumbered, beside the order: the primary's stream drains on its own.
    await waitFor('the async journal to drain', async () => (await rcn.cluster.node('tokyo').api.getGroup('db1-far')).lag.entries === 0 ? true : undefined,
      { timeoutMs: 60_000, intervalMs: 200 });
    await quietAsync(rcn);
  }
  const reader = await rcn.cluster.client('sapporo', 'db1');
  const contents = await readContents([reader], blockSize, blockCount);
  await reader.disconnect();
  writer.checks.checkAllAcknowledgedPresent(contents);
  assert.equal(writer.checks.checkExactPrefix(contents), writer.history.length, 'the secondary holds every write, in order');
  assert.equal(writer.failures, 0, 'the host never saw a failure');
  assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
}

/** At rest: the target applied every number the source edge gave, and both ends of the order are active. */
async function appliedExactlyOnce(rcn: Rcn): Promise<void> {
  const src = await rcn.order('e-tokyo', 'erp', 'source');
  const tgt = await rcn.order('e-sapporo', 'erp', 'target');
  assert.equal(tgt.reflected, src.generated, 'every numbered entry applied exactly once');
  assert.deepEqual([src.state, tgt.state], ['active', 'active'], 'the order never stayed in Failure Suspend');
}

/** Applies the network, pairs tokyo's db1 with sapporo through order erp, and starts writing to it. */
async function writingThroughTheNetwork(rcn: Rcn, mode: 'sync' | 'async' = 'sync'): Promise<{ client: NbdClient; writer: SequentialWriter }> {
  await rcn.apply();
  await rcn.cluster.volume('tokyo', 'db1', 4 * MiB);
  await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp', mode });
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
    // The route takes c-1 (the fewest cores, then the name); c-2 is its detour. While the links come
    // up, the first entries may meet c-1 before its link to e-sapporo is up and go around it: wait
    // for the route, then nothing more goes through c-2 while c-1 is up.
    await waitFor('the source edge on the route', () => pathVia(rcn, 'c-1'), { timeoutMs: 60_000, intervalMs: 200 });
    const c2OnRoute = (await rcn.status('c-2')).counters.entriesForwarded;
    const ackedOnRoute = writer.acked;
    await waitFor('writes on the route', () => writer.acked >= ackedOnRoute + 100, { timeoutMs: 60_000 });
    assert.equal((await rcn.status('c-2')).counters.entriesForwarded, c2OnRoute, 'nothing goes through c-2 while c-1 is up');
    await rcn.killRelay('c-1');
    const ackedAtKill = writer.acked;
    // Not restarted: the target keeps applying through c-2 what the source edge numbers.
    await waitFor('writes acknowledged after the core died', () => writer.acked >= ackedAtKill + 150, { timeoutMs: 60_000 });
    const numbered = (await rcn.order('e-tokyo', 'erp', 'source')).generated;
    await waitFor('the target applying through c-2', async () => (await rcn.order('e-sapporo', 'erp', 'target')).reflected >= numbered,
      { timeoutMs: 60_000, intervalMs: 200 });
    assert.ok((await rcn.status('c-2')).counters.entriesForwarded > 0, 'c-2 carried the entries');
    await stopAndCompare(rcn, writer, client, dir);
    const src = await rcn.order('e-tokyo', 'erp', 'source');
    assert.equal((await rcn.order('e-sapporo', 'erp', 'target')).reflected, src.generated, 'every numbered entry applied exactly once');
  } finally {
    await rcn.stopAll();
  }
});

test('a cut link whose relays stay up (issue 15): c-1–e-sapporo is cut while c-1 runs; entries go around it through c-2 without loss or reordering, the pair stays duplex, and come back to the route when the link does', async () => {
  const rcn = await twoCoreNetwork('cut-link', ['c-1', 'e-sapporo']);
  try {
    const { client, writer } = await writingThroughTheNetwork(rcn);
    await waitFor('writes flowing', () => writer.acked >= 150, { timeoutMs: 60_000 });
    // While the links come up (c-1 dials e-sapporo through the proxy) the first message may meet
    // c-1 before its link to e-sapporo is up, and the edges go around it for the hold: wait for the
    // route (and for the answers to what went through c-2), then nothing goes through c-2.
    const viaRoute = (): Promise<boolean> => pathVia(rcn, 'c-1');
    await waitFor('the source edge on the route', viaRoute, { timeoutMs: 60_000, intervalMs: 200 });
    const ackedOnRoute = writer.acked;
    await waitFor('writes on the route', () => writer.acked >= ackedOnRoute + 50, { timeoutMs: 60_000 });
    const c2AtStart = (await rcn.status('c-2')).counters.entriesForwarded;
    await waitFor('more writes on the route', () => writer.acked >= ackedOnRoute + 150, { timeoutMs: 60_000 });
    assert.equal((await rcn.status('c-2')).counters.entriesForwarded, c2AtStart, 'nothing goes through c-2 while the route works');
    rcn.proxy('c-1', 'e-sapporo').cut();
    const ackedAtCut = writer.acked;
    await waitFor('writes acknowledged after the cut', () => writer.acked >= ackedAtCut + 300, { timeoutMs: 60_000 });
    const numbered = (await rcn.order('e-tokyo', 'erp', 'source')).generated;
    await waitFor('the target applying through c-2', async () => (await rcn.order('e-sapporo', 'erp', 'target')).reflected >= numbered,
      { timeoutMs: 60_000, intervalMs: 200 });
    const tokyo = await rcn.status('e-tokyo');
    assert.deepEqual(tokyo.paths?.toward.find((p) => p.to === 'e-sapporo')?.hops, ['e-tokyo', 'c-2', 'e-sapporo'], 'the source edge sends through c-2');
    assert.ok(tokyo.paths?.avoided.some((a) => a.between.join() === 'c-1,e-sapporo'), 'and avoids the cut link, reported by c-1');
    assert.ok(tokyo.counters.reroutes >= 1, 'the change of path is counted');
    const c1 = await rcn.status('c-1');
    // When its link went down (or when an entry met it): whether anything reached c-1 after the cut, to be dropped, is a race.
    assert.ok(c1.counters.pathDownNotices >= 1, 'c-1 told the source edge about the dead link');
    assert.ok((await rcn.status('c-2')).counters.entriesForwarded > c2AtStart, 'c-2 carried the entries');
    assert.equal((await rcn.order('e-tokyo', 'erp', 'source')).state, 'active', 'the order never entered Failure Suspend');
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 5_000);

    // The link is back: once the hold on it ends, the source edge takes the route again.
    rcn.proxy('c-1', 'e-sapporo').restore();
    await waitFor('the route through c-1 again', viaRoute, { timeoutMs: 90_000, intervalMs: 200 });
    const viaC1 = (await rcn.status('c-1')).counters.entriesForwarded;
    const ackedAtReturn = writer.acked;
    await waitFor('writes through c-1 again', async () => writer.acked >= ackedAtReturn + 100 && (await rcn.status('c-1')).counters.entriesForwarded > viaC1 + 100,
      { timeoutMs: 60_000, intervalMs: 200 });

    await stopAndCompare(rcn, writer, client, dir);
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 5_000);
    await appliedExactlyOnce(rcn);
  } finally {
    await rcn.stopAll();
  }
});

test('an async pair through a rerouted network (issue 15): c-1–e-sapporo is cut while the host writes; the secondary is an exact prefix while the stream is broken, then equals the primary', async () => {
  const rcn = await twoCoreNetwork('cut-link-async', ['c-1', 'e-sapporo']);
  try {
    const { client, writer } = await writingThroughTheNetwork(rcn, 'async');
    await waitFor('writes flowing', () => writer.acked >= 150, { timeoutMs: 60_000 });
    // As in the sync case: the edges may go around c-1 while the links come up; wait for the route.
    await waitFor('the source edge on the route', () => pathVia(rcn, 'c-1'), { timeoutMs: 60_000, intervalMs: 200 });
    const appliedOnRoute = (await rcn.cluster.node('sapporo').api.getGroup('db1-far')).appliedSeq;
    await waitFor('the secondary applying on the route', async () => (await rcn.cluster.node('sapporo').api.getGroup('db1-far')).appliedSeq >= appliedOnRoute + 100,
      { timeoutMs: 60_000, intervalMs: 200 });

    rcn.proxy('c-1', 'e-sapporo').cut();
    const ackedAtCut = writer.acked;
    // An async primary answers the host itself: the host goes on writing as if nothing happened.
    await waitFor('writes acknowledged after the cut', () => writer.acked >= ackedAtCut + 300, { timeoutMs: 60_000 });
    // Read while nothing arrives (the host pauses; the stream may still be broken or draining): an
    // exact prefix of the write history, whatever reached the secondary by then.
    await writer.stop();
    await quietAsync(rcn);
    const k = await secondaryPrefix(rcn, writer, 'after the cut');
    assert.ok(k <= writer.acked, `the secondary holds only acknowledged writes (${k} of ${writer.acked})`);
    writer.start();
    const ackedAgain = writer.acked;
    await waitFor('writes acknowledged again', () => writer.acked >= ackedAgain + 150, { timeoutMs: 60_000 });
    // The journal's batches went around the cut link too: the secondary applies what the primary numbers now.
    const shipped = (await rcn.cluster.node('tokyo').api.getGroup('db1-far')).lastSeq;
    await waitFor('the secondary applying through c-2', async () => (await rcn.cluster.node('sapporo').api.getGroup('db1-far')).appliedSeq >= shipped,
      { timeoutMs: 60_000, intervalMs: 200 });
    // (Not which path it uses now: once the 10 s hold ends it tries the route again, by design.)
    assert.ok((await rcn.status('e-tokyo')).counters.reroutes >= 1, 'the source edge changed path');
    assert.ok((await rcn.status('c-1')).counters.pathDownNotices >= 1, 'c-1 told the source edge it could not forward');
    assert.ok((await rcn.status('c-2')).counters.entriesForwarded > 0, 'c-2 carried the journal batches');

    await stopAndCompare(rcn, writer, client, dir, 'async');
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 5_000);
    await appliedExactlyOnce(rcn);
  } finally {
    await rcn.stopAll();
  }
});

test('a cut link next to the source edge (issue 15): e-tokyo–c-1 is cut while c-1 runs; the source edge knows at once and writes go on through c-2 without loss or reordering', async () => {
  const rcn = await twoCoreNetwork('cut-source-link', ['e-tokyo', 'c-1']);
  try {
    // Its own link: the source edge sees it close and chooses c-2 without anyone's report.
    await detourAround(rcn, ['e-tokyo', 'c-1', 'e-sapporo'], ['e-tokyo', 'c-2', 'e-sapporo'], () => rcn.proxy('e-tokyo', 'c-1').cut(), 10_000);
    const tokyo = await rcn.status('e-tokyo');
    assert.ok(!tokyo.links.some((l) => l.kind === 'relay' && l.peer === 'c-1' && l.up), 'the source edge sees its link to c-1 down');
    assert.ok((await rcn.status('c-2')).counters.entriesForwarded > 0, 'c-2 carried the entries');
  } finally {
    await rcn.stopAll();
  }
});

test('a silently failing link (issue 15): c-1–e-sapporo stays open but drops every byte; heartbeats declare it dead and entries go around it through c-2 without loss or reordering', async () => {
  const rcn = await twoCoreNetwork('silent-link', ['c-1', 'e-sapporo']);
  try {
    await detourAround(rcn, ['e-tokyo', 'c-1', 'e-sapporo'], ['e-tokyo', 'c-2', 'e-sapporo'], () => rcn.proxy('c-1', 'e-sapporo').blackhole());
    const c1 = await rcn.status('c-1');
    assert.ok(!c1.links.some((l) => l.kind === 'relay' && l.peer === 'e-sapporo' && l.up), 'c-1 declared its silent link dead');
    assert.ok(c1.counters.pathDownNotices >= 1, 'and told the source edge');
  } finally {
    await rcn.stopAll();
  }
});

test('a cut link between two cores (issue 15): on the route e-tokyo → c-1 → c-2 → e-sapporo, c-1–c-2 is cut; c-1 tells the source edge two hops back, and entries take the detour through c-3', async () => {
  const route = ['e-tokyo', 'c-1', 'c-2', 'e-sapporo'];
  const rcn = await Rcn.create(path.join(dir, 'cut-core-link'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1', 'c-2', 'c-3'],
    links: [['e-tokyo', 'c-1'], ['c-1', 'c-2'], ['c-2', 'e-sapporo'], ['e-tokyo', 'c-3'], ['c-3', 'e-sapporo']], proxied: [['c-1', 'c-2']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '1s', max: '2s', giveUp: '20s' } } },
    extra: { routes: [route] },
  });
  try {
    await detourAround(rcn, route, ['e-tokyo', 'c-3', 'e-sapporo'], () => rcn.proxy('c-1', 'c-2').cut());
    const tokyo = await rcn.status('e-tokyo');
    assert.ok(tokyo.paths?.avoided.some((a) => a.between.join() === 'c-1,c-2'), 'the source edge avoids the cut link, reported by c-1');
    assert.ok((await rcn.status('c-3')).counters.entriesForwarded > 0, 'c-3 carried the entries');
  } finally {
    await rcn.stopAll();
  }
});
