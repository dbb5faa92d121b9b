// The failover agent's decisions, on a fake clock and an in-memory arbiter with etcd's semantics
// (a key on a lease that expires unless renewed, compare-and-set claims): who claims when, when the
// holder's gate closes (exactly when its hold could pass, whether or not a round ran), when the
// sync site takes over, the handover after a failback, a restarted holder, the arbiter lost.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventJournal } from '../../src/common/events';
import { silentLogger } from '../../src/common/log';
import type { PairStatus } from '../../src/contracts/pairs';
import { FailoverAgent } from '../../src/quorum/failover/agent';
import type { Arbiter, ArbiterRead, ArbiterValue } from '../../src/quorum/failover/etcd-arbiter';
import { TricopyError } from '../../src/common/errors';
import { parseTopology } from '../../src/topology/topology-file';

class FakeEtcd {
  now = 0;
  raw: string | null = null;
  expiresAt: number | null = null;
  lease = 0;
  private nextLease = 1;

  settle(): void {
    if (this.expiresAt !== null && this.now >= this.expiresAt) {
      this.raw = null;
      this.expiresAt = null;
    }
  }

  grant(): number {
    return this.nextLease++;
  }
}

class FakeArbiter implements Arbiter {
  readonly description = 'fake etcd';
  reachable = true;
  private leaseId: number | null = null;
  private held: string | null = null;
  private readonly instance = Math.random().toString(36).slice(2);

  constructor(private readonly etcd: FakeEtcd, private readonly site: string, private readonly leaseMs: number) {}

  private check(): void {
    if (!this.reachable) throw new TricopyError('unavailable', 'fake etcd cannot be reached');
    this.etcd.settle();
  }

  async read(): Promise<ArbiterRead> {
    this.check();
    return { raw: this.etcd.raw, value: this.etcd.raw === null ? null : JSON.parse(this.etcd.raw) as ArbiterValue };
  }

  async claim(expected: string | null): Promise<number | null> {
    this.check();
    const sentAt = this.etcd.now;
    if (this.etcd.raw !== expected) return null;
    const lease = this.etcd.grant();
    this.held = JSON.stringify({ kind: 'hold', site: this.site, instance: this.instance, since: '', lease: String(lease) } satisfies ArbiterValue);
    this.etcd.raw = this.held;
    this.etcd.expiresAt = this.etcd.now + this.leaseMs;
    this.etcd.lease = lease;
    this.leaseId = lease;
    return sentAt;
  }

  async renew(): Promise<number | 'lost'> {
    this.check();
    if (this.leaseId === null || this.etcd.lease !== this.leaseId || this.etcd.raw !== this.held) {
      this.leaseId = null;
      return 'lost';
    }
    this.etcd.expiresAt = this.etcd.now + this.leaseMs;
    return this.etcd.now;
  }

  async release(): Promise<void> {
    this.check();
    if (this.etcd.raw === this.held) {
      this.etcd.raw = JSON.stringify({ kind: 'released', site: this.site, instance: this.instance, since: '' } satisfies ArbiterValue);
      this.etcd.lease = this.etcd.grant();
      this.etcd.expiresAt = this.etcd.now + this.leaseMs;
    }
    this.leaseId = null;
    this.held = null;
  }

  async close(): Promise<void> {}
}

const topology = parseTopology({
  name: 'erp', volumes: { db1: '1GiB' },
  primary: { site: 'tokyo', node: 'http://127.0.0.1:1' }, sync: { site: 'osaka', node: 'http://127.0.0.1:2' }, async: { site: 'sapporo', node: 'http://127.0.0.1:3' },
  failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] }, lease: '10s', renew: '2s', 'fence-margin': '2s',
});

/** A site's node as the agent sees it: its pairs of volume db1. */
class FakeSite {
  role: 'primary' | 'secondary' | 'taken-over' | 'writable' = 'secondary';
  failovers = 0;
  failoverFails = false;

  constructor(readonly name: string) {}

  pairs(): PairStatus[] {
    const state = this.role === 'writable' ? 'secondary-writable' : 'duplex';
    return [{
      name: 'erp.db1.osaka.tokyo', volume: 'db1', role: this.role === 'primary' || this.role === 'taken-over' ? 'primary' : 'secondary', state,
      suspendCause: this.role === 'taken-over' ? 'takeover-by-peer' : null,
    } as unknown as PairStatus];
  }
}

function site(name: string, role: FakeSite['role']): FakeSite {
  const s = new FakeSite(name);
  s.role = role;
  return s;
}

