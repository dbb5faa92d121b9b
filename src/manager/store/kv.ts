// The manager's storage as its collections see it: an ordered key-value store of JSON documents with
// prefix scans and atomic batches. Two implementations: the embedded store (LevelDB in --data-dir)
// and etcd (shared by several managers). Keys are ASCII paths ("event/000000000042"); numbers in
// keys are zero-padded so that key order is numeric order.

export type KvOp = { type: 'put'; key: string; value: string } | { type: 'del'; key: string };

export interface RangeOptions {
  /** First key (inclusive); default the prefix itself. */
  gte?: string;
  limit?: number;
  /** Newest (highest key) first. */
  reverse?: boolean;
}

export interface KvStore {
  readonly kind: 'embedded' | 'etcd';
  get(key: string): Promise<string | undefined>;
  /** Applies every operation or none (and, with etcd, only while this manager leads). */
  batch(ops: KvOp[]): Promise<void>;
  list(prefix: string, options?: RangeOptions): Promise<Array<{ key: string; value: string }>>;
  close(): Promise<void>;
}

/** Zero-padded decimal, so that key order is numeric order. */
export function padNumber(n: number, width = 12): string {
  return String(n).padStart(width, '0');
}
