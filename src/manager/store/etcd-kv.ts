// The shared store: the same collections in etcd (Debian's etcd-server, the etcd3 client), under
// one key prefix. Only the leading manager writes: every batch is a transaction that first checks
// the leader key still holds this manager's claim, so a manager that lost its lease (paused,
// partitioned) can never overwrite what the new leader wrote.
import { Etcd3, type Namespace, Range } from 'etcd3';
import { TricopyError, errorMessage } from '../../common/errors';
import type { KvOp, KvStore, RangeOptions } from './kv';

/** etcd refuses transactions with more operations than this (its --max-txn-ops default). */
export const maxTxnOps = 128;

export interface WriteGuard {
  key: string;
  /** The value the key must hold for a write to apply; null refuses every write (not leading). */
  value(): string | null;
}

export class EtcdKv implements KvStore {
  readonly kind = 'etcd' as const;
  readonly ns: Namespace;
  guard: WriteGuard | null = null;

  constructor(readonly client: Etcd3, prefix: string) {
    this.ns = client.namespace(prefix);
  }

  static async connect(endpoints: string[], prefix: string): Promise<EtcdKv> {
    const client = new Etcd3({ hosts: endpoints, dialTimeout: 3000 });
    const kv = new EtcdKv(client, prefix);
    try {
      await kv.ns.get('meta/probe').string();
    } catch (err) {
      client.close();
      throw new TricopyError('unavailable', `cannot reach etcd at ${endpoints.join(', ')}: ${errorMessage(err)}`,
        'start etcd (Debian: apt-get install etcd-server) or check --etcd');
    }
    return kv;
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.ns.get(key).string()) ?? undefined;
  }

  async batch(ops: KvOp[]): Promise<void> {
    for (let i = 0; i < ops.length; i += maxTxnOps - 1) await this.commit(ops.slice(i, i + maxTxnOps - 1));
  }

  async list(prefix: string, options: RangeOptions = {}): Promise<Array<{ key: string; value: string }>> {
    const end = Range.prefix(prefix).end;
    let builder = this.ns.getAll().inRange(new Range(options.gte ?? prefix, end)).sort('Key', options.reverse ? 'Descend' : 'Ascend');
    if (options.limit !== undefined) builder = builder.limit(options.limit);
    const records = await builder.strings();
    const out = Object.entries(records).map(([key, value]) => ({ key, value }));
    // The map of the answer does not keep etcd's order.
    out.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    if (options.reverse) out.reverse();
    return out;
  }

  async close(): Promise<void> {
    this.client.close();
  }

  /** Stores `value` unless the key exists; returns what the key holds afterwards (any manager may call it). */
  async createIfAbsent(key: string, value: string): Promise<string> {
    const result = await this.ns.if(key, 'Create', '==', 0).then(this.ns.put(key).value(value)).else(this.ns.get(key)).commit();
    if (result.succeeded) return value;
    return result.responses[0]?.response_range?.kvs?.[0]?.value?.toString() ?? value;
  }

  private async commit(ops: KvOp[]): Promise<void> {
    if (ops.length === 0) return;
    const clauses = ops.map((op) => (op.type === 'put' ? this.ns.put(op.key).value(op.value) : this.ns.delete().key(op.key)));
    if (this.guard === null) {
      await this.ns.if('meta/none', 'Version', '==', 0).then(...clauses).else(...clauses).commit();
      return;
    }
    const value = this.guard.value();
    if (value === null) throw new TricopyError('unavailable', 'this manager does not lead: it cannot write', 'send writes to the leading manager');
    const result = await this.ns.if(this.guard.key, 'Value', '==', value).then(...clauses).commit();
    if (!result.succeeded) throw new TricopyError('unavailable', 'this manager lost the leadership before the write', 'retry: the new leader takes it');
  }
}