function agent(etcd: FakeEtcd, site: FakeSite, role: 'primary' | 'sync', t = topology): { agent: FailoverAgent; arbiter: FakeArbiter; events: EventJournal } {
  const events = new EventJournal(silentLogger());
  const arbiter = new FakeArbiter(etcd, site.name, t.failover!.leaseMs);
  const a = new FailoverAgent({
    topology: t, site: site.name, role, arbiter, now: () => etcd.now, wallNow: () => 1_700_000_000_000 + etcd.now,
    pairs: () => site.pairs(), hasVolume: () => true,
    failOverHere: async () => {
      site.failovers++;
      if (site.failoverFails) throw new Error('the sync copy is incomplete');
      site.role = 'writable';
    },
    primaryView: async () => undefined,
    failBackToPrimary: async () => {
      throw new Error('failback is manual in these tests');
    },
    events, log: silentLogger(),
  });
  return { agent: a, arbiter, events };
}

/** Advances time to `to`, running both agents' rounds every renew interval. */
async function runUntil(etcd: FakeEtcd, to: number, ...agents: FailoverAgent[]): Promise<void> {
  while (etcd.now < to) {
    etcd.now = Math.min(to, etcd.now + 2000);
    for (const a of agents) await a.tick();
    await new Promise((r) => setImmediate(r));
  }
}

test('the primary claims the arbiter and writes; the sync site stands by and its volumes are gated too', async () => {
  const etcd = new FakeEtcd();
  const tokyo = site('tokyo', 'primary');
  const osaka = new FakeSite('osaka');
  const p = agent(etcd, tokyo, 'primary');
  const s = agent(etcd, osaka, 'sync');
  assert.match(p.agent.gate('db1')!, /does not hold the arbiter/, 'no writes before the claim');
  await p.agent.tick();
  await s.agent.tick();
  assert.deepEqual([p.agent.status().state, p.agent.status().holder, p.agent.gate('db1')], ['holding', 'tokyo', undefined]);
  assert.equal(p.agent.gate('other-volume'), undefined, 'volumes of no topology are not gated');
  assert.deepEqual([s.agent.status().state, s.agent.status().holder], ['standby', 'tokyo']);
  assert.match(s.agent.gate('db1')!, /site tokyo holds the arbiter/);
  await runUntil(etcd, 60_000, p.agent, s.agent);
  assert.equal(p.agent.status().state, 'holding', 'renewed all along');
  assert.equal(osaka.failovers, 0);
});

test('a holder that cannot renew is fenced exactly when lease − fence margin has passed since its last renewal sent, before the key can expire', async () => {
  const etcd = new FakeEtcd();
  const tokyo = site('tokyo', 'primary');
  const p = agent(etcd, tokyo, 'primary');
  await p.agent.tick();
  etcd.now = 1000;
  await p.agent.tick(); // renewed at 1000: valid until 1000 + 10000 − 2000
  p.arbiter.reachable = false;
  etcd.now = 8999;
  assert.equal(p.agent.gate('db1'), undefined);
  etcd.now = 9001; // no round ran: the gate closes by itself (a process resumed after SIGSTOP)
  assert.match(p.agent.gate('db1')!, /could not renew its hold/);
  await p.agent.tick();
  assert.equal(p.agent.status().state, 'fenced');
  assert.ok(p.events.since(0).some((e) => e.kind === 'arbiter-fenced'));
  assert.ok(etcd.now < etcd.expiresAt!, 'fenced while the key still names tokyo');
  // Back before the lease ran out: renewed, writes again.
  p.arbiter.reachable = true;
  etcd.now = 10_500;
  await p.agent.tick();
  assert.deepEqual([p.agent.status().state, p.agent.gate('db1')], ['holding', undefined]);
});

test('the sync site takes over only after the lease expired, it ran a lease, and the key stayed free two renew intervals; then it holds and writes', async () => {
  const etcd = new FakeEtcd();
  const tokyo = site('tokyo', 'primary');
  const osaka = new FakeSite('osaka');
  const p = agent(etcd, tokyo, 'primary');
  const s = agent(etcd, osaka, 'sync');
  await p.agent.tick();
  await runUntil(etcd, 20_000, p.agent, s.agent);
  // tokyo dies (no more rounds): its key expires at its last renewal + 10 s.
  const lastRenewal = etcd.now;
  await runUntil(etcd, lastRenewal + 10_000 - 1, s.agent);
  assert.equal(osaka.failovers, 0, 'not while the key lives');
  await runUntil(etcd, lastRenewal + 10_000 + 2 * 2000 + 2000, s.agent);
  assert.equal(osaka.failovers, 1);
  await s.agent.tick();
  assert.deepEqual([s.agent.status().state, s.agent.status().holder, s.agent.gate('db1')], ['holding', 'osaka', undefined]);
  const kinds = s.events.since(0).map((e) => e.kind);
  assert.deepEqual(kinds.filter((k) => k.startsWith('failover-')), ['failover-started', 'failover-finished']);
  // tokyo comes back (a new agent: the node restarted) and finds it lost.
  tokyo.role = 'taken-over';
  const back = agent(etcd, tokyo, 'primary');
  await back.agent.tick();
  assert.deepEqual([back.agent.status().holder, back.agent.gate('db1') !== undefined], ['osaka', true]);
});

