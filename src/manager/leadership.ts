// Which manager leads. With the embedded store there is one manager and it always leads. With etcd,
// managers claim one leader key attached to a lease with a TTL: the first to create it leads, keeps
// the lease alive while it runs, and loses it when it dies (the lease expires after the TTL) or
// cannot reach etcd; the others watch the key and claim it as soon as it is gone. No consensus of
// our own: etcd decides. Every manager also announces its address under managers/ (same lease),
// so nodes learn every address they can report to.
import { randomUUID } from 'node:crypto';
import type { Lease, Watcher } from 'etcd3';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { EtcdKv } from './store/etcd-kv';

export type LeadershipListener = (leading: boolean) => void;

export interface Leadership {
  isLeader(): boolean;
  leaderUrl(): string | null;
  /** Every manager's address (this one included). */
  managers(): Promise<string[]>;
  onChange(listener: LeadershipListener): void;
  start(): Promise<void>;
  stop(): Promise<void>;
}

export class SoleLeadership implements Leadership {
  constructor(private readonly url: string) {}
  isLeader(): boolean {
    return true;
  }
  leaderUrl(): string {
    return this.url;
  }
  async managers(): Promise<string[]> {
    return [this.url];
  }
  onChange(listener: LeadershipListener): void {
    listener(true);
  }
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
}

const leaderKey = 'leader';
/** After losing etcd, wait this long before claiming again. */
const retryDelayMs = 1000;

export class EtcdLeadership implements Leadership {
  private readonly claim: string;
  private lease: Lease | null = null;
  private watcher: Watcher | null = null;
  private leading = false;
  private leader: string | null = null;
  private readonly listeners: LeadershipListener[] = [];
  private stopped = false;
  private campaigning = false;

  constructor(private readonly kv: EtcdKv, private readonly url: string, private readonly ttlSeconds: number, private readonly log: Logger) {
    this.claim = JSON.stringify({ url, instance: randomUUID() });
    kv.guard = { key: leaderKey, value: () => (this.leading ? this.claim : null) };
  }

  isLeader(): boolean {
    return this.leading;
  }

  leaderUrl(): string | null {
    return this.leader;
  }

  async managers(): Promise<string[]> {
    const rows = await this.kv.list('managers/');
    return rows.map((r) => r.value).sort();
  }

  onChange(listener: LeadershipListener): void {
    this.listeners.push(listener);
  }

  async start(): Promise<void> {
    this.watcher = await this.kv.ns.watch().key(leaderKey).create();
    this.watcher.on('delete', () => {
      this.leader = null;
      void this.campaign();
    });
    this.watcher.on('put', (kv) => {
      this.leader = urlOf(kv.value.toString());
    });
    await this.campaign();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.watcher?.cancel().catch(() => undefined);
    // Revoking ends the claim at once: another manager leads without waiting for the TTL.
    await this.lease?.revoke().catch(() => undefined);
    this.setLeading(false);
  }

  /** Claims the leader key if nobody holds it; otherwise learns who leads and waits for its key to go. */
  private async campaign(): Promise<void> {
    if (this.stopped || this.campaigning || this.leading) return;
    this.campaigning = true;
    try {
      const lease = await this.ensureLease();
      const id = await lease.grant();
      await lease.put(`managers/${encodeURIComponent(this.url)}`).value(this.url);
      const result = await this.kv.ns.if(leaderKey, 'Create', '==', 0)
        .then(this.kv.ns.put(leaderKey).value(this.claim).lease(id))
        .else(this.kv.ns.get(leaderKey))
        .commit();
      if (result.succeeded) {
        this.leader = this.url;
        this.setLeading(true);
        return;
      }
      const current = result.responses[0]?.response_range?.kvs?.[0]?.value;
      this.leader = current ? urlOf(current.toString()) : null;
      this.log.info({ leader: this.leader }, 'another manager leads; following');
    } catch (err) {
      this.log.warn({ err: errorMessage(err) }, 'cannot claim the leadership; retrying');
      this.retryLater();
    } finally {
      this.campaigning = false;
    }
  }

  private async ensureLease(): Promise<Lease> {
    if (this.lease && !this.lease.revoked()) return this.lease;
    const lease = this.kv.ns.lease(this.ttlSeconds);
    lease.on('lost', (err) => {
      this.log.warn({ err: errorMessage(err) }, 'lost the etcd lease');
      if (this.lease === lease) this.lease = null;
      this.setLeading(false);
      this.retryLater();
    });
    this.lease = lease;
    return lease;
  }

  private retryLater(): void {
    if (this.stopped) return;
    setTimeout(() => void this.campaign(), retryDelayMs).unref();
  }

  private setLeading(leading: boolean): void {
    if (this.leading === leading) return;
    this.leading = leading;
    this.log.info({ leading }, leading ? 'this manager leads' : 'this manager no longer leads');
    for (const l of this.listeners) l(leading);
  }
}

function urlOf(claim: string): string | null {
  try {
    return (JSON.parse(claim) as { url?: string }).url ?? null;
  } catch {
    return null;
  }
}

/**
 * The leadership as the rest of the manager sees it: a manager that has won the claim leads only once
 * it has taken the lead (working state loaded, its leading recorded), so nothing acts on state it
 * has not read, and `leader: true` in its info means it answers as the leader.
 */
export class ReadyLeadership implements Leadership {
  private ready = false;
  private readonly listeners: LeadershipListener[] = [];

  constructor(private readonly claim: Leadership, private readonly takeLead: () => Promise<void>, private readonly log: Logger) {}

  isLeader(): boolean {
    return this.ready && this.claim.isLeader();
  }

  /** True while this manager holds the claim but is still taking the lead. */
  takingLead(): boolean {
    return !this.ready && this.claim.isLeader();
  }

  leaderUrl(): string | null {
    return this.claim.leaderUrl();
  }

  managers(): Promise<string[]> {
    return this.claim.managers();
  }

  onChange(listener: LeadershipListener): void {
    this.listeners.push(listener);
  }

  /** Listens to the claim from here on (the embedded store's claim is won at once). */
  start(): Promise<void> {
    this.claim.onChange((leading) => {
      this.ready = false;
      if (!leading) return this.tell(false);
      void this.takeLead().then(() => {
        this.ready = this.claim.isLeader();
        if (this.ready) this.tell(true);
      }, (err: unknown) => this.log.error({ err: errorMessage(err) }, 'taking the lead failed'));
    });
    return this.claim.start();
  }

  stop(): Promise<void> {
    return this.claim.stop();
  }

  private tell(leading: boolean): void {
    for (const l of this.listeners) l(leading);
  }
}
