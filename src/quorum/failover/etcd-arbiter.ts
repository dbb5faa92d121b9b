// etcd as the arbiter of automatic failover (as Patroni does): one key per topology, naming the site
// that holds it, attached to a lease with the topology's TTL. Claims are compare-and-set
// transactions, so at most one site holds the key; a holder that stops renewing loses it when its
// lease expires in etcd. No consensus of ours: etcd decides.
//
//   claim     grant a lease, then put the key with it only if the key still holds what the claimant
//             saw (absent, a released marker, or this site's own hold from before a restart)
//   renew     one keepalive of the lease; etcd answering "expired" means the hold is gone
//   release   replace the key by a released marker on a lease of its own (not kept alive), then
//             revoke the hold's lease: the marker keeps the key from looking free until it expires
//
// Every call has a deadline. The etcd3 client is rebuilt after a failure, so its circuit breaker
// never keeps a recovered etcd unused.
import { randomUUID } from 'node:crypto';
import { Etcd3 } from 'etcd3';
import { TricopyError, errorMessage } from '../../common/errors';

export interface ArbiterValue {
  kind: 'hold' | 'released';
  site: string;
  /** The agent instance that holds it (a restarted node is a new instance). */
  instance: string;
  since: string;
  /** The lease of a hold (decimal string), so a restarted instance can end it. */
  lease?: string;
}

export interface ArbiterRead {
  value: ArbiterValue | null;
  /** The value exactly as stored (what a claim compares against). */
  raw: string | null;
}

/** What the failover agent needs of an arbiter. Every call rejects ('unavailable') when the arbiter cannot be reached. */
export interface Arbiter {
  readonly description: string;
  read(): Promise<ArbiterRead>;
  /**
   * Claims the arbiter if it still holds `expected` (null: nothing). Resolves with the time the claim
   * was sent when it succeeded (the hold lasts at least the lease from then), or null.
   */
  claim(expected: string | null): Promise<number | null>;
  /** Renews the hold; resolves with the time the renewal was sent, or 'lost' when the hold is gone. */
  renew(): Promise<number | 'lost'>;
  /** Gives the hold up, leaving a released marker for one lease. */
  release(): Promise<void>;
  close(): Promise<void>;
}

export interface EtcdArbiterOptions {
  endpoints: string[];
  /** The key's name space: one key per topology. */
  topology: string;
  site: string;
  leaseMs: number;
  /** Deadline of each call. */
  callTimeoutMs: number;
  /** The clock the times claim and renew resolve with are read from (monotonic in a node). */
  now?: () => number;
}

export class EtcdArbiter implements Arbiter {
  readonly description: string;
  private client: Etcd3;
  private readonly key: string;
  private readonly instance = randomUUID();
  private readonly ttlSeconds: number;
  private leaseId: string | null = null;
  private held: string | null = null;
  private readonly now: () => number;

  constructor(private readonly options: EtcdArbiterOptions) {
    this.description = `etcd ${options.endpoints.join(',')}`;
    this.key = `tricopy/failover/${options.topology}/holder`;
    this.ttlSeconds = Math.max(1, Math.round(options.leaseMs / 1000));
    this.now = options.now ?? Date.now;
    this.client = this.connect();
  }

  async read(): Promise<ArbiterRead> {
    const raw = await this.call('read', () => this.client.get(this.key).string());
    return { raw, value: raw === null ? null : parseValue(raw) };
  }

  async claim(expected: string | null): Promise<number | null> {
    const sentAt = this.now();
    const grant = await this.call('grant a lease', () => this.client.leaseClient.leaseGrant({ TTL: this.ttlSeconds, ID: 0 }, this.deadline()));
    const leaseId = String(grant.ID);
    const value = JSON.stringify({ kind: 'hold', site: this.options.site, instance: this.instance, since: new Date().toISOString(), lease: leaseId } satisfies ArbiterValue);
    const txn = expected === null ? this.client.if(this.key, 'Create', '==', 0) : this.client.if(this.key, 'Value', '==', expected);
    const result = await this.call('claim', () => txn.then(this.client.put(this.key).value(value).lease(leaseId)).commit());
    if (!result.succeeded) {
      await this.revoke(leaseId);
      return null;
    }
    this.leaseId = leaseId;
    this.held = value;
    // This site's hold from before a restart: its lease no longer holds the key; end it.
    const before = expected === null ? null : parseValue(expected);
    if (before?.kind === 'hold' && before.lease) await this.revoke(before.lease);
    return sentAt;
  }

