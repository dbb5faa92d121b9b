// One node's part in the automatic failover of one topology whose arbiter is a spec 004 quorum pair
// between the primary and the sync site. The node is the cluster software and the pair-volume
// control software of spec 004 in one (Figs. 5–6 through the local storage); the heartbeat goes over
// the hosts' network: each contender asks the other contender's node (its control API, as the
// topology file names it) every `renew`. The storage decides: a site "holds" the arbiter while its
// quorum volume is the P-VOL.
//
// Every `renew`:
//   this site's quorum volume is …
//   P-VOL, Suspend(error)   the storage link is down: nothing can be arbitrated. With the link back:
//                           split to Suspend(normal) (the recovery of E3). Meanwhile arbiter-lost:
//                           fence refuses host writes, continue goes on (only with fence data).
//   P-VOL, won as the sync  run the failover to this site (Fig. 10 and the async leg); a failed one
//   site, not failed over   is tried again after three leases
//   P-VOL, Pair             split back to Suspend(normal) once the heartbeat answers (B10): while
//                           it does not, the pair stays in Pair, so nobody can win it from us (E1)
//   P-VOL, Suspend(normal)  heartbeat lost for a lease: arbitrate (pair resync, row 4) — first, so
//                           a holder that still runs keeps the arbiter against a racing sync site
//   S-VOL, Suspend(normal)  the application runs here (a failback moved it): arbitrate (swap
//                           resync, row 17) to take the arbiter over. At the sync site, heartbeat
//                           lost for a lease + two renew intervals: arbitrate; GOOD → take over
//   S-VOL, other states     stand by; Suspend(error): nothing can be decided (E3, E6, E7)
//
// Arbitration is Fig. 5 with a bus device reset first (Fig. 12): reserve the local volume, ask its
// attribute, send the one command that can win, GOOD only on a normal end. Only one command per
// Suspend(normal) period commits (§5.3), at the P-VOL's node (§6.3), and a command whose peer
// cannot be reached ends abnormally (B6): with the storage link cut, nothing fails over; with the
// primary's node gone, nothing fails over either (E7). One arbitration per heartbeat loss (E11).
//
// Host writes of the topology's volumes are accepted only while this site's quorum volume is the
// P-VOL (asked when a write starts and before it is acknowledged): the swap resync that makes the
// sync site the winner is committed at this node first, so this site stops at that moment.
import { errorMessage } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import type { Logger } from '../../common/log';
import type { ArbiterState, FailoverStatus } from '../../contracts/failover';
import type { PairStatus } from '../../contracts/pairs';
import type { AttributeView, QuorumPairState } from '../../contracts/quorum';
import type { FailoverSettings, Topology } from '../../topology/topology-file';
import { type PairVolumeControl, arbitrate } from '../host-control';
import { applicationRunsHere, failbackReasonWithoutWatch } from './application';
import { FailbackWatch } from './failback-watch';

export interface LocalQuorumVolume {
  /** Step 113 at this node; throws when the volume does not exist here. */
  attribute(volume: string): AttributeView;
  /** Whether the storage link to the quorum pair's peer is up. */
  linkUp(volume: string): boolean;
  /** Fig. 10 (and the recovery from Suspend(error)), decided at the P-VOL's node. */
  split(volume: string): Promise<AttributeView>;
}

export interface QuorumAgentDeps {
  topology: Topology;
  site: string;
  role: 'primary' | 'sync' | 'async';
  /** The quorum volume's name (the pair is named after it). */
  volume: string;
  local: LocalQuorumVolume;
  /** This site's pair-volume control software over the local storage. */
  control: PairVolumeControl;
  /** The heartbeat over the hosts' network: resolves when the other contender's node answers. */
  heartbeat: () => Promise<void>;
  /** Monotonic milliseconds. */
  now: () => number;
  wallNow: () => number;
  pairs: () => PairStatus[];
  hasVolume: (name: string) => boolean;
  failOverHere: (print: (line: string) => void) => Promise<void>;
  primaryView: () => Promise<FailoverStatus | undefined>;
  failBackToPrimary: (print: (line: string) => void) => Promise<void>;
  events: EventJournal;
  log: Logger;
}

