// Journal entries on disk: a directory of segment files appended in sequence order. Appends made in
// the same event-loop turn are written together with one writev, and one batch is written only after
// the previous one landed, so the file never holds an entry after a gap: after a crash the valid
// prefix is exactly what was appended before it. Across segments the same holds: a segment gets its
// first bytes only after the one before it is written and synced, so after a crash or a power loss a
// later segment never holds entries while an earlier one misses its tail (which an open would take
// for a break in the numbering). Segments are deleted whole once no entry in them is needed any more.
import * as path from 'node:path';
import type { Clock } from '../../common/clock';
import { type Disk, type DiskFile, writeAll } from '../../common/disk';
import { invariant } from '../../common/errors';
import type { Logger } from '../../common/log';
import { type JournalEntry, decodeEntry, encodeEntry, encodedEntryBytes } from './journal-entry';

import { journalSegmentBytes, maxFreeJournalSegments } from '../limits';

export const defaultSegmentBytes = journalSegmentBytes;

/** An entry's fields as the journal keeps them in memory: its data stays in the segment file. */
export interface StoredEntry extends Omit<JournalEntry, 'data'> {
  /** Bytes the entry occupies on disk. */
  bytes: number;
  segment: number;
  position: number;
}

interface Segment {
  firstSeq: number;
  file: string;
  /** Opened (or created from a free file) when the segment starts; appends wait for it. */
  handle: Promise<DiskFile>;
  size: number;
  lastSeq: number;
}

/** What the journal store needs from its node: the disk its files live on and the clock. */
export interface JournalEnv {
  disk: Disk;
  clock: Clock;
}

interface PendingAppend {
  /** The entry's encoded bytes (header and data). */
  pieces: Buffer[];
  stored: StoredEntry;
  resolve: () => void;
  reject: (err: Error) => void;
}

/** An entry asked for was trimmed or dropped meanwhile; the reader starts over from the journal as it is now. */
export class JournalEntryGone extends Error {
  constructor(readonly seq: number) {
    super(`journal entry ${seq} is no longer stored`);
    this.name = 'JournalEntryGone';
  }
}

export class JournalStore {
  private readonly segments: Segment[] = [];
  private readonly free: string[] = [];
  private batch: PendingAppend[] = [];
  private writing = false;
  private failed: Error | undefined;
  private readonly idleWaiters: Array<{ resolve: () => void; reject: (err: Error) => void }> = [];

  private freeNameCounter = 0;

  private constructor(
    readonly dir: string,
    private readonly env: JournalEnv,
    private readonly segmentBytes: number,
    private readonly log: Logger,
  ) {}

  /**
   * Opens (creating) the directory and returns the store plus every valid entry found, in order.
   * With `gaplessFrom`, the numbering has no breaks (a received journal): entries must continue
   * without a gap from that number on, and a segment that does not continue it ends the journal
   * (it and every later one are recycled; what they held was never acknowledged).
   */
  static async open(dir: string, env: JournalEnv, log: Logger, segmentBytes = defaultSegmentBytes,
    gaplessFrom?: number): Promise<{ store: JournalStore; entries: StoredEntry[] }> {
    await env.disk.mkdirp(dir);
    const store = new JournalStore(dir, env, segmentBytes, log);
    const files = await env.disk.list(dir);
    store.free.push(...files.filter((n) => /^free-\d+\.jnl$/.test(n)).map((n) => path.join(dir, n)));
    const names = files.filter((n) => /^seg-\d{16}\.jnl$/.test(n)).sort();
    const entries: StoredEntry[] = [];
    let expectSeq: number | undefined;
    let ended = false;
    for (let i = 0; i < names.length; i++) {
      const file = path.join(dir, names[i]!);
      const firstSeq = Number(names[i]!.slice(4, 20));
      const gap = gaplessFrom !== undefined && firstSeq > (expectSeq ?? gaplessFrom);
      if (ended || gap) {
        if (!ended) log.warn({ file, firstSeq, expected: expectSeq ?? gaplessFrom }, 'journal: entries missing before this segment; it and the later ones end the journal');
        ended = true;
        await store.recycle(file);
        continue;
      }
      if (expectSeq !== undefined && firstSeq < expectSeq) {
        // Segments are written in order: one that goes back in the sequence is stale (a later one
        // may start further on: the stream broke there after a crash).
        log.warn({ file, firstSeq, expected: expectSeq }, 'journal: segment does not continue the sequence; recycling it');
        await store.recycle(file);
        continue;
      }
      const content = await env.disk.readFile(file);
      let at = 0;
      let lastSeq = firstSeq - 1;
      while (at < content.length) {
        const d = decodeEntry(content, at);
        // The valid part ends at a torn entry, or where an older (recycled) segment's bytes begin.
        if (!d.ok || d.entry.seq !== lastSeq + 1) break;
        entries.push({ seq: d.entry.seq, timeMs: d.entry.timeMs, op: d.entry.op, pair: d.entry.pair, offset: d.entry.offset,
          length: d.entry.length, bytes: d.bytes, segment: firstSeq, position: at });
        lastSeq = d.entry.seq;
        at += d.bytes;
      }
      if (lastSeq < firstSeq) {
        // Named before anything reached it (the node died first): it holds no entry. Kept, it would
        // take the next append at a number other than its name, which the next open would not read.
        await store.recycle(file);
        continue;
      }
      expectSeq = lastSeq + 1;
      const handle = await env.disk.open(file, 'r+');
      store.segments.push({ firstSeq, file, handle: Promise.resolve(handle), size: at, lastSeq });
    }
    return { store, entries };
  }

