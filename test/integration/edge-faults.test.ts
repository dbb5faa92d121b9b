// Faults inside a remote copy network of real processes on loopback (spec 002 §5.6, §5.8, §5.9,
// §6.10, §8 E-6): a cut WAN link delays but loses nothing; retransmission exhausted puts the order
// in Failure Suspend with the held writes in the edge's bitmap, and the resync through the network
// makes both copies equal; a full log area holds the primary's writes back and loses none; the far
// link's delay does not reach the host; hostile bytes on an edge's port harm nothing; another
// customer's storage is refused.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { encodeFrame, FrameKind } from '../../src/replication/transport/frame';
import { MessageType, helloCodec } from '../../src/replication/transport/messages';
import { killAllNodes } from '../support/node-process';
import { RawSocket } from '../support/raw-socket';
import { killAllRelays } from '../support/relay-process';
import { Rcn, type RcnOptions } from '../support/rcn';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('edge-faults');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

function network(order: Record<string, unknown> = {}, more: Partial<RcnOptions> = {}): RcnOptions {
  return {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']], proxied: [['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '1s', max: '2s', giveUp: '60s' }, ...order } }, ...more,
  };
}

async function paired(rcn: Rcn, sizeBytes = 16 * MiB): Promise<void> {
  await rcn.apply();
  await rcn.cluster.volume('tokyo', 'db1', sizeBytes);
  await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
  await rcn.drained('erp');
}

async function equal(rcn: Rcn): Promise<void> {
  await rcn.drained('erp');
  assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir),
    'the secondary equals the primary');
}

test('a cut WAN link delays but loses nothing: the source edge acknowledges, keeps, and sends again when the link is back (§9.5, §9.17)', async () => {
  const rcn = await Rcn.create(path.join(dir, 'cut'), network());
  try {
    await paired(rcn);
    const client = await rcn.cluster.client('tokyo', 'db1');
    rcn.proxy('c-1', 'e-sapporo').cut();
    for (let i = 0; i < 100; i++) await client.write(i * 65536, randomBytes(8192));
    await client.flush();
    const held = await rcn.order('e-tokyo', 'erp', 'source');
    assert.ok(held.inFlight >= 100, `the source edge holds the writes (${held.inFlight} in flight)`);
    assert.ok(held.log.bytes > 800 * 1024, `in its log area (${held.log.bytes} bytes)`);
    await waitFor('a retransmission', async () => (await rcn.order('e-tokyo', 'erp', 'source')).retransmissions > 0, { timeoutMs: 20_000 });
    assert.equal((await rcn.cluster.pairStatus('tokyo', 'db1-far')).state, 'duplex', 'the pair never noticed');
    rcn.proxy('c-1', 'e-sapporo').restore();
    await client.disconnect();
    await equal(rcn);
    const src = await rcn.order('e-tokyo', 'erp', 'source');
    assert.equal(src.state, 'active');
    assert.equal(src.deleted, src.generated);
  } finally {
    await rcn.stopAll();
  }
});

test('retransmission exhausted: Failure Suspend with the held writes in the edge bitmap, then the resync through the network merges it (§9.18, §9.36, §9.39)', async () => {
  const rcn = await Rcn.create(path.join(dir, 'exhausted'), network({ retransmit: { timeout: '500ms', max: '1s', giveUp: '3s' } }));
  try {
    await paired(rcn);
    const client = await rcn.cluster.client('tokyo', 'db1');
    rcn.proxy('c-1', 'e-sapporo').cut();
    for (let i = 0; i < 40; i++) await client.write(i * 131072, randomBytes(4096));
    await waitFor('Failure Suspend at the source edge', async () => (await rcn.order('e-tokyo', 'erp', 'source')).state === 'failure-suspend', { timeoutMs: 30_000 });
    const src = await rcn.order('e-tokyo', 'erp', 'source');
    assert.equal(src.deleted, src.generated, '734 := 732');
    assert.equal(src.log.entries, 0, 'the held entries left the log area');
    const edgePair = (await rcn.status('e-tokyo')).pairs.find((p) => p.name === 'db1-far')!;
    assert.equal(edgePair.state, 'failure-suspend');
    assert.ok(edgePair.differentialBytes >= 40 * 65536, `727 holds the regions of the held writes (${edgePair.differentialBytes} bytes)`);
    // The primary is told (its link to the edge is closed): its sync pair suspends and records.
    await rcn.cluster.waitCode('tokyo', 'db1-far', 'PSUE');
    await client.disconnect().catch(() => undefined);
    rcn.proxy('c-1', 'e-sapporo').restore();
    // The pair resyncs by itself once the network carries the order again; the edge's bitmap goes with it.
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex', 120_000);
    await equal(rcn);
    const after = (await rcn.status('e-tokyo')).pairs.find((p) => p.name === 'db1-far')!;
    assert.equal(after.differentialBytes, 0, '727 cleared once merged');
    assert.equal((await rcn.order('e-tokyo', 'erp', 'source')).state, 'active', 'the resync was the resynchronisation point');
  } finally {
    await rcn.stopAll();
  }
});

