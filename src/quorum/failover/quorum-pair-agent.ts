// The rounds of automatic failover when the arbiter is a spec 004 quorum pair between the primary
// and the sync site (they plug into the shared agent, arbiter-agent.ts). The node is the cluster software and the pair-volume
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
import type { AttributeView, QuorumPairState } from '../../contracts/quorum';
import { type PairVolumeControl, arbitrate } from '../host-control';
import { type AgentBaseDeps, type AgentContext, ArbiterAgent, type ArbiterRounds } from './arbiter-agent';

export interface LocalQuorumVolume {
  /** Step 113 at this node; throws when the volume does not exist here. */
  attribute(volume: string): AttributeView;
  /** Whether the storage link to the quorum pair's peer is up. */
  linkUp(volume: string): boolean;
  /** Fig. 10 (and the recovery from Suspend(error)), decided at the P-VOL's node. */
  split(volume: string): Promise<AttributeView>;
}

export interface QuorumAgentDeps extends AgentBaseDeps {
  /** The quorum volume's name (the pair is named after it). */
  volume: string;
  local: LocalQuorumVolume;
  /** This site's pair-volume control software over the local storage. */
  control: PairVolumeControl;
  /** The heartbeat over the hosts' network: resolves when the other contender's node answers. */
  heartbeat: () => Promise<void>;
}

/** The agent of a topology whose arbiter is a quorum pair. */
export class QuorumPairAgent extends ArbiterAgent {
  constructor(d: QuorumAgentDeps) {
    super(d, (ctx) => new QuorumPairRounds(ctx, d));
  }
}

class QuorumPairRounds implements ArbiterRounds {
  private readonly peerSite: string;
  /** The last time the other contender answered (monotonic ms); a fresh start counts as an answer. */
  private heardAt: number;
  private heartbeatUp = true;
  /** One arbitration per heartbeat loss (E11). */
  private arbitrated = false;
  /** This site won as the sync site and has not yet failed over to itself. */
  private failoverOwed = false;
  private retryFailoverAt = 0;

  constructor(private readonly ctx: AgentContext, private readonly d: QuorumAgentDeps) {
    this.heardAt = d.now();
    this.peerSite = d.role === 'primary' ? d.topology.sync.site : d.topology.primary.site;
  }

  get description(): string {
    return `quorum pair ${this.d.volume}`;
  }

  /** Why host writes are refused now because of the quorum pair, or undefined. */
  refusal(): string | undefined {
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
    if (a.attribute.state === 'suspend-error' && this.ctx.settings.onArbiterLost === 'fence') {
      return `the quorum pair ${this.d.volume} of topology ${t} is in Suspend(error): nothing can be arbitrated, so host writes at ${this.d.site} are refused until it is recovered (arbiter-lost: fence)`;
    }
    return undefined;
  }

  /** The quorum pair bounds no hold in time: the storage's commit fences the loser. */
  holdValidUntil(): null {
    return null;
  }

  notHolding(): string | undefined {
    if (this.ctx.holder !== this.d.site || this.failoverOwed || this.ctx.failingOver) return `${this.d.site} does not hold the quorum pair now`;
    return undefined;
  }

  /** Nothing to release: the quorum pair stays where the storage put it. */
  async close(): Promise<void> {
    return undefined;
  }

