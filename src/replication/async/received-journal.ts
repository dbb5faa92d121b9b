// The secondary side of an async consistency group's journal (spec 001 §4.4, spec 002 §5.4–5.6):
// received entries are stored, then applied strictly in sequence order across all volumes of the
// group; the apply position is recorded durably (after the volumes are flushed), so after any crash
// the secondary resumes from it and its volumes hold a prefix of the primary's write history.
import * as path from 'node:path';
import type { TimerHandle } from '../../common/clock';
import { type Disk, diskErrorCode } from '../../common/disk';
import { Deque } from '../../common/deque';
import { TricopyError, invariant } from '../../common/errors';
import { atomicWriteJson, readJsonIfExists } from '../../common/fsutil';
import type { Logger } from '../../common/log';
import { maxParallelApplies, maxReceivedCacheBytes, progressPersistIntervalMs } from '../limits';
import { type JournalEntry, JournalOp } from './journal-entry';
import { type JournalEnv, JournalStore, type StoredEntry } from './journal-store';

/** Applies one entry to the local volume of its pair; supplied by the replication service. */
export type EntryApplier = (entry: JournalEntry) => Promise<void>;
/** Makes applied data durable (fdatasync of the group's volumes) before the position is recorded. */
export type ApplyFlusher = () => Promise<void>;


export class ReceivedJournal {
  private pending = new Deque<StoredEntry>();
  private readonly cache = new Map<number, JournalEntry>();
  private cachedBytes = 0;
  /** Entries taken in order (the next batch must continue here); not all durable yet. */
  private acceptedSeq: number;
  /** Entries durable in the journal: what is acknowledged to the primary and may be applied. */
  private receivedSeqValue: number;
  /** Accepted entries waiting for their journal write to be synced, oldest first. */
  private readonly staged = new Deque<StoredEntry>();
  private appliedSeqValue: number;
  private durableAppliedSeq: number;
  private applying = false;
  private applyRun: Promise<void> | undefined;
  private applyError: Error | undefined;
  private persistTimer: TimerHandle | undefined;
  private drainWaiters: Array<{ seq: number; resolve: () => void; reject: (e: Error) => void }> = [];
  private applier: EntryApplier | undefined;
  private flusher: ApplyFlusher | undefined;
  /** Set while a takeover or shutdown drains: apply without waiting for more. */
  private paused = false;
  /** Holders that need the volumes still between two apply batches (a snapshot of the group, one instant). */
  private applyHolds = 0;

  private constructor(
    readonly group: string,
    private readonly dir: string,
    private readonly store: JournalStore,
    private readonly env: JournalEnv,
    entries: StoredEntry[],
    appliedSeq: number,
    private readonly log: Logger,
  ) {
    this.appliedSeqValue = appliedSeq;
    this.durableAppliedSeq = appliedSeq;
    for (const e of entries) {
      if (e.seq <= appliedSeq) continue;
      invariant(e.seq === appliedSeq + 1 + this.pending.length, `received journal entries continue the apply position without a gap (${e.seq} after ${appliedSeq + this.pending.length})`);
      this.pending.push(e);
    }
    this.receivedSeqValue = Math.max(appliedSeq, entries.at(-1)?.seq ?? 0);
    this.acceptedSeq = this.receivedSeqValue;
  }

  static async open(dir: string, group: string, env: JournalEnv, log: Logger): Promise<ReceivedJournal> {
    const saved = (await readJsonIfExists(path.join(dir, 'applied.json'), env.disk)) as { appliedSeq?: number } | undefined;
    const appliedSeq = Number(saved?.appliedSeq ?? 0);
    // What was received is exactly what the journal files hold from the apply position on, without a
    // gap (or, when trimmed, what was applied): entries after a gap were never acknowledged, and kept
    // they would make the primary resume after them and skip the missing ones.
    const { store, entries } = await JournalStore.open(dir, env, log, undefined, appliedSeq + 1);
    return new ReceivedJournal(group, dir, store, env, entries, appliedSeq, log);
  }

  get receivedSeq(): number {
    return this.receivedSeqValue;
  }

  get appliedSeq(): number {
    return this.appliedSeqValue;
  }

  /** Entries received and not applied yet, oldest first. */
  pendingEntries(): StoredEntry[] {
    return this.pending.toArray();
  }

