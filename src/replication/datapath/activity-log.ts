// The activity log of a primary volume (as DRBD's): coarse extents are marked durably before a write
// is issued and cleared lazily once the writes in them are durable. After a crash, every marked
// extent may differ between the primary and its copies (a sync secondary may have a write the
// primary lost, an async journal may lack a write the volume kept), so recovery sends it again.
import * as path from 'node:path';
import { PersistentBitmap } from '../../volume/bitmap';
import { type Disk, diskErrorCode } from '../../common/disk';
import { invariant } from '../../common/errors';
import { activityExtentBytes, maxColdMarkedExtents } from '../limits';

export { activityExtentBytes, maxColdMarkedExtents };

export class ActivityLog {
  private readonly active = new Map<number, number>(); // extent -> writes in flight
  private readonly cold: number[] = []; // marked extents with no write in flight, oldest first

  private constructor(private readonly bitmap: PersistentBitmap) {}

  static async open(disk: Disk, file: string, volumeBytes: number): Promise<ActivityLog> {
    const extents = Math.ceil(volumeBytes / activityExtentBytes);
    let bitmap: PersistentBitmap;
    try {
      bitmap = await PersistentBitmap.open(disk, file, activityExtentBytes);
      if (bitmap.bitCount < extents) await bitmap.grow(extents, false);
    } catch (err) {
      if (diskErrorCode(err) !== 'ENOENT') throw err;
      bitmap = await PersistentBitmap.create(disk, file, activityExtentBytes, extents);
      await disk.syncDir(path.dirname(file));
    }
    const log = new ActivityLog(bitmap);
    return log;
  }

  /** Byte ranges that were marked when the log was opened (writes a crash may have cut short). */
  markedRanges(): Array<{ offset: number; length: number }> {
    return [...this.bitmap.setRuns()].map((r) => ({ offset: r.first * activityExtentBytes, length: r.count * activityExtentBytes }));
  }

  /** Marks the extents of a write; resolves once the mark is on stable storage. */
  async begin(offset: number, length: number): Promise<void> {
    const { first, count } = this.bitmap.chunkRange(offset, Math.max(1, length));
    let newlyMarked = false;
    for (let e = first; e < first + count; e++) {
      this.active.set(e, (this.active.get(e) ?? 0) + 1);
      const coldAt = this.cold.indexOf(e);
      if (coldAt >= 0) this.cold.splice(coldAt, 1);
      if (!this.bitmap.get(e)) {
        this.bitmap.setRange(e, 1);
        newlyMarked = true;
      }
    }
    if (newlyMarked || this.bitmap.hasUnpersistedChanges) await this.bitmap.sync();
  }

  /** The write finished on every side: its extents may be cleared once cold. */
  end(offset: number, length: number): void {
    const { first, count } = this.bitmap.chunkRange(offset, Math.max(1, length));
    for (let e = first; e < first + count; e++) {
      const n = this.active.get(e);
      invariant(n !== undefined && n > 0, `activity log extent ${e} was marked before it ended`);
      if (n > 1) this.active.set(e, n - 1);
      else {
        this.active.delete(e);
        this.cold.push(e);
      }
    }
    if (this.cold.length > maxColdMarkedExtents) this.evictColdExtents();
  }

  /**
   * Set by the data path: makes every completed write durable (volume flush, journal sync). An
   * extent's mark may go only once the writes in it are durable, or a power loss could keep the
   * cleared mark and lose a write the other side has (or the other side may never get).
   */
  beforeClear: () => Promise<void> = () => Promise.resolve();
  private evicting: Promise<void> | null = null;

  private evictColdExtents(): void {
    if (this.evicting) return;
    const victims = this.cold.slice(0, this.cold.length - maxColdMarkedExtents);
    this.evicting = this.beforeClear().then(async () => {
      let changed = false;
      for (const e of victims) {
        const at = this.cold.indexOf(e);
        if (at < 0) continue; // written again meanwhile: stays marked
        this.cold.splice(at, 1);
        changed = this.bitmap.clearRange(e, 1) || changed;
      }
      if (changed) await this.bitmap.persist();
    }, () => undefined).finally(() => {
      this.evicting = null;
      if (this.cold.length > maxColdMarkedExtents) this.evictColdExtents();
    });
  }

  /** Clears every extent with no write in flight (the pair is suspended or deleted: a bitmap covers it). */
  async clearIdle(): Promise<void> {
    for (const e of this.cold.splice(0)) this.bitmap.clearRange(e, 1);
    for (const run of [...this.bitmap.setRuns()]) {
      for (let e = run.first; e < run.first + run.count; e++) if (!this.active.has(e)) this.bitmap.clearRange(e, 1);
    }
    await this.bitmap.sync();
  }

  async grow(volumeBytes: number): Promise<void> {
    const extents = Math.ceil(volumeBytes / activityExtentBytes);
    if (extents > this.bitmap.bitCount) await this.bitmap.grow(extents, false);
  }

  async close(): Promise<void> {
    await this.evicting;
    await this.bitmap.close();
  }
}
