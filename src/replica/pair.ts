// One in-node replica pair at run time (spec 003 §5.1): what a change of the primary does to the
// replica in each state (dual write, copy-on-write, recording), how hosts read and write the replica
// while it is split (copy-on-read or pass-through, copy-before-partial-write), and the background
// copy (initial copy, the rest of a quick split, resync, restore).
//
// Locks: every copy and every change of a region runs under the primary's region lock (one lock per
// primary volume, ranges widened to whole regions), so a background copy, a copy-on-write, a
// copy-on-read and a dual write of the same region never interleave (§5.1 rule 1). State changes
// hold the primary's gate (relations.ts), so none happens during a change.
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { ReplicaState } from '../contracts/replicas';
import { BlockDeviceError, type BlockDevice, type Extent, type WriteOptions, type ZeroOptions } from '../volume/block-device';
import type { Volume } from '../volume/volume';
import { copyBatchRegions, regionBytes } from './limits';
import type { ReplicaBitmaps, ReplicaRecord } from './pair-store';
import { copyRunning, exported, mirrors } from './state-table';

/** What a pair needs of the primary volume's relations: its gate and region lock. */
export interface PrimaryAccess {
  enter(): Promise<void> | undefined;
  leave(): void;
  lockRegions(offset: number, length: number): Promise<() => void>;
}

export interface PairCallbacks {
  /** A copy or a dual write failed: the service moves the pair to suspended (later, outside the write). */
  failed(pair: ReplicaPair, reason: string): void;
  /** The running copy finished (the service applies copy-complete). */
  copyComplete(pair: ReplicaPair): void;
  /** The primary as hosts see it (remote copy included): a restore writes through it. */
  primaryFront(): BlockDevice;
  /** Awaited before each background copy batch (a test seam). */
  beforeCopyBatch?: () => Promise<void>;
  /** Bytes per second the background copy may copy; 0: unthrottled. */
  copyRateBytesPerSecond?: number;
}

const noZeroOptions: ZeroOptions = { fua: false, noHole: false, fastOnly: false };

export class ReplicaPair {
  /** Bytes copied since the node started (every kind of copy). */
  copiedBytes = 0;
  private copyEpoch = 0;
  private copyLoop: Promise<void> | null = null;
  /** Bumped whenever copied bits are cleared behind a running copy: its uncommitted work is void. */
  private invalidations = 0;
  /** The loop waits in beforeCopyBatch, between batches: stopping it need not wait for it. */
  private parked = false;
  private closed = false;

  constructor(
    public record: ReplicaRecord,
    readonly bitmaps: ReplicaBitmaps,
    readonly primary: Volume,
    readonly secondary: Volume,
    private readonly access: PrimaryAccess,
    private readonly callbacks: PairCallbacks,
    private readonly log: Logger,
  ) {}

  get name(): string {
    return this.record.name;
  }

  get state(): ReplicaState {
    return this.record.state;
  }

  get regionCount(): number {
    return Math.ceil(this.primary.sizeBytes / regionBytes);
  }

  get pendingRegions(): number {
    return this.regionCount - this.bitmaps.copied.setBitCount;
  }

  get inSync(): boolean {
    return this.pendingRegions === 0;
  }

  // --- changes of the primary (called by the primary's hooks, under its gate and region lock) ----

  /** Before the primary changes [offset, offset+length): copy-on-write, or record the change. */
  beforePrimaryChange(offset: number, length: number): Promise<void> | undefined {
    switch (this.record.state) {
      case 'split-pending':
        return this.copyOnWrite(offset, length);
      case 'split':
        return markDurably(this.bitmaps.dirtyPrimary, offset, length);
      case 'suspended':
        // The replica is no image; whatever the primary changes must be copied by the next resync.
        return clearDurably(this.bitmaps.copied, offset, length);
      default:
        return undefined;
    }
  }

