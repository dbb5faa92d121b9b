// Whether this process's event loop is busy, from its utilisation (the share of time it was not
// waiting for events) over the last sampling period. With hysteresis: busy from `busyAbove`, idle
// again only below `idleBelow`, so handing work to other threads (which lowers the utilisation)
// does not flip the decision back at once.
import { performance } from 'node:perf_hooks';

const sampleMs = 100;
const busyAbove = 0.8;
const idleBelow = 0.5;

let busy = false;
let sampler: NodeJS.Timeout | undefined;
let last = performance.eventLoopUtilization();

function sample(): void {
  const now = performance.eventLoopUtilization();
  const { utilization } = performance.eventLoopUtilization(now, last);
  last = now;
  busy = busy ? utilization >= idleBelow : utilization > busyAbove;
}

/** True while the event loop has been busy lately (starts sampling on first use). */
export function eventLoopBusy(): boolean {
  if (!sampler) {
    sampler = setInterval(sample, sampleMs);
    sampler.unref();
  }
  return busy;
}
