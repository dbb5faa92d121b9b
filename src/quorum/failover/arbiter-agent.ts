// The part of a node's automatic failover that does not depend on which arbiter decides: the
// rounds every `renew` on an injected clock, the state and reason shown (with the last decisions),
// the gate on host writes of the topology's volumes, the failover procedure run beside the rounds,
// and automatic failback at the sync site. What an arbiter brings is small (ArbiterRounds): one
// round of holding, renewing or contending for it, why host writes are refused now, and whether
// this site holds it. Two arbiters plug in: etcd (agent.ts) and a spec 004 quorum pair
// (quorum-pair-agent.ts).
//
// Fencing stays with each arbiter because what "holds" means differs: an etcd hold lasts until
// lease − fence margin after its last renewal was sent; a quorum pair is held while this site's
// quorum volume is the P-VOL (the storage's commit fences the loser). The agent only asks.
import { errorMessage } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import type { Logger } from '../../common/log';
import type { AgentReport, ArbiterDecision, ArbiterState, FailoverStatus } from '../../contracts/failover';
import type { PairStatus } from '../../contracts/pairs';
import type { FailoverSettings, Topology } from '../../topology/topology-file';
import { applicationRunsHere, failbackReasonWithoutWatch } from './application';
import { FailbackWatch } from './failback-watch';

/** How many decisions a status carries (the newest last). */
export const decisionsKept = 20;

/** What every agent is given, whichever arbiter it contends for. */
export interface AgentBaseDeps {
  topology: Topology;
  site: string;
  role: 'primary' | 'sync' | 'async';
  /** Monotonic milliseconds (not moved by wall-clock changes; it runs on while the process is stopped). */
  now: () => number;
  /** Wall-clock milliseconds, for what is shown. */
  wallNow: () => number;
  /** This node's pairs and volumes, as they are now. */
  pairs: () => PairStatus[];
  hasVolume: (name: string) => boolean;
  /** Runs the topology failover to this site (Fig. 10 and the async leg); rejects when it fails. */
  failOverHere: (print: (line: string) => void) => Promise<void>;
  /** The primary site's node's status for this topology (automatic failback); rejects when it does not answer. */
  primaryView: () => Promise<FailoverStatus | undefined>;
  /** Runs the topology failback to the primary site (automatic failback); rejects when it fails. */
  failBackToPrimary: (print: (line: string) => void) => Promise<void>;
  events: EventJournal;
  log: Logger;
}

/** What one arbiter brings to the agent. */
export interface ArbiterRounds {
  /** The arbiter as shown (etcd endpoints, the quorum pair's volume). */
  readonly description: string;
  /** One round: renew or contend, take over when the arbiter says this site won. */
  round(): Promise<void>;
  /** Why host writes of the topology's volumes are refused here now, or undefined. */
  refusal(): string | undefined;
  /** Until when (monotonic ms) this site's hold lets it write, when the arbiter bounds it in time. */
  holdValidUntil(): number | null;
  /** Why this site may not act as the holder now (automatic failback), or undefined when it may. */
  notHolding(): string | undefined;
  /** Ends the arbiter's part; `release` gives a hold up where the arbiter has one to give. */
  close(release: boolean): Promise<void>;
}

/** What the agent offers the rounds of its arbiter. */
export interface AgentContext {
  readonly deps: AgentBaseDeps;
  readonly settings: FailoverSettings;
  readonly state: ArbiterState;
  readonly reason: string;
  /** The site the arbiter names now (null: nobody, or not known); the rounds keep it. */
  holder: string | null;
  /** A failover procedure to this site runs now. */
  readonly failingOver: boolean;
  applicationRunsHere(): boolean;
  /** Changes what is shown; with `eventKind` a change is a decision (an event and a status entry). */
  set(state: ArbiterState, reason: string, eventKind?: string): void;
  /** A decision that does not change the state shown. */
  decide(kind: string, reason: string, details?: Record<string, unknown>): void;
  /**
   * Starts the failover procedure to this site beside the rounds. On success (after `finished`)
   * the site holds with the application here; on failure `failed` decides what is shown (and what
   * is given up).
   */
  startFailover(ends: { finished?: () => void; failed: (err: unknown) => Promise<void> }): void;
}

export class ArbiterAgent implements AgentContext {
  readonly settings: FailoverSettings;
  holder: string | null = null;
  private stateValue: ArbiterState;
  private reasonValue = 'starting';
  private sinceValue: number;
  private readonly decisions: ArbiterDecision[] = [];
  private readonly rounds: ArbiterRounds;
  private failoverRun: Promise<void> | null = null;
  private readonly failback: FailbackWatch | undefined;
  private failbackRun: Promise<void> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | null = null;
  private stopped = false;

  constructor(readonly deps: AgentBaseDeps, rounds: (ctx: AgentContext) => ArbiterRounds) {
    this.settings = deps.topology.failover!;
    this.sinceValue = deps.wallNow();
    this.stateValue = deps.role === 'async' ? 'observer' : 'standby';
    if (deps.role === 'async') this.reasonValue = 'the async site takes no part in the arbitration';
    if (deps.role === 'sync' && this.settings.mode === 'automatic' && this.settings.failback === 'automatic') {
      this.failback = new FailbackWatch({
        topology: deps.topology, site: deps.site, delayMs: this.settings.failbackDelayMs, now: deps.now, primaryView: deps.primaryView,
        failBack: deps.failBackToPrimary, events: { emit: (kind, _subject, reason, details) => this.decide(kind, reason, details) }, log: deps.log,
      });
    }
    this.rounds = rounds(this);
  }