  private async copyOnWrite(offset: number, length: number): Promise<void> {
    const { first, count } = regionsOf(offset, length);
    // The old contents of every region not copied yet go to the replica, durably, before the
    // primary changes (§5.1 rule 2); regions copied already are skipped (rule 3). The change is
    // recorded at the same time, not after: a bit set for a change that then never happens only
    // makes a resync copy the region again, so its sync need not wait for the copy's.
    const marked = markDurably(this.bitmaps.dirtyPrimary, offset, length);
    if (!this.bitmaps.copied.allSet(first, count)) {
      const copying = this.copyToReplica(first, count);
      await Promise.all([copying, marked]);
      return;
    }
    if (marked) await marked;
  }

  /** The dual write of a mirroring state; failures suspend the pair and do not fail the host write. */
  mirrorWrite(offset: number, pieces: Buffer[], options: WriteOptions): Promise<void> | undefined {
    if (!mirrors(this.record.state)) return undefined;
    return this.secondary.write(offset, pieces, options).catch((err: unknown) => this.mirrorFailed(offset, totalOf(pieces), err));
  }

  mirrorZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> | undefined {
    if (!mirrors(this.record.state)) return undefined;
    return this.secondary.writeZeroes(offset, length, { ...options, fastOnly: false }).catch((err: unknown) => this.mirrorFailed(offset, length, err));
  }

  mirrorFlush(): Promise<void> | undefined {
    if (!mirrors(this.record.state)) return undefined;
    return this.secondary.flush().catch((err: unknown) => this.mirrorFailed(0, 0, err));
  }

  private async mirrorFailed(offset: number, length: number, err: unknown): Promise<void> {
    this.invalidations++;
    if (length > 0) await clearDurably(this.bitmaps.copied, offset, length)?.catch(() => undefined);
    this.callbacks.failed(this, `writing the replica failed: ${errorMessage(err)}`);
  }

  // --- the replica as hosts see it while split ---------------------------------------------------

  /** The replica's export: exactly the primary's size (§5.1 rule 8). */
  device(): BlockDevice {
    return new ReplicaDevice(this);
  }

  async readReplica(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    const buffer = target ? target.subarray(0, length) : Buffer.allocUnsafe(length);
    await this.entered(async () => {
      if (this.record.state === 'split' || length === 0) {
        await this.secondary.read(offset, length, buffer);
        return;
      }
      const { first, count } = regionsOf(offset, length);
      if (this.bitmaps.copied.allSet(first, count)) {
        await this.secondary.read(offset, length, buffer);
        return;
      }
      const release = await this.access.lockRegions(offset, length);
      try {
        if (this.record.readMissPolicy === 'copy-on-read') {
          await this.copyToReplica(first, count);
          await this.secondary.read(offset, length, buffer);
          return;
        }
        // Pass-through: the primary still holds the split image of every region not copied (a
        // change would have copied it first), and the region lock keeps it so while we read.
        let at = offset;
        const end = offset + length;
        while (at < end) {
          const region = Math.floor(at / regionBytes);
          const copied = this.bitmaps.copied.get(region);
          let stop = Math.min(end, (region + 1) * regionBytes);
          while (stop < end && this.bitmaps.copied.get(Math.floor(stop / regionBytes)) === copied) stop = Math.min(end, stop + regionBytes);
          await (copied ? this.secondary : this.primary).read(at, stop - at, buffer.subarray(at - offset, stop - offset));
          at = stop;
        }
      } finally {
        release();
      }
    });
    return buffer;
  }

  async writeReplica(offset: number, data: Buffer[], options: WriteOptions): Promise<void> {
    const length = totalOf(data);
    await this.entered(() => this.changeReplica(offset, length, () => this.secondary.write(offset, data, options)));
  }

  async zeroReplica(offset: number, length: number, options: ZeroOptions): Promise<void> {
    await this.entered(() => this.changeReplica(offset, length, () => this.secondary.writeZeroes(offset, length, { ...options, fastOnly: false })));
  }

  async flushReplica(): Promise<void> {
    await this.entered(() => this.secondary.flush());
  }

