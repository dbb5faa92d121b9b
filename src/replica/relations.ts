// Everything in-node that hangs on one volume: its changed-block bitmaps, its snapshots and the
// replica pairs it is the primary of. Installed as the volume's hooks (volume/volume.ts) while it
// has any of them, so every change of the volume, whoever makes it (a host through NBD, a remote
// copy applying what it received, a resync, a restore), passes here:
//
//   gate → region lock → bitmaps marked → newest snapshot preserves the old contents → each replica
//   pair prepares (copy-on-write / record) → the volume changes, beside the dual writes → unlock
//
// A write (a host's, or one remote copy applies) whose only wait is a snapshot's copy-on-write is
// answered once the old contents are in the snapshot's file, and reaches the volume once they are
// durable (the bytes wait in the volume's overlay, the region stays locked): a power loss then
// finds the old contents preserved or the volume unchanged, and a FLUSH waits for these writes,
// as it waits for writes in the page cache. A quick split may not do this (spec 003 §5.1 rule 2:
// no acknowledgement before the copy is durable), nor a FUA write.
//
// The NBD layer never sees this; it serves block devices. Remote copy never sees it either: it
// writes volumes, and the volume calls its hooks.
import { errorMessage } from '../common/errors';
import { RangeLock } from '../common/range-lock';
import type { ContextRun, Extent, WriteOptions, ZeroOptions } from '../volume/block-device';
import { BlockDeviceError, type BlockDevice } from '../volume/block-device';
import type { Volume, VolumeHooks } from '../volume/volume';
import { type ChangedBlockBitmaps, bitmapRuns, dirtyBitmapContextPrefix } from './changed-blocks';
import { Gate } from './gate';
import { maxDeferredBytesPerVolume, maxDeferredWritesPerVolume, regionBytes } from './limits';
import type { PrimaryAccess, ReplicaPair } from './pair';
import type { SnapshotChain } from './snapshots';

export class VolumeRelations implements VolumeHooks, PrimaryAccess {
  readonly gate = new Gate();
  readonly lock = new RangeLock();
  bitmaps: ChangedBlockBitmaps | null = null;
  snapshots: SnapshotChain | null = null;
  /** Pairs this volume is the primary of. */
  replicas: ReplicaPair[] = [];
  /** Set while a restore or rollback owns the volume: hosts may not attach it, and why. */
  exclusive: string | null = null;
  /** State changes holding the gate now (the hooks stay installed meanwhile). */
  private holding = 0;
  /** Writes answered before they reached the volume, until they have (never rejects). */
  private readonly deferred = new Set<Promise<void>>();

  constructor(readonly volume: Volume) {}

  /** Installs or removes the hooks: a volume with nothing hanging on it keeps the plain write path. */
  refresh(): void {
    const needed = (this.bitmaps?.size ?? 0) > 0 || (this.snapshots?.count ?? 0) > 0 || this.replicas.length > 0 || this.holding > 0;
    if (needed && !this.volume.hooked) this.volume.setHooks(this);
    else if (!needed && this.volume.hooked) this.volume.setHooks(null);
  }

  /**
   * Holds the volume still for a state change: the hooks are installed (so every new change waits
   * at the gate), the changes in flight through the gate finish, and so do any that started on the
   * plain write path before the hooks were there. Returns the release.
   */
  async hold(): Promise<() => void> {
    this.holding++;
    this.refresh();
    let release: (() => void) | undefined;
    try {
      release = await this.gate.hold();
      await this.volume.idle();
    } catch (err) {
      release?.();
      this.holding--;
      this.refresh();
      throw err;
    }
    return () => {
      release!();
      this.holding--;
      this.refresh();
    };
  }

