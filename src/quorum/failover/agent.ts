// The rounds of automatic failover when etcd is the arbiter (they plug into the shared agent,
// arbiter-agent.ts). The site where the application runs holds the arbiter and renews its hold; the
// sync site takes over only once it holds the arbiter.
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
import { type AgentBaseDeps, type AgentContext, ArbiterAgent, type ArbiterRounds } from './arbiter-agent';
import type { Arbiter } from './etcd-arbiter';

export interface AgentDeps extends AgentBaseDeps {
  arbiter: Arbiter;
}

/** The agent of a topology whose arbiter is etcd. */
export class FailoverAgent extends ArbiterAgent {
  constructor(d: AgentDeps) {
    super(d, (ctx) => new EtcdRounds(ctx, d.arbiter));
  }
}

class EtcdRounds implements ArbiterRounds {
  private holding = false;
  private validUntil = 0;
  private readonly startedAt: number;
  private unreachableSince: number | null = null;
  /** Since when this agent has seen the arbiter free (nobody holds it, no released marker). */
  private freeSince: number | null = null;
  /** A failed takeover is not tried again before this (monotonic ms). */
  private retryTakeoverAt = 0;
  private readonly d: AgentBaseDeps;

  constructor(private readonly ctx: AgentContext, private readonly arbiter: Arbiter) {
    this.d = ctx.deps;
    this.startedAt = this.d.now();
  }

  get description(): string {
    return this.arbiter.description;
  }

  refusal(): string | undefined {
    const now = this.d.now();
    if (this.holding && now <= this.validUntil) return undefined;
    const t = this.d.topology.name;
    if (this.holding && this.ctx.settings.onArbiterLost === 'continue' && this.unreachableSince !== null) return undefined;
    if (this.holding) {
      return `site ${this.d.site} could not renew its hold of the arbiter of topology ${t} (${this.arbiter.description}) in time: host writes are refused until it renews`;
    }
    const holder = this.ctx.holder;
    return holder && holder !== this.d.site
      ? `site ${holder} holds the arbiter of topology ${t}: host writes at ${this.d.site} are refused`
      : `site ${this.d.site} does not hold the arbiter of topology ${t} (${this.ctx.reason}): host writes are refused`;
  }

  holdValidUntil(): number | null {
    return this.holding ? this.validUntil : null;
  }

  notHolding(): string | undefined {
    if (!this.holding || this.ctx.failingOver || this.d.now() > this.validUntil) return `${this.d.site} does not hold the arbiter now`;
    return undefined;
  }

  async close(release: boolean): Promise<void> {
    if (release && this.holding) await this.arbiter.release().catch(() => undefined);
    this.holding = false;
    await this.arbiter.close();
  }

  async round(): Promise<void> {
    if (this.holding) return this.renew();
    let read;
    try {
      read = await this.arbiter.read();
      this.reachable();
    } catch (err) {
      this.unreachable(err);
      return;
    }
    const v = read.value;
    const active = this.ctx.applicationRunsHere();
    this.ctx.holder = v?.kind === 'hold' ? v.site : null;
    if (read.raw === null) this.freeSince ??= this.d.now();
    else this.freeSince = null;
    if (v === null && read.raw === null) {
      if (active) return this.claim(null, 'the arbiter was free and the application runs here');
      if (this.mayTakeOver()) return this.takeOver();
      const wait = this.d.role === 'sync' ? (this.d.now() - this.startedAt < this.ctx.settings.leaseMs ? ' (it waits one lease after starting, so the primary can claim it first)' : '') : '';
      return this.ctx.set('standby', `nobody holds the arbiter; the application does not run at ${this.d.site}${wait}`);
    }
    if (v?.kind === 'released') {
      if (active) return this.claim(read.raw, `${v.site} released the arbiter and the application runs here now`);
      return this.ctx.set('standby', `${v.site} released the arbiter; the application does not run at ${this.d.site}`);
    }
    if (v?.kind === 'hold' && v.site === this.d.site) {
      // This site's hold from before the node restarted: the application still runs here.
      if (active) return this.claim(read.raw, 'reclaimed this site\'s hold from before a restart');
      return this.ctx.set('standby', `this site held the arbiter before a restart, but the application does not run here now`);
    }
    const by = v ? v.site : 'something tricopy did not write';
    if (active) return this.ctx.set('lost', `${by} holds the arbiter: this site stays fenced; bring it back with tricopy topology failback --to ${this.d.site}`, 'arbiter-lost');
    return this.ctx.set('standby', `${by} holds the arbiter`);
  }