  /** Bytes of all segments (the journal's use of its capacity). */
  get usedBytes(): number {
    return this.segments.reduce((sum, s) => sum + s.size, 0);
  }

  /**
   * Queues an entry; resolves when it and every entry appended before it are in the file. `pieces`
   * are its encoded bytes when the caller has them already (a received batch, a cached header).
   */
  append(entry: JournalEntry, pieces: Buffer[] = encodeEntry(entry)): { stored: StoredEntry; written: Promise<void> } {
    if (this.failed) return { stored: undefined as never, written: Promise.reject(this.failed) };
    const bytes = encodedEntryBytes(entry);
    let segment = this.segments.at(-1);
    // A stream break (the numbers jump after a crash) starts a segment of its own: within a segment
    // entries are consecutive, which is how a torn or stale tail is told from valid entries.
    if (!segment || (segment.size > 0 ? segment.size + bytes > this.segmentBytes || entry.seq !== segment.lastSeq + 1 : entry.seq !== segment.firstSeq)) {
      segment = this.newSegment(entry.seq);
    }
    invariant(entry.seq > segment.lastSeq, `journal sequence numbers strictly increase (${entry.seq} after ${segment.lastSeq})`);
    // An open reads a segment from the number in its name on: its first entry must carry that number.
    invariant(segment.size > 0 || entry.seq === segment.firstSeq, `a journal segment's first entry is the one it is named after (${entry.seq} in ${segment.firstSeq})`);
    const stored: StoredEntry = {
      seq: entry.seq, timeMs: entry.timeMs, op: entry.op, pair: entry.pair, offset: entry.offset, length: entry.length,
      bytes, segment: segment.firstSeq, position: segment.size,
    };
    segment.size += bytes;
    segment.lastSeq = entry.seq;
    let resolve!: () => void;
    let reject!: (err: Error) => void;
    const written = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.batch.push({ pieces, stored, resolve, reject });
    if (!this.writing) this.env.clock.defer(() => this.writeBatch());
    this.writing = true;
    return { stored, written };
  }

  /** Reads an entry's encoded bytes back (checked) for an entry no longer in memory. */
  async readEncoded(stored: StoredEntry): Promise<{ encoded: Buffer; entry: JournalEntry }> {
    const segment = this.segments.find((s) => s.firstSeq === stored.segment);
    // Trimmed (acknowledged) or dropped (a fall-back to bitmaps) while the reader waited.
    if (!segment) throw new JournalEntryGone(stored.seq);
    const raw = Buffer.allocUnsafe(stored.bytes);
    const handle = await segment.handle;
    let done = 0;
    while (done < stored.bytes) {
      const n = await handle.read(raw, done, stored.bytes - done, stored.position + done);
      if (n === 0) throw new Error(`journal entry ${stored.seq} is truncated on disk`);
      done += n;
    }
    const d = decodeEntry(raw);
    if (!d.ok) throw new Error(`journal entry ${stored.seq} on disk: ${d.error}`);
    invariant(d.entry.seq === stored.seq, 'journal entry read back is the one asked for');
    return { encoded: raw, entry: d.entry };
  }

  /** Reads an entry's data back (for Write entries whose data is no longer in memory). */
  async readData(stored: StoredEntry): Promise<Buffer> {
    return (await this.readEncoded(stored)).entry.data ?? Buffer.alloc(0);
  }

  /** fdatasync of every segment (FLUSH of an async-paired volume). */
  async sync(): Promise<void> {
    await this.drained();
    for (const s of this.segments) await (await s.handle).datasync();
  }

  /** Retires segments whose entries all have seq <= `seq`, except the one being appended to. */
  async trimThrough(seq: number): Promise<void> {
    while (this.segments.length > 1 && this.segments[0]!.lastSeq <= seq) {
      const s = this.segments.shift()!;
      await closeQuietly(s.handle);
      await this.recycle(s.file);
    }
  }

