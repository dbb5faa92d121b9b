// The drive queue (at most N jobs at once, FIFO, a dead job's ticket does not hold a drive) and
// the scheduler driven by a virtual clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Clock, TimerHandle } from '../../src/common/clock';
import type { Policy } from '../../src/backup/catalog';
import { checkSchedule } from '../../src/backup/catalog';
import { DriveQueue, type DriveQueueDeps } from '../../src/backup/drives';
import { BackupScheduler, nextRunAfter } from '../../src/backup/schedule';

async function tempRepo(): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), 'backup-drives-'));
}

/** Deps where tickets are owned by fake pids and time advances by one per ticket. */
function fakeDeps(dead: Set<number>): DriveQueueDeps {
  let t = 1_000;
  return { isAlive: (pid) => !dead.has(pid), sleep: () => new Promise((r) => setImmediate(r)), now: () => t++ };
}

test('more jobs than drives: at most N run at once, and they start in arrival order', async () => {
  const dir = await tempRepo();
  const queue = new DriveQueue(dir, 2, fakeDeps(new Set()));
  const started: string[] = [];
  let running = 0;
  let most = 0;
  const releases = new Map<string, () => void>();
  const job = async (id: string): Promise<void> => {
    const drive = await queue.acquire(id, 100);
    started.push(id);
    running++;
    most = Math.max(most, running);
    await new Promise<void>((r) => releases.set(id, r));
    running--;
    await drive.release();
  };
  const all: Array<Promise<void>> = [];
  for (const id of ['j1', 'j2', 'j3', 'j4', 'j5']) {
    all.push(job(id));
    // Each ticket is taken before the next job queues: arrival order is j1..j5.
    while ((await queue.depth()) < all.length) await new Promise((r) => setImmediate(r));
  }
  const waitStarted = async (n: number): Promise<void> => {
    while (started.length < n) await new Promise((r) => setImmediate(r));
  };
  await waitStarted(2);
  // j1 and j2 get a drive at once: which of the two is first to see its ticket is the file system's race.
  assert.deepEqual([...started].sort(), ['j1', 'j2']);
  releases.get('j2')!();
  await waitStarted(3);
  assert.equal(started[2], 'j3');
  releases.get('j1')!();
  await waitStarted(4);
  releases.get('j3')!();
  await waitStarted(5);
  releases.get('j4')!();
  releases.get('j5')!();
  await Promise.all(all);
  assert.deepEqual(started.slice(2), ['j3', 'j4', 'j5'], 'the waiting jobs start in arrival order');
  assert.equal(most, 2);
  assert.equal(await queue.depth(), 0);
  await fsp.rm(dir, { recursive: true, force: true });
});

