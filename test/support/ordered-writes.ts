// A write workload whose every block records the global sequence number of the write that produced
// it, so a test can tell exactly which writes a volume holds: "every acknowledged write is there",
// or "the volume is an exact prefix of the write history" (async replication).
import { createHash } from 'node:crypto';
import type { NbdClient } from '../../src/nbd/client';

const magic = 0x7472636f; // "trco"
export const headerBytes = 32;

export interface IssuedWrite {
  seq: number;
  volume: number;
  block: number;
  acked: boolean;
  /** Logical time the write was issued and acknowledged (one clock for both). */
  issuedAt: number;
  ackedAt: number;
}

export function encodeBlock(blockSize: number, seq: number, volume: number, block: number): Buffer {
  const b = Buffer.alloc(blockSize);
  b.writeUInt32BE(magic, 0);
  b.writeUInt32BE(seq, 4);
  b.writeUInt32BE(volume, 8);
  b.writeUInt32BE(block, 12);
  // Fill so that torn or stale data is detected by the digest.
  for (let at = headerBytes; at + 4 <= blockSize; at += 4) b.writeUInt32BE((seq * 2654435761 + at) >>> 0, at);
  createHash('sha256').update(b.subarray(headerBytes)).digest().copy(b, 16, 0, 16);
  return b;
}

/** The sequence number a block holds, 0 for never written; throws on a torn or foreign block. */
export function decodeBlock(b: Buffer, volume: number, block: number): number {
  if (b.every((x) => x === 0)) return 0;
  if (b.readUInt32BE(0) !== magic) throw new Error(`volume ${volume} block ${block}: not a workload block`);
  const seq = b.readUInt32BE(4);
  if (b.readUInt32BE(8) !== volume || b.readUInt32BE(12) !== block) {
    throw new Error(`volume ${volume} block ${block}: holds the block of volume ${b.readUInt32BE(8)} block ${b.readUInt32BE(12)}`);
  }
  const digest = createHash('sha256').update(b.subarray(headerBytes)).digest().subarray(0, 16);
  if (!digest.equals(b.subarray(16, 32))) throw new Error(`volume ${volume} block ${block}: torn block (seq ${seq})`);
  return seq;
}

export interface WorkloadOptions {
  blockSize: number;
  blockCount: number;
  queueDepth: number;
  /** Issue a FLUSH after this many writes (0 = never). */
  flushEvery: number;
  /** Deterministic block choice. */
  seed?: number;
}

/** Writes random blocks across one or more volumes (one client each), recording the history. */
export class OrderedWorkload {
  readonly history: IssuedWrite[] = [];
  private nextSeq = 1;
  private clock = 0;
  private stopped = false;
  private rng: number;
  lastFlushedSeq = 0;
  failures = 0;

  constructor(private readonly clients: NbdClient[], private readonly options: WorkloadOptions) {
    this.rng = options.seed ?? 12345;
  }

  get ackedCount(): number {
    return this.history.filter((w) => w.acked).length;
  }

  /** Runs until stop() or until a write fails (e.g. the node died). */
  async run(maxWrites = Number.POSITIVE_INFINITY): Promise<void> {
    const workers = Array.from({ length: this.options.queueDepth }, () => this.worker(maxWrites));
    await Promise.all(workers);
  }

  stop(): void {
    this.stopped = true;
  }

  private random(): number {
    this.rng = (this.rng * 1103515245 + 12345) & 0x7fffffff;
    return this.rng;
  }

  private async worker(maxWrites: number): Promise<void> {
    while (!this.stopped && this.nextSeq <= maxWrites) {
      const seq = this.nextSeq++;
      const volume = this.clients.length === 1 ? 0 : this.random() % this.clients.length;
      const block = this.random() % this.options.blockCount;
      const entry: IssuedWrite = { seq, volume, block, acked: false, issuedAt: ++this.clock, ackedAt: Number.POSITIVE_INFINITY };
      this.history.push(entry);
      try {
        await this.clients[volume]!.write(block * this.options.blockSize, encodeBlock(this.options.blockSize, seq, volume, block));
        entry.acked = true;
        entry.ackedAt = ++this.clock;
        if (this.options.flushEvery > 0 && seq % this.options.flushEvery === 0) {
          // Everything acknowledged before the flush was issued is covered once it returns.
          const covered = this.history.filter((w) => w.acked).reduce((m, w) => Math.max(m, w.seq), 0);
          await this.clients[volume]!.flush();
          this.lastFlushedSeq = Math.max(this.lastFlushedSeq, covered);
        }
      } catch {
        this.failures++;
        this.stopped = true;
      }
    }
  }