  /** Retires everything (the group fell back to bitmaps, or the journal is no longer needed). */
  async reset(nextSeq: number): Promise<void> {
    await this.drained();
    for (const s of this.segments.splice(0)) {
      await closeQuietly(s.handle);
      await this.recycle(s.file);
    }
    this.newSegment(nextSeq);
    await this.segments.at(-1)!.handle;
  }

  /**
   * Keeps a few retired segment files for reuse: writing into a file whose blocks exist costs the
   * file system no allocation (WAL recycling, as databases do). Old bytes in them are never taken
   * for entries: they carry older sequence numbers.
   */
  private async recycle(file: string): Promise<void> {
    if (this.free.length >= maxFreeJournalSegments) {
      await this.env.disk.remove(file);
      return;
    }
    const target = path.join(this.dir, `free-${this.env.clock.now()}${String(this.freeNameCounter++ % 1000).padStart(3, '0')}.jnl`);
    await this.env.disk.rename(file, target);
    this.free.push(target);
  }

  async close(): Promise<void> {
    await this.drained().catch(() => undefined);
    for (const s of this.segments.splice(0)) {
      const handle = await s.handle.catch(() => undefined);
      await handle?.datasync().catch(() => undefined);
      await handle?.close().catch(() => undefined);
    }
  }

  /** Resolves once every append queued so far is written (rejects if the journal failed). */
  private drained(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    if (!this.writing) return Promise.resolve();
    return new Promise((resolve, reject) => this.idleWaiters.push({ resolve, reject }));
  }

  private becameIdle(err?: Error): void {
    this.writing = false;
    for (const w of this.idleWaiters.splice(0)) (err ? w.reject(err) : w.resolve());
  }

  private newSegment(firstSeq: number): Segment {
    const file = path.join(this.dir, `seg-${String(firstSeq).padStart(16, '0')}.jnl`);
    const reused = this.free.shift();
    // Positional writes: never O_APPEND, whose writes ignore the position.
    // The segment's name is made durable before anything is appended to it: a FLUSH that synced
    // its entries must not find the file gone (or still named free) after a power loss.
    const handle = (reused
      ? this.env.disk.rename(reused, file).then(() => this.env.disk.open(file, 'r+'))
      : this.env.disk.open(file, 'w+')).then(async (h) => {
      await this.env.disk.syncDir(this.dir);
      return h;
    });
    handle.catch(() => undefined); // failures surface through the appends that wait for it
    const segment: Segment = { firstSeq, file, handle, size: 0, lastSeq: firstSeq - 1 };
    this.segments.push(segment);
    return segment;
  }

  /** Makes a segment durable before the next one gets its first bytes (unless it was trimmed meanwhile: then nothing needs it). */
  private async syncPredecessor(segment: Segment): Promise<void> {
    try {
      await (await segment.handle).datasync();
    } catch (err) {
      if (this.segments.includes(segment)) throw err;
    }
  }

  private writeBatch(): void {
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) {
      this.becameIdle();
      return;
    }
    // Group the batch by segment (a batch may cross into a new segment).
    const bySegment = new Map<number, PendingAppend[]>();
    for (const p of batch) {
      const list = bySegment.get(p.stored.segment) ?? [];
      list.push(p);
      bySegment.set(p.stored.segment, list);
    }
    // One segment after the other, never side by side: see the header.
    const writeInOrder = async (): Promise<void> => {
      for (const [segmentSeq, items] of bySegment) {
        const segment = this.segments.find((s) => s.firstSeq === segmentSeq);
        if (!segment) throw new Error(`journal segment ${segmentSeq} vanished`);
        const handle = await segment.handle;
        // Looked up after the wait: trimming may have shifted the list meanwhile.
        const index = this.segments.indexOf(segment);
        if (items[0]!.stored.position === 0 && index > 0) await this.syncPredecessor(this.segments[index - 1]!);
        const pieces: Buffer[] = [];
        for (const p of items) for (const piece of p.pieces) pieces.push(piece);
        await writeAll(handle, pieces, items[0]!.stored.position);
      }
    };
    writeInOrder().then(() => {
      for (const p of batch) p.resolve();
      this.writeBatch();
    }, (err: Error) => {
      this.failed = err;
      this.log.error({ err: err.message, dir: this.dir }, 'journal write failed');
      for (const p of batch) p.reject(err);
      for (const p of this.batch.splice(0)) p.reject(err);
      this.becameIdle(err);
    });
  }
}

async function closeQuietly(handle: Promise<DiskFile>): Promise<void> {
  const h = await handle.catch(() => undefined);
  await h?.close().catch(() => undefined);
}
