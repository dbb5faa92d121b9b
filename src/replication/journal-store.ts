// Journal entries on disk: a directory of segment files appended in sequence order. Appends made in
// the same event-loop turn are written together with one writev, and one batch is written only after
// the previous one landed, so the file never holds an entry after a gap: after a crash the valid
// prefix is exactly what was appended before it. Segments are deleted whole once no entry in them is
// needed any more.
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { invariant } from '../common/errors';
import type { Logger } from '../common/log';
import { type JournalEntry, decodeEntry, encodeEntry, encodedEntryBytes } from './journal-entry';

export const defaultSegmentBytes = 64 * 1024 * 1024;
/** Retired segment files kept for reuse. */
export const maxFreeSegments = 4;

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
  fd: number;
  size: number;
  lastSeq: number;
}

interface PendingAppend {
  /** The entry's encoded bytes (header and data). */
  pieces: Buffer[];
  stored: StoredEntry;
  resolve: () => void;
  reject: (err: Error) => void;
}

export class JournalStore {
  private readonly segments: Segment[] = [];
  private readonly free: string[] = [];
  private batch: PendingAppend[] = [];
  private writing = false;
  private failed: Error | undefined;

  private constructor(
    readonly dir: string,
    private readonly segmentBytes: number,
    private readonly log: Logger,
  ) {}

