// The ordered journals of an async consistency group (spec 001 §4.4, spec 002 §5.4–5.6).
//
// Primary side: every host write to a volume of the group gets the next group-wide sequence number
// and is appended to the journal before the host is answered. Entries are shipped in order and
// deleted once the secondary holds them durably.
//
// Secondary side: received entries are stored durably, then applied strictly in sequence order
// across all volumes of the group; the apply position is recorded durably, so after any crash the
// secondary resumes from it and its volumes always hold a prefix of the primary's write history.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError, invariant } from '../common/errors';
import { Deque } from '../common/deque';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { Logger } from '../common/log';
import { ioBuffers } from '../common/buffer-pool';
import { type JournalEntry, JournalOp, encodeEntry, encodedEntryBytes } from './journal-entry';
import { JournalStore, type StoredEntry } from './journal-store';
import type { JournalFullPolicy, LagReport } from '../contracts/pairs';

/** Data of recent entries kept in memory so shipping rarely reads the journal back. */
export const maxCachedJournalBytes = 128 * 1024 * 1024;
export const progressPersistIntervalMs = 250;

export type { JournalFullPolicy, LagReport };

interface PrimaryProgress {
  ackedSeq: number;
  appliedSeq: number;
  /** Entries up to here were abandoned (the group fell back to bitmaps); the stream restarts after it. */
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
  private persistTimer: NodeJS.Timeout | undefined;
  private progressDirty = false;

  private constructor(
    readonly group: string,
    private readonly dir: string,
    private readonly store: JournalStore,
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
  }

