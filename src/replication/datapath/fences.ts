// Who may write a paired volume now. A secondary of an active pair is read-only to hosts; a primary
// taken over by its peer refuses writes; a sync primary with fence data refuses writes while its
// secondary cannot be updated, and so does every volume of its fence group (3DC protection, spec
// 001 claim 2). Recomputed after every transition; asked on every write.
import { BlockDeviceError } from '../../volume/block-device';
import type { PairRegistry } from '../pairs/registry';
import type { VolumeRuntimes } from './volume-runtimes';

export type WriteOrigin = 'host' | 'replication';

export class Fences {
  /** Fence groups in which a sync pair with fence data cannot update its secondary, with why. */
  private readonly fencedGroups = new Map<string, string>();

  /**
   * Set by a module above the node (automatic failover): why hosts may not write a volume now,
   * whatever its pairs allow (this site does not hold the arbiter), or undefined.
   */
  hostGate: ((volume: string) => string | undefined) | undefined;

  /** Host writes of a volume wait for this first (residual entries of a fast failover), when set and not undefined. */
  residualWait: ((volume: string) => Promise<void> | undefined) | undefined;

  /** Why hosts may not write a volume without pairs (a topology procedure left it read-only), or undefined. */
  leftReadOnly: ((volume: string) => string | undefined) | undefined;

  constructor(private readonly registry: PairRegistry, private readonly volumeRuntimes: VolumeRuntimes) {}

  /** Recomputes which fence groups refuse writes (after any state or protection change). */
  refresh(): void {
    this.fencedGroups.clear();
    for (const p of this.registry.all()) {
      const r = p.record;
      if (r.fenceGroup !== null && r.role === 'primary' && r.mode === 'sync' && r.fence === 'data' &&
          r.state === 'suspended' && r.suspendCause !== 'operator' && r.suspendCause !== 'takeover-by-peer') {
        this.fencedGroups.set(r.fenceGroup, `pair ${r.name}: ${r.reason}`);
      }
    }
  }

  /** Why the fence group refuses writes, if it does. */
  groupFence(fenceGroup: string): string | undefined {
    return this.fencedGroups.get(fenceGroup);
  }

  /**
   * Why a host (or, for a cascade, the upstream primary: origin 'replication') may not write the
   * volume now; undefined when it may.
   */
  writeRefusal(volume: string, origin: WriteOrigin = 'host'): BlockDeviceError | undefined {
    const pairs = this.registry.ofVolume(volume);
    if (pairs.length === 0) {
      const why = this.leftReadOnly?.(volume);
      return why === undefined ? undefined : new BlockDeviceError('EPERM', why);
    }
    if (this.volumeRuntimes.peek(volume)?.swapping) {
      return new BlockDeviceError('EPERM', `volume ${volume} is changing roles; it is no longer the primary`);
    }
    for (const p of pairs) {
      const r = p.record;
      if (r.fenceGroup !== null && r.role === 'primary' && origin === 'host') {
        const why = this.fencedGroups.get(r.fenceGroup);
        if (why !== undefined) {
          return new BlockDeviceError('EIO', `the sync copy of protected group ${r.fenceGroup} cannot be updated (${why}): writes to all its volumes are refused`);
        }
      }
      if (r.role === 'secondary' && origin === 'replication') continue;
      if (r.role === 'secondary') {
        const writable = r.state === 'secondary-writable' || (r.state === 'suspended' && r.secondaryWritable);
        if (!writable) {
          return new BlockDeviceError('EPERM', `volume ${volume} is the secondary of pair ${r.name} (${r.state}); hosts may only read it`);
        }
      } else if (r.state === 'suspended' && r.suspendCause === 'takeover-by-peer') {
        return new BlockDeviceError('EPERM', `${r.peer.node} took over pair ${r.name}; volume ${volume} is no longer the primary`);
      } else if (r.mode === 'sync' && r.fence === 'data' && r.state === 'suspended' && r.suspendCause !== 'operator') {
        return new BlockDeviceError('EIO', `pair ${r.name} cannot update its secondary on ${r.peer.node} (fence data): writes are refused`);
      }
    }
    // What the pairs allow, the arbiter may still forbid (temporary: EIO, the export stays writable).
    if (origin === 'host') {
      const gated = this.hostGate?.(volume);
      if (gated !== undefined) return new BlockDeviceError('EIO', gated);
    }
    return undefined;
  }
}