test('a job whose process died does not hold its drive', async () => {
  const dir = await tempRepo();
  const dead = new Set<number>();
  const queue = new DriveQueue(dir, 1, fakeDeps(dead));
  await queue.acquire('crashed', 200); // never released: its process is killed
  let waited = -1;
  const next = queue.acquire('next', 201, (ahead) => (waited = ahead));
  let got = false;
  void next.then(() => (got = true));
  // The queue reports the wait once it has looked at the tickets (real file I/O: wait with a deadline).
  const deadline = Date.now() + 5_000;
  while (waited === -1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  dead.add(waited === 1 ? -1 : 200); // on failure below, let the queue go so the process can end
  assert.equal(waited, 1, 'the next job waits behind the live ticket');
  assert.equal(got, false, 'the live ticket holds the drive');
  dead.add(200);
  const drive = await next;
  assert.equal(drive.waitedBehind, 1);
  await drive.release();
  assert.equal(await queue.depth(), 0);
  await fsp.rm(dir, { recursive: true, force: true });
});

/** A clock a test moves by hand; timers fire when it passes their time. */
class ManualClock implements Clock {
  private timers: Array<{ at: number; fn: () => void; cancelled: boolean }> = [];
  constructor(private nowMs: number) {}
  now(): number {
    return this.nowMs;
  }
  setTimer(delayMs: number, fn: () => void): TimerHandle {
    const t = { at: this.nowMs + delayMs, fn, cancelled: false };
    this.timers.push(t);
    return { unref: () => undefined, ...{ cancel: () => (t.cancelled = true) } } as TimerHandle;
  }
  clearTimer(handle: TimerHandle | undefined): void {
    (handle as unknown as { cancel?: () => void } | undefined)?.cancel?.();
  }
  defer(fn: () => void): void {
    setImmediate(fn);
  }
  sleep(delayMs: number): Promise<void> {
    return new Promise((r) => this.setTimer(delayMs, r));
  }
  /** Moves time forward, firing each due timer at its own time and letting its work settle. */
  async advanceTo(ms: number): Promise<void> {
    for (;;) {
      const due = this.timers.filter((t) => !t.cancelled && t.at <= ms).sort((a, b) => a.at - b.at)[0];
      if (!due) break;
      this.timers = this.timers.filter((t) => t !== due);
      this.nowMs = Math.max(this.nowMs, due.at);
      due.fn();
      for (let i = 0; i < 10; i++) await new Promise((r) => setImmediate(r));
    }
    this.nowMs = ms;
  }
}

const policy = (name: string, schedule: string): Policy => ({ name, volume: 'db1', repo: 'tape1', node: 'http://x', schedule, incremental: true, keep: 3,
  source: { kind: 'snapshot' }, preSplitHook: null, postSplitHook: null });

test('cron schedules: the next time, and bad expressions refused', () => {
  const after = new Date(2026, 11, 2, 1, 30, 0); // local time, as cron is evaluated
  assert.deepEqual(nextRunAfter('0 2 * * *', after), new Date(2026, 11, 2, 2, 0, 0));
  assert.deepEqual(nextRunAfter('0 2 * * *', new Date(2026, 11, 2, 2, 0, 0)), new Date(2026, 11, 3, 2, 0, 0));
  assert.throws(() => checkSchedule('0 25 * * *'), /not a cron expression/);
  assert.throws(() => checkSchedule('every night'), /not a cron expression/);
});

test('the scheduler fires each policy at its times, driven by a virtual clock', async () => {
  const start = new Date(2026, 11, 1, 23, 0, 0).getTime();
  const clock = new ManualClock(start);
  const fired: Array<[string, number]> = [];
  const scheduler = new BackupScheduler({
    clock, loadPolicies: async () => [policy('nightly', '0 2 * * *'), policy('hourly', '30 * * * *')],
    run: async (p) => void fired.push([p.name, clock.now()]), onError: (_p, err) => assert.fail(String(err)),
  });
  scheduler.start();
  await clock.advanceTo(new Date(2026, 11, 2, 2, 45, 0).getTime());
  const at = (h: number, m: number): number => new Date(2026, 11, 2, h, m, 0).getTime();
  assert.deepEqual(fired, [
    ['hourly', new Date(2026, 11, 1, 23, 30, 0).getTime()], ['hourly', at(0, 30)], ['hourly', at(1, 30)], ['nightly', at(2, 0)], ['hourly', at(2, 30)],
  ]);
  await scheduler.stop();
  await clock.advanceTo(at(5, 0));
  assert.equal(fired.length, 5, 'a stopped scheduler fires nothing');
});

test('the scheduler tells each job its cron time, and a poke takes a new policy at once (not after its longest sleep)', async () => {
  const start = new Date(2026, 11, 2, 10, 0, 0).getTime();
  const clock = new ManualClock(start);
  const policies: Policy[] = [];
  const fired: Array<{ name: string; scheduledAt: number; firedAt: number }> = [];
  const scheduler = new BackupScheduler<Policy>({
    clock, loadPolicies: async () => [...policies],
    run: async (p, scheduledAt) => void fired.push({ name: p.name, scheduledAt: scheduledAt.getTime(), firedAt: clock.now() }),
    onError: (_p, err) => assert.fail(String(err)),
  });
  scheduler.start();
  await clock.advanceTo(start + 1000); // the first tick: nothing to fire, it sleeps up to a minute
  policies.push(policy('soon', '5 0 10 * * *')); // 10:00:05, a 6-field (seconds) expression
  scheduler.poke();
  await clock.advanceTo(start + 5000);
  assert.deepEqual(fired, [{ name: 'soon', scheduledAt: start + 5000, firedAt: start + 5000 }]);
  await clock.advanceTo(start + 120_000);
  assert.equal(fired.length, 1, 'a time fires once');
  await scheduler.stop();
});