  private async changeReplica(offset: number, length: number, change: () => Promise<void>): Promise<void> {
    if (length === 0) return change();
    if (this.record.state === 'split') {
      await markDurably(this.bitmaps.dirtySecondary, offset, length);
      return change();
    }
    const release = await this.access.lockRegions(offset, length);
    try {
      // A region not copied yet first gets its split image, so the part the host does not write
      // keeps it (§5.1: partial write of an uncopied region; spec §9 #15).
      const { first, count } = regionsOf(offset, length);
      if (!this.bitmaps.copied.allSet(first, count)) await this.copyToReplica(first, count);
      await markDurably(this.bitmaps.dirtySecondary, offset, length);
      await change();
    } finally {
      release();
    }
  }

  replicaExtents(offset: number, length: number, maxExtents: number): Extent[] {
    if (this.record.state !== 'split-pending') return this.secondary.extents(offset, Math.min(length, this.primary.sizeBytes - offset), maxExtents);
    // Not copied yet: the primary's status is the image's (the primary did not change there since).
    const end = Math.min(this.primary.sizeBytes, offset + Math.max(1, length));
    const out: Extent[] = [];
    let at = offset;
    while (at < end) {
      const region = Math.floor(at / regionBytes);
      const stop = Math.min(end, (region + 1) * regionBytes);
      const source = this.bitmaps.copied.get(region) ? this.secondary : this.primary;
      const allocated = source.allocation.get(region);
      const previous = out[out.length - 1];
      if (previous && previous.allocated === allocated) previous.length += stop - at;
      else if (out.length < maxExtents) out.push({ offset: at, length: stop - at, allocated, zero: !allocated });
      else break;
      at = stop;
    }
    return out;
  }

  private async entered<T>(fn: () => Promise<T>): Promise<T> {
    const wait = this.access.enter();
    if (wait) await wait;
    try {
      if (!exported(this.record.state)) {
        throw new BlockDeviceError('EIO', `replica ${this.name} is ${this.record.state}: hosts may use it only while it is split`);
      }
      return await fn();
    } finally {
      this.access.leave();
    }
  }

  // --- copies --------------------------------------------------------------------------------------

  /** Copies the runs of regions in [first, first+count) not marked copied; true when any was. */
  private async copyUncopiedRuns(first: number, count: number): Promise<boolean> {
    const copied = this.bitmaps.copied;
    let any = false;
    for (let r = first; r < first + count;) {
      if (copied.get(r)) {
        r++;
        continue;
      }
      let end = r + 1;
      while (end < first + count && !copied.get(end)) end++;
      await this.copyRange(this.primary, this.secondary, r, end);
      any = true;
      r = end;
    }
    return any;
  }

  /**
   * Copies the regions of [first, first+count) not copied yet from the primary to the replica and
   * records them as copied, durably: data synced before the bits (a bit never claims data a power
   * loss could take). The caller holds the region lock of the range. A copy-on-write awaits this
   * before the primary's change is issued (§5.1 rule 2), since writeback may put that change on the
   * disk at any moment after. The replica's flush and the bitmap's sync are group commits, so
   * concurrent first writes to different regions share them.
   */
  async copyToReplica(first: number, count: number): Promise<void> {
    const copied = this.bitmaps.copied;
    if (!await this.copyUncopiedRuns(first, count)) return;
    await this.secondary.flush();
    if (copied.setRange(first, count) || copied.hasUnpersistedChanges) await copied.sync();
  }

  /** Copies regions [from, to) between volumes, holes as zeroes; counted in copiedBytes. */
  private async copyRange(source: Volume, target: Volume | BlockDevice, from: number, to: number): Promise<void> {
    const size = this.primary.sizeBytes;
    for (let r = from; r < to;) {
      const allocated = source.allocation.get(r);
      let end = r + 1;
      while (end < to && source.allocation.get(end) === allocated) end++;
      const start = r * regionBytes;
      const stop = Math.min(size, end * regionBytes);
      if (allocated) {
        const data = await source.read(start, stop - start);
        await target.write(start, data, { fua: false });
      } else {
        await target.writeZeroes(start, stop - start, noZeroOptions);
      }
      this.copiedBytes += stop - start;
      r = end;
    }
  }

