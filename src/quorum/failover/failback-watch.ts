// Automatic failback (failback: automatic, failback-delay): after an automatic failover, the sync
// site's node — the one that holds the arbiter and where the application runs now, so the only one
// that may act — watches the primary site of the topology file and, once that site has been back
// for the delay without a break, runs the failback procedure (spec 001 Fig. 11: copy back by delta,
// wait for duplex, swap, restore the original legs). The arbiter then passes as after a manual
// failback: the sync site releases it, the primary site claims it.
//
// "Back" means the primary site's node answers and its agent sees this site hold the arbiter (state
// lost or standby, holder = this site): a site that cannot see the arbiter could not claim it after
// the swap, and no site would accept writes. Being caught up is the procedure's own first part: it
// copies only what differs and swaps only once every copy is duplex.
//
//   state \ event   primary-away   primary-back   delay-passed   finished   failed     stand-down
//   idle            watching       returned       -              -          -          idle
//   watching        watching       returned       -              -          -          idle
//   returned        watching       returned       failing-back   -          -          idle
//   failing-back    -              -              -              idle       watching   failing-back
//
// stand-down: this site no longer holds the arbiter or no longer runs the application (a person ran
// the failback, another takeover): nothing to do. A failback that failed waits for the primary to be
// seen back for a whole delay again before the next try. Every change of state is an event with its
// reason.
import { errorMessage } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { FailbackState, FailoverStatus } from '../../contracts/failover';
import type { Topology } from '../../topology/topology-file';

export type FailbackEvent = 'primary-away' | 'primary-back' | 'delay-passed' | 'finished' | 'failed' | 'stand-down';

const transitions: Record<FailbackState, Partial<Record<FailbackEvent, FailbackState>>> = {
  'idle': { 'primary-away': 'watching', 'primary-back': 'returned', 'stand-down': 'idle' },
  'watching': { 'primary-away': 'watching', 'primary-back': 'returned', 'stand-down': 'idle' },
  'returned': { 'primary-away': 'watching', 'primary-back': 'returned', 'delay-passed': 'failing-back', 'stand-down': 'idle' },
  'failing-back': { 'finished': 'idle', 'failed': 'watching', 'stand-down': 'failing-back' },
};

/** The journal kind of each event that changes the state (a primary that goes again before the delay passed postpones). */
const eventKinds: Record<FailbackEvent, string> = {
  'primary-away': 'failback-waiting',
  'primary-back': 'failback-pending',
  'delay-passed': 'failback-started',
  'finished': 'failback-finished',
  'failed': 'failback-failed',
  'stand-down': 'failback-stood-down',
};

export interface FailbackDeps {
  topology: Topology;
  /** This node's site (the sync site). */
  site: string;
  delayMs: number;
  /** Monotonic milliseconds. */
  now: () => number;
  /** The primary site's node's status for this topology (undefined: it takes no part); rejects when it does not answer. */
  primaryView: () => Promise<FailoverStatus | undefined>;
  /** Runs the failback procedure to the primary site; rejects when it fails. */
  failBack: (print: (line: string) => void) => Promise<void>;
  /** Where every change of state is reported (the agent records it as a decision too). */
  events: { emit(kind: string, subject: string, reason: string, details?: Record<string, unknown>): unknown };
  log: Logger;
}

export class FailbackWatch {
  private stateValue: FailbackState = 'idle';
  private reasonValue = 'no failover to this site to undo';
  /** Since when (monotonic ms) the primary has been seen back without a break. */
  private backSince: number | null = null;

  constructor(private readonly d: FailbackDeps) {}

  get state(): FailbackState {
    return this.stateValue;
  }

  get reason(): string {
    return this.reasonValue;
  }

  /** This site no longer may or need act (it does not hold the arbiter, or the application is not here). */
  standDown(why: string): void {
    if (this.stateValue === 'idle') return;
    this.backSince = null;
    this.apply('stand-down', why);
  }

  /**
   * One look at the primary site, while this site holds the arbiter and the application runs here;
   * runs the failback when the primary has been back for the delay. Resolves when the look (or the
   * failback) is over: the agent runs it beside its renewals.
   */
  async round(): Promise<void> {
    const primary = this.d.topology.primary.site;
    const seen = await this.lookAtPrimary();
    if (seen !== undefined) {
      this.backSince = null;
      return this.apply('primary-away', `${primary} is not back: ${seen}; the application stays at ${this.d.site}`);
    }
    const now = this.d.now();
    this.backSince ??= now;
    const backMs = now - this.backSince;
    if (backMs < this.d.delayMs) {
      if (this.stateValue !== 'returned') {
        this.apply('primary-back', `${primary} is back and sees ${this.d.site} hold the arbiter: the application returns to it in ${Math.ceil((this.d.delayMs - backMs) / 1000)} s unless it goes again (failback-delay ${this.d.delayMs} ms)`);
      }
      return;
    }
    this.apply('delay-passed', `${primary} has been back for ${(backMs / 1000).toFixed(1)} s (failback-delay ${this.d.delayMs} ms): failing back to ${primary} (spec 001 Fig. 11, only what differs travels)`);
    await this.runFailback();
  }

  /** Undefined when the primary is back; otherwise why not. */
  private async lookAtPrimary(): Promise<string | undefined> {
    let view: FailoverStatus | undefined;
    try {
      view = await this.d.primaryView();
    } catch (err) {
      return `its node does not answer (${errorMessage(err)})`;
    }
    if (!view) return 'its node takes no part in the automatic failover of this topology';
    if (view.state === 'unreachable') return 'its node cannot reach the arbiter (it could not claim it after a failback)';
    if (view.holder !== this.d.site || (view.state !== 'lost' && view.state !== 'standby')) {
      return `its node is ${view.state} and sees ${view.holder ?? 'nobody'} hold the arbiter`;
    }
    return undefined;
  }

  private async runFailback(): Promise<void> {
    const started = this.d.now();
    const primary = this.d.topology.primary.site;
    try {
      await this.d.failBack((line) => this.d.log.info({ topology: this.d.topology.name }, line));
    } catch (err) {
      this.backSince = null;
      this.apply('failed', `the failback to ${primary} failed: ${errorMessage(err)}; it is tried again once ${primary} has been back for the delay again`);
      return;
    }
    this.backSince = null;
    this.apply('finished', `failed back to ${primary} in ${((this.d.now() - started) / 1000).toFixed(1)} s: the application runs at ${primary}; ${this.d.site} releases the arbiter to it`);
  }

  private apply(event: FailbackEvent, reason: string): void {
    const to = transitions[this.stateValue][event];
    if (to === undefined) {
      this.d.log.error({ state: this.stateValue, event }, 'automatic failback: an event its state does not expect; ignored');
      return;
    }
    const from = this.stateValue;
    this.stateValue = to;
    this.reasonValue = reason;
    if (to === from) return;
    const kind = from === 'returned' && event === 'primary-away' ? 'failback-postponed' : eventKinds[event];
    this.d.events.emit(kind, this.d.topology.name, reason, { site: this.d.site, state: to, event });
  }
}