  /** Opens (creating) the directory and returns the store plus every valid entry found, in order. */
  static async open(dir: string, log: Logger, segmentBytes = defaultSegmentBytes): Promise<{ store: JournalStore; entries: StoredEntry[] }> {
    await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new JournalStore(dir, segmentBytes, log);
    const files = await fsp.readdir(dir);
    store.free.push(...files.filter((n) => /^free-\d+\.jnl$/.test(n)).map((n) => path.join(dir, n)));
    const names = files.filter((n) => /^seg-\d{16}\.jnl$/.test(n)).sort();
    const entries: StoredEntry[] = [];
    let expectSeq: number | undefined;
    for (let i = 0; i < names.length; i++) {
      const file = path.join(dir, names[i]!);
      const firstSeq = Number(names[i]!.slice(4, 20));
      if (expectSeq !== undefined && firstSeq !== expectSeq) {
        // Segments are written in order: one that does not continue the sequence is stale.
        log.warn({ file, firstSeq, expected: expectSeq }, 'journal: segment does not continue the sequence; recycling it');
        await store.recycle(file);
        continue;
      }
      const content = await fsp.readFile(file);
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
      expectSeq = lastSeq + 1;
      const fd = await openFd(file);
      store.segments.push({ firstSeq, file, fd, size: at, lastSeq });
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
    if (!segment || (segment.size > 0 && segment.size + bytes > this.segmentBytes)) segment = this.newSegment(entry.seq);
    invariant(entry.seq > segment.lastSeq, `journal sequence numbers strictly increase (${entry.seq} after ${segment.lastSeq})`);
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
    if (!this.writing) setImmediate(() => this.writeBatch());
    this.writing = true;
    return { stored, written };
  }

  /** Reads an entry's encoded bytes back (checked) for an entry no longer in memory. */
  async readEncoded(stored: StoredEntry): Promise<{ encoded: Buffer; entry: JournalEntry }> {
    const segment = this.segments.find((s) => s.firstSeq === stored.segment);
    invariant(segment, `journal segment of entry ${stored.seq} exists`);
    const raw = Buffer.allocUnsafe(stored.bytes);
    await new Promise<void>((resolve, reject) => fs.read(segment.fd, raw, 0, stored.bytes, stored.position, (err, n) => {
      if (err) return reject(err);
      if (n !== stored.bytes) return reject(new Error(`journal entry ${stored.seq} is truncated on disk`));
      resolve();
    }));
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
    for (const s of this.segments) await new Promise<void>((resolve, reject) => fs.fdatasync(s.fd, (e) => (e ? reject(e) : resolve())));
  }

  /** Retires segments whose entries all have seq <= `seq`, except the one being appended to. */
  async trimThrough(seq: number): Promise<void> {
    while (this.segments.length > 1 && this.segments[0]!.lastSeq <= seq) {
      const s = this.segments.shift()!;
      await new Promise<void>((resolve) => fs.close(s.fd, () => resolve()));
      await this.recycle(s.file);
    }
  }

  /** Retires everything (the group fell back to bitmaps, or the journal is no longer needed). */
  async reset(nextSeq: number): Promise<void> {
    await this.drained();
    for (const s of this.segments.splice(0)) {
      await new Promise<void>((resolve) => fs.close(s.fd, () => resolve()));
      await this.recycle(s.file);
    }
    this.newSegment(nextSeq);
  }

  /**
   * Keeps a few retired segment files for reuse: writing into a file whose blocks exist costs the
   * file system no allocation (WAL recycling, as databases do). Old bytes in them are never taken
   * for entries: they carry older sequence numbers.
   */
  private async recycle(file: string): Promise<void> {
    if (this.free.length >= maxFreeSegments) {
      await fsp.rm(file, { force: true });
      return;
    }
    const target = path.join(this.dir, `free-${Date.now()}${Math.floor(Math.random() * 1000)}.jnl`);
    await fsp.rename(file, target);
    this.free.push(target);
  }

  async close(): Promise<void> {
    await this.drained().catch(() => undefined);
    for (const s of this.segments.splice(0)) {
      await new Promise<void>((resolve) => fs.fdatasync(s.fd, () => resolve()));
      await new Promise<void>((resolve) => fs.close(s.fd, () => resolve()));
    }
  }

  private drained(): Promise<void> {
    if (!this.writing) return Promise.resolve();
    const last = this.batch.at(-1);
    return new Promise((resolve, reject) => {
      const check = (): void => {
        if (this.failed) return reject(this.failed);
        if (!this.writing) return resolve();
        setTimeout(check, 1);
      };
      if (last) {
        const r = last.resolve;
        last.resolve = () => {
          r();
          resolve();
        };
      } else check();
    });
  }

  private newSegment(firstSeq: number): Segment {
    const file = path.join(this.dir, `seg-${String(firstSeq).padStart(16, '0')}.jnl`);
    const reused = this.free.shift();
    if (reused) fs.renameSync(reused, file);
    // Positional writes: never O_APPEND, whose writes ignore the position.
    const fd = fs.openSync(file, reused ? 'r+' : 'w+', 0o600);
    const segment: Segment = { firstSeq, file, fd, size: 0, lastSeq: firstSeq - 1 };
    this.segments.push(segment);
    return segment;
  }

  private writeBatch(): void {
    const batch = this.batch;
    this.batch = [];
    if (batch.length === 0) {
      this.writing = false;
      return;
    }
    // Group the batch by segment (a batch may cross into a new segment).
    const bySegment = new Map<number, PendingAppend[]>();
    for (const p of batch) {
      const list = bySegment.get(p.stored.segment) ?? [];
      list.push(p);
      bySegment.set(p.stored.segment, list);
    }
    const writes = [...bySegment.entries()].map(([segmentSeq, items]) => {
      const segment = this.segments.find((s) => s.firstSeq === segmentSeq);
      if (!segment) return Promise.reject(new Error(`journal segment ${segmentSeq} vanished`));
      const pieces: Buffer[] = [];
      for (const p of items) for (const piece of p.pieces) pieces.push(piece);
      return writevAll(segment.fd, pieces, items[0]!.stored.position);
    });
    Promise.all(writes).then(() => {
      for (const p of batch) p.resolve();
      this.writeBatch();
    }, (err: Error) => {
      this.failed = err;
      this.log.error({ err: err.message, dir: this.dir }, 'journal write failed');
      for (const p of batch) p.reject(err);
      for (const p of this.batch.splice(0)) p.reject(err);
      this.writing = false;
    });
  }
}

function openFd(file: string): Promise<number> {
  return new Promise((resolve, reject) => fs.open(file, 'r+', (err, fd) => (err ? reject(err) : resolve(fd))));
}

function writevAll(fd: number, pieces: Buffer[], position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (buffers: Buffer[], at: number): void => {
      // writev accepts at most IOV_MAX (1024) buffers.
      const chunk = buffers.slice(0, 1000);
      const total = chunk.reduce((s, b) => s + b.length, 0);
      fs.writev(fd, chunk, at, (err, written) => {
        if (err) return reject(err);
        let rest = buffers.slice(chunk.length);
        if (written < total) {
          let skip = written;
          const remaining: Buffer[] = [];
          for (const b of chunk) {
            if (skip >= b.length) {
              skip -= b.length;
              continue;
            }
            remaining.push(skip > 0 ? b.subarray(skip) : b);
            skip = 0;
          }
          rest = [...remaining, ...rest];
        }
        if (rest.length === 0) return resolve();
        step(rest, at + written);
      });
    };
    step(pieces, position);
  });
}