  /** Starts the background copy of the current state, if it has one (stopping any older loop first). */
  async restartCopy(): Promise<void> {
    await this.stopCopy();
    const direction = copyRunning(this.record.state);
    if (!direction || this.closed) return;
    const epoch = ++this.copyEpoch;
    this.copyLoop = this.runCopy(epoch, direction).catch((err: unknown) => {
      if (epoch === this.copyEpoch && !this.closed) this.callbacks.failed(this, `the ${direction === 'to-primary' ? 'restore' : 'copy'} failed: ${errorMessage(err)}`);
    }).finally(() => {
      if (this.copyEpoch === epoch) this.copyLoop = null;
    });
  }

  /** Stops the background copy after its current batch. */
  async stopCopy(): Promise<void> {
    this.copyEpoch++;
    const loop = this.copyLoop;
    this.copyLoop = null;
    if (loop && !this.parked) await loop;
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.stopCopy();
  }

  /**
   * The background copy: batches of regions not copied yet, in order. Bits are set in commits of
   * many batches (the copied data synced first, then the bits): a region copied but not yet
   * committed is simply copied again by whoever needs it first (a copy-on-write copies the same
   * unchanged data; a dual write lands on both), so the lock need not be held until the commit.
   */
  private async runCopy(epoch: number, direction: 'to-replica' | 'to-primary'): Promise<void> {
    const copied = this.bitmaps.copied;
    const regions = this.regionCount;
    const rate = this.callbacks.copyRateBytesPerSecond ?? 0;
    const startedAt = Date.now();
    const startedBytes = this.copiedBytes;
    let pending: Array<{ first: number; count: number }> = [];
    let pendingRegions = 0;
    let lastCommit = Date.now();
    let invalidations = this.invalidations;
    const commit = async (): Promise<void> => {
      if (pending.length === 0) return;
      if (direction === 'to-replica') await this.secondary.flush();
      else await this.callbacks.primaryFront().flush();
      // A stopped copy or bits cleared meanwhile (a failed dual write): the regions are copied again.
      if (epoch === this.copyEpoch && invalidations === this.invalidations) {
        for (const p of pending) copied.setRange(p.first, p.count);
        if (copied.hasUnpersistedChanges) await copied.sync();
      }
      invalidations = this.invalidations;
      pending = [];
      pendingRegions = 0;
      lastCommit = Date.now();
    };
    let next = 0;
    for (;;) {
      if (epoch !== this.copyEpoch) return;
      let first = this.nextUncopied(next);
      if (first < 0) {
        // The end: commit, then look again from the start for regions cleared behind us.
        await commit();
        if (epoch !== this.copyEpoch) return;
        first = this.nextUncopied(0);
        if (first < 0) break;
      }
      if (this.callbacks.beforeCopyBatch) {
        this.parked = true;
        try {
          await this.callbacks.beforeCopyBatch();
        } finally {
          this.parked = false;
        }
        if (epoch !== this.copyEpoch) return;
        if (copied.get(first)) continue;
      }
      const count = Math.min(copyBatchRegions, regions - first);
      if (direction === 'to-replica') await this.copyBatchToReplica(epoch, first, count);
      else await this.restoreBatch(epoch, first, count);
      pending.push({ first, count });
      pendingRegions += count;
      next = first + count;
      if (pendingRegions * regionBytes >= commitBytes || Date.now() - lastCommit >= commitIntervalMs) await commit();
      // Let host I/O in between batches, and keep to the rate when one is set.
      const aheadMs = rate > 0 ? ((this.copiedBytes - startedBytes) / rate) * 1000 - (Date.now() - startedAt) : 0;
      if (aheadMs > 1) await new Promise<void>((resolve) => setTimeout(resolve, aheadMs));
      else await new Promise<void>((resolve) => setImmediate(resolve));
    }
    if (epoch !== this.copyEpoch) return;
    this.log.info({ replica: this.name, state: this.record.state, copiedBytes: this.copiedBytes }, 'replica copy finished');
    this.callbacks.copyComplete(this);
  }