test('a full log area holds the primary\'s writes back and loses none (E-6)', async () => {
  const rcn = await Rcn.create(path.join(dir, 'full'), network({ logSize: '4MiB' }));
  try {
    await paired(rcn);
    const client = await rcn.cluster.client('tokyo', 'db1');
    rcn.proxy('c-1', 'e-sapporo').cut();
    let acked = 0;
    const writing = (async () => {
      for (let i = 0; i < 96; i++) {
        await client.write(i * 65536, randomBytes(65536));
        acked++;
      }
    })();
    await waitFor('acknowledgements held back', async () => (await rcn.order('e-tokyo', 'erp', 'source')).delayedAcks > 0, { timeoutMs: 20_000 });
    const full = await rcn.order('e-tokyo', 'erp', 'source');
    assert.ok(full.log.bytes <= full.log.capacityBytes, `the log area stays within its capacity (${full.log.bytes} of ${full.log.capacityBytes})`);
    assert.ok(acked < 96, `writes wait (${acked} of 96 answered)`);
    await new Promise((r) => setTimeout(r, 1000));
    assert.ok(acked < 96, 'and keep waiting while the link is cut');
    rcn.proxy('c-1', 'e-sapporo').restore();
    await writing;
    assert.equal(acked, 96);
    assert.equal((await rcn.cluster.pairStatus('tokyo', 'db1-far')).state, 'duplex');
    await client.disconnect();
    await equal(rcn);
  } finally {
    await rcn.stopAll();
  }
});

test('the far link\'s delay does not reach the host: a write costs the near link only (§5.2); the target ends equal', async () => {
  const rcn = await Rcn.create(path.join(dir, 'delay'), network());
  try {
    await paired(rcn);
    rcn.proxy('c-1', 'e-sapporo').setDelay(50);
    const client = await rcn.cluster.client('tokyo', 'db1');
    const latencies: number[] = [];
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now();
      await client.write((i % 64) * 65536, randomBytes(4096));
      latencies.push(performance.now() - t0);
    }
    latencies.sort((a, b) => a - b);
    const p50 = latencies[100]!;
    assert.ok(p50 < 25, `host write p50 ${p50.toFixed(2)} ms with 50 ms each way on the far link`);
    const src = await rcn.order('e-tokyo', 'erp', 'source');
    await client.disconnect();
    await equal(rcn);
    const acked = await rcn.order('e-tokyo', 'erp', 'source');
    assert.ok(acked.ackDelayMs !== null && acked.ackDelayMs >= 50, `the end-to-end acknowledgement takes the far link (${acked.ackDelayMs} ms)`);
    assert.ok(src.generated >= 200);
  } finally {
    await rcn.stopAll();
  }
});

test('hostile bytes on an edge\'s port harm nothing; another customer\'s storage is refused (§9.46)', async () => {
  const rcn = await Rcn.create(path.join(dir, 'hostile'), {
    ...network(), nodes: { tokyo: 'e-tokyo', kushiro: 'e-tokyo', sapporo: 'e-sapporo' }, customers: { tokyo: 'c1', sapporo: 'c1', kushiro: 'c2' },
    extra: { customers: { c1: {}, c2: {} } },
  });
  try {
    await paired(rcn);
    const port = rcn.relay('e-tokyo').ports.listenPort;
    const before = (await rcn.status('e-tokyo')).counters.refusedConnections;
    const hello = (node: string, expect: string): Buffer => encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 },
      helloCodec.encode({ protocol: 1, node, nonce: 'n'.repeat(64), expect }));
    const junk = [
      randomBytes(300), Buffer.alloc(32, 0xff), Buffer.from('GET / HTTP/1.1\r\n\r\n'),
      encodeFrame({ kind: FrameKind.Request, type: MessageType.Write, requestId: 1, status: 0 }, randomBytes(64)), // data before the handshake
      hello('mallory', 'sapporo'), // not in the network
      hello('kushiro', 'sapporo'), // another customer
      hello('tokyo', 'tokyo'), // itself
    ];
    for (const bytes of junk) {
      const raw = await RawSocket.connect(port);
      raw.send(bytes);
      assert.ok(await raw.closesWithin(10_000), 'closed');
    }
    // A well-formed Hello of an attached node gets an answer, but the wrong secret never gets further.
    const raw = await RawSocket.connect(port);
    raw.send(hello('tokyo', 'sapporo'));
    await raw.read(32, 10_000);
    raw.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Auth, requestId: 0, status: 0 }, Buffer.from(JSON.stringify({ proof: 'f'.repeat(64) }))));
    assert.ok(await raw.closesWithin(10_000), 'a wrong proof closes the link');
    const after = (await rcn.status('e-tokyo')).counters.refusedConnections;
    assert.ok(after >= before + junk.length, `refusals counted (${after - before})`);
    // The other customer's node cannot pair through the network with the CLI either.
    await rcn.cluster.volume('kushiro', 'k1', 4 * MiB);
    await assert.rejects(rcn.pairVia({ name: 'k1-far', primary: 'kushiro', secondary: 'sapporo', volume: 'k1', order: 'erp' }), /not attached to network rcn for kushiro/);
    // Nor by addressing the edge directly: the edge refuses to answer as a storage of another customer
    // (it tells the unauthenticated dialer nothing; its status says why).
    await assert.rejects(rcn.cluster.node('kushiro').api.createPair({
      name: 'k1-far', volume: 'k1', mode: 'sync', peer: { node: 'sapporo', host: '127.0.0.1', replPort: port },
    }), /not reachable/);
    const refusal = (await rcn.status('e-tokyo')).lastRefusal;
    assert.equal(refusal?.peer, 'kushiro');
    assert.match(refusal?.detail ?? '', /customer c2.*may not reach sapporo \(customer c1\)/);
    // The pair through the network still works.
    const client = await rcn.cluster.client('tokyo', 'db1');
    await client.write(0, randomBytes(65536));
    await client.disconnect();
    await equal(rcn);
  } finally {
    await rcn.stopAll();
  }
});
