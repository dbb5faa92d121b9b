// The replica state of one node that every command area shares: each volume's relations (its
// replicas, snapshots, bitmaps and gate), the in-node pairs by replica name, the per-key command
// queue, and the rules about changing a volume something here depends on.
import * as path from 'node:path';
import { TricopyError } from '../common/errors';
import { ChangedBlockBitmaps } from './changed-blocks';
import { CommandQueue } from './command-queue';
import type { ReplicaEnv } from './env';
import type { ReplicaPair } from './pair';
import { VolumeRelations } from './relations';
import { SnapshotChain, regionCountOf } from './snapshots';

export class ReplicaRegistry {
  readonly relations = new Map<string, VolumeRelations>();
  readonly pairs = new Map<string, ReplicaPair>();
  readonly queue = new CommandQueue();

  /** root: <dataDir>/replica. */
  constructor(readonly root: string, readonly env: ReplicaEnv) {}

  relationsOf(volume: string): VolumeRelations {
    let rel = this.relations.get(volume);
    if (!rel) {
      rel = new VolumeRelations(this.env.volumes.volume(volume));
      this.relations.set(volume, rel);
    }
    return rel;
  }

  dropRelationsIfEmpty(volume: string): void {
    const rel = this.relations.get(volume);
    if (rel && rel.empty && rel.gate.busy === 0) {
      rel.refresh();
      if (!rel.volume.hooked) this.relations.delete(volume);
    }
  }

  async openBitmaps(volume: string): Promise<void> {
    const rel = this.relationsOf(volume);
    rel.bitmaps ??= await ChangedBlockBitmaps.open(this.env.disk, this.volumeDir(volume), regionCountOf(rel.volume.sizeBytes));
  }

  async openChain(volume: string): Promise<void> {
    const rel = this.relationsOf(volume);
    rel.snapshots ??= await SnapshotChain.open(this.env.disk, this.volumeDir(volume), rel.volume.sizeBytes);
  }

  volumeDir(volume: string): string {
    return path.join(this.root, 'volumes', volume);
  }

  pair(name: string): ReplicaPair {
    const pair = this.pairs.get(name);
    if (!pair) throw new TricopyError('not-found', `replica pair ${name} does not exist on this node`, 'list them with: tricopy replica status');
    return pair;
  }

  /** Refuses deleting or resizing a volume something here depends on. */
  refuseVolumeChange(volume: string, what: 'delete' | 'resize'): void {
    const pair = this.pairs.get(volume);
    if (pair) {
      throw new TricopyError('conflict', `volume ${volume} is the replica of ${pair.record.primary}; it cannot be ${what === 'delete' ? 'deleted' : 'resized'} while paired`,
        `delete the pair first: tricopy replica delete ${volume}${what === 'delete' ? ' --delete-volume' : ''}`);
    }
    const rel = this.relations.get(volume);
    if (!rel) return;
    if (rel.replicas.length > 0) {
      throw new TricopyError('conflict', `volume ${volume} has replicas (${rel.replicas.map((p) => p.name).join(', ')}); it cannot be ${what === 'delete' ? 'deleted' : 'resized'}`,
        `delete them first: tricopy replica delete ${rel.replicas[0]!.name}`);
    }
    if ((rel.snapshots?.count ?? 0) > 0) {
      throw new TricopyError('conflict', `volume ${volume} has ${rel.snapshots!.count} snapshot(s); it cannot be ${what === 'delete' ? 'deleted' : 'resized'}`,
        `delete them first: tricopy snapshot delete ${volume} --name NAME`);
    }
    if (what === 'resize' && (rel.bitmaps?.size ?? 0) > 0) {
      throw new TricopyError('conflict', `volume ${volume} has changed-block bitmaps; it cannot be resized`,
        `delete them first: tricopy volume bitmap delete ${volume} --name NAME`);
    }
  }

  /** The volume was deleted: its bitmaps and snapshots go with it. */
  async forgetVolume(volume: string): Promise<void> {
    const rel = this.relations.get(volume);
    this.relations.delete(volume);
    if (rel) {
      rel.volume.setHooks(null);
      await rel.bitmaps?.destroy();
      await rel.snapshots?.destroy();
    }
    await this.env.disk.remove(this.volumeDir(volume));
  }
}
