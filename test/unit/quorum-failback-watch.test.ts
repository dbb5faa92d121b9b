// Automatic failback's decisions on a fake clock: the failback runs only once the primary site has
// been back (answering, and seeing this site hold the arbiter) for the whole delay without a break;
// a primary that goes again starts the delay over; a primary that cannot see the arbiter is not
// back; a failed failback waits a whole delay again; standing down stops the watch; every change of
// state is an event with its reason.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventJournal } from '../../src/common/events';
import { silentLogger } from '../../src/common/log';
import type { FailoverStatus } from '../../src/contracts/failover';
import { FailbackWatch } from '../../src/quorum/failover/failback-watch';
import { parseTopology } from '../../src/topology/topology-file';

const topology = parseTopology({
  name: 'erp', volumes: { db1: '1GiB' },
  primary: { site: 'tokyo', node: 'http://127.0.0.1:1' }, sync: { site: 'osaka', node: 'http://127.0.0.1:2' }, async: { site: 'sapporo', node: 'http://127.0.0.1:3' },
  failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] }, lease: '3s', failback: 'automatic', 'failback-delay': '10s',
});

class World {
  now = 0;
  /** What tokyo's node answers: a status, undefined (takes no part), or 'down'. */
  tokyo: Partial<FailoverStatus> | undefined | 'down' = 'down';
  failbacks = 0;
  failbackFails = false;
  readonly events = new EventJournal(silentLogger());
  readonly watch: FailbackWatch;

  constructor() {
    this.watch = new FailbackWatch({
      topology, site: 'osaka', delayMs: topology.failover!.failbackDelayMs, now: () => this.now,
      primaryView: async () => {
        if (this.tokyo === 'down') throw new Error('connect ECONNREFUSED');
        return this.tokyo as FailoverStatus | undefined;
      },
      failBack: async () => {
        this.failbacks++;
        if (this.failbackFails) throw new Error('copies failed: erp.db1.osaka.tokyo');
      },
      events: this.events, log: silentLogger(),
    });
  }

  /** Rounds every 500 ms until `to`. */
  async until(to: number): Promise<void> {
    while (this.now < to) {
      this.now += 500;
      await this.watch.round();
    }
  }

  kinds(): string[] {
    return this.events.since(0).map((e) => e.kind);
  }
}

const lost: Partial<FailoverStatus> = { state: 'lost', holder: 'osaka' };

test('failback runs once the primary has been back for the whole delay, not before', async () => {
  const w = new World();
  await w.until(5000);
  assert.equal(w.watch.state, 'watching');
  assert.match(w.watch.reason, /tokyo is not back: its node does not answer/);
  w.tokyo = lost;
  await w.until(5500);
  assert.equal(w.watch.state, 'returned');
  assert.match(w.watch.reason, /tokyo is back and sees osaka hold the arbiter: the application returns to it in 10 s/);
  await w.until(15_000);
  assert.equal(w.failbacks, 0, 'not before the delay passed');
  await w.until(15_500);
  assert.equal(w.failbacks, 1);
  assert.equal(w.watch.state, 'idle');
  assert.match(w.watch.reason, /failed back to tokyo/);
  assert.deepEqual(w.kinds(), ['failback-waiting', 'failback-pending', 'failback-started', 'failback-finished']);
  const started = w.events.since(0).find((e) => e.kind === 'failback-started')!;
  assert.match(started.reason, /tokyo has been back for 10\.0 s \(failback-delay 10000 ms\): failing back to tokyo/);
});

test('a primary that goes again before the delay passed starts it over; one that cannot see the arbiter is not back', async () => {
  const w = new World();
  w.tokyo = lost;
  await w.until(8000);
  w.tokyo = 'down';
  await w.until(8500);
  assert.equal(w.watch.state, 'watching');
  assert.ok(w.kinds().includes('failback-postponed'));
  w.tokyo = { state: 'unreachable', holder: null };
  await w.until(30_000);
  assert.equal(w.failbacks, 0, 'tokyo could not claim the arbiter after a failback');
  assert.match(w.watch.reason, /cannot reach the arbiter/);
  w.tokyo = { state: 'standby', holder: 'osaka' };
  await w.until(39_500);
  assert.equal(w.failbacks, 0, 'the delay counts from the return, not from the first sighting');
  await w.until(41_000);
  assert.equal(w.failbacks, 1);
});

test('a failed failback is tried again only after a whole delay; standing down stops the watch', async () => {
  const w = new World();
  w.tokyo = lost;
  w.failbackFails = true;
  await w.until(10_500);
  assert.equal(w.failbacks, 1);
  assert.equal(w.watch.state, 'watching');
  assert.match(w.watch.reason, /the failback to tokyo failed: copies failed/);
  assert.ok(w.kinds().includes('failback-failed'));
  await w.until(20_000);
  assert.equal(w.failbacks, 1, 'no second try within the delay');
  w.failbackFails = false;
  await w.until(21_500);
  assert.equal(w.failbacks, 2);
  const again = new World();
  again.tokyo = lost;
  await again.until(5000);
  again.watch.standDown('osaka does not hold the arbiter now');
  assert.equal(again.watch.state, 'idle');
  assert.deepEqual(again.kinds().slice(-1), ['failback-stood-down']);
});

test('a primary whose node takes no part in the automatic failover never gets the application back', async () => {
  const w = new World();
  w.tokyo = undefined;
  await w.until(60_000);
  assert.equal(w.failbacks, 0);
  assert.match(w.watch.reason, /takes no part in the automatic failover/);
});
