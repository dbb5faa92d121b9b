// Time as the replication core sees it: wall-clock milliseconds, timers and deferred work. The node
// wires the system clock; the simulator wires a virtual one, so every timeout, retry and lag figure
// of the core runs on simulated time and a run is reproducible from its seed.

export interface TimerHandle {
  /** Lets the process exit while the timer is pending (no effect on a virtual clock). */
  unref(): void;
}

export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
  setTimer(delayMs: number, fn: () => void): TimerHandle;
  clearTimer(handle: TimerHandle | undefined): void;
  /** Runs `fn` after the current turn's I/O callbacks (setImmediate). */
  defer(fn: () => void): void;
  sleep(delayMs: number): Promise<void>;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimer: (delayMs, fn) => setTimeout(fn, delayMs),
  clearTimer: (handle) => {
    if (handle !== undefined) clearTimeout(handle as NodeJS.Timeout);
  },
  defer: (fn) => {
    setImmediate(fn);
  },
  sleep: (delayMs) => new Promise((resolve) => setTimeout(resolve, delayMs)),
};

export function isoTime(clock: Clock): string {
  return new Date(clock.now()).toISOString();
}