  /** Runs `fn` with the volume held still (hold()). */
  async whileHeld<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.hold();
    try {
      return await fn();
    } finally {
      release();
    }
  }

  get empty(): boolean {
    return (this.bitmaps?.size ?? 0) === 0 && (this.snapshots?.count ?? 0) === 0 && this.replicas.length === 0 && this.exclusive === null;
  }

  // --- PrimaryAccess ------------------------------------------------------------------------------

  enter(): Promise<void> | undefined {
    return this.gate.enter();
  }

  leave(): void {
    this.gate.leave();
  }

  lockRegions(offset: number, length: number): Promise<() => void> {
    const start = Math.floor(offset / regionBytes) * regionBytes;
    const end = Math.ceil((offset + Math.max(1, length)) / regionBytes) * regionBytes;
    return this.lock.acquire(start, end - start);
  }

  // --- VolumeHooks ---------------------------------------------------------------------------------

  write(offset: number, pieces: Buffer[], length: number, options: WriteOptions, apply: (pieces?: Buffer[]) => Promise<void>): Promise<void> {
    return this.change(offset, length, apply, (p) => p.mirrorWrite(offset, pieces, options), options.fua ? undefined : pieces);
  }

  writeZeroes(offset: number, length: number, options: ZeroOptions, apply: () => Promise<void>): Promise<void> {
    return this.change(offset, length, apply, (p) => p.mirrorZeroes(offset, length, options));
  }

  async flush(apply: () => Promise<void>): Promise<void> {
    // The writes answered before this flush reach the volume first (later ones may be waited for too).
    if (this.deferred.size > 0) await Promise.all([...this.deferred]);
    if (this.volume.overlay.failure) throw this.volume.overlay.failure;
    const tasks: Array<Promise<void>> = [apply()];
    // Dual-written data must be as durable as the primary's; copy-on-write data is durable already.
    for (const p of this.replicas) {
      const mirrored = p.mirrorFlush();
      if (mirrored) tasks.push(mirrored);
    }
    await Promise.all(tasks);
  }

  /** Waits until every write answered before it reached the volume has reached it (or failed). */
  async settle(): Promise<void> {
    while (this.deferred.size > 0) await Promise.all([...this.deferred]);
  }

  /**
   * One change through the hooks. `deferrable`: the write's bytes, when it may be answered before it
   * reaches the volume (not FUA).
   */
  private async change(offset: number, length: number, apply: (pieces?: Buffer[]) => Promise<void>, mirror: (p: ReplicaPair) => Promise<void> | undefined,
    deferrable?: Buffer[]): Promise<void> {
    const wait = this.gate.enter();
    if (wait) await wait;
    let handedOver = false;
    try {
      const locking = (this.snapshots?.count ?? 0) > 0 || this.replicas.length > 0;
      const release = locking ? await this.lockRegions(offset, length) : undefined;
      try {
        // Checked again after the waits (the volume checked on entry): a deferred write that failed
        // meanwhile, perhaps in this very range, stays in the overlay and would shadow this one.
        if (this.volume.overlay.failure) throw this.volume.overlay.failure;
        const marked = this.bitmaps?.mark(offset, length);
        if (marked) await marked;
        const preserved = this.snapshots?.preserve(this.volume, offset, length);
        if (preserved) {
          if (deferrable && this.replicas.length === 0) {
            await preserved.copied;
            if (this.mayDefer(offset, length)) {
              this.defer(offset, deferrable, length, preserved.durable, apply, release);
              handedOver = true;
              return;
            }
          }
          await preserved.durable;
        }
        for (const p of this.replicas) {
          const prepared = p.beforePrimaryChange(offset, length);
          if (prepared) await prepared;
        }
        if (this.replicas.length === 0) return await apply();
        const tasks: Array<Promise<void>> = [apply()];
        for (const p of this.replicas) {
          const mirrored = mirror(p);
          if (mirrored) tasks.push(mirrored);
        }
        // Dual writes never reject (a failure suspends the pair); wait for all before unlocking.
        const [own] = await Promise.allSettled(tasks);
        if (own!.status === 'rejected') throw own!.reason;
      } finally {
        if (!handedOver) release?.();
      }
    } finally {
      if (!handedOver) this.gate.leave();
    }
  }

  /**
   * Within the bounds, and only where the volume's allocation map already says "data" durably (a
   * deferred write must not show as a hole in the block status while it waits).
   */
  private mayDefer(offset: number, length: number): boolean {
    const overlay = this.volume.overlay;
    if (overlay.failure || overlay.size >= maxDeferredWritesPerVolume || overlay.bytes + length > maxDeferredBytesPerVolume) return false;
    const { first, count } = this.volume.allocation.chunkRange(offset, length);
    return !this.volume.allocation.hasUnpersistedChanges && this.volume.allocation.allSet(first, count);
  }

  /** Answers the write now; it reaches the volume once `durable` resolves, holding gate and region lock until then. */
  private defer(offset: number, pieces: Buffer[], length: number, durable: Promise<void>, apply: (pieces?: Buffer[]) => Promise<void>,
    release: (() => void) | undefined): void {
    const entry = this.volume.overlay.add(offset, pieces, length);
    const done: Promise<void> = durable.then(() => apply([entry.data])).then(() => this.volume.overlay.remove(entry), (err: unknown) => {
      // The write was answered and cannot be completed without breaking the snapshot (or the disk
      // failed): it stays readable from the overlay, and every later change and flush fails, so
      // the host learns of it at its next flush at the latest, as with any lost writeback.
      this.volume.overlay.fail(new BlockDeviceError('EIO', `volume ${this.volume.name}: a write answered before its snapshot copy was durable could not be ` +
        `completed (${errorMessage(err)}); the volume refuses changes until the node restarts`));
    }).finally(() => {
      this.deferred.delete(done);
      release?.();
      this.gate.leave();
    });
    this.deferred.add(done);
  }

  // --- reads of snapshots ---------------------------------------------------------------------------

  /** Reads snapshot `index`'s image: under the gate (its files stay) and the region lock (the volume holds still). */
  async readSnapshot(index: () => number, offset: number, length: number, target?: Buffer): Promise<Buffer> {
    const buffer = target ? target.subarray(0, length) : Buffer.allocUnsafe(length);
    if (length === 0) return buffer;
    const wait = this.gate.enter();
    if (wait) await wait;
    try {
      const chain = this.snapshots;
      const at = index();
      if (!chain || at < 0) throw new BlockDeviceError('EIO', 'the snapshot was deleted');
      const release = await this.lockRegions(offset, length);
      try {
        await chain.read(at, this.volume, offset, length, buffer);
      } finally {
        release();
      }
    } finally {
      this.gate.leave();
    }
    return buffer;
  }

  /** Metadata contexts of the volume's own export: its changed-block bitmaps. */
  metaContexts(): string[] {
    return (this.bitmaps?.names() ?? []).map((n) => `${dirtyBitmapContextPrefix}${n}`);
  }

  contextRuns(context: string, offset: number, length: number, maxRuns: number): ContextRun[] | undefined {
    if (!context.startsWith(dirtyBitmapContextPrefix)) return undefined;
    const name = context.slice(dirtyBitmapContextPrefix.length);
    if (!this.bitmaps?.has(name)) return undefined;
    return bitmapRuns(this.bitmaps.bits(name), this.volume.sizeBytes, offset, length, maxRuns);
  }
}

