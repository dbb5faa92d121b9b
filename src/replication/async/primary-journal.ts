// The primary side of an async consistency group's ordered journal (spec 001 §4.4): every host
// write to a volume of the group gets the next group-wide sequence number and is appended before
// the host is answered; entries are shipped in order and deleted once the secondary holds them.
import * as path from 'node:path';
import type { TimerHandle } from '../../common/clock';
import { ioBuffers } from '../../common/buffer-pool';
import { Deque } from '../../common/deque';
import { TricopyError, invariant } from '../../common/errors';
import { atomicWriteJson, readJsonIfExists } from '../../common/fsutil';
import type { Logger } from '../../common/log';
import type { JournalFullPolicy, LagReport } from '../../contracts/pairs';
import { maxCachedJournalBytes, progressPersistIntervalMs } from '../limits';
import { type JournalEntry, JournalOp, encodeEntry } from './journal-entry';
import { type JournalEnv, JournalStore, type StoredEntry } from './journal-store';

export type { JournalFullPolicy, LagReport };

interface PrimaryProgress {
  ackedSeq: number;
  appliedSeq: number;
  /** Entries up to here were abandoned (the group fell back to bitmaps); the stream restarts after it. */
  resetSeq: number;
  /**
   * Sequence numbers are handed out only up to here; the bound is durable before a number past it
   * is used. After a crash that lost the journal's tail, numbers continue after the bound, so no
   * number the secondary may already hold is ever used for another entry.
   */
  reservedSeq: number;
  /** The journal was closed cleanly: its files hold every entry numbered. */
  clean: boolean;
  /** Stream restarts after crashes that lost the journal's tail, oldest first. */
  breaks: StreamBreak[];
}

/** Sequence numbers reserved at a time (one durable progress write per this many entries). */
export const seqReservation = 1 << 20;

/** Where the stream restarts after a crash lost the journal's tail: entries up to `after` belong to the old stream. */
interface StreamBreak {
  after: number;
  resetSeq: number;
}

/** Raised to the caller of append when the journal is full and the policy says suspend. */
export class JournalFullError extends TricopyError {
  constructor(group: string, capacityBytes: number) {
    super('no-space', `journal of group ${group} is full (${capacityBytes} bytes)`, 'the group falls back to bitmaps; resync when the link keeps up');
  }
}

export class PrimaryJournal {
  /** Retained entries (not yet acknowledged by the secondary), in order. */
  private retained = new Deque<StoredEntry>();
  private retainedBytes = 0;
  /** Encoded bytes (header, pooled copy of the data) of recent Write entries, ready to ship. */
  private readonly cache = new Map<number, { header: Buffer; data: Buffer; pooled: Buffer }>();
  private cachedBytes = 0;
  private lastSeqValue: number;
  private progress: PrimaryProgress;
  /** seq -> { timeMs, bytes } of entries not yet applied at the secondary (for lag). */
  private unapplied = new Deque<{ seq: number; timeMs: number; bytes: number }>();
  private unappliedBytes = 0;
  private spaceWaiters: Array<() => void> = [];
  /** Entries whose local volume write has not finished yet; they must stay for crash replay. */
  private readonly localPending = new Set<number>();
  /**
   * Entries not to be shipped yet: their write has not reached the sync copy (3DC protection: the
   * async site must never hold a write the sync site lacks). Shipping stops at the first one.
   */
  private readonly held = new Set<number>();
  private persistTimer: TimerHandle | undefined;
  private progressDirty = false;
  /** The durable write of a raised reservation; appends past the old bound wait for it. */
  private reserving: Promise<void> | null = null;

  private constructor(
    readonly group: string,
    private readonly dir: string,
    private readonly store: JournalStore,
    private readonly env: JournalEnv,
    entries: StoredEntry[],
    progress: PrimaryProgress,
    public capacityBytes: number,
    private readonly log: Logger,
  ) {
    this.progress = progress;
    for (const e of entries.filter((x) => x.seq > progress.ackedSeq)) {
      this.retained.push(e);
      this.retainedBytes += e.bytes;
    }
    this.lastSeqValue = Math.max(progress.ackedSeq, entries.at(-1)?.seq ?? 0, progress.appliedSeq);
    for (const e of entries.filter((x) => x.seq > progress.appliedSeq)) this.noteUnapplied(e);
    this.lastSeqValue = Math.max(this.lastSeqValue, ...progress.breaks.map((b) => b.resetSeq));
    if (!progress.clean && progress.reservedSeq > this.lastSeqValue) {
      // The tail after the last entry found may have been numbered and lost (maybe shipped): the
      // stream restarts after the reservation. Entries found still go out first, in their stream.
      progress.breaks.push({ after: this.lastSeqValue, resetSeq: progress.reservedSeq });
      log.warn({ group, after: this.lastSeqValue, restartAt: progress.reservedSeq }, 'journal: unclean stop; the stream restarts after the reserved sequence numbers');
      this.lastSeqValue = progress.reservedSeq;
    }
  }