  get backlog(): number {
    return this.acceptedSeq - this.appliedSeqValue;
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
  /**
   * Stores a batch from the primary. Entries at or below what was already accepted are duplicates
   * (a resend after a lost answer) and are skipped; a gap is refused so the primary resends. It
   * resolves once the entries are durable (synced): only then are they applied, and acknowledged
   * to the primary (which deletes them), so a power loss here can lose neither.
   */
  receive(entries: Array<{ entry: JournalEntry; encoded?: Buffer }> | JournalEntry[], streamStart = 0): Promise<void> {
    // Batches are taken one at a time: a stream restart (drain, reset) must not interleave with another batch.
    const run = this.receiving.then(() => this.receiveNow(entries, streamStart));
    this.receiving = run.catch(() => undefined);
    return run;
  }

  private receiving: Promise<void> = Promise.resolve();

  private async receiveNow(entries: Array<{ entry: JournalEntry; encoded?: Buffer }> | JournalEntry[], streamStart: number): Promise<void> {
    const items = entries.map((x) => ('entry' in x ? x : { entry: x, encoded: undefined }));
    if (streamStart > this.acceptedSeq) {
      // The primary abandoned its entries after what it knew was received here (it fell back to
      // bitmaps and resyncs their regions). What was received here is in no bitmap of the primary
      // any more: apply it before starting over, or those regions would be lost.
      this.log.warn({ group: this.group, from: this.acceptedSeq, to: streamStart }, 'primary restarted the journal stream');
      await this.drain(this.acceptedSeq);
      await this.resetTo(streamStart);
    }
    const fresh = items.filter((x) => x.entry.seq > this.acceptedSeq);
    if (fresh.length === 0) return this.durableThrough(this.acceptedSeq);
    if (fresh[0]!.entry.seq !== this.acceptedSeq + 1) {
      throw new TricopyError('conflict', `journal of group ${this.group}: expected entry ${this.acceptedSeq + 1}, got ${fresh[0]!.entry.seq}`);
    }
    const writes: Promise<void>[] = [];
    for (const { entry: e, encoded } of fresh) {
      invariant(e.seq === this.acceptedSeq + 1, 'received journal entries are consecutive');
      if (e.op === JournalOp.CopyRegion) throw new TricopyError('invalid-argument', 'copy markers must be shipped with their data');
      const { stored, written } = encoded ? this.store.append(e, [encoded]) : this.store.append(e);
      writes.push(written);
      this.staged.push(stored);
      if (this.cachedBytes < maxReceivedCacheBytes) {
        this.cache.set(e.seq, e);
        this.cachedBytes += e.data?.length ?? 0;
      }
      this.acceptedSeq = e.seq;
    }
    await Promise.all(writes);
    await this.durableThrough(this.acceptedSeq);
  }

  /** Syncs the journal and moves staged entries through `seq` to the ones to apply (in order). */
  private async durableThrough(seq: number): Promise<void> {
    if (this.receivedSeqValue >= seq) return;
    await this.store.sync();
    while (this.staged.length > 0 && this.staged.first()!.seq <= seq) {
      const e = this.staged.shift()!;
      this.pending.push(e);
      this.receivedSeqValue = e.seq;
    }
    this.kick();
  }

  /** Resolves when every entry received up to now (or `seq`) is applied and recorded durably. */
  drain(seq = this.acceptedSeq): Promise<void> {
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
    await this.applyIdle();
    this.pending.clear();
    this.cache.clear();
    this.cachedBytes = 0;
    this.receivedSeqValue = seq;
    this.acceptedSeq = seq;
    this.staged.clear();
    this.appliedSeqValue = seq;
    this.durableAppliedSeq = seq;
    await this.store.reset(seq + 1);
    await this.persistPosition();
    this.paused = false;
    this.kick();
  }

  async close(): Promise<void> {
    this.paused = true;
    await this.applyIdle();
    this.env.clock.clearTimer(this.persistTimer);
    await this.recording;
    if (this.flusher && this.appliedSeqValue > this.durableAppliedSeq) {
      await this.flusher().catch(() => undefined);
      this.durableAppliedSeq = this.appliedSeqValue;
    }
    await this.persistPosition().catch(() => undefined);
    await this.store.close();
  }

  /**
   * Stops applying at the next batch boundary and resolves once no batch runs, so the group's
   * volumes hold a prefix of the primary's writes (a batch writes non-overlapping entries at once,
   * so in the middle of one they may not). Returns the release; received entries wait meanwhile.
   */
  async holdApply(): Promise<() => void> {
    this.applyHolds++;
    await this.applyIdle();
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.applyHolds--;
      this.kick();
    };
  }

  /** Resolves when no apply batch is running (after a pause, none starts). */
  private async applyIdle(): Promise<void> {
    while (this.applyRun) await this.applyRun;
  }

  private kick(): void {
    if (this.applying || this.paused || this.applyHolds > 0 || !this.applier) return;
    this.applying = true;
    this.applyRun = this.applyLoop().finally(() => {
      this.applying = false;
      this.applyRun = undefined;
      if (this.pending.length > 0 && !this.paused && this.applyHolds === 0 && !this.applyError) this.kick();
    });
  }

  private async applyLoop(): Promise<void> {
    try {
      while (this.pending.length > 0 && !this.paused && this.applyHolds === 0) {
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
    this.persistTimer = this.env.clock.setTimer(progressPersistIntervalMs, () => {
      this.persistTimer = undefined;
      this.makeAppliedDurable().catch((err: unknown) => this.log.error({ err, group: this.group }, 'cannot record the apply position'));
    });
    this.persistTimer.unref();
  }

  /**
   * Records the apply position, one recording at a time: two at once (the timer's and a drain's)
   * could write their positions out of order, leaving an older one in the file after the journal
   * was trimmed through the newer.
   */
  private makeAppliedDurable(): Promise<void> {
    const run = this.recording.then(() => this.recordApplied());
    this.recording = run.catch(() => undefined);
    return run;
  }

  private recording: Promise<void> = Promise.resolve();

  /** Flushes the volumes, then records the apply position (never ahead of durable data). */
  private async recordApplied(): Promise<void> {
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
    await atomicWriteJson(path.join(this.dir, 'applied.json'), { appliedSeq: seq }, this.env.disk);
  }
}

/** Removes a group's journal directory (the group no longer exists on this node). */
export async function removeJournalDir(disk: Disk, dir: string): Promise<void> {
  await disk.remove(dir);
  // Durable at once: a removal a power loss takes back brings old entries back without the
  // progress that said they were delivered (sim seeds 1204, 1244; a new stream drops such leftovers
  // too, since the pair record goes before its journal and a crash between leaves them).
  await disk.syncDir(path.dirname(dir)).catch((err: unknown) => {
    if (diskErrorCode(err) !== 'ENOENT') throw err; // nothing was there to remove
  });
}