test('a sync site that just started waits a lease before claiming a free key (the primary claims first)', async () => {
  const etcd = new FakeEtcd();
  const osaka = new FakeSite('osaka');
  const s = agent(etcd, osaka, 'sync');
  await runUntil(etcd, 9_000, s.agent);
  assert.equal(osaka.failovers, 0);
  assert.match(s.agent.status().reason, /waits one lease after starting/);
  const tokyo = site('tokyo', 'primary');
  const p = agent(etcd, tokyo, 'primary');
  await p.agent.tick();
  await runUntil(etcd, 60_000, p.agent, s.agent);
  assert.deepEqual([osaka.failovers, p.agent.status().state], [0, 'holding']);
});

test('failback: the holder whose site no longer runs the application releases; the site that runs it claims the released key', async () => {
  const etcd = new FakeEtcd();
  const tokyo = site('tokyo', 'taken-over');
  const osaka = site('osaka', 'writable');
  const s = agent(etcd, osaka, 'sync');
  const p = agent(etcd, tokyo, 'primary');
  await s.agent.tick();
  assert.equal(s.agent.status().state, 'holding', 'osaka runs the application and claims the free key');
  await p.agent.tick();
  assert.match(p.agent.gate('db1')!, /osaka holds the arbiter/);
  // The failback swaps the roles.
  tokyo.role = 'primary';
  osaka.role = 'secondary';
  await p.agent.tick();
  assert.equal(p.agent.status().state, 'lost', 'tokyo runs the application but osaka still holds the key: fenced');
  await s.agent.tick();
  assert.equal(s.agent.status().state, 'standby');
  assert.ok(s.events.since(0).some((e) => e.kind === 'arbiter-released'));
  await p.agent.tick();
  assert.deepEqual([p.agent.status().state, p.agent.gate('db1')], ['holding', undefined]);
  // The released marker kept osaka from taking over meanwhile, and tokyo holds it now.
  await runUntil(etcd, 60_000, p.agent, s.agent);
  assert.equal(osaka.failovers, 0);
});

test('a restarted holder reclaims its site\'s hold at once; a failed takeover releases the key and backs off', async () => {
  const etcd = new FakeEtcd();
  const tokyo = site('tokyo', 'primary');
  const first = agent(etcd, tokyo, 'primary');
  await first.agent.tick();
  const again = agent(etcd, tokyo, 'primary');
  await again.agent.tick();
  assert.deepEqual([again.agent.status().state, again.agent.gate('db1')], ['holding', undefined]);
  assert.match(again.agent.status().reason, /reclaimed this site's hold/);

  const etcd2 = new FakeEtcd();
  const osaka = site('osaka', 'secondary');
  osaka.failoverFails = true;
  const s = agent(etcd2, osaka, 'sync');
  await runUntil(etcd2, 16_000, s.agent);
  assert.equal(osaka.failovers, 1);
  await new Promise((r) => setImmediate(r));
  assert.equal(s.agent.status().state, 'standby');
  assert.match(s.events.since(0).find((e) => e.kind === 'failover-failed')!.reason, /failed: the sync copy is incomplete; released the arbiter/);
  await runUntil(etcd2, 30_000, s.agent);
  assert.equal(osaka.failovers, 1, 'not again within three leases');
});

test('the arbiter unreachable: nothing is decided; with arbiter-lost: continue the holder goes on writing', async () => {
  const etcd = new FakeEtcd();
  const osaka = new FakeSite('osaka');
  const s = agent(etcd, osaka, 'sync');
  s.arbiter.reachable = false;
  await runUntil(etcd, 60_000, s.agent);
  assert.deepEqual([s.agent.status().state, osaka.failovers], ['unreachable', 0]);
  assert.equal(s.events.since(0).filter((e) => e.kind === 'arbiter-unreachable').length, 1, 'said once');

  const continuing = parseTopology({
    name: 'erp', volumes: { db1: '1GiB' },
    primary: { site: 'tokyo', node: 'http://127.0.0.1:1' }, sync: { site: 'osaka', node: 'http://127.0.0.1:2' }, async: { site: 'sapporo', node: 'http://127.0.0.1:3' },
    failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] }, lease: '10s', 'arbiter-lost': 'continue',
  });
  const etcd2 = new FakeEtcd();
  const tokyo = site('tokyo', 'primary');
  const p = agent(etcd2, tokyo, 'primary', continuing);
  await p.agent.tick();
  p.arbiter.reachable = false;
  await runUntil(etcd2, 30_000, p.agent);
  assert.deepEqual([p.agent.status().state, p.agent.gate('db1')], ['holding', undefined]);
  assert.match(p.agent.status().reason, /writes go on as configured/);
});