  private async renew(): Promise<void> {
    let renewed: number | 'lost';
    try {
      renewed = await this.arbiter.renew();
      this.reachable();
    } catch (err) {
      this.unreachable(err);
      if (this.d.now() > this.validUntil) {
        if (this.ctx.settings.onArbiterLost === 'continue') {
          this.ctx.set('holding', `the arbiter (${this.arbiter.description}) cannot be reached: writes go on as configured (arbiter-lost: continue; fence data keeps them on the sync site)`, 'arbiter-unreachable-continuing');
        } else {
          this.ctx.set('fenced', `the hold of the arbiter (${this.arbiter.description}) could not be renewed within the lease: host writes are refused until it is`, 'arbiter-fenced');
        }
      }
      return;
    }
    if (renewed === 'lost') {
      this.holding = false;
      this.ctx.set('standby', 'the arbiter\'s lease expired before it was renewed: this site no longer holds it', 'arbiter-expired');
      return this.round();
    }
    this.validUntil = renewed + this.ctx.settings.leaseMs - this.ctx.settings.fenceMarginMs;
    if (this.ctx.state !== 'holding' && this.ctx.state !== 'taking-over') this.ctx.set('holding', 'the hold is renewed again: host writes are accepted', 'arbiter-renewed');
    // The application moved away (a failback): the hold goes to the site where it runs now.
    if (!this.ctx.failingOver && !this.ctx.applicationRunsHere()) {
      try {
        await this.arbiter.release();
        this.holding = false;
        this.ctx.holder = null;
        this.ctx.set('standby', `the application no longer runs at ${this.d.site}: released the arbiter for the site where it runs`, 'arbiter-released');
      } catch (err) {
        this.d.log.warn({ err: errorMessage(err) }, 'releasing the arbiter failed; retrying');
      }
    }
  }

  private async claim(expected: string | null, why: string): Promise<void> {
    let sentAt: number | null;
    try {
      sentAt = await this.arbiter.claim(expected);
    } catch (err) {
      this.unreachable(err);
      return;
    }
    if (sentAt === null) return this.ctx.set('standby', 'another site claimed the arbiter first');
    this.hold(sentAt);
    this.ctx.set('holding', `holds the arbiter: ${why}`, 'arbiter-acquired');
  }

  /**
   * The sync site claims a free arbiter only once it has run for a lease (the primary had its
   * chance to claim it first), has seen it free for two renew intervals (a primary that still runs
   * and reaches the arbiter claims it again within one: an outage of the arbiter alone moves
   * nothing), and not right after a failed takeover.
   */
  private mayTakeOver(): boolean {
    const now = this.d.now();
    return this.d.role === 'sync' && !this.ctx.failingOver && now - this.startedAt >= this.ctx.settings.leaseMs && now >= this.retryTakeoverAt &&
      this.freeSince !== null && now - this.freeSince >= 2 * this.ctx.settings.renewMs;
  }

  /** The sync site holds the arbiter (the primary's lease expired): fail over to it. */
  private async takeOver(): Promise<void> {
    let sentAt: number | null;
    try {
      sentAt = await this.arbiter.claim(null);
    } catch (err) {
      this.unreachable(err);
      return;
    }
    if (sentAt === null) return this.ctx.set('standby', 'another site claimed the arbiter first');
    this.hold(sentAt);
    this.ctx.set('taking-over', `holds the arbiter after the primary's lease expired: failing over to ${this.d.site} (spec 001 Fig. 10)`, 'failover-started');
    this.ctx.startFailover({
      failed: async (err) => {
        this.retryTakeoverAt = this.d.now() + 3 * this.ctx.settings.leaseMs;
        this.ctx.set('standby', `the failover to ${this.d.site} failed: ${errorMessage(err)}; released the arbiter`, 'failover-failed');
        this.holding = false;
        await this.arbiter.release().catch(() => undefined);
      },
    });
  }

  private hold(sentAt: number): void {
    this.holding = true;
    this.ctx.holder = this.d.site;
    this.validUntil = sentAt + this.ctx.settings.leaseMs - this.ctx.settings.fenceMarginMs;
  }

  private reachable(): void {
    if (this.unreachableSince === null) return;
    this.unreachableSince = null;
    this.ctx.decide('arbiter-reachable', `the arbiter (${this.arbiter.description}) answers again`);
  }

  private unreachable(err: unknown): void {
    this.freeSince = null;
    if (this.unreachableSince === null) {
      this.unreachableSince = this.d.now();
      this.ctx.decide('arbiter-unreachable', `the arbiter cannot be reached: ${errorMessage(err)}`, { holding: this.holding });
    }
    if (!this.holding) this.ctx.set('unreachable', `the arbiter (${this.arbiter.description}) cannot be reached: nothing is decided without it`);
  }
}
