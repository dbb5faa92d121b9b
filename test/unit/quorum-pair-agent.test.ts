// The quorum-pair arbiter's decisions on a fake clock, over an in-memory quorum pair that answers
// as Fig. 4 says (one shared state, the P-VOL's side decides, a command without the storage link
// ends abnormally and leaves Suspend(error)), and a hosts' network cut per direction: who arbitrates
// when (the holder after a lease, the sync site a lease + two renew intervals later, once per loss),
// that the old holder's gate closes at the commit, that the winner keeps Pair until the heartbeat is
// back, Suspend(error) fences and is recovered only with the link, and a failed failover is retried.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventJournal } from '../../src/common/events';
import { silentLogger } from '../../src/common/log';
import type { PairStatus } from '../../src/contracts/pairs';
import type { AttributeView, CommandAnswer, QuorumCommand, QuorumPairState, QuorumVolumeStatus, ReservationAnswer } from '../../src/contracts/quorum';
import type { QuorumStorage } from '../../src/quorum/client';
import { attributeLabel, fig4 } from '../../src/quorum/fig4';
import { PairVolumeControl } from '../../src/quorum/host-control';
import { QuorumPairAgent } from '../../src/quorum/failover/quorum-pair-agent';
import { parseTopology } from '../../src/topology/topology-file';

type SiteName = 'tokyo' | 'osaka';
const volume = 'erp-quorum';

const topology = parseTopology({
  name: 'erp', volumes: { db1: '1GiB' },
  primary: { site: 'tokyo', node: 'http://127.0.0.1:1' }, sync: { site: 'osaka', node: 'http://127.0.0.1:2' }, async: { site: 'sapporo', node: 'http://127.0.0.1:3' },
  failover: 'automatic', arbiter: { 'quorum-pair': { volume } }, lease: '3s', renew: '500ms', 'fence-margin': '1s',
});

/** Both ends of the quorum pair, and the network between the sites. */
class World {
  now = 0;
  pvol: SiteName = 'tokyo';
  state: QuorumPairState = 'suspend-normal';
  storageLink = true;
  /** hears[a][b]: a's node gets answers from b's node over the hosts' network. */
  hears: Record<SiteName, Record<SiteName, boolean>> = { tokyo: { tokyo: true, osaka: true }, osaka: { tokyo: true, osaka: true } };
  /** Where the application runs (what each site's data pairs say). */
  application: SiteName = 'tokyo';
  failovers: Record<SiteName, number> = { tokyo: 0, osaka: 0 };
  failoverFails = false;
  readonly events = new EventJournal(silentLogger());

  attribute(site: SiteName): AttributeView {
    const attribute = { role: site === this.pvol ? 'pvol' as const : 'svol' as const, state: this.state };
    return { volume, attribute, label: attributeLabel(attribute), pair: volume, peer: site === 'tokyo' ? 'osaka' : 'tokyo', epoch: 1, reason: null };
  }

  command(site: SiteName, command: QuorumCommand): CommandAnswer {
    const before = this.attribute(site);
    const row = fig4(command, before.attribute);
    let result = row.result;
    let reason = row.reason;
    if (result === 'NORMAL_END' && !this.storageLink) {
      this.state = 'suspend-error';
      result = 'ABNORMAL_END';
      reason = 'the peer could not be reached; nothing was decided here';
    } else if (result === 'NORMAL_END') {
      this.state = 'copy';
      if (command === 'swap-resync') this.pvol = site;
    }
    return { volume, command, result, row: row.row, before, after: this.attribute(site), reason };
  }

  split(): AttributeView {
    if (!this.storageLink && this.state !== 'suspend-error') throw new Error('the peer cannot be reached');
    this.state = 'suspend-normal';
    return this.attribute(this.pvol);
  }

  kinds(site: SiteName): string[] {
    return this.events.since(0).filter((e) => e.details?.site === site).map((e) => e.kind);
  }
}

class FakeStorage implements QuorumStorage {
  readonly address = 'fake';
  private holder: string | null = null;

  constructor(private readonly w: World, private readonly site: SiteName) {}

  async reserve(v: string, host: string): Promise<ReservationAnswer> {
    const ok = this.holder === null || this.holder === host;
    if (ok) this.holder = host;
    return { volume: v, status: ok ? 'GOOD' : 'RESERVATION_CONFLICT', holder: this.holder, reason: '' };
  }

  async release(v: string, host: string): Promise<ReservationAnswer> {
    if (this.holder === host) this.holder = null;
    return { volume: v, status: 'GOOD', holder: this.holder, reason: '' };
  }

  async reset(v: string): Promise<ReservationAnswer> {
    this.holder = null;
    return { volume: v, status: 'GOOD', holder: null, reason: '' };
  }

  async attribute(): Promise<AttributeView> {
    return this.w.attribute(this.site);
  }

