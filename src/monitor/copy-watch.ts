// The per-copy monitor of spec 000 §5.3 ("Mgr"): what condition a copy is in, judged from what this
// node already knows of it (its pair and group status, no message sent), and the state machine that
// turns a change of condition into at most one report: one on entering a monitored condition, one
// on leaving it (a recovery), none while it stays (§9.10).
import type { MonitoredSet, ReportCondition } from '../contracts/monitor';
import type { GroupStatus, PairStatus } from '../contracts/pairs';

/**
 * The condition of a copy now: the first monitored one it is in, or null when it is healthy.
 * `linkDownMs`: how long the copy's link to its target has been down (0 while up).
 */
export function conditionOf(pair: PairStatus | undefined, group: GroupStatus | undefined, monitored: MonitoredSet, linkDownMs = 0): ReportCondition | null {
  if (pair === undefined) return null;
  if (monitored.codes.includes(pair.code)) return pair.code;
  const inStep = pair.code === 'PAIR' || pair.code === 'COPY';
  if (inStep && monitored.linkDownSeconds !== null && linkDownMs > monitored.linkDownSeconds * 1000) return 'link-down';
  if (pair.role === 'primary' && pair.mode === 'async' && pair.code === 'PAIR') {
    const lag = group?.lag.seconds ?? pair.lag?.seconds ?? null;
    if (monitored.lagSeconds !== null && lag !== null && lag > monitored.lagSeconds) return 'lag-high';
    const journal = group?.journal ?? pair.journal;
    if (monitored.journalPercent !== null && journal && journal.capacityBytes > 0
      && (journal.usedBytes / journal.capacityBytes) * 100 > monitored.journalPercent) return 'journal-high';
  }
  return null;
}

export type WatchPhase = 'not-monitored' | 'in-monitored';

/** What a change of condition does: the next phase and the report to send, if any. */
export interface WatchStep {
  phase: WatchPhase;
  report: { change: 'entered' | 'recovered'; condition: ReportCondition } | null;
}

/**
 * §5.3 as a table, indexed by the phase now and whether the new condition is monitored. A copy that
 * moves from one monitored condition to another (PSUE after lag-high) reports the new one: it is a
 * new entry, not a repeat.
 */
export function watchStep(previous: ReportCondition | null, next: ReportCondition | null): WatchStep {
  const phase: WatchPhase = previous === null ? 'not-monitored' : 'in-monitored';
  const table: Record<WatchPhase, (n: ReportCondition | null) => WatchStep> = {
    'not-monitored': (n) => (n === null
      ? { phase: 'not-monitored', report: null }
      : { phase: 'in-monitored', report: { change: 'entered', condition: n } }),
    'in-monitored': (n) => {
      if (n === null) return { phase: 'not-monitored', report: { change: 'recovered', condition: previous! } };
      if (n === previous) return { phase: 'in-monitored', report: null };
      return { phase: 'in-monitored', report: { change: 'entered', condition: n } };
    },
  };
  return table[phase](next);
}
