// The fast failover variant through a remote copy network (spec 002 §6.9 ¶0087, §9.44, TE8, E-21),
// real processes on loopback: the target storage sees its primary gone at once and is taken over
// while writes the source edge had acknowledged are still held in the network; the target edge
// applies them afterwards as plain writes, and the taken-over volume's host writes wait until it is
// done, so a host write lands after (over) the older replicated data, never under it. An operator
// may discard what is left, at the edge or, with the edge lost too, at the node.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import type { PairStatus } from '../../src/contracts/pairs';
import type { SuspendResult } from '../../src/contracts/network';
import { cli, killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { tempDir } from '../support/tools';
import { waitFor, within } from '../support/wait';

const MiB = 1024 * 1024;
const block = 65536;
const blocks = 16;
let dir: string;

before(async () => {
  dir = await tempDir('edge-fast');
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

/**
 * tokyo → sapporo through e-tokyo, c-1 and e-sapporo; `blocks` writes acknowledged by e-tokyo are
 * held there by a cut c-1 → e-sapporo link when tokyo is SIGKILLed. The link stays cut.
 */
async function lostWithHeldWrites(name: string): Promise<{ rcn: Rcn; written: Buffer[]; generated: number }> {
  const rcn = await Rcn.create(path.join(dir, name), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']], proxied: [['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '1s', max: '2s', giveUp: '300s' }, failoverTimeout: '60s' } },
  });
  await rcn.apply();
  await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
  await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
  await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
  await rcn.drained('erp');
  rcn.proxy('c-1', 'e-sapporo').cut();
  const client = await rcn.cluster.client('tokyo', 'db1');
  const written: Buffer[] = [];
  for (let i = 0; i < blocks; i++) {
    const data = randomBytes(block);
    await client.write(i * block, data);
    written.push(data);
  }
  const held = await rcn.order('e-tokyo', 'erp', 'source');
  assert.ok(held.inFlight >= blocks, `e-tokyo holds the ${blocks} writes (${held.inFlight} in flight)`);
  await rcn.cluster.kill('tokyo');
  return { rcn, written, generated: held.generated };
}

/** `network failover --fast`, then the takeover at sapporo, which the fast variant allows at once. */
async function fastFailoverAndTakeover(rcn: Rcn): Promise<SuspendResult> {
  const failover = await cli(['network', 'failover', rcn.file, '--order', 'erp', '--fast', '--json']);
  assert.equal(failover.code, 0, failover.stderr);
  const result = JSON.parse(failover.stdout) as SuspendResult;
  assert.ok(result.residual !== undefined && result.residual > 0, `the answer reports residual entries (${result.residual})`);
  assert.equal(result.highWaterMark, null, 'it did not wait for the source edge');
  const sapporo = rcn.cluster.node('sapporo').apiUrl;
  await rcn.cluster.waitState('sapporo', 'db1-far', 'suspended'); // it sees its primary gone
  const takeover = await cli(['--node', sapporo, 'pair', 'takeover', 'db1-far']);
  assert.equal(takeover.code, 0, takeover.stderr);
  const hold = (await pairAt(rcn)).residualHold;
  assert.equal(hold?.order, 'erp');
  assert.equal(hold?.edge, 'e-sapporo');
  return result;
}

/** The pair at sapporo, as its node's API shows it. */
function pairAt(rcn: Rcn): Promise<PairStatus> {
  return rcn.cluster.pairStatus('sapporo', 'db1-far');
}

/** A host write at sapporo that the residual hold keeps waiting (seen waiting at the node). */
async function heldHostWrite(rcn: Rcn, data: Buffer): Promise<{ done: Promise<void>; settled: () => boolean }> {
  const client = await rcn.cluster.client('sapporo', 'db1');
  let settled = false;
  const done = client.write(0, data).finally(() => {
    settled = true;
  }).then(() => client.disconnect());
  await waitFor('the host write waits at sapporo', async () => ((await pairAt(rcn)).residualHold?.waitingWrites ?? 0) >= 1);
  assert.equal(settled, false, 'the host write is not acknowledged while residual entries remain');
  return { done, settled: () => settled };
}