export class QuorumPairAgent {
  readonly settings: FailoverSettings;
  private stateValue: ArbiterState;
  private reasonValue = 'starting';
  private sinceValue: number;
  private holder: string | null = null;
  private readonly peerSite: string;
  /** The last time the other contender answered (monotonic ms); a fresh start counts as an answer. */
  private heardAt: number;
  private heartbeatUp = true;
  /** One arbitration per heartbeat loss (E11). */
  private arbitrated = false;
  /** This site won as the sync site and has not yet failed over to itself. */
  private failoverOwed = false;
  private retryFailoverAt = 0;
  private failoverRun: Promise<void> | null = null;
  private readonly failback: FailbackWatch | undefined;
  private failbackRun: Promise<void> | null = null;
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> | null = null;
  private stopped = false;

  constructor(private readonly d: QuorumAgentDeps) {
    this.settings = d.topology.failover!;
    this.sinceValue = d.wallNow();
    this.heardAt = d.now();
    this.peerSite = d.role === 'primary' ? d.topology.sync.site : d.topology.primary.site;
    this.stateValue = d.role === 'async' ? 'observer' : 'standby';
    if (d.role === 'async') this.reasonValue = 'the async site takes no part in the arbitration';
    if (d.role === 'sync' && this.settings.failback === 'automatic') {
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
    if (this.contender) this.schedule(0);
  }

  /** Nothing to release (`_release` is the etcd agent's): the quorum pair stays where the storage put it. */
  async stop(_release = false): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking?.catch(() => undefined);
    await this.failoverRun?.catch(() => undefined);
    await this.failbackRun?.catch(() => undefined);
  }

  /** Why host writes of `volume` are refused now because of the quorum pair, or undefined. */
  gate(volume: string): string | undefined {
    if (!this.contender || !this.d.topology.volumes.some((v) => v.name === volume)) return undefined;
    const t = this.d.topology.name;
    let a: AttributeView;
    try {
      a = this.d.local.attribute(this.d.volume);
    } catch (err) {
      return `the quorum volume ${this.d.volume} of topology ${t} is not here (${errorMessage(err)}): host writes at ${this.d.site} are refused`;
    }
    if (a.attribute.role !== 'pvol') {
      return `${this.peerSite} holds the quorum pair ${this.d.volume} of topology ${t} (it is ${a.label} here): host writes at ${this.d.site} are refused`;
    }
    if (a.attribute.state === 'suspend-error' && this.settings.onArbiterLost === 'fence') {
      return `the quorum pair ${this.d.volume} of topology ${t} is in Suspend(error): nothing can be arbitrated, so host writes at ${this.d.site} are refused until it is recovered (arbiter-lost: fence)`;
    }
    return undefined;
  }

