// The log storage area of one order-guarantee id at its source edge (413, spec 002 §4.8): the
// request entries it numbered and has not seen acknowledged, kept in a journal of segment files
// (replication/async/journal-store.ts) so that an entry is in the file before the attached storage
// is told its write is done, and survives a restart of the edge. Entries stay cached in memory up
// to a bound; older ones are read back from the file when they must be sent again.
import * as path from 'node:path';
import type { Clock } from '../common/clock';
import type { Disk } from '../common/disk';
import type { Logger } from '../common/log';
import { JournalOp } from '../replication/async/journal-entry';
import { JournalStore, type StoredEntry } from '../replication/async/journal-store';

/** Segments are small so that acknowledged entries leave the disk soon. */
export const logSegmentBytes = 8 * 1024 * 1024;
/** Entries kept in memory as well as in the file, per order. */
export const logCacheBytes = 64 * 1024 * 1024;

export interface LoggedEntry {
  seq: number;
  ioTimeMs: number;
  bytes: number;
  stored: StoredEntry;
  /** The encoded relay entry, while cached. */
  cached: Buffer | undefined;
}

export class LogArea {
  private cachedBytes = 0;

  private constructor(private readonly store: JournalStore, readonly dir: string) {}

  /** Opens the order's journal; returns every entry found, in order, with its bytes read back. */
  static async open(dataDir: string, order: string, disk: Disk, clock: Clock, log: Logger): Promise<{ area: LogArea; entries: Array<LoggedEntry & { encoded: Buffer }> }> {
    const dir = path.join(dataDir, 'log', order);
    const { store, entries } = await JournalStore.open(dir, { disk, clock }, log, logSegmentBytes);
    const area = new LogArea(store, dir);
    const out: Array<LoggedEntry & { encoded: Buffer }> = [];
    for (const [i, stored] of entries.entries()) {
      // Reads the page cache answers resolve at once: give the event loop back now and then.
      if (i % 256 === 255) await new Promise<void>((resolve) => setImmediate(resolve));
      const { entry } = await store.readEncoded(stored);
      const encoded = entry.data ?? Buffer.alloc(0);
      out.push({ seq: stored.seq, ioTimeMs: stored.timeMs, bytes: encoded.length, stored, cached: undefined, encoded });
    }
    return { area, entries: out };
  }

  /** Appends an entry; `written` resolves once it (and every entry before it) is in the file. */
  append(seq: number, ioTimeMs: number, encoded: Buffer): { logged: LoggedEntry; written: Promise<void> } {
    const { stored, written } = this.store.append({ seq, timeMs: ioTimeMs, op: JournalOp.Write, pair: 'rcn', offset: 0, length: encoded.length, data: encoded });
    const logged: LoggedEntry = { seq, ioTimeMs, bytes: encoded.length, stored, cached: undefined };
    this.cache(logged, encoded);
    return { logged, written };
  }

  /** Keeps an entry's bytes in memory while the cache has room. */
  cache(logged: LoggedEntry, encoded: Buffer): void {
    if (logged.cached || this.cachedBytes + encoded.length > logCacheBytes) return;
    logged.cached = encoded;
    this.cachedBytes += encoded.length;
  }

  forget(logged: LoggedEntry): void {
    if (!logged.cached) return;
    this.cachedBytes -= logged.cached.length;
    logged.cached = undefined;
  }

  /** The entry's bytes: from memory, or read back from its segment. */
  async read(logged: LoggedEntry): Promise<Buffer> {
    if (logged.cached) return logged.cached;
    const { entry } = await this.store.readEncoded(logged.stored);
    return entry.data ?? Buffer.alloc(0);
  }

  /** fdatasync of the log (FLUSH and FUA of the attached storage). */
  sync(): Promise<void> {
    return this.store.sync();
  }

  /** Segments whose entries are all acknowledged leave the disk. */
  trimThrough(seq: number): Promise<void> {
    return this.store.trimThrough(seq);
  }

  /** Drops every entry; numbering goes on at `nextSeq` (Failure Suspend). */
  reset(nextSeq: number): Promise<void> {
    this.cachedBytes = 0;
    return this.store.reset(nextSeq);
  }

  close(): Promise<void> {
    return this.store.close();
  }
}
