// One node's part in the automatic failover of one topology. The site where the application runs
// holds the arbiter and renews its hold; the sync site takes over only once it holds the arbiter.
//
// Every `renew` milliseconds:
//   holding     renew. A renewal sent at t that succeeds lets this site write until
//               t + lease − fence-margin (the arbiter's lease lasts at least until t + lease).
//               Not renewed by then: fenced (host writes refused) — before the lease can pass to
//               another site. Renewal answered "expired": the hold is gone. Holding while the
//               application no longer runs here (a failback moved it): release, leaving a marker.
//   not holding read the arbiter:
//               free or released, and the application runs here (initial start, after a failback,
//               after the arbiter was lost for everyone): claim it;
//               free (expired, not released) for two renew intervals, this is the sync site, the
//               application does not run here, and the agent has run for a lease (the primary had
//               its chance): claim it and run the failover to this site (spec 001 Fig. 10, then the
//               async leg from here);
//               held by this site from before a restart, and the application runs here: reclaim it;
//               held by another site: standby (or lost, when this site's volumes would take writes).
//
// failback: automatic — the sync site, while it holds the arbiter and the application runs there
// after a failover, watches the primary site beside the rounds and fails back once that site has
// been back for the delay (failback-watch.ts).
//
// Host writes of the topology's volumes here are accepted only while the hold is valid (the gate is
// asked when a write starts and before it is acknowledged). With arbiter-lost: continue, a holder
// that cannot reach the arbiter goes on writing (only with fence data: the sync site refuses the
// old primary's writes once it took over, so none is acknowledged that the sync site lacks).
import { errorMessage } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import type { Logger } from '../../common/log';
import type { ArbiterState, FailoverStatus } from '../../contracts/failover';
import type { PairStatus } from '../../contracts/pairs';
import type { FailoverSettings, Topology } from '../../topology/topology-file';
import { applicationRunsHere, failbackReasonWithoutWatch } from './application';
import type { Arbiter } from './etcd-arbiter';
import { FailbackWatch } from './failback-watch';

export interface AgentDeps {
  topology: Topology;
  site: string;
  role: 'primary' | 'sync' | 'async';
  arbiter: Arbiter;
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

export class FailoverAgent {
  readonly settings: FailoverSettings;
  private stateValue: ArbiterState;
  private holding = false;
  private validUntil = 0;
  private holder: string | null = null;
  private reasonValue = 'starting';
  private sinceValue: number;
  private readonly startedAt: number;
  private unreachableSince: number | null = null;
  /** Since when this agent has seen the arbiter free (nobody holds it, no released marker). */
  private freeSince: number | null = null;
  private takingOver = false;
  private failoverRun: Promise<void> | null = null;
  /** A failed takeover is not tried again before this (monotonic ms). */
  private retryTakeoverAt = 0;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | null = null;
  private stopped = false;
  /** Only at the sync site with failback: automatic. */
  private readonly failback: FailbackWatch | undefined;
  private failbackRun: Promise<void> | null = null;

  constructor(private readonly d: AgentDeps) {
    this.settings = d.topology.failover!;
    this.startedAt = d.now();
    this.sinceValue = d.wallNow();
    this.stateValue = d.role === 'async' ? 'observer' : 'standby';
    if (d.role === 'async') this.reasonValue = 'the async site takes no part in the arbitration';
    if (d.role === 'sync' && this.settings.mode === 'automatic' && this.settings.failback === 'automatic') {
      this.failback = new FailbackWatch({
        topology: d.topology, site: d.site, delayMs: this.settings.failbackDelayMs, now: d.now, primaryView: d.primaryView,
        failBack: d.failBackToPrimary, events: d.events, log: d.log,
      });
    }
  }

  get contender(): boolean {
    return this.d.role !== 'async' && this.settings.mode === 'automatic';
  }

  start(): void {
    if (!this.contender) return;
    this.schedule(0);
  }

  async stop(release: boolean): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking?.catch(() => undefined);
    await this.failoverRun?.catch(() => undefined);
    await this.failbackRun?.catch(() => undefined);
    if (release && this.holding) await this.d.arbiter.release().catch(() => undefined);
    this.holding = false;
    await this.d.arbiter.close();
  }

  /** Why host writes of `volume` are refused now because of the arbiter, or undefined. */
  gate(volume: string): string | undefined {
    if (!this.contender || !this.d.topology.volumes.some((v) => v.name === volume)) return undefined;
    const now = this.d.now();
    if (this.holding && now <= this.validUntil) return undefined;
    const t = this.d.topology.name;
    if (this.holding && this.settings.onArbiterLost === 'continue' && this.unreachableSince !== null) return undefined;
    if (this.holding) {
      return `site ${this.d.site} could not renew its hold of the arbiter of topology ${t} (${this.d.arbiter.description}) in time: host writes are refused until it renews`;
    }
    return this.holder && this.holder !== this.d.site
      ? `site ${this.holder} holds the arbiter of topology ${t}: host writes at ${this.d.site} are refused`
      : `site ${this.d.site} does not hold the arbiter of topology ${t} (${this.reasonValue}): host writes are refused`;
  }