/** A volume's export with its changed-block bitmaps offered as metadata contexts. */
export class ContextDevice implements BlockDevice {
  constructor(private readonly inner: BlockDevice, private readonly relations: VolumeRelations) {}

  get name(): string {
    return this.inner.name;
  }

  get sizeBytes(): number {
    return this.inner.sizeBytes;
  }

  get readOnly(): boolean {
    return this.inner.readOnly;
  }

  read(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    return this.inner.read(offset, length, target);
  }

  write(offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    return this.inner.write(offset, data, options);
  }

  writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    return this.inner.writeZeroes(offset, length, options);
  }

  trim(offset: number, length: number, options: WriteOptions): Promise<void> {
    return this.inner.trim(offset, length, options);
  }

  flush(): Promise<void> {
    return this.inner.flush();
  }

  extents(offset: number, length: number, maxExtents: number): Extent[] {
    return this.inner.extents(offset, length, maxExtents);
  }

  metaContexts(): string[] {
    return this.relations.metaContexts();
  }

  contextRuns(context: string, offset: number, length: number, maxRuns: number): ContextRun[] | undefined {
    return this.relations.contextRuns(context, offset, length, maxRuns);
  }
}

/** A snapshot's read-only export, `volume@snapshot`. */
export class SnapshotDevice implements BlockDevice {
  readonly readOnly = true;

  constructor(readonly name: string, private readonly relations: VolumeRelations, private readonly snapshot: string) {}

  get sizeBytes(): number {
    return this.relations.volume.sizeBytes;
  }

  private index(): number {
    const chain = this.relations.snapshots;
    if (!chain) return -1;
    return chain.list().findIndex((r) => r.name === this.snapshot);
  }

  read(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    return this.relations.readSnapshot(() => this.index(), offset, length, target);
  }

  write(): Promise<void> {
    return Promise.reject(new BlockDeviceError('EPERM', `snapshot ${this.name} is read-only`));
  }

  writeZeroes(): Promise<void> {
    return Promise.reject(new BlockDeviceError('EPERM', `snapshot ${this.name} is read-only`));
  }

  async trim(): Promise<void> {
    throw new BlockDeviceError('EPERM', `snapshot ${this.name} is read-only`);
  }

  async flush(): Promise<void> {
    // Nothing to make durable: preserved regions are durable before they are recorded.
  }

  extents(offset: number, length: number, maxExtents: number): Extent[] {
    const at = this.index();
    const chain = this.relations.snapshots;
    if (!chain || at < 0) return [{ offset, length: Math.max(1, length), allocated: true, zero: false }];
    return chain.extents(at, this.relations.volume, offset, length, maxExtents);
  }

  metaContexts(): string[] {
    const at = this.index();
    if (at < 0) return [];
    return this.relations.snapshots!.list()[at]!.bitmaps.map((n) => `${dirtyBitmapContextPrefix}${n}`);
  }

  contextRuns(context: string, offset: number, length: number, maxRuns: number): ContextRun[] | undefined {
    const at = this.index();
    if (at < 0 || !context.startsWith(dirtyBitmapContextPrefix)) return undefined;
    return this.relations.snapshots!.frozenRuns(at, context.slice(dirtyBitmapContextPrefix.length), offset, length, maxRuns);
  }
}
