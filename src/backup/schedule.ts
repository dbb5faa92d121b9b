// The backup scheduler: fires each policy's backup at the times of its cron schedule (croner
// evaluates the expressions). Time comes from an injected Clock, so a test drives it with a virtual
// clock instead of waiting. A tick fires every policy with a scheduled time in (previous tick, now];
// a time missed while the scheduler was not running is not made up for (the next one comes).
import { Cron } from 'croner';
import type { Clock, TimerHandle } from '../common/clock';
import type { Policy } from './catalog';

/** The first time after `after` that `schedule` names, or null if it names none. */
export function nextRunAfter(schedule: string, after: Date): Date | null {
  const cron = new Cron(schedule, { paused: true });
  try {
    return cron.nextRun(after);
  } finally {
    cron.stop();
  }
}

export interface SchedulerDeps {
  clock: Clock;
  /** Re-read at each tick, so policies added or removed take effect without a restart. */
  loadPolicies(): Promise<Policy[]>;
  run(policy: Policy): Promise<void>;
  onError(policy: Policy, err: unknown): void;
}

/** Longest sleep between ticks, so a new policy's first time is not missed by much. */
const maxSleepMs = 60_000;

export class BackupScheduler {
  private lastTickMs: number;
  private timer: TimerHandle | undefined;
  private stopped = true;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly deps: SchedulerDeps) {
    this.lastTickMs = deps.clock.now();
  }

  /** Fires the policies due in (previous tick, now]; returns their names and when the next one is due. */
  async tick(): Promise<{ fired: string[]; nextAtMs: number | null }> {
    const now = this.deps.clock.now();
    const policies = await this.deps.loadPolicies();
    const fired: string[] = [];
    let nextAtMs: number | null = null;
    for (const p of policies) {
      const due = nextRunAfter(p.schedule, new Date(this.lastTickMs));
      if (due !== null && due.getTime() <= now) {
        fired.push(p.name);
        const job = this.deps.run(p).catch((err: unknown) => this.deps.onError(p, err));
        this.running.add(job);
        void job.finally(() => this.running.delete(job));
      }
      const next = nextRunAfter(p.schedule, new Date(now));
      if (next !== null && (nextAtMs === null || next.getTime() < nextAtMs)) nextAtMs = next.getTime();
    }
    this.lastTickMs = now;
    return { fired, nextAtMs };
  }

  start(): void {
    this.stopped = false;
    this.schedule(0);
  }

  /** Stops firing; resolves when the jobs it started have ended. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.deps.clock.clearTimer(this.timer);
    await Promise.all([...this.running]);
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = this.deps.clock.setTimer(delayMs, () => {
      this.tick().then(({ nextAtMs }) => {
        const now = this.deps.clock.now();
        this.schedule(Math.max(0, Math.min(maxSleepMs, (nextAtMs ?? now + maxSleepMs) - now)));
      }, (err: unknown) => {
        process.stderr.write(`backup scheduler: ${String(err)}\n`);
        this.schedule(maxSleepMs);
      });
    });
  }
}