  async renew(): Promise<number | 'lost'> {
    const leaseId = this.leaseId;
    if (leaseId === null) return 'lost';
    const sentAt = this.now();
    const ttl = await this.call('renew the lease', () => this.keepaliveOnce(leaseId));
    if (ttl <= 0) {
      this.leaseId = null;
      this.held = null;
      return 'lost';
    }
    return sentAt;
  }

  async release(): Promise<void> {
    const leaseId = this.leaseId;
    const held = this.held;
    this.leaseId = null;
    this.held = null;
    if (leaseId === null || held === null) return;
    const marker = await this.call('grant a lease', () => this.client.leaseClient.leaseGrant({ TTL: this.ttlSeconds, ID: 0 }, this.deadline()));
    const value = JSON.stringify({ kind: 'released', site: this.options.site, instance: this.instance, since: new Date().toISOString() } satisfies ArbiterValue);
    await this.call('release', () => this.client.if(this.key, 'Value', '==', held).then(this.client.put(this.key).value(value).lease(String(marker.ID))).commit());
    await this.revoke(leaseId);
  }

  async close(): Promise<void> {
    this.client.close();
  }

  private connect(): Etcd3 {
    // A channel of its own (no subchannel shared with an earlier client, whose connection may be the
    // one that stopped answering), and keepalive pings that find a dead connection.
    return new Etcd3({
      hosts: this.options.endpoints, dialTimeout: this.options.callTimeoutMs,
      grpcOptions: { 'grpc.use_local_subchannel_pool': 1, 'grpc.keepalive_time_ms': 1000, 'grpc.keepalive_timeout_ms': 1000 },
    });
  }

  private deadline(): { deadline: number } {
    return { deadline: Date.now() + this.options.callTimeoutMs };
  }

  private async revoke(leaseId: string): Promise<void> {
    await this.client.leaseClient.leaseRevoke({ ID: leaseId }, this.deadline()).catch(() => undefined);
  }

  /** One keepalive on the lease stream; the TTL etcd answers (0 or less: expired or revoked). */
  private async keepaliveOnce(leaseId: string): Promise<number> {
    const stream = await this.client.leaseClient.leaseKeepAlive(this.deadline());
    try {
      return await new Promise<number>((resolve, reject) => {
        stream.on('data', (res: { TTL: string | number }) => resolve(Number(res.TTL)));
        stream.on('error', reject);
        stream.write({ ID: leaseId });
      });
    } finally {
      stream.end();
    }
  }

  /** Runs an etcd call with a deadline; any failure is 'unavailable' and gives the next call a new client. */
  private async call<T>(what: string, op: () => Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.options.callTimeoutMs} ms`)), this.options.callTimeoutMs);
    });
    try {
      return await Promise.race([op(), timeout]);
    } catch (err) {
      this.client.close();
      this.client = this.connect();
      throw new TricopyError('unavailable', `arbiter ${this.description}: cannot ${what}: ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }
}

function parseValue(raw: string): ArbiterValue | null {
  try {
    const v = JSON.parse(raw) as Partial<ArbiterValue>;
    if ((v.kind === 'hold' || v.kind === 'released') && typeof v.site === 'string' && typeof v.instance === 'string') {
      return { kind: v.kind, site: v.site, instance: v.instance, since: typeof v.since === 'string' ? v.since : '', ...(typeof v.lease === 'string' ? { lease: v.lease } : {}) };
    }
  } catch {
    // not ours
  }
  return null;
}