  static async open(dir: string, group: string, capacityBytes: number, env: JournalEnv, log: Logger): Promise<PrimaryJournal> {
    const { store, entries } = await JournalStore.open(dir, env, log);
    const saved = (await readJsonIfExists(path.join(dir, 'progress.json'), env.disk)) as Partial<PrimaryProgress> | undefined;
    const progress: PrimaryProgress = {
      ackedSeq: Number(saved?.ackedSeq ?? 0), appliedSeq: Number(saved?.appliedSeq ?? 0), resetSeq: Number(saved?.resetSeq ?? 0),
      reservedSeq: Number(saved?.reservedSeq ?? 0), clean: saved?.clean === true || saved === undefined,
      breaks: Array.isArray(saved?.breaks) ? saved.breaks.map((b) => ({ after: Number(b.after), resetSeq: Number(b.resetSeq) })) : [],
    };
    // Entries the secondary acknowledged may still sit in an undeleted segment: they are done.
    const journal = new PrimaryJournal(group, dir, store, env, entries, progress, capacityBytes, log);
    // From here on the files may lag the numbers handed out, until a clean close says otherwise.
    journal.progress.clean = false;
    journal.progress.reservedSeq = Math.max(journal.progress.reservedSeq, journal.lastSeqValue);
    await journal.persistNow();
    return journal;
  }

  get lastSeq(): number {
    return this.lastSeqValue;
  }

  get ackedSeq(): number {
    return this.progress.ackedSeq;
  }

  get appliedSeq(): number {
    return this.progress.appliedSeq;
  }

  /** The stream of entries the secondary must follow starts after this number. */
  get resetSeq(): number {
    return this.progress.resetSeq;
  }

  /** The stream an entry belongs to starts after this number (entries before a crash's break: an older one). */
  streamStartOf(seq: number): number {
    let start = this.progress.resetSeq;
    for (const b of this.progress.breaks) if (seq > b.after) start = b.resetSeq;
    return start;
  }

  get usedBytes(): number {
    return this.retainedBytes;
  }

  /** Entries still in the journal, oldest first (replayed onto local volumes after a crash). */
  retainedEntries(): StoredEntry[] {
    return this.retained.toArray();
  }

  lag(now = this.env.clock.now()): LagReport {
    const first = this.unapplied.first();
    return { entries: this.unapplied.length, bytes: this.unappliedBytes, seconds: first ? Math.max(0, (now - first.timeMs) / 1000) : 0 };
  }

  /** True if adding `bytes` would exceed the capacity. */
  wouldOverflow(bytes: number): boolean {
    return this.usedBytes + bytes > this.capacityBytes;
  }

