// An application that follows the topology: ordered writes (one in flight per volume, each block
// stamped with its write's sequence number, see ordered-writes.ts) at whichever site it is told to
// run, and the truth of what it was told was written: per block the newest acknowledged write, and
// the writes whose outcome it never learnt (in flight when a site died, or refused). A test compares
// what a site holds with that truth: the blocks it lacks must be within what status claimed.
import { NbdClient } from '../../src/nbd/client';
import { decodeBlock, encodeBlock } from './ordered-writes';

export interface SiteWorkloadOptions {
  volumes: string[];
  blockSize: number;
  blockCount: number;
  /** Writes per second per volume (paced, so the machine stays usable for the nodes). */
  writesPerSecond: number;
  seed: number;
}

/** "volumeIndex:block" → the sequence number the block holds (0: never written). */
export type Contents = Map<string, number>;

export class SiteWorkload {
  /** Newest acknowledged write per block. */
  private readonly expected: Contents = new Map();
  /** Writes whose outcome is unknown, per block: the block may hold any of them. */
  private readonly uncertain = new Map<string, Set<number>>();
  private clients: NbdClient[] = [];
  private workers: Promise<void>[] = [];
  private running = false;
  private nextSeq = 1;
  private rng: number;
  acknowledged = 0;
  failed = 0;
  lastError = '';

  constructor(private readonly options: SiteWorkloadOptions) {
    this.rng = options.seed;
  }

  /** Starts writing at the node whose NBD port is given (after stop(), or for the first time). */
  async start(nbdPort: number): Promise<void> {
    await this.stop();
    this.clients = [];
    for (const v of this.options.volumes) this.clients.push(await NbdClient.connect({ host: '127.0.0.1', port: nbdPort, exportName: v }));
    this.running = true;
    this.workers = this.clients.map((_, i) => this.worker(i));
  }

  /** Stops after the writes in flight: afterwards nothing is in flight. */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
    this.workers = [];
    for (const c of this.clients) c.destroy();
    this.clients = [];
  }

  /** Waits until `n` more writes were acknowledged (the workload must be running). */
  async progress(n: number, timeoutMs: number): Promise<void> {
    const target = this.acknowledged + n;
    const deadline = Date.now() + timeoutMs;
    while (this.acknowledged < target) {
      if (!this.running || this.workers.length === 0) throw new Error(`the workload stopped (${this.lastError}) after ${this.acknowledged} writes`);
      if (Date.now() > deadline) throw new Error(`only ${this.acknowledged - target + n} of ${n} writes within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  get writing(): boolean {
    return this.running;
  }

  /** Blocks whose content is neither the newest acknowledged write nor one whose outcome is unknown. */
  lacking(contents: Contents): string[] {
    const out: string[] = [];
    for (const [key, seq] of contents) {
      const want = this.expected.get(key) ?? 0;
      if (seq !== want && !this.uncertain.get(key)?.has(seq)) out.push(key);
    }
    return out;
  }

  /** After a failover that lost writes (Fig. 13): what the new site holds is the application's data from now on. */
  adopt(contents: Contents): void {
    this.expected.clear();
    this.uncertain.clear();
    for (const [key, seq] of contents) if (seq !== 0) this.expected.set(key, seq);
  }

  /** After a write's outcome became known at the site that runs the application: resolve the unknown ones. */
  settle(contents: Contents): void {
    for (const [key, candidates] of this.uncertain) {
      const held = contents.get(key) ?? 0;
      if (candidates.has(held)) this.expected.set(key, held);
    }
    this.uncertain.clear();
  }

  private random(): number {
    this.rng = (this.rng * 1103515245 + 12345) & 0x7fffffff;
    return this.rng;
  }

  private async worker(volume: number): Promise<void> {
    const client = this.clients[volume]!;
    const pace = 1000 / this.options.writesPerSecond;
    while (this.running) {
      const started = Date.now();
      const block = this.random() % this.options.blockCount;
      const seq = this.nextSeq++;
      const key = `${volume}:${block}`;
      try {
        await client.write(block * this.options.blockSize, encodeBlock(this.options.blockSize, seq, volume, block));
        this.expected.set(key, seq);
        this.uncertain.delete(key);
        this.acknowledged++;
      } catch (err) {
        // Refused or cut off: the block may or may not hold it (a refused write should not, a
        // write in flight when a node died may have reached a copy).
        if (!this.uncertain.has(key)) this.uncertain.set(key, new Set());
        this.uncertain.get(key)!.add(seq);
        this.failed++;
        this.lastError = err instanceof Error ? err.message : String(err);
        this.running = false;
        return;
      }
      const wait = pace - (Date.now() - started);
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/** Reads what a site holds of the workload's blocks (one read per volume). */
export async function readSite(nbdPort: number, volumes: string[], blockSize: number, blockCount: number): Promise<Contents> {
  const contents: Contents = new Map();
  for (let v = 0; v < volumes.length; v++) {
    const client = await NbdClient.connect({ host: '127.0.0.1', port: nbdPort, exportName: volumes[v]! });
    try {
      const data = await client.read(0, blockSize * blockCount);
      for (let b = 0; b < blockCount; b++) contents.set(`${v}:${b}`, decodeBlock(data.subarray(b * blockSize, (b + 1) * blockSize), v, b));
    } finally {
      client.destroy();
    }
  }
  return contents;
}
