// The embedded store: LevelDB (classic-level) in the manager's --data-dir. Chosen because it
// installs from the npm registry alone (its prebuilt binaries ship inside the package; nothing is
// downloaded or compiled at install time), writes through a write-ahead log (a crash loses no
// acknowledged batch once synced, and never leaves half a batch), and keeps keys ordered like etcd,
// so both stores share one shape. Every batch is written with sync: true.
import { ClassicLevel } from 'classic-level';
import { TricopyError, errorMessage } from '../../common/errors';
import type { KvOp, KvStore, RangeOptions } from './kv';

export class LevelKv implements KvStore {
  readonly kind = 'embedded' as const;

  private constructor(private readonly db: ClassicLevel<string, string>) {}

  static async open(dir: string): Promise<LevelKv> {
    const db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    try {
      await db.open();
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      if (cause?.code === 'LEVEL_LOCKED' || /lock/i.test(cause?.message ?? '')) {
        throw new TricopyError('busy', `the manager store in ${dir} is in use by another manager process`,
          'stop the other manager, or give this one its own --data-dir (use --store etcd for several managers)');
      }
      throw new TricopyError('io-error', `cannot open the manager store in ${dir}: ${errorMessage(cause ?? err)}`);
    }
    return new LevelKv(db);
  }

  async get(key: string): Promise<string | undefined> {
    return (await this.db.get(key)) ?? undefined;
  }

  async batch(ops: KvOp[]): Promise<void> {
    if (ops.length === 0) return;
    await this.db.batch(ops.map((op) => (op.type === 'put' ? { type: 'put', key: op.key, value: op.value } : { type: 'del', key: op.key })), { sync: true });
  }

  async list(prefix: string, options: RangeOptions = {}): Promise<Array<{ key: string; value: string }>> {
    const out: Array<{ key: string; value: string }> = [];
    const iterator = this.db.iterator({
      gte: options.gte ?? prefix, lt: `${prefix}\uffff`, reverse: options.reverse ?? false, limit: options.limit ?? -1,
    });
    for await (const [key, value] of iterator) out.push({ key, value });
    return out;
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