test('fast failover (§9.44): taken over at once; the residual entries are applied after as plain writes, and a host write waits for them and lands over them', async () => {
  const { rcn, written, generated } = await lostWithHeldWrites('applied');
  try {
    await fastFailoverAndTakeover(rcn);
    const status = await cli(['network', 'status', rcn.file]);
    assert.match(status.stdout, /erp: RESIDUAL \d+: a fast failover still applies entries/);
    assert.ok((await rcn.order('e-sapporo', 'erp', 'target')).residual! > 0, 'the residual query reports a positive count while entries remain');
    const hostData = Buffer.alloc(block, 0xee);
    const host = await heldHostWrite(rcn, hostData);
    // The network comes back: e-tokyo gets the Suspend instruction, flushes and answers; e-sapporo
    // applies the held writes to the taken-over volume, then lets the host write go on.
    rcn.proxy('c-1', 'e-sapporo').restore();
    await within('the host write, once the residual entries are applied', host.done, 90_000);
    const target = await waitFor('the fast failover ends at e-sapporo', async () => {
      const o = await rcn.order('e-sapporo', 'erp', 'target');
      return o.residual === 0 && o.state === 'failure-suspend' ? o : undefined;
    });
    assert.equal(target.reflected, generated, 'every number up to the high-water mark was applied');
    assert.equal((await pairAt(rcn)).residualHold, undefined, 'hosts write freely again');
    const reader = await rcn.cluster.client('sapporo', 'db1');
    assert.deepEqual(await reader.read(0, block), hostData, 'the host write landed over the older replicated data');
    for (let i = 1; i < blocks; i++) assert.deepEqual(await reader.read(i * block, block), written[i], `the acknowledged write at block ${i} reached the taken-over volume`);
    await reader.write(block, Buffer.alloc(block, 1)); // writable as any taken-over volume
    await reader.disconnect();
    const events = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'events', '--json']);
    assert.match(events.stdout, /"kind":"residual-hold"/);
    assert.match(events.stdout, /"kind":"residual-released"/);
  } finally {
    await rcn.stopAll();
  }
});

test('fast failover: an operator discards the residual entries at the edge; the host write goes on without them', async () => {
  const { rcn, written } = await lostWithHeldWrites('discarded');
  try {
    await fastFailoverAndTakeover(rcn);
    const refused = await cli(['network', 'failover', rcn.file, '--order', 'erp', '--fast', '--discard-residual']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--fast and --discard-residual do not go together/);
    const host = await heldHostWrite(rcn, Buffer.alloc(block, 0xdd));
    const discard = await cli(['network', 'failover', rcn.file, '--order', 'erp', '--discard-residual', '--json']);
    assert.equal(discard.code, 0, discard.stderr);
    assert.match((JSON.parse(discard.stdout) as SuspendResult).reason, /discarded by the operator/);
    await within('the host write, once the residual entries are discarded', host.done, 30_000);
    assert.equal((await rcn.order('e-sapporo', 'erp', 'target')).residual, 0);
    const reader = await rcn.cluster.client('sapporo', 'db1');
    assert.deepEqual(await reader.read(0, block), Buffer.alloc(block, 0xdd));
    assert.notDeepEqual(await reader.read(block, block), written[1], 'discarded: the held write was not applied');
    await reader.disconnect();
    const none = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'release-residual', '--order', 'erp']);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no host writes are held for residual entries of order erp/);
  } finally {
    await rcn.stopAll();
  }
});

test('fast failover: the hold outlives a restart of the node; with the applying edge lost, the operator releases it at the node', async () => {
  const { rcn, written } = await lostWithHeldWrites('released');
  try {
    await fastFailoverAndTakeover(rcn);
    await rcn.killRelay('e-sapporo');
    await rcn.cluster.kill('sapporo');
    await rcn.cluster.restart('sapporo');
    assert.equal((await pairAt(rcn)).residualHold?.order, 'erp', 'a restarted node still holds its hosts\' writes');
    const host = await heldHostWrite(rcn, Buffer.alloc(block, 0xcc));
    const text = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'status', 'db1-far']);
    assert.match(text.stdout, /db1-far: host writes wait \(1 now\): edge e-sapporo still applies residual entries of order erp/);
    const release = await cli(['--node', rcn.cluster.node('sapporo').apiUrl, 'pair', 'release-residual', '--order', 'erp']);
    assert.equal(release.code, 0, release.stderr);
    assert.match(release.stdout, /order erp \(edge e-sapporo\): host writes go on; residual entries not applied are discarded/);
    await within('the host write, once released', host.done, 30_000);
    const reader = await rcn.cluster.client('sapporo', 'db1');
    assert.deepEqual(await reader.read(0, block), Buffer.alloc(block, 0xcc));
    assert.notDeepEqual(await reader.read(block, block), written[1]);
    await reader.disconnect();
  } finally {
    await rcn.stopAll();
  }
});