  get contender(): boolean {
    return this.deps.role !== 'async' && this.settings.mode === 'automatic';
  }

  get state(): ArbiterState {
    return this.stateValue;
  }

  get reason(): string {
    return this.reasonValue;
  }

  get failingOver(): boolean {
    return this.failoverRun !== null;
  }

  start(): void {
    if (this.contender) this.schedule(0);
  }

  async stop(release: boolean): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking?.catch(() => undefined);
    await this.failoverRun?.catch(() => undefined);
    await this.failbackRun?.catch(() => undefined);
    await this.rounds.close(release);
  }

  /** Why host writes of `volume` are refused now because of the arbiter, or undefined. */
  gate(volume: string): string | undefined {
    if (!this.contender || !this.deps.topology.volumes.some((v) => v.name === volume)) return undefined;
    return this.rounds.refusal();
  }

  status(): FailoverStatus {
    const d = this.deps;
    const validUntil = this.rounds.holdValidUntil();
    return {
      topology: d.topology.name, site: d.site, role: d.role, arbiter: this.rounds.description,
      state: this.stateValue, holder: this.holder,
      writesAllowed: d.topology.volumes.every((v) => this.gate(v.name) === undefined),
      holdValidUntil: validUntil === null ? null : new Date(d.wallNow() + (validUntil - d.now())).toISOString(),
      leaseMs: this.settings.leaseMs, renewMs: this.settings.renewMs, fenceMarginMs: this.settings.fenceMarginMs,
      onArbiterLost: this.settings.onArbiterLost, reason: this.reasonValue, since: new Date(this.sinceValue).toISOString(),
      failback: {
        mode: this.settings.failback, delayMs: this.settings.failbackDelayMs,
        state: this.failback?.state ?? 'idle',
        reason: this.failback?.reason ?? failbackReasonWithoutWatch(this.settings.failback),
      },
      decisions: [...this.decisions],
    };
  }

  /** One round now (tests, and right after a change the agent should not wait a renew interval for). */
  async tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    this.ticking = (this.stopped ? Promise.resolve() : this.rounds.round()).then(() => this.watchFailback()).finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  /** The application runs here: every topology volume is here and its pairs let hosts write it by their roles. */
  applicationRunsHere(): boolean {
    return applicationRunsHere(this.deps.topology, this.deps.pairs(), this.deps.hasVolume);
  }

  set(state: ArbiterState, reason: string, eventKind?: string): void {
    const stateChanged = state !== this.stateValue;
    const changed = stateChanged || reason !== this.reasonValue;
    if (stateChanged) this.sinceValue = this.deps.wallNow();
    this.stateValue = state;
    this.reasonValue = reason;
    // A change of state is always reported (the manager shows each site's state from these).
    const kind = changed && eventKind ? eventKind : stateChanged ? 'agent-state' : undefined;
    if (kind) {
      this.decide(kind, reason, { role: this.deps.role, state, holder: this.holder });
    } else if (changed && state !== 'standby') {
      this.deps.log.info({ topology: this.deps.topology.name, state }, reason);
    }
  }

  /** What every decision carries of the agent, so a reader of events alone (the manager) knows where each site stands. */
  report(): AgentReport {
    return { site: this.deps.site, role: this.deps.role, arbiter: this.rounds.description, state: this.stateValue, holder: this.holder, failback: this.failback?.state ?? 'idle' };
  }

  decide(kind: string, reason: string, details?: Record<string, unknown>): void {
    const d = this.deps;
    d.events.emit(kind, d.topology.name, reason, { site: d.site, ...details, agent: this.report() });
    this.decisions.push({ at: new Date(d.wallNow()).toISOString(), kind, reason });
    if (this.decisions.length > decisionsKept) this.decisions.shift();
  }

  startFailover(ends: { finished?: () => void; failed: (err: unknown) => Promise<void> }): void {
    const d = this.deps;
    const started = d.now();
    // The procedure runs beside the rounds, which go on renewing (or watching) the arbiter meanwhile.
    this.failoverRun = d.failOverHere((line) => d.log.info({ topology: d.topology.name }, line))
      .then(() => {
        ends.finished?.();
        this.set('holding', `failed over to ${d.site} in ${((d.now() - started) / 1000).toFixed(1)} s: the application may run here`, 'failover-finished');
      }, ends.failed)
      .finally(() => {
        this.failoverRun = null;
      });
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.tick().catch((err: unknown) => this.deps.log.error({ err: errorMessage(err) }, 'failover agent round failed')).finally(() => this.schedule(this.settings.renewMs));
    }, delayMs);
    this.timer.unref();
  }

  /**
   * Automatic failback: only the holder acts, and only while the application runs here and no
   * takeover is under way. It runs beside the rounds (a failback takes as long as the copy back;
   * the hold must go on being renewed meanwhile).
   */
  private watchFailback(): void {
    const w = this.failback;
    if (!w || this.failbackRun || this.stopped) return;
    const notHolding = this.rounds.notHolding();
    if (notHolding !== undefined) return w.standDown(notHolding);
    if (!this.applicationRunsHere()) return w.standDown(`the application does not run at ${this.deps.site}`);
    this.failbackRun = w.round()
      .catch((err: unknown) => this.deps.log.error({ err: errorMessage(err) }, 'automatic failback round failed'))
      .finally(() => {
        this.failbackRun = null;
      });
  }
}
