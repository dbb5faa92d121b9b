// The backup scheduler: fires each policy's backup at the times of its cron schedule (croner
// evaluates the expressions). Time comes from an injected Clock, so a test drives it with a virtual
// clock instead of waiting. A tick fires every policy with a scheduled time in (previous tick, now];
// a time missed while the scheduler was not running is not made up for (the next one comes). The
// CLI's `backup scheduler` runs it over the file catalog, the leading manager over its store.
import { Cron } from 'croner';
import type { Clock, TimerHandle } from '../common/clock';

/** What the scheduler needs of a policy. */
export interface ScheduledPolicy {
  name: string;
  schedule: string;
}

/** The first time after `after` that `schedule` names, or null if it names none. */
export function nextRunAfter(schedule: string, after: Date): Date | null {
  const cron = new Cron(schedule, { paused: true });
  try {
    return cron.nextRun(after);
  } finally {
    cron.stop();
  }
}

export interface SchedulerDeps<P extends ScheduledPolicy> {
  clock: Clock;
  /** Re-read at each tick, so policies added or removed take effect without a restart. */
  loadPolicies(): Promise<P[]>;
  /** Runs the policy for its time `scheduledAt` (the cron time, not the moment of the tick). */
  run(policy: P, scheduledAt: Date): Promise<void>;
  onError(policy: P, err: unknown): void;
}

/** Longest sleep between ticks, so a new policy's first time is not missed by much. */
const maxSleepMs = 60_000;

export class BackupScheduler<P extends ScheduledPolicy> {
  private lastTickMs: number;
  private timer: TimerHandle | undefined;
  private stopped = true;
  private ticking = false;
  private pokedWhileTicking = false;
  private readonly running = new Set<Promise<void>>();

  constructor(private readonly deps: SchedulerDeps<P>) {
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
        const job = this.deps.run(p, due).catch((err: unknown) => this.deps.onError(p, err));
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

  /** Ticks now (policies were added or removed: the next time may be sooner than the timer). */
  poke(): void {
    if (this.stopped) return;
    // A tick under way reads the policies before they changed: tick again right after it.
    if (this.ticking) {
      this.pokedWhileTicking = true;
      return;
    }
    this.deps.clock.clearTimer(this.timer);
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
      this.ticking = true;
      this.tick().then(({ nextAtMs }) => {
        this.ticking = false;
        const now = this.deps.clock.now();
        const again = this.pokedWhileTicking;
        this.pokedWhileTicking = false;
        this.schedule(again ? 0 : Math.max(0, Math.min(maxSleepMs, (nextAtMs ?? now + maxSleepMs) - now)));
      }, (err: unknown) => {
        this.ticking = false;
        this.pokedWhileTicking = false;
        process.stderr.write(`backup scheduler: ${String(err)}\n`);
        this.schedule(maxSleepMs);
      });
    });
  }
}