  async pairResync(): Promise<CommandAnswer> {
    return this.w.command(this.site, 'resync');
  }

  async pairSwapResync(): Promise<CommandAnswer> {
    return this.w.command(this.site, 'swap-resync');
  }

  async pairSplit(): Promise<AttributeView> {
    return this.w.split();
  }

  async quorumStatus(): Promise<QuorumVolumeStatus> {
    return { ...this.w.attribute(this.site), reservation: null };
  }

  async quorumVolumes(): Promise<QuorumVolumeStatus[]> {
    return [await this.quorumStatus()];
  }
}

function agent(w: World, site: SiteName): QuorumPairAgent {
  const peer: SiteName = site === 'tokyo' ? 'osaka' : 'tokyo';
  return new QuorumPairAgent({
    topology, site, role: site === 'tokyo' ? 'primary' : 'sync', volume,
    local: { attribute: () => w.attribute(site), linkUp: () => w.storageLink, split: async () => w.split() },
    control: new PairVolumeControl(new FakeStorage(w, site), `failover@${site}`, volume),
    heartbeat: async () => {
      if (!w.hears[site][peer]) throw new Error('no answer within 500 ms');
    },
    now: () => w.now, wallNow: () => 1_700_000_000_000 + w.now,
    pairs: () => [{ name: 'erp.db1.osaka.tokyo', volume: 'db1', role: w.application === site ? 'primary' : 'secondary', state: 'duplex', suspendCause: null } as unknown as PairStatus],
    hasVolume: () => true,
    failOverHere: async () => {
      w.failovers[site]++;
      if (w.failoverFails) throw new Error('the sync copy is incomplete');
      w.application = site;
    },
    primaryView: async () => undefined,
    failBackToPrimary: async () => undefined,
    events: w.events, log: silentLogger(),
  });
}

/** Rounds of both agents every 500 ms until `to`. */
async function until(w: World, to: number, ...agents: QuorumPairAgent[]): Promise<void> {
  while (w.now < to) {
    w.now += 500;
    for (const a of agents) await a.tick();
    await new Promise((r) => setImmediate(r));
  }
}

test('quorum pair in Suspend(normal), heartbeat up: tokyo (P-VOL) holds and writes, osaka stands by; nobody arbitrates', async () => {
  const w = new World();
  const tokyo = agent(w, 'tokyo');
  const osaka = agent(w, 'osaka');
  await until(w, 60_000, tokyo, osaka);
  assert.deepEqual([tokyo.status().state, tokyo.status().holder, tokyo.gate('db1')], ['holding', 'tokyo', undefined]);
  assert.deepEqual([osaka.status().state, osaka.status().holder], ['standby', 'tokyo']);
  assert.match(osaka.gate('db1')!, /tokyo holds the quorum pair erp-quorum of topology erp \(it is S-VOL, Suspend\(normal\) here\)/);
  assert.equal(tokyo.gate('other'), undefined, 'volumes of no topology are not gated');
  assert.ok(!w.events.since(0).some((e) => e.kind === 'arbiter-contending'));
});

test('tokyo\'s hosts-side loss: osaka arbitrates after a lease + two renew intervals, wins, tokyo\'s gate closes at the commit, osaka fails over once, keeps Pair until it hears tokyo', async () => {
  const w = new World();
  const tokyo = agent(w, 'tokyo');
  const osaka = agent(w, 'osaka');
  await until(w, 1000, tokyo, osaka);
  w.hears.osaka.tokyo = false;
  const cutAt = w.now;
  await until(w, cutAt + 3500, tokyo, osaka);
  assert.ok(!w.kinds('osaka').includes('arbiter-contending'), 'not before a lease + two renew intervals');
  assert.equal(tokyo.gate('db1'), undefined);
  await until(w, cutAt + 4500, tokyo, osaka);
  assert.equal(w.pvol, 'osaka', 'the swap resync committed');
  assert.match(tokyo.gate('db1')!, /osaka holds the quorum pair/, 'tokyo stops at the commit, before its next round');
  await until(w, cutAt + 6000, tokyo, osaka);
  assert.equal(w.failovers.osaka, 1);
  assert.deepEqual([osaka.status().state, osaka.gate('db1')], ['holding', undefined]);
  assert.match(w.events.since(0).find((e) => e.kind === 'failover-finished')!.reason, /failed over to osaka in \d/);
  assert.deepEqual(w.kinds('osaka').filter((k) => k.startsWith('arbiter-') || k.startsWith('failover-') || k.startsWith('heartbeat-')),
    ['heartbeat-lost', 'arbiter-contending', 'arbiter-acquired', 'failover-started', 'failover-finished']);
  assert.deepEqual(osaka.status().decisions.map((d) => d.kind), w.kinds('osaka'), 'the status keeps each decision it reported, in order');
  assert.ok(osaka.status().decisions.every((d) => d.reason.length > 0 && !Number.isNaN(Date.parse(d.at))));
  w.state = 'pair'; // the quorum copy finished
  await until(w, cutAt + 20_000, tokyo, osaka);
  assert.equal(w.state, 'pair', 'no split while osaka does not hear tokyo: nobody can win the pair from osaka (E1)');
  assert.equal(tokyo.status().state, 'standby');
  w.hears.osaka.tokyo = true;
  await until(w, cutAt + 21_000, tokyo, osaka);
  assert.equal(w.state, 'suspend-normal', 'split back once the heartbeat answers (B10)');
  assert.ok(w.kinds('osaka').includes('arbiter-ready'));
});

