// What the node's NBD export provider asks of the replica side: which device serves a name
// (snapshots `volume@snapshot`, split replicas, volumes a restore or rollback owns), the changed-block
// contexts a volume's export carries, and which names are listed.
import type { BlockDevice } from '../volume/block-device';
import type { ReplicaRegistry } from './registry';
import { ContextDevice, SnapshotDevice } from './relations';
import { exported, replicaCode } from './state-table';

export type ExportAnswer =
  | { status: 'ok'; device: BlockDevice; volume: string; description: string }
  | { status: 'denied'; message: string };

export class ReplicaExports {
  constructor(private readonly reg: ReplicaRegistry) {}

  /**
   * Which device serves an export name this side owns: a snapshot (`volume@snapshot`), a replica
   * (while split), or a volume a restore or rollback owns now (refused). Undefined: the node serves
   * the name as a plain volume.
   */
  lookup(name: string): ExportAnswer | undefined {
    const at = name.indexOf('@');
    if (at > 0) {
      const volume = name.slice(0, at);
      const snapshot = name.slice(at + 1);
      const rel = this.reg.relations.get(volume);
      if (!rel?.snapshots?.has(snapshot)) return undefined;
      return { status: 'ok', device: new SnapshotDevice(name, rel, snapshot), volume, description: `snapshot ${snapshot} of volume ${volume} (read-only)` };
    }
    const pair = this.reg.pairs.get(name);
    if (pair) {
      if (!exported(pair.state)) {
        return { status: 'denied', message: `replica ${name} is ${pair.state} (${replicaCode(pair.state)}): hosts may use it only while it is split; split it with: tricopy replica split ${name}` };
      }
      return { status: 'ok', device: pair.device(), volume: name, description: `replica ${name} of volume ${pair.record.primary}, split at ${pair.record.splitAt}` };
    }
    const rel = this.reg.relations.get(name);
    if (rel?.exclusive) return { status: 'denied', message: `volume ${name} is not available: ${rel.exclusive}` };
    return undefined;
  }

  /** The volume's export with its changed-block bitmaps as metadata contexts (or the device as is). */
  decorate(volume: string, device: BlockDevice): BlockDevice {
    const rel = this.reg.relations.get(volume);
    if (!rel?.bitmaps || rel.bitmaps.size === 0) return device;
    return new ContextDevice(device, rel);
  }

  /** Whether the node lists the volume under its own name (a replica only while split). */
  listed(volume: string): boolean {
    const pair = this.reg.pairs.get(volume);
    if (pair) return exported(pair.state);
    return !this.reg.relations.get(volume)?.exclusive;
  }

  /** Snapshot exports, for NBD_OPT_LIST. */
  snapshotExports(): Array<{ name: string; volume: string; description: string }> {
    const out: Array<{ name: string; volume: string; description: string }> = [];
    for (const [volume, rel] of this.reg.relations) {
      for (const s of rel.snapshots?.list() ?? []) out.push({ name: `${volume}@${s.name}`, volume, description: `snapshot ${s.name} of volume ${volume} (read-only)` });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** A replica volume (the secondary of an in-node pair). */
  isReplica(volume: string): boolean {
    return this.reg.pairs.has(volume);
  }
}
