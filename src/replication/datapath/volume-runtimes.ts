// Per paired volume, what the data path holds while the node runs: the range lock that orders
// overlapping writes and copies, the activity log of a sync primary, async entries held back until
// the sync copy has their writes, and the flag that quiesces the volume during a role swap.
import * as path from 'node:path';
import type { Disk } from '../../common/disk';
import type { VolumeAccess } from '../env';
import type { PairRegistry } from '../pairs/registry';
import { ActivityLog } from './activity-log';
import { RangeLock } from './range-lock';

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
}

export class VolumeRuntimes {
  private readonly runtimes = new Map<string, VolumeRuntime>();

  constructor(private readonly disk: Disk, private readonly pairsDir: string, private readonly volumes: VolumeAccess,
    private readonly registry: PairRegistry) {}

  get(volume: string): VolumeRuntime {
    let vr = this.runtimes.get(volume);
    if (!vr) {
      vr = { lock: new RangeLock(), activity: undefined, swapping: false, held: [] };
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

  /** Opens the activity log of a volume once it is the primary of a sync pair. */
  async useActivityLog(volume: string): Promise<void> {
    const vr = this.get(volume);
    const needs = this.registry.ofVolume(volume).some((p) => p.record.role === 'primary' && p.record.mode === 'sync');
    if (needs && !vr.activity) {
      vr.activity = await ActivityLog.open(this.disk, path.join(this.pairsDir, `${volume}.activity`), this.volumes.get(volume).sizeBytes);
    }
  }

  async close(): Promise<void> {
    for (const vr of this.runtimes.values()) await vr.activity?.close();
  }
}
