// The drives of a repository: at most `drives` jobs run against it at once; the others wait in
// first-come order (spec 003 §5.4: a FIFO of jobs per repository). Jobs may be in different
// processes (two `tricopy backup run` at once, a scheduler and an operator), so the queue is a
// directory of ticket files whose names sort in arrival order; a job runs while its ticket is
// among the first `drives`. A ticket whose owning process is gone is removed by whoever sees it,
// so a killed job never holds a drive.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { drivePollMs } from './limits';

export interface DriveQueueDeps {
  /** Whether a process holding a ticket still runs (process.kill(pid, 0) in production). */
  isAlive(pid: number): boolean;
  sleep(ms: number): Promise<void>;
  now(): number;
}

export function processIsAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export const systemDriveDeps: DriveQueueDeps = {
  isAlive: processIsAlive,
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
  now: () => Date.now(),
};

export interface HeldDrive {
  /** Jobs that had to finish before this one got a drive, when it queued (0: it ran at once). */
  waitedBehind: number;
  release(): Promise<void>;
}

let ticketCounter = 0;

interface Ticket {
  name: string;
  pid: number;
}

function parseTicket(name: string): Ticket | null {
  const m = /^\d{15}-\d{6}-(\d+)-.+$/.exec(name);
  return m ? { name, pid: Number(m[1]) } : null;
}

export class DriveQueue {
  private readonly queueDir: string;

  constructor(repoDir: string, private readonly drives: number, private readonly deps: DriveQueueDeps = systemDriveDeps) {
    if (!Number.isSafeInteger(drives) || drives < 1) throw new Error(`a repository has at least one drive, not ${drives}`);
    this.queueDir = path.join(repoDir, 'queue');
  }

  /** Queues the job and resolves when it holds a drive. `onWait` is told how many jobs are ahead, once. */
  async acquire(jobId: string, ownerPid: number = process.pid, onWait?: (ahead: number) => void): Promise<HeldDrive> {
    await fsp.mkdir(this.queueDir, { recursive: true });
    ticketCounter = (ticketCounter + 1) % 1_000_000;
    // Arrival time, then a per-process counter: names sort in the order tickets were taken.
    const name = `${String(this.deps.now()).padStart(15, '0')}-${String(ticketCounter).padStart(6, '0')}-${ownerPid}-${jobId}`;
    const file = path.join(this.queueDir, name);
    await fsp.writeFile(file, `${jobId}\n`, { flag: 'wx' });
    let firstAhead: number | null = null;
    try {
      for (;;) {
        const ahead = await this.ahead(name);
        if (ahead < this.drives) break;
        if (firstAhead === null) onWait?.(ahead - this.drives + 1);
        firstAhead ??= ahead;
        await this.deps.sleep(drivePollMs);
      }
    } catch (err) {
      await fsp.rm(file, { force: true });
      throw err;
    }
    return { waitedBehind: firstAhead === null ? 0 : firstAhead - this.drives + 1, release: () => fsp.rm(file, { force: true }) };
  }

  /** Live tickets ahead of `name`, removing the dead ones it meets. */
  private async ahead(name: string): Promise<number> {
    const names = (await fsp.readdir(this.queueDir)).sort();
    let ahead = 0;
    for (const n of names) {
      if (n === name) return ahead;
      const t = parseTicket(n);
      if (!t) continue;
      if (!this.deps.isAlive(t.pid)) {
        await fsp.rm(path.join(this.queueDir, n), { force: true });
        continue;
      }
      ahead++;
    }
    throw new Error(`backup drive queue: ticket ${name} vanished from ${this.queueDir}`);
  }

  /** Jobs holding a drive or waiting for one (live tickets). */
  async depth(): Promise<number> {
    const names = await fsp.readdir(this.queueDir).catch(() => [] as string[]);
    return names.map(parseTicket).filter((t): t is Ticket => t !== null && this.deps.isAlive(t.pid)).length;
  }
}