test('both heartbeats lost: tokyo arbitrates first and wins (pair resync), osaka\'s swap resync finds the pair copying: exactly one GOOD', async () => {
  const w = new World();
  const tokyo = agent(w, 'tokyo');
  const osaka = agent(w, 'osaka');
  await until(w, 1000, tokyo, osaka);
  w.hears.osaka.tokyo = false;
  w.hears.tokyo.osaka = false;
  await until(w, 10_000, tokyo, osaka);
  const good = w.events.since(0).filter((e) => e.kind === 'arbiter-acquired');
  const conflicts = w.events.since(0).filter((e) => e.kind === 'arbiter-conflict');
  assert.deepEqual([good.length, good[0]?.details?.site], [1, 'tokyo']);
  assert.deepEqual([conflicts.length, conflicts[0]?.details?.site], [1, 'osaka']);
  assert.match(conflicts[0]!.reason, /RESERVATION CONFLICT: the pair command ended abnormally: the pair is copying/);
  assert.equal(w.pvol, 'tokyo');
  assert.equal(w.failovers.osaka, 0);
  assert.equal(tokyo.gate('db1'), undefined);
  await until(w, 30_000, tokyo, osaka);
  assert.equal(w.events.since(0).filter((e) => e.kind === 'arbiter-contending').length, 2, 'one arbitration per site per loss (E11)');
});

test('the storage link lost: Suspend(error) fences the holder (arbiter-lost: fence), nobody can win, the holder recovers it only with the link back', async () => {
  const w = new World();
  const tokyo = agent(w, 'tokyo');
  const osaka = agent(w, 'osaka');
  await until(w, 1000, tokyo, osaka);
  w.storageLink = false;
  w.state = 'suspend-error'; // E5: the nodes saw the link go
  w.hears.osaka.tokyo = false; // and osaka's heartbeat too: it arbitrates, and ends abnormally
  await until(w, 10_000, tokyo, osaka);
  assert.equal(tokyo.status().state, 'fenced');
  assert.match(tokyo.gate('db1')!, /Suspend\(error\).*arbiter-lost: fence/);
  assert.equal(osaka.status().state, 'unreachable');
  assert.ok(w.kinds('osaka').includes('arbiter-conflict'));
  assert.deepEqual([w.pvol, w.failovers.osaka], ['tokyo', 0]);
  w.hears.osaka.tokyo = true;
  w.storageLink = true;
  await until(w, 11_000, tokyo, osaka);
  assert.equal(w.state, 'suspend-normal');
  assert.ok(w.kinds('tokyo').includes('arbiter-recovered'));
  assert.deepEqual([tokyo.status().state, tokyo.gate('db1')], ['holding', undefined]);
});

test('a failover that fails is tried again after three leases; the application moved back takes the quorum pair over', async () => {
  const w = new World();
  const tokyo = agent(w, 'tokyo');
  const osaka = agent(w, 'osaka');
  await until(w, 1000, tokyo, osaka);
  w.failoverFails = true;
  w.hears.osaka.tokyo = false;
  await until(w, 7000, tokyo, osaka);
  assert.equal(w.failovers.osaka, 1);
  assert.match(osaka.status().reason, /the failover to osaka failed: the sync copy is incomplete; it is tried again in 9 s/);
  w.failoverFails = false;
  await until(w, 13_500, tokyo, osaka);
  assert.equal(w.failovers.osaka, 1, 'not within three leases');
  await until(w, 17_000, tokyo, osaka);
  assert.equal(w.failovers.osaka, 2);
  assert.equal(w.application, 'osaka');
  // A failback moves the application to tokyo; osaka splits once it hears tokyo; tokyo swaps the quorum pair over.
  w.hears.osaka.tokyo = true;
  w.state = 'pair';
  w.application = 'tokyo';
  await until(w, 19_000, tokyo, osaka);
  assert.equal(w.pvol, 'tokyo');
  assert.ok(w.events.since(0).some((e) => e.kind === 'arbiter-acquired' && e.details?.site === 'tokyo' && /swap resync ended normally/.test(e.reason)));
  w.state = 'pair';
  await until(w, 20_000, tokyo, osaka);
  assert.deepEqual([w.state, tokyo.status().state, tokyo.gate('db1')], ['suspend-normal', 'holding', undefined]);
});
