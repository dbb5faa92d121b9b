// Per paired volume, what the data path holds while the node runs: the range lock that orders
// overlapping writes and copies, the activity log of a sync primary, async entries held back until
// the sync copy has their writes, and the flag that quiesces the volume during a role swap.
import * as path from 'node:path';
import type { Disk } from '../../common/disk';
import type { VolumeAccess } from '../env';
import type { PairRegistry } from '../pairs/registry';
import { ActivityLog } from './activity-log';
import { RangeLock } from '../../common/range-lock';

export interface HeldEntry {
  group: string;
  seq: number;
}

export interface VolumeRuntime {
  readonly lock: RangeLock;
  activity: ActivityLog | undefined;
  /** Async entries of this volume held until its sync copy (fence data) has their writes again. */
  held: HeldEntry[];
  /** A role swap is quiescing this volume: new host writes are refused. */
  swapping: boolean;
  /**
   * Pairs being created for this volume: until they are admitted, every write goes through the
   * write path (and its range lock), so the creation can hold them while it fixes what to copy.
   */
  joining: number;
}

export class VolumeRuntimes {
  private readonly runtimes = new Map<string, VolumeRuntime>();
  private readonly openingLogs = new Map<string, Promise<void>>();

  constructor(private readonly disk: Disk, private readonly pairsDir: string, private readonly volumes: VolumeAccess,
    private readonly registry: PairRegistry) {}

  get(volume: string): VolumeRuntime {
    let vr = this.runtimes.get(volume);
    if (!vr) {
      vr = { lock: new RangeLock(), activity: undefined, swapping: false, held: [], joining: 0 };
      this.runtimes.set(volume, vr);
    }
    return vr;
  }

  peek(volume: string): VolumeRuntime | undefined {
    return this.runtimes.get(volume);
  }

  entries(): IterableIterator<[string, VolumeRuntime]> {
    return this.runtimes.entries();
  }

  /**
   * Opens the activity log of a volume once it is the primary of a pair. `durable` makes every
   * completed write of the volume durable (the log clears an extent only after it).
   */
  async useActivityLog(volume: string, durable: (volume: string) => Promise<void>): Promise<void> {
    if (this.registry.ofVolume(volume).some((p) => p.record.role === 'primary')) await this.openActivityLog(volume, durable);
  }

  /** Opens the volume's activity log if it is not open (a primary pair is about to join). */
  async openActivityLog(volume: string, durable: (volume: string) => Promise<void>): Promise<void> {
    const vr = this.get(volume);
    if (vr.activity) return;
    // One open per volume even when two pairs of it join at once (a second log would lose marks).
    let opening = this.openingLogs.get(volume);
    if (!opening) {
      opening = ActivityLog.open(this.disk, path.join(this.pairsDir, `${volume}.activity`), this.volumes.get(volume).sizeBytes).then((log) => {
        log.beforeClear = () => durable(volume);
        vr.activity = log;
      }).finally(() => this.openingLogs.delete(volume));
      this.openingLogs.set(volume, opening);
    }
    await opening;
  }

  /**
   * Holds every write to the volumes (after the ones in flight finish) until the returned release:
   * changes of a consistency group's pairs happen at one instant of its write history. Writes wait;
   * none is refused.
   */
  async hold(volumes: string[]): Promise<() => void> {
    const releases: Array<() => void> = [];
    for (const v of [...new Set(volumes)].sort()) releases.push(await this.get(v).lock.acquire(0, Number.MAX_SAFE_INTEGER));
    return () => {
      for (const r of releases) r();
    };
  }

  /**
   * Runs `op` with no write of the volumes in flight and none starting: a transition into forwarding
   * (a resync) must not let a write recorded only in the bitmap be acknowledged after the pair
   * forwards, as if the secondary had it.
   */
  async whileHeld<T>(volumes: string[], op: () => Promise<T>): Promise<T> {
    const release = await this.hold(volumes);
    try {
      return await op();
    } finally {
      release();
    }
  }

  /** A clean stop: every write is durable, so no extent needs sending again at the next start. */
  async close(durable: (volume: string) => Promise<void>): Promise<void> {
    for (const [volume, vr] of this.runtimes) {
      if (!vr.activity) continue;
      const clean = await durable(volume).then(() => true, () => false);
      if (clean && vr.lock.activeCount === 0) await vr.activity.clearIdle();
      await vr.activity.close();
    }
  }
}