  static async open(dir: string, group: string, capacityBytes: number, log: Logger): Promise<PrimaryJournal> {
    const { store, entries } = await JournalStore.open(dir, log);
    const saved = (await readJsonIfExists(path.join(dir, 'progress.json'))) as Partial<PrimaryProgress> | undefined;
    const progress = { ackedSeq: Number(saved?.ackedSeq ?? 0), appliedSeq: Number(saved?.appliedSeq ?? 0), resetSeq: Number(saved?.resetSeq ?? 0) };
    // Entries the secondary acknowledged may still sit in an undeleted segment: they are done.
    return new PrimaryJournal(group, dir, store, entries, progress, capacityBytes, log);
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

  get usedBytes(): number {
    return this.retainedBytes;
  }

  /** Entries still in the journal, oldest first (replayed onto local volumes after a crash). */
  retainedEntries(): StoredEntry[] {
    return this.retained.toArray();
  }

  lag(now = Date.now()): LagReport {
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
      const timer = setTimeout(done, timeoutMs);
      function done(): void {
        clearTimeout(timer);
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
    if (options.held) this.held.add(seq);
    const full: JournalEntry = { ...entry, seq, timeMs: Date.now() };
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
    return { seq, written };
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

  /** Up to `maxBytes` of entries after `afterSeq`, in order (at least one if any); never past a held one. */
  entriesAfter(afterSeq: number, maxBytes: number, maxEntries: number): StoredEntry[] {
    const out: StoredEntry[] = [];
    let bytes = 0;
    let i = this.retained.lowerBound((e) => e.seq < afterSeq + 1);
    for (; i < this.retained.length && out.length < maxEntries; i++) {
      const e = this.retained.at(i)!;
      if (this.held.has(e.seq)) break;
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
  async dropAll(): Promise<StoredEntry[]> {
    const dropped = this.retained.clear();
    this.retainedBytes = 0;
    this.localPending.clear();
    this.held.clear();
    for (const seq of [...this.cache.keys()]) this.uncache(seq);
    this.unapplied.clear();
    this.unappliedBytes = 0;
    this.progress = { ackedSeq: this.lastSeqValue, appliedSeq: this.lastSeqValue, resetSeq: this.lastSeqValue };
    await this.store.reset(this.lastSeqValue + 1);
    await this.persistNow();
    for (const w of this.spaceWaiters.splice(0)) w();
    return dropped;
  }

  sync(): Promise<void> {
    return this.store.sync();
  }

  async close(): Promise<void> {
    clearTimeout(this.persistTimer);
    await this.store.close();
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
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      this.persistNow().catch((err: unknown) => this.log.error({ err, group: this.group }, 'cannot persist journal progress'));
    }, progressPersistIntervalMs);
    this.persistTimer.unref();
  }

  private async persistNow(): Promise<void> {
    this.progressDirty = false;
    await atomicWriteJson(path.join(this.dir, 'progress.json'), this.progress);
  }
}

// ------------------------------------------------------------------------------------------------

/** Applies one entry to the local volume of its pair; supplied by the replication service. */
export type EntryApplier = (entry: JournalEntry) => Promise<void>;
/** Makes applied data durable (fdatasync of the group's volumes) before the position is recorded. */
export type ApplyFlusher = () => Promise<void>;

export const maxReceivedCacheBytes = 256 * 1024 * 1024;
/** Entries applied concurrently when they do not overlap. */
export const maxParallelApplies = 16;

export class ReceivedJournal {
  private pending = new Deque<StoredEntry>();
  private readonly cache = new Map<number, JournalEntry>();
  private cachedBytes = 0;
  private receivedSeqValue: number;
  private appliedSeqValue: number;
  private durableAppliedSeq: number;
  private applying = false;
  private applyError: Error | undefined;
  private persistTimer: NodeJS.Timeout | undefined;
  private drainWaiters: Array<{ seq: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private applier: EntryApplier | undefined;
  private flusher: ApplyFlusher | undefined;
  /** Set while a takeover or shutdown drains: apply without waiting for more. */
  private paused = false;

  private constructor(
    readonly group: string,
    private readonly dir: string,
    private readonly store: JournalStore,
    entries: StoredEntry[],
    appliedSeq: number,
    private readonly log: Logger,
  ) {
    this.appliedSeqValue = appliedSeq;
    this.durableAppliedSeq = appliedSeq;
    for (const e of entries) if (e.seq > appliedSeq) this.pending.push(e);
    this.receivedSeqValue = Math.max(appliedSeq, entries.at(-1)?.seq ?? 0);
  }

  static async open(dir: string, group: string, log: Logger): Promise<ReceivedJournal> {
    const { store, entries } = await JournalStore.open(dir, log);
    const saved = (await readJsonIfExists(path.join(dir, 'applied.json'))) as { appliedSeq?: number } | undefined;
    // What was received is exactly what the journal files hold (or, when trimmed, what was applied).
    return new ReceivedJournal(group, dir, store, entries, Number(saved?.appliedSeq ?? 0), log);
  }

  get receivedSeq(): number {
    return this.receivedSeqValue;
  }

  get appliedSeq(): number {
    return this.appliedSeqValue;
  }

  get backlog(): number {
    return this.receivedSeqValue - this.appliedSeqValue;
  }

  /** Starts applying (after pairs are loaded so every entry finds its volume). */
  start(applier: EntryApplier, flusher: ApplyFlusher): void {
    this.applier = applier;
    this.flusher = flusher;
    this.kick();
  }

  /**
   * Stores a batch from the primary. Entries at or below what was already received are duplicates
   * (a resend after a lost answer) and are skipped; a gap is refused so the primary resends.
   */
  async receive(entries: Array<{ entry: JournalEntry; encoded?: Buffer }> | JournalEntry[], streamStart = 0): Promise<void> {
    const items = entries.map((x) => ('entry' in x ? x : { entry: x, encoded: undefined }));
    if (streamStart > this.receivedSeqValue) {
      // The primary abandoned its entries after what it knew was received here (it fell back to
      // bitmaps and resyncs their regions). What was received here is in no bitmap of the primary
      // any more: apply it before starting over, or those regions would be lost.
      this.log.warn({ group: this.group, from: this.receivedSeqValue, to: streamStart }, 'primary restarted the journal stream');
      await this.drain();
      await this.resetTo(streamStart);
    }
    const fresh = items.filter((x) => x.entry.seq > this.receivedSeqValue);
    if (fresh.length === 0) return;
    if (fresh[0]!.entry.seq !== this.receivedSeqValue + 1) {
      throw new TricopyError('conflict', `journal of group ${this.group}: expected entry ${this.receivedSeqValue + 1}, got ${fresh[0]!.entry.seq}`);
    }
    const writes: Promise<void>[] = [];
    for (const { entry: e, encoded } of fresh) {
      invariant(e.seq === this.receivedSeqValue + 1, 'received journal entries are consecutive');
      if (e.op === JournalOp.CopyRegion) throw new TricopyError('invalid-argument', 'copy markers must be shipped with their data');
      const { stored, written } = encoded ? this.store.append(e, [encoded]) : this.store.append(e);
      writes.push(written);
      this.pending.push(stored);
      if (this.cachedBytes < maxReceivedCacheBytes) {
        this.cache.set(e.seq, e);
        this.cachedBytes += e.data?.length ?? 0;
      }
      this.receivedSeqValue = e.seq;
    }
    await Promise.all(writes);
    this.kick();
  }

  /** Resolves when every entry received up to now (or `seq`) is applied and recorded durably. */
  drain(seq = this.receivedSeqValue): Promise<void> {
    if (this.applyError) return Promise.reject(this.applyError);
    if (this.durableAppliedSeq >= seq) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.drainWaiters.push({ seq, resolve, reject });
      if (this.appliedSeqValue >= seq && !this.applying) {
        // Everything is applied; only the position is not recorded yet.
        this.makeAppliedDurable().catch((err: unknown) => {
          for (const w of this.drainWaiters.splice(0)) w.reject(err as Error);
        });
      } else this.kick();
    });
  }

  /**
   * Forgets entries not yet applied (the pair was deleted or a resync replaces them) and moves the
   * positions to `seq`, the point from which the primary will ship again.
   */
  async resetTo(seq: number): Promise<void> {
    this.paused = true;
    while (this.applying) await new Promise((r) => setTimeout(r, 5));
    this.pending.clear();
    this.cache.clear();
    this.cachedBytes = 0;
    this.receivedSeqValue = seq;
    this.appliedSeqValue = seq;
    this.durableAppliedSeq = seq;
    await this.store.reset(seq + 1);
    await this.persistPosition();
    this.paused = false;
  }

  async close(): Promise<void> {
    this.paused = true;
    while (this.applying) await new Promise((r) => setTimeout(r, 5));
    clearTimeout(this.persistTimer);
    if (this.flusher && this.appliedSeqValue > this.durableAppliedSeq) {
      await this.flusher().catch(() => undefined);
      this.durableAppliedSeq = this.appliedSeqValue;
    }
    await this.persistPosition().catch(() => undefined);
    await this.store.close();
  }

  private kick(): void {
    if (this.applying || this.paused || !this.applier) return;
    this.applying = true;
    void this.applyLoop().finally(() => {
      this.applying = false;
      if (this.pending.length > 0 && !this.paused && !this.applyError) this.kick();
    });
  }

  private async applyLoop(): Promise<void> {
    try {
      while (this.pending.length > 0 && !this.paused) {
        // Consecutive entries that do not overlap may be written together; order is kept because
        // the position only moves past the whole batch once all of it is written.
        const batch: StoredEntry[] = [];
        for (let i = 0; i < this.pending.length && batch.length < maxParallelApplies; i++) {
          const e = this.pending.at(i)!;
          if (batch.some((b) => b.pair === e.pair && b.offset < e.offset + e.length && e.offset < b.offset + b.length)) break;
          batch.push(e);
        }
        await Promise.all(batch.map(async (e) => {
          const entry = this.cache.get(e.seq) ?? await this.loadEntry(e);
          await this.applier!(entry);
        }));
        for (const e of batch) {
          const cached = this.cache.get(e.seq);
          if (cached) {
            this.cachedBytes -= cached.data?.length ?? 0;
            this.cache.delete(e.seq);
          }
        }
        for (let i = 0; i < batch.length; i++) this.pending.shift();
        const last = batch.at(-1)!.seq;
        invariant(last > this.appliedSeqValue, `apply position strictly increases (${last} after ${this.appliedSeqValue})`);
        this.appliedSeqValue = last;
        if (this.drainWaiters.length > 0) await this.makeAppliedDurable();
        else this.schedulePersist();
      }
    } catch (err) {
      this.applyError = err as Error;
      this.log.error({ group: this.group, err: (err as Error).message }, 'applying the journal failed; the group stops applying');
      for (const w of this.drainWaiters.splice(0)) w.reject(err as Error);
    }
  }

  private async loadEntry(e: StoredEntry): Promise<JournalEntry> {
    const entry: JournalEntry = { seq: e.seq, timeMs: e.timeMs, op: e.op, pair: e.pair, offset: e.offset, length: e.length };
    if (e.op === JournalOp.Write || e.op === JournalOp.CopyData) entry.data = await this.store.readData(e);
    return entry;
  }

  private schedulePersist(): void {
    if (this.persistTimer) return;
    this.persistTimer = setTimeout(() => {
      this.persistTimer = undefined;
      this.makeAppliedDurable().catch((err: unknown) => this.log.error({ err, group: this.group }, 'cannot record the apply position'));
    }, progressPersistIntervalMs);
    this.persistTimer.unref();
  }

  /** Flushes the volumes, then records the apply position (never ahead of durable data). */
  private async makeAppliedDurable(): Promise<void> {
    const seq = this.appliedSeqValue;
    if (seq <= this.durableAppliedSeq) return this.wakeDrainers();
    await this.flusher!();
    await this.persistPosition(seq);
    this.durableAppliedSeq = Math.max(this.durableAppliedSeq, seq);
    await this.store.trimThrough(this.durableAppliedSeq);
    this.wakeDrainers();
  }

  private wakeDrainers(): void {
    const still: typeof this.drainWaiters = [];
    for (const w of this.drainWaiters) (this.durableAppliedSeq >= w.seq ? w.resolve() : still.push(w));
    this.drainWaiters = still;
  }

  private async persistPosition(seq = this.durableAppliedSeq): Promise<void> {
    await atomicWriteJson(path.join(this.dir, 'applied.json'), { appliedSeq: seq });
  }
}

/** Removes a group's journal directory (the group no longer exists on this node). */
export async function removeJournalDir(dir: string): Promise<void> {
  await fsp.rm(dir, { recursive: true, force: true });
}

export { encodedEntryBytes };