  status(): FailoverStatus {
    return {
      topology: this.d.topology.name, site: this.d.site, role: this.d.role, arbiter: this.d.arbiter.description,
      state: this.stateValue, holder: this.holder,
      writesAllowed: this.d.topology.volumes.every((v) => this.gate(v.name) === undefined),
      holdValidUntil: this.holding ? new Date(this.d.wallNow() + (this.validUntil - this.d.now())).toISOString() : null,
      leaseMs: this.settings.leaseMs, renewMs: this.settings.renewMs, fenceMarginMs: this.settings.fenceMarginMs,
      onArbiterLost: this.settings.onArbiterLost, reason: this.reasonValue, since: new Date(this.sinceValue).toISOString(),
      failback: {
        mode: this.settings.failback, delayMs: this.settings.failbackDelayMs,
        state: this.failback?.state ?? 'idle',
        reason: this.failback?.reason ?? failbackReasonWithoutWatch(this.settings.failback),
      },
    };
  }

  /** One round now (tests, and right after a change the agent should not wait a renew interval for). */
  async tick(): Promise<void> {
    if (this.ticking) return this.ticking;
    this.ticking = this.round().then(() => this.watchFailback()).finally(() => {
      this.ticking = null;
    });
    return this.ticking;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      void this.tick().catch((err: unknown) => this.d.log.error({ err: errorMessage(err) }, 'failover agent round failed')).finally(() => this.schedule(this.settings.renewMs));
    }, delayMs);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    if (this.stopped) return;
    if (this.holding) return this.renew();
    let read;
    try {
      read = await this.d.arbiter.read();
      this.reachable();
    } catch (err) {
      this.unreachable(err);
      return;
    }
    const v = read.value;
    const active = this.applicationRunsHere();
    this.holder = v?.kind === 'hold' ? v.site : null;
    if (read.raw === null) this.freeSince ??= this.d.now();
    else this.freeSince = null;
    if (v === null && read.raw === null) {
      if (active) return this.claim(null, 'the arbiter was free and the application runs here');
      if (this.mayTakeOver()) return this.takeOver();
      const wait = this.d.role === 'sync' ? (this.d.now() - this.startedAt < this.settings.leaseMs ? ' (it waits one lease after starting, so the primary can claim it first)' : '') : '';
      return this.set('standby', `nobody holds the arbiter; the application does not run at ${this.d.site}${wait}`);
    }
    if (v?.kind === 'released') {
      if (active) return this.claim(read.raw, `${v.site} released the arbiter and the application runs here now`);
      return this.set('standby', `${v.site} released the arbiter; the application does not run at ${this.d.site}`);
    }
    if (v?.kind === 'hold' && v.site === this.d.site) {
      // This site's hold from before the node restarted: the application still runs here.
      if (active) return this.claim(read.raw, 'reclaimed this site\'s hold from before a restart');
      return this.set('standby', `this site held the arbiter before a restart, but the application does not run here now`);
    }
    const by = v ? v.site : 'something tricopy did not write';
    if (active) return this.set('lost', `${by} holds the arbiter: this site stays fenced; bring it back with tricopy topology failback --to ${this.d.site}`, 'arbiter-lost');
    return this.set('standby', `${by} holds the arbiter`);
  }

  /**
   * Automatic failback: only the holder acts, and only while the application runs here and no
   * takeover is under way. It runs beside the rounds (a failback takes as long as the copy back;
   * the hold must go on being renewed meanwhile).
   */
  private watchFailback(): void {
    const w = this.failback;
    if (!w || this.failbackRun || this.stopped) return;
    if (!this.holding || this.takingOver || this.d.now() > this.validUntil) return w.standDown(`${this.d.site} does not hold the arbiter now`);
    if (!this.applicationRunsHere()) return w.standDown(`the application does not run at ${this.d.site}`);
    this.failbackRun = w.round()
      .catch((err: unknown) => this.d.log.error({ err: errorMessage(err) }, 'automatic failback round failed'))
      .finally(() => {
        this.failbackRun = null;
      });
  }

  private async renew(): Promise<void> {
    let renewed: number | 'lost';
    try {
      renewed = await this.d.arbiter.renew();
      this.reachable();
    } catch (err) {
      this.unreachable(err);
      if (this.d.now() > this.validUntil) {
        if (this.settings.onArbiterLost === 'continue') {
          this.set('holding', `the arbiter (${this.d.arbiter.description}) cannot be reached: writes go on as configured (arbiter-lost: continue; fence data keeps them on the sync site)`, 'arbiter-unreachable-continuing');
        } else {
          this.set('fenced', `the hold of the arbiter (${this.d.arbiter.description}) could not be renewed within the lease: host writes are refused until it is`, 'arbiter-fenced');
        }
      }
      return;
    }
    if (renewed === 'lost') {
      this.holding = false;
      this.set('standby', 'the arbiter\'s lease expired before it was renewed: this site no longer holds it', 'arbiter-expired');
      return this.round();
    }
    this.validUntil = renewed + this.settings.leaseMs - this.settings.fenceMarginMs;
    if (this.stateValue !== 'holding' && this.stateValue !== 'taking-over') this.set('holding', 'the hold is renewed again: host writes are accepted', 'arbiter-renewed');
    // The application moved away (a failback): the hold goes to the site where it runs now.
    if (!this.takingOver && !this.applicationRunsHere()) {
      try {
        await this.d.arbiter.release();
        this.holding = false;
        this.holder = null;
        this.set('standby', `the application no longer runs at ${this.d.site}: released the arbiter for the site where it runs`, 'arbiter-released');
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'releasing the arbiter failed; retrying');
      }
    }
  }

  private async claim(expected: string | null, why: string): Promise<void> {
    let sentAt: number | null;
    try {
      sentAt = await this.d.arbiter.claim(expected);
    } catch (err) {
      this.unreachable(err);
      return;
    }
    if (sentAt === null) return this.set('standby', 'another site claimed the arbiter first');
    this.hold(sentAt);
    this.set('holding', `holds the arbiter: ${why}`, 'arbiter-acquired');
  }

  /**
   * The sync site claims a free arbiter only once it has run for a lease (the primary had its
   * chance to claim it first), has seen it free for two renew intervals (a primary that still runs
   * and reaches the arbiter claims it again within one: an outage of the arbiter alone moves
   * nothing), and not right after a failed takeover.
   */
  private mayTakeOver(): boolean {
    const now = this.d.now();
    return this.d.role === 'sync' && !this.takingOver && now - this.startedAt >= this.settings.leaseMs && now >= this.retryTakeoverAt &&
      this.freeSince !== null && now - this.freeSince >= 2 * this.settings.renewMs;
  }

  /** The sync site holds the arbiter (the primary's lease expired): fail over to it. */
  private async takeOver(): Promise<void> {
    let sentAt: number | null;
    try {
      sentAt = await this.d.arbiter.claim(null);
    } catch (err) {
      this.unreachable(err);
      return;
    }
    if (sentAt === null) return this.set('standby', 'another site claimed the arbiter first');
    this.hold(sentAt);
    this.takingOver = true;
    this.set('taking-over', `holds the arbiter after the primary's lease expired: failing over to ${this.d.site} (spec 001 Fig. 10)`, 'failover-started');
    // The procedure runs beside the rounds, which go on renewing the hold meanwhile.
    this.failoverRun = this.runFailover();
  }

  private async runFailover(): Promise<void> {
    const started = this.d.now();
    const lines: string[] = [];
    try {
      await this.d.failOverHere((line) => {
        lines.push(line);
        this.d.log.info({ topology: this.d.topology.name }, line);
      });
      this.set('holding', `failed over to ${this.d.site} in ${((this.d.now() - started) / 1000).toFixed(1)} s: the application may run here`, 'failover-finished');
    } catch (err) {
      this.retryTakeoverAt = this.d.now() + 3 * this.settings.leaseMs;
      this.set('standby', `the failover to ${this.d.site} failed: ${errorMessage(err)}; released the arbiter`, 'failover-failed');
      this.holding = false;
      await this.d.arbiter.release().catch(() => undefined);
    } finally {
      this.takingOver = false;
      this.failoverRun = null;
    }
  }

  private hold(sentAt: number): void {
    this.holding = true;
    this.holder = this.d.site;
    this.validUntil = sentAt + this.settings.leaseMs - this.settings.fenceMarginMs;
  }

  /** The application runs here: every topology volume is here and its pairs let hosts write it by their roles. */
  applicationRunsHere(): boolean {
    return applicationRunsHere(this.d.topology, this.d.pairs(), this.d.hasVolume);
  }

  private reachable(): void {
    if (this.unreachableSince === null) return;
    this.unreachableSince = null;
    this.d.events.emit('arbiter-reachable', this.d.topology.name, `the arbiter (${this.d.arbiter.description}) answers again`, { site: this.d.site });
  }

  private unreachable(err: unknown): void {
    this.freeSince = null;
    if (this.unreachableSince === null) {
      this.unreachableSince = this.d.now();
      this.d.events.emit('arbiter-unreachable', this.d.topology.name, `the arbiter cannot be reached: ${errorMessage(err)}`, { site: this.d.site, holding: this.holding });
    }
    if (!this.holding) this.set('unreachable', `the arbiter (${this.d.arbiter.description}) cannot be reached: nothing is decided without it`);
  }

  private set(state: ArbiterState, reason: string, eventKind?: string): void {
    const changed = state !== this.stateValue || reason !== this.reasonValue;
    if (state !== this.stateValue) this.sinceValue = this.d.wallNow();
    this.stateValue = state;
    this.reasonValue = reason;
    if (changed && eventKind) {
      this.d.events.emit(eventKind, this.d.topology.name, reason, { site: this.d.site, role: this.d.role, state, holder: this.holder });
    } else if (changed && state !== 'standby') {
      this.d.log.info({ topology: this.d.topology.name, state }, reason);
    }
  }
}