  /**
   * Every acknowledged write is present, or overwritten by a write to the same block that was not
   * finished before it started: two writes to one block in flight at once may land in either order
   * (NBD does not order them), so only a write acknowledged before another was issued is older.
   */
  checkAllAcknowledgedPresent(contents: Map<string, number>): void {
    const writesByBlock = new Map<string, IssuedWrite[]>();
    for (const w of this.history) {
      const key = `${w.volume}:${w.block}`;
      if (!writesByBlock.has(key)) writesByBlock.set(key, []);
      writesByBlock.get(key)!.push(w);
    }
    for (const [key, seq] of contents) {
      const writes = writesByBlock.get(key) ?? [];
      const held = writes.find((w) => w.seq === seq);
      if (seq !== 0 && !held) throw new Error(`block ${key} holds write ${seq} that was never issued to it`);
      const heldAckedAt = held ? held.ackedAt : Number.NEGATIVE_INFINITY;
      const newer = writes.find((w) => w.acked && w.seq !== seq && heldAckedAt < w.issuedAt);
      if (newer) throw new Error(`block ${key} holds write ${seq} but write ${newer.seq}, issued after it was acknowledged, was acknowledged too`);
    }
  }

  /**
   * The contents are a crash-consistent image of the history: every write acknowledged before the
   * newest write the image holds was issued is present, or superseded by a write to the same block
   * that was not acknowledged before it was issued. (Writes in flight together may land in either
   * order; that is the only freedom.) Returns how many writes the image must contain.
   */
  checkCrashConsistent(contents: Map<string, number>): number {
    const bySeq = new Map(this.history.map((w) => [w.seq, w]));
    let cutoff = 0; // the latest issue time of any write the image holds
    for (const [key, seq] of contents) {
      if (seq === 0) continue;
      const w = bySeq.get(seq);
      if (!w || `${w.volume}:${w.block}` !== key) throw new Error(`block ${key} holds write ${seq} that was never issued to it`);
      cutoff = Math.max(cutoff, w.issuedAt);
    }
    const required = this.history.filter((w) => w.ackedAt < cutoff);
    const newestRequired = new Map<string, IssuedWrite>();
    for (const w of required) {
      const key = `${w.volume}:${w.block}`;
      const prev = newestRequired.get(key);
      if (!prev || w.issuedAt > prev.issuedAt) newestRequired.set(key, w);
    }
    for (const [key, w] of newestRequired) {
      const held = contents.get(key) ?? 0;
      const h = bySeq.get(held);
      if (!h) throw new Error(`block ${key} is empty but write ${w.seq} to it was acknowledged before a write the image holds was issued`);
      if (h.ackedAt < w.issuedAt) {
        throw new Error(`block ${key} holds write ${h.seq}, older than write ${w.seq} which the image must contain`);
      }
    }
    return required.length;
  }

  /**
   * The contents equal the state after exactly the writes with seq <= K, for some K (a prefix of
   * the history). Returns K, or throws naming the first block that contradicts every prefix.
   */
  checkExactPrefix(contents: Map<string, number>): number {
    // For each block, the held seq s means: K >= s, and no write to that block with seq in (s, K].
    let low = 0;
    let high = Number.POSITIVE_INFINITY;
    const writesByBlock = new Map<string, number[]>();
    for (const w of this.history) {
      const key = `${w.volume}:${w.block}`;
      if (!writesByBlock.has(key)) writesByBlock.set(key, []);
      writesByBlock.get(key)!.push(w.seq);
    }
    for (const [key, seq] of contents) {
      const writes = (writesByBlock.get(key) ?? []).sort((a, b) => a - b);
      if (seq !== 0 && !writes.includes(seq)) throw new Error(`block ${key} holds write ${seq} that was never issued to it`);
      low = Math.max(low, seq);
      const next = writes.find((s) => s > seq);
      if (next !== undefined) high = Math.min(high, next - 1);
    }
    if (low > high) throw new Error(`not a prefix of the write history: some block needs K >= ${low}, another K <= ${high}`);
    return low;
  }
}

/** Reads every block of every volume and returns "volume:block" -> held seq. */
export async function readContents(clients: NbdClient[], blockSize: number, blockCount: number): Promise<Map<string, number>> {
  const contents = new Map<string, number>();
  for (let v = 0; v < clients.length; v++) {
    for (let block = 0; block < blockCount; block++) {
      contents.set(`${v}:${block}`, decodeBlock(await clients[v]!.read(block * blockSize, blockSize), v, block));
    }
  }
  return contents;
}