  async round(): Promise<void> {
    await this.beat();
    let a: AttributeView;
    try {
      a = this.d.local.attribute(this.d.volume);
    } catch (err) {
      this.ctx.holder = null;
      return this.ctx.set('unreachable', `the quorum volume ${this.d.volume} is not here (${errorMessage(err)}): topology apply creates it`);
    }
    const { role, state } = a.attribute;
    this.ctx.holder = role === 'pvol' ? this.d.site : role === 'svol' ? this.peerSite : null;
    if (role === 'simplex' || !state) {
      return this.ctx.set('unreachable', `${this.d.volume} is in no quorum pair (Simplex): nothing can be decided; topology apply creates the pair`, 'arbiter-unreachable');
    }
    // Heartbeat lost: arbitrate once, whatever the state looks like here — the storage decides (B11).
    // The holder first (a lease), so one that still runs keeps the arbiter against a racing sync site.
    const lostLongEnough = role === 'pvol' ? this.heartbeatLostFor(this.ctx.settings.leaseMs)
      : this.d.role === 'sync' && this.heartbeatLostFor(this.ctx.settings.leaseMs + 2 * this.ctx.settings.renewMs);
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
        this.ctx.decide('arbiter-ready', `quorum pair ${v} split back to Suspend(normal) (Fig. 10): the next failure can be arbitrated`);
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'splitting the quorum pair back failed; retrying');
      }
      return;
    }
    const here = this.ctx.applicationRunsHere();
    this.ctx.set('holding', here ? `holds the quorum pair ${v} (${label} here)` : `holds the quorum pair ${v} (${label} here); the application runs elsewhere: the site where it runs takes the quorum pair over`);
  }

  /** This site's quorum volume is the S-VOL. */
  private async asStandby(state: QuorumPairState, label: string): Promise<void> {
    const v = this.d.volume;
    if (state === 'suspend-error') {
      return this.ctx.set('unreachable', `the quorum pair ${v} is in Suspend(error) (${label} here): nothing can be arbitrated until the storage link to ${this.peerSite} is back and ${this.peerSite} recovers it`);
    }
    const here = this.ctx.applicationRunsHere();
    if (here && state === 'suspend-normal') {
      await this.arbitrate(`the application runs at ${this.d.site} now: taking the quorum pair over`);
      return;
    }
    this.ctx.set('standby', `${this.peerSite} holds the quorum pair ${v} (${label} here)${here ? `; the application runs here: it takes the quorum pair over once ${this.peerSite} splits it` : ''}`);
  }

  private async whileSuspendedByError(): Promise<void> {
    const v = this.d.volume;
    if (this.d.local.linkUp(v)) {
      try {
        await this.d.local.split(v);
        this.ctx.decide('arbiter-recovered', `the storage link to ${this.peerSite} is back: quorum pair ${v} split from Suspend(error) to Suspend(normal), failures can be arbitrated again`);
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'recovering the quorum pair failed; retrying');
      }
      return;
    }
    if (this.ctx.settings.onArbiterLost === 'continue') {
      return this.ctx.set('holding', `the quorum pair ${v} is in Suspend(error) (the storage link to ${this.peerSite} is down): nothing can be arbitrated; writes go on as configured (arbiter-lost: continue; fence data keeps them on the sync site)`, 'arbiter-unreachable-continuing');
    }
    return this.ctx.set('fenced', `the quorum pair ${v} is in Suspend(error) (the storage link to ${this.peerSite} is down): nothing can be arbitrated, so host writes are refused until it is recovered (arbiter-lost: fence)`, 'arbiter-fenced');
  }

  /** Fig. 5 (with the reset of Fig. 12) through this site's control software; whether it got GOOD. Both ends are events. */
  private async arbitrate(why: string): Promise<boolean> {
    this.arbitrated = true;
    this.ctx.decide('arbiter-contending', `${why} (spec 004 Fig. 5)`);
    const result = await arbitrate(this.d.control, { reset: true, split: false });
    const steps = result.steps.map((s) => (s.step ? `${s.step} ${s.what}` : s.what)).join('; ');
    if (result.status !== 'GOOD') {
      this.ctx.decide('arbiter-conflict', `RESERVATION CONFLICT: ${result.reason}`, { steps });
      return false;
    }
    this.ctx.decide('arbiter-acquired', `GOOD: ${result.reason}`, { steps });
    return true;
  }

  private failOverIfDue(): void {
    if (this.ctx.failingOver || this.d.now() < this.retryFailoverAt) return;
    this.ctx.set('taking-over', `holds the quorum pair ${this.d.volume} after ${this.peerSite}'s heartbeat was lost: failing over to ${this.d.site} (spec 001 Fig. 10)`, 'failover-started');
    this.ctx.startFailover({
      finished: () => {
        this.failoverOwed = false;
      },
      failed: async (err) => {
        const retryMs = 3 * this.ctx.settings.leaseMs;
        this.retryFailoverAt = this.d.now() + retryMs;
        this.ctx.set('holding', `the failover to ${this.d.site} failed: ${errorMessage(err)}; it is tried again in ${(retryMs / 1000).toFixed(0)} s`, 'failover-failed');
      },
    });
  }

  /** One heartbeat over the hosts' network; a loss and a return are events. */
  private async beat(): Promise<void> {
    try {
      await this.d.heartbeat();
    } catch (err) {
      if (this.heartbeatUp && this.heartbeatLostFor(this.ctx.settings.leaseMs)) {
        this.heartbeatUp = false;
        this.ctx.decide('heartbeat-lost', `${this.peerSite}'s node has not answered over the hosts' network for ${this.ctx.settings.leaseMs} ms: ${errorMessage(err)}`);
      }
      return;
    }
    this.heardAt = this.d.now();
    this.arbitrated = false;
    if (!this.heartbeatUp) {
      this.heartbeatUp = true;
      this.ctx.decide('heartbeat-restored', `${this.peerSite}'s node answers over the hosts' network again`);
    }
  }

  private heartbeatLostFor(ms: number): boolean {
    return this.d.now() - this.heardAt >= ms;
  }
}