  /** Resolves when some space was freed (or after `timeoutMs`); used by the delay policy. */
  waitForSpace(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const clock = this.env.clock;
      const timer = clock.setTimer(timeoutMs, done);
      function done(): void {
        clock.clearTimer(timer);
        resolve();
      }
      this.spaceWaiters.push(done);
    });
  }

  /**
   * Assigns the next sequence number and appends. The number is taken synchronously, so callers
   * that hold the volume's range lock get numbers in the order their writes are serialised.
   */
  append(entry: Omit<JournalEntry, 'seq' | 'timeMs'>, options: { held?: boolean } = {}): { seq: number; written: Promise<void> } {
    const seq = ++this.lastSeqValue;
    const reserved = this.reserve(seq);
    if (options.held) this.held.add(seq);
    const full: JournalEntry = { ...entry, seq, timeMs: this.env.clock.now() };
    const pieces = encodeEntry(full);
    const { stored, written } = this.store.append(full, pieces);
    this.retained.push(stored);
    this.retainedBytes += stored.bytes;
    if (entry.op !== JournalOp.CopyRegion) this.localPending.add(seq);
    if (full.data && full.op === JournalOp.Write && this.cachedBytes + full.data.length <= maxCachedJournalBytes) {
      // A copy: the caller's buffer goes back to its pool when the host write completes.
      const pooled = ioBuffers.acquire(full.data.length);
      const data = pooled.subarray(0, full.data.length);
      full.data.copy(data);
      this.cache.set(seq, { header: pieces[0]!, data, pooled });
      this.cachedBytes += data.length;
    }
    this.noteUnapplied(stored);
    return { seq, written: reserved ? Promise.all([reserved, written]).then(() => undefined) : written };
  }

  /** Raises the durable bound before `seq` passes it; the returned write is what the entry waits for. */
  private reserve(seq: number): Promise<void> | null {
    if (seq <= this.progress.reservedSeq) return this.reserving;
    this.progress.reservedSeq = seq + seqReservation;
    const write = this.persistNow();
    this.reserving = write;
    void write.finally(() => {
      if (this.reserving === write) this.reserving = null;
    }).catch(() => undefined);
    return write;
  }

  hold(seq: number): void {
    if (seq <= this.lastSeqValue) this.held.add(seq);
  }

  /** Lets a held entry (and the ones queued behind it) be shipped. */
  release(seq: number): void {
    this.held.delete(seq);
  }

  get heldCount(): number {
    return this.held.size;
  }

  /**
   * Unapplied entries that cannot ship until a held one is released: the first held entry and every
   * entry after it (shipping stops there), held or not — for instance extents a crash recovery
   * journaled again behind entries held for a sync copy that is gone.
   */
  get blockedCount(): number {
    if (this.held.size === 0) return 0;
    let firstHeld = Number.POSITIVE_INFINITY;
    for (const seq of this.held) firstHeld = Math.min(firstHeld, seq);
    return this.unapplied.length - this.unapplied.lowerBound((e) => e.seq < firstHeld);
  }

  /** Up to `maxBytes` of entries after `afterSeq`, in order (at least one if any); never past a held one. */
  entriesAfter(afterSeq: number, maxBytes: number, maxEntries: number): StoredEntry[] {
    const out: StoredEntry[] = [];
    let bytes = 0;
    let i = this.retained.lowerBound((e) => e.seq < afterSeq + 1);
    // A batch never crosses a stream break: its entries share one stream start.
    const stopAfter = this.progress.breaks.find((b) => afterSeq < b.after)?.after ?? Number.POSITIVE_INFINITY;
    for (; i < this.retained.length && out.length < maxEntries; i++) {
      const e = this.retained.at(i)!;
      if (this.held.has(e.seq) || e.seq > stopAfter) break;
      // Copy markers are small here but carry their region's data on the wire.
      const wireBytes = e.bytes + (e.op === JournalOp.CopyRegion ? e.length : 0);
      if (out.length > 0 && bytes + wireBytes > maxBytes) break;
      out.push(e);
      bytes += wireBytes;
    }
    return out;
  }

  firstRetainedSeq(): number | undefined {
    return this.retained.first()?.seq;
  }

  async dataOf(e: StoredEntry): Promise<Buffer> {
    return this.cache.get(e.seq)?.data ?? this.store.readData(e);
  }

  /** An entry's encoded bytes for shipping (from memory when recent, else from the file). */
  async encodedOf(e: StoredEntry): Promise<Buffer[]> {
    const cached = this.cache.get(e.seq);
    if (cached) return [cached.header, cached.data];
    return [(await this.store.readEncoded(e)).encoded];
  }

  /** The local volume write of entry `seq` finished (or failed): it no longer needs replaying. */
  async localDone(seq: number): Promise<void> {
    this.localPending.delete(seq);
    await this.trim();
  }

  /** The secondary stored entries through `receivedSeq` and applied through `appliedSeq`. */
  async acknowledge(receivedSeq: number, appliedSeq: number): Promise<void> {
    invariant(receivedSeq <= this.lastSeqValue, `secondary acknowledged ${receivedSeq} beyond the last entry ${this.lastSeqValue}`);
    if (receivedSeq > this.progress.ackedSeq) {
      this.progress.ackedSeq = receivedSeq;
      this.progressDirty = true;
      await this.trim();
    }
    // The secondary holds an old stream through its break: the next stream is the stream now.
    while (this.progress.breaks.length > 0 && this.progress.ackedSeq >= this.progress.breaks[0]!.after) {
      // (The shipper tells the secondary, which then jumps to the new stream's start.)
      this.progress.resetSeq = this.progress.breaks.shift()!.resetSeq;
      this.progressDirty = true;
    }
    if (appliedSeq > this.progress.appliedSeq) {
      invariant(appliedSeq <= this.lastSeqValue, `secondary applied ${appliedSeq} beyond the last entry ${this.lastSeqValue}`);
      this.progress.appliedSeq = appliedSeq;
      while (this.unapplied.length > 0 && this.unapplied.first()!.seq <= this.progress.appliedSeq) {
        this.unappliedBytes -= this.unapplied.shift()!.bytes;
      }
      this.progressDirty = true;
    }
    this.schedulePersist();
  }

  /** Deletes entries the secondary holds and whose local write is done. */
  private async trim(): Promise<void> {
    let through = this.progress.ackedSeq;
    for (const pending of this.localPending) through = Math.min(through, pending - 1);
    let dropped = 0;
    while (this.retained.length > 0 && this.retained.first()!.seq <= through) {
      const e = this.retained.shift()!;
      this.retainedBytes -= e.bytes;
      this.uncache(e.seq);
      dropped++;
    }
    if (dropped === 0) return;
    await this.store.trimThrough(through);
    for (const w of this.spaceWaiters.splice(0)) w();
  }

  /**
   * Drops every retained entry (the group falls back to bitmaps, or the secondary became the
   * primary). Returns what was dropped so the caller can record the regions in bitmaps.
   */
  async dropAll(continueAfter = 0): Promise<StoredEntry[]> {
    // A secondary that received entries this journal lost (a power loss here) names the highest;
    // the new stream starts after it.
    this.lastSeqValue = Math.max(this.lastSeqValue, continueAfter);
    const dropped = this.retained.clear();
    this.retainedBytes = 0;
    this.localPending.clear();
    this.held.clear();
    for (const seq of [...this.cache.keys()]) this.uncache(seq);
    this.unapplied.clear();
    this.unappliedBytes = 0;
    this.progress = { ...this.progress, ackedSeq: this.lastSeqValue, appliedSeq: this.lastSeqValue, resetSeq: this.lastSeqValue,
      reservedSeq: Math.max(this.progress.reservedSeq, this.lastSeqValue), breaks: [] };
    await this.store.reset(this.lastSeqValue + 1);
    await this.persistNow();
    for (const w of this.spaceWaiters.splice(0)) w();
    return dropped;
  }

  sync(): Promise<void> {
    return this.store.sync();
  }

  async close(): Promise<void> {
    this.env.clock.clearTimer(this.persistTimer);
    await this.store.close();
    await this.reserving?.catch(() => undefined);
    // Every entry numbered is in the (synced) files: the next start needs no new stream break.
    this.progress.clean = true;
    await this.persistNow();
  }

  private uncache(seq: number): void {
    const cached = this.cache.get(seq);
    if (!cached) return;
    this.cachedBytes -= cached.data.length;
    this.cache.delete(seq);
    // Shipping may still be writing it to the socket: only reuse after that (see release below).
    this.releaseAfterShipping.push(cached.pooled);
  }

  /** Pooled cache buffers freed by trimming; returned to the pool when no batch is being sent. */
  private releaseAfterShipping: Buffer[] = [];

  /** The shipper calls this when no batch is in flight: nothing reads the freed buffers any more. */
  recycleShipped(): void {
    for (const b of this.releaseAfterShipping.splice(0)) ioBuffers.release(b);
  }

  private noteUnapplied(e: StoredEntry): void {
    const bytes = e.op === JournalOp.Write || e.op === JournalOp.CopyData || e.op === JournalOp.CopyRegion ? e.length : 0;
    this.unapplied.push({ seq: e.seq, timeMs: e.timeMs, bytes });
    this.unappliedBytes += bytes;
  }

  private schedulePersist(): void {
    if (this.persistTimer || !this.progressDirty) return;
    this.persistTimer = this.env.clock.setTimer(progressPersistIntervalMs, () => {
      this.persistTimer = undefined;
      this.persistNow().catch((err: unknown) => this.log.error({ err, group: this.group }, 'cannot persist journal progress'));
    });
    this.persistTimer.unref();
  }

  private async persistNow(): Promise<void> {
    this.progressDirty = false;
    await atomicWriteJson(path.join(this.dir, 'progress.json'), this.progress, this.env.disk);
  }
}