  /** The first region at or after `from` not copied yet, or -1. */
  private nextUncopied(from: number): number {
    const copied = this.bitmaps.copied;
    const regions = this.regionCount;
    for (let r = from; r < regions; r++) {
      if ((r & 7) === 0 && r + 8 <= regions && copied.allSet(r, 8)) {
        r += 7;
        continue;
      }
      if (!copied.get(r)) return r;
    }
    return -1;
  }

  /** Copies the uncopied regions of a batch under the lock; the commit records them. */
  private async copyBatchToReplica(epoch: number, first: number, count: number): Promise<void> {
    const wait = this.access.enter();
    if (wait) await wait;
    try {
      if (epoch !== this.copyEpoch) return;
      const release = await this.access.lockRegions(first * regionBytes, count * regionBytes);
      try {
        await this.copyUncopiedRuns(first, count);
      } finally {
        release();
      }
    } finally {
      this.access.leave();
    }
  }

  /**
   * Restore: the replica's regions go back to the primary through the primary's front (so remote
   * copies and the primary's own snapshots and bitmaps see them as any change). Nothing else
   * writes the primary meanwhile: its export is refused while the pair restores.
   */
  private async restoreBatch(epoch: number, first: number, count: number): Promise<void> {
    if (epoch !== this.copyEpoch) return;
    const copied = this.bitmaps.copied;
    const front = this.callbacks.primaryFront();
    const size = this.primary.sizeBytes;
    for (let r = first; r < first + count;) {
      if (copied.get(r)) {
        r++;
        continue;
      }
      let end = r + 1;
      while (end < first + count && !copied.get(end) && this.secondary.allocation.get(end) === this.secondary.allocation.get(r)) end++;
      const start = r * regionBytes;
      const stop = Math.min(size, end * regionBytes);
      if (this.secondary.allocation.get(r)) {
        const data = await this.secondary.read(start, stop - start);
        await front.write(start, data, { fua: false });
      } else {
        await front.writeZeroes(start, stop - start, noZeroOptions);
      }
      this.copiedBytes += stop - start;
      r = end;
    }
  }
}

/** A background copy records what it copied at least this often (bytes, or time). */
const commitBytes = 64 * 1024 * 1024;
const commitIntervalMs = 1000;

/** The export of a split replica. */
class ReplicaDevice implements BlockDevice {
  readonly readOnly = false;

  constructor(private readonly pair: ReplicaPair) {}

  get name(): string {
    return this.pair.name;
  }

  get sizeBytes(): number {
    return this.pair.primary.sizeBytes;
  }

  read(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    return this.pair.readReplica(offset, length, target);
  }

  write(offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    return this.pair.writeReplica(offset, Buffer.isBuffer(data) ? [data] : data, options);
  }

  writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    return this.pair.zeroReplica(offset, length, options);
  }

  async trim(): Promise<void> {
    // Advisory, and the volume ignores it too.
  }

  flush(): Promise<void> {
    return this.pair.flushReplica();
  }

  extents(offset: number, length: number, maxExtents: number): Extent[] {
    return this.pair.replicaExtents(offset, length, maxExtents);
  }
}

export function regionsOf(offset: number, length: number): { first: number; count: number } {
  const first = Math.floor(offset / regionBytes);
  const last = Math.floor((offset + Math.max(1, length) - 1) / regionBytes);
  return { first, count: last - first + 1 };
}

/** Marks the regions of a change; resolves once new bits are on disk (undefined: nothing new). */
export function markDurably(bits: ReplicaBitmaps['copied'], offset: number, length: number): Promise<void> | undefined {
  if (bits.markBytes(offset, length) || bits.hasUnpersistedChanges) return bits.sync();
  return undefined;
}

function clearDurably(bits: ReplicaBitmaps['copied'], offset: number, length: number): Promise<void> | undefined {
  const { first, count } = regionsOf(offset, length);
  if (bits.clearRange(first, count) || bits.hasUnpersistedChanges) return bits.sync();
  return undefined;
}

function totalOf(pieces: Buffer[]): number {
  let n = 0;
  for (const p of pieces) n += p.length;
  return n;
}