  status(): FailoverStatus {
    return {
      topology: this.d.topology.name, site: this.d.site, role: this.d.role, arbiter: `quorum pair ${this.d.volume}`,
      state: this.stateValue, holder: this.holder,
      writesAllowed: this.d.topology.volumes.every((v) => this.gate(v.name) === undefined),
      holdValidUntil: null,
      leaseMs: this.settings.leaseMs, renewMs: this.settings.renewMs, fenceMarginMs: this.settings.fenceMarginMs,
      onArbiterLost: this.settings.onArbiterLost, reason: this.reasonValue, since: new Date(this.sinceValue).toISOString(),
      failback: {
        mode: this.settings.failback, delayMs: this.settings.failbackDelayMs, state: this.failback?.state ?? 'idle',
        reason: this.failback?.reason ?? failbackReasonWithoutWatch(this.settings.failback),
      },
    };
  }

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
      void this.tick().catch((err: unknown) => this.d.log.error({ err: errorMessage(err) }, 'quorum failover agent round failed')).finally(() => this.schedule(this.settings.renewMs));
    }, delayMs);
    this.timer.unref();
  }

  private async round(): Promise<void> {
    if (this.stopped) return;
    await this.beat();
    let a: AttributeView;
    try {
      a = this.d.local.attribute(this.d.volume);
    } catch (err) {
      this.holder = null;
      return this.set('unreachable', `the quorum volume ${this.d.volume} is not here (${errorMessage(err)}): topology apply creates it`);
    }
    const { role, state } = a.attribute;
    this.holder = role === 'pvol' ? this.d.site : role === 'svol' ? this.peerSite : null;
    if (role === 'simplex' || !state) {
      return this.set('unreachable', `${this.d.volume} is in no quorum pair (Simplex): nothing can be decided; topology apply creates the pair`, 'arbiter-unreachable');
    }
    // Heartbeat lost: arbitrate once, whatever the state looks like here — the storage decides (B11).
    // The holder first (a lease), so one that still runs keeps the arbiter against a racing sync site.
    const lostLongEnough = role === 'pvol' ? this.heartbeatLostFor(this.settings.leaseMs)
      : this.d.role === 'sync' && this.heartbeatLostFor(this.settings.leaseMs + 2 * this.settings.renewMs);
    if (lostLongEnough && !this.arbitrated && !this.failoverOwed) {
      const won = await this.arbitrate(role === 'pvol' ? `the heartbeat of ${this.peerSite} is lost: defending the arbiter`
        : `the heartbeat of ${this.peerSite} is lost: contending for the arbiter to take over`);
      if (won && role === 'svol') this.failoverOwed = true;
      return this.round();
    }
    if (role === 'pvol') return this.asOwner(state, a.label);
    this.failoverOwed = false;
    return this.asStandby(state, a.label);
  }

  /** This site's quorum volume is the P-VOL. */
  private async asOwner(state: QuorumPairState, label: string): Promise<void> {
    const v = this.d.volume;
    if (state === 'suspend-error') return this.whileSuspendedByError();
    if (this.failoverOwed) return this.failOverIfDue();
    if (state === 'pair' && this.heartbeatUp) {
      try {
        await this.d.local.split(v);
        this.d.events.emit('arbiter-ready', this.d.topology.name, `quorum pair ${v} split back to Suspend(normal) (Fig. 10): the next failure can be arbitrated`, { site: this.d.site });
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'splitting the quorum pair back failed; retrying');
      }
      return;
    }
    const here = applicationRunsHere(this.d.topology, this.d.pairs(), this.d.hasVolume);
    this.set('holding', here ? `holds the quorum pair ${v} (${label} here)` : `holds the quorum pair ${v} (${label} here); the application runs elsewhere: the site where it runs takes the quorum pair over`);
  }

  /** This site's quorum volume is the S-VOL. */
  private async asStandby(state: QuorumPairState, label: string): Promise<void> {
    const v = this.d.volume;
    if (state === 'suspend-error') {
      return this.set('unreachable', `the quorum pair ${v} is in Suspend(error) (${label} here): nothing can be arbitrated until the storage link to ${this.peerSite} is back and ${this.peerSite} recovers it`);
    }
    const here = applicationRunsHere(this.d.topology, this.d.pairs(), this.d.hasVolume);
    if (here && state === 'suspend-normal') {
      await this.arbitrate(`the application runs at ${this.d.site} now: taking the quorum pair over`);
      return;
    }
    this.set('standby', `${this.peerSite} holds the quorum pair ${v} (${label} here)${here ? `; the application runs here: it takes the quorum pair over once ${this.peerSite} splits it` : ''}`);
  }

  private async whileSuspendedByError(): Promise<void> {
    const v = this.d.volume;
    if (this.d.local.linkUp(v)) {
      try {
        await this.d.local.split(v);
        this.d.events.emit('arbiter-recovered', this.d.topology.name, `the storage link to ${this.peerSite} is back: quorum pair ${v} split from Suspend(error) to Suspend(normal), failures can be arbitrated again`, { site: this.d.site });
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'recovering the quorum pair failed; retrying');
      }
      return;
    }
    if (this.settings.onArbiterLost === 'continue') {
      return this.set('holding', `the quorum pair ${v} is in Suspend(error) (the storage link to ${this.peerSite} is down): nothing can be arbitrated; writes go on as configured (arbiter-lost: continue; fence data keeps them on the sync site)`, 'arbiter-unreachable-continuing');
    }
    return this.set('fenced', `the quorum pair ${v} is in Suspend(error) (the storage link to ${this.peerSite} is down): nothing can be arbitrated, so host writes are refused until it is recovered (arbiter-lost: fence)`, 'arbiter-fenced');
  }

  /** Fig. 5 (with the reset of Fig. 12) through this site's control software; whether it got GOOD. Both ends are events. */
  private async arbitrate(why: string): Promise<boolean> {
    this.arbitrated = true;
    this.d.events.emit('arbiter-contending', this.d.topology.name, `${why} (spec 004 Fig. 5)`, { site: this.d.site });
    const result = await arbitrate(this.d.control, { reset: true, split: false });
    const steps = result.steps.map((s) => (s.step ? `${s.step} ${s.what}` : s.what)).join('; ');
    if (result.status !== 'GOOD') {
      this.d.events.emit('arbiter-conflict', this.d.topology.name, `RESERVATION CONFLICT: ${result.reason}`, { site: this.d.site, steps });
      return false;
    }
    this.d.events.emit('arbiter-acquired', this.d.topology.name, `GOOD: ${result.reason}`, { site: this.d.site, steps });
    return true;
  }

  private failOverIfDue(): void {
    if (this.failoverRun || this.d.now() < this.retryFailoverAt) return;
    this.set('taking-over', `holds the quorum pair ${this.d.volume} after ${this.peerSite}'s heartbeat was lost: failing over to ${this.d.site} (spec 001 Fig. 10)`, 'failover-started');
    // Beside the rounds, which go on looking at the quorum pair and the heartbeat meanwhile.
    this.failoverRun = this.runFailover().finally(() => {
      this.failoverRun = null;
    });
  }

  private async runFailover(): Promise<void> {
    const started = this.d.now();
    try {
      await this.d.failOverHere((line) => this.d.log.info({ topology: this.d.topology.name }, line));
      this.failoverOwed = false;
      this.set('holding', `failed over to ${this.d.site} in ${((this.d.now() - started) / 1000).toFixed(1)} s: the application may run here`, 'failover-finished');
    } catch (err) {
      this.retryFailoverAt = this.d.now() + 3 * this.settings.leaseMs;
      this.set('holding', `the failover to ${this.d.site} failed: ${errorMessage(err)}; it is tried again in ${(3 * this.settings.leaseMs / 1000).toFixed(0)} s`, 'failover-failed');
    }
  }

  /** Automatic failback, as with etcd: only the holder acts, while the application runs here. */
  private watchFailback(): void {
    const w = this.failback;
    if (!w || this.failbackRun || this.stopped) return;
    if (this.holder !== this.d.site || this.failoverOwed || this.failoverRun) return w.standDown(`${this.d.site} does not hold the quorum pair now`);
    if (!applicationRunsHere(this.d.topology, this.d.pairs(), this.d.hasVolume)) return w.standDown(`the application does not run at ${this.d.site}`);
    this.failbackRun = w.round()
      .catch((err: unknown) => this.d.log.error({ err: errorMessage(err) }, 'automatic failback round failed'))
      .finally(() => {
        this.failbackRun = null;
      });
  }

  /** One heartbeat over the hosts' network; a loss and a return are events. */
  private async beat(): Promise<void> {
    try {
      await this.d.heartbeat();
    } catch (err) {
      if (this.heartbeatUp && this.heartbeatLostFor(this.settings.leaseMs)) {
        this.heartbeatUp = false;
        this.d.events.emit('heartbeat-lost', this.d.topology.name, `${this.peerSite}'s node has not answered over the hosts' network for ${this.settings.leaseMs} ms: ${errorMessage(err)}`, { site: this.d.site });
      }
      return;
    }
    this.heardAt = this.d.now();
    this.arbitrated = false;
    if (!this.heartbeatUp) {
      this.heartbeatUp = true;
      this.d.events.emit('heartbeat-restored', this.d.topology.name, `${this.peerSite}'s node answers over the hosts' network again`, { site: this.d.site });
    }
  }

  private heartbeatLostFor(ms: number): boolean {
    return this.d.now() - this.heardAt >= ms;
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
