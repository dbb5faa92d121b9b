// Snapshots (spec 003 §5.1 point-in-time images, issue 12): many per volume, one instant across
// several volumes or a consistency group, deletion that merges into the older neighbour, and
// rollback through the host-facing device (so remote copy carries it).
import { TricopyError } from '../common/errors';
import type { CreateSnapshotRequest, SnapshotView } from '../contracts/replicas';
import { validateObjectName } from './changed-blocks';
import type { ReplicaEnv } from './env';
import { holdAll } from './gate';
import { regionBytes } from './limits';
import type { ReplicaRegistry } from './registry';
import type { VolumeRelations } from './relations';
import { type SnapshotChain, regionCountOf } from './snapshots';

export class SnapshotCommands {
  private readonly env: ReplicaEnv;

  /** Set by the node: why a snapshot may not be deleted now (a clone reads it, clones.ts), else undefined. */
  snapshotInUse: ((volume: string, snapshot: string) => string | undefined) | undefined;

  constructor(private readonly reg: ReplicaRegistry) {
    this.env = reg.env;
  }

  listSnapshots(volume?: string): SnapshotView[] {
    const out: SnapshotView[] = [];
    for (const [name, rel] of [...this.reg.relations].sort(([a], [b]) => a.localeCompare(b))) {
      if (volume !== undefined && name !== volume) continue;
      const chain = rel.snapshots;
      if (!chain) continue;
      chain.list().forEach((_s, i) => out.push(this.snapshotView(name, chain, i)));
    }
    if (volume !== undefined && !this.env.volumes.has(volume)) throw new TricopyError('not-found', `volume ${volume} does not exist`);
    return out;
  }

  /** Snapshots of every listed volume at one instant (the gates of all of them held together). */
  createSnapshot(req: CreateSnapshotRequest): Promise<SnapshotView[]> {
    const volumes = [...new Set([...(req.volumes ?? []), ...(req.group ? this.env.host.groupVolumes(req.group) : [])])];
    if (req.group && this.env.host.groupVolumes(req.group).length === 0) {
      throw new TricopyError('not-found', `consistency group ${req.group} has no volume on this node`, 'list groups with: tricopy group status');
    }
    if (volumes.length === 0) throw new TricopyError('invalid-argument', 'name the volumes to snapshot, or a consistency group (--group)');
    validateObjectName(req.name, 'snapshot');
    return this.reg.queue.runAll(volumes.map((v) => `volume:${v}`), async () => {
      for (const v of volumes) if (!this.env.volumes.has(v)) throw new TricopyError('not-found', `volume ${v} does not exist`, 'list volumes with: tricopy volume list');
      for (const v of volumes) await this.reg.openChain(v);
      // Primaries before the replicas they write into, so a change in flight on one can finish.
      const ordered = [...volumes].sort((a, b) => Number(this.reg.pairs.has(a)) - Number(this.reg.pairs.has(b)) || a.localeCompare(b));
      const rels = ordered.map((v) => this.reg.relationsOf(v));
      for (const [i, rel] of rels.entries()) {
        if (rel.snapshots!.has(req.name)) throw new TricopyError('already-exists', `volume ${ordered[i]} has a snapshot named ${req.name} already`, 'choose another name');
      }
      const now = new Date(this.env.clock.now()).toISOString();
      const release = await holdAll(rels);
      const created: VolumeRelations[] = [];
      try {
        for (const rel of rels) {
          const frozen = new Map<string, Uint8Array>();
          for (const b of req.bitmaps ?? []) if (rel.bitmaps?.has(b)) frozen.set(b, rel.bitmaps.bits(b).snapshot());
          await rel.snapshots!.create(req.name, now, req.group ?? (volumes.length > 1 ? req.name : null), frozen, rel.volume.name);
          created.push(rel);
          rel.refresh();
        }
        // The frozen bitmaps hold what changed up to this instant; from now on the live ones start over.
        for (const rel of rels) for (const b of req.bitmaps ?? []) if (rel.bitmaps?.has(b)) await rel.bitmaps.clear(b, now);
      } catch (err) {
        for (const rel of created) {
          await rel.snapshots!.finishDelete(rel.snapshots!.indexOf(req.name, rel.volume.name)).catch(() => undefined);
          rel.refresh();
        }
        throw err;
      } finally {
        release();
      }
      for (const rel of rels) {
        this.env.host.emit('snapshot-created', `${rel.volume.name}@${req.name}`, volumes.length > 1 ? `taken with ${volumes.length - 1} other volume(s) at one instant` : 'taken by operator',
          { volume: rel.volume.name, snapshot: req.name, group: req.group ?? null, bitmaps: req.bitmaps ?? [] });
      }
      return rels.map((rel) => this.snapshotView(rel.volume.name, rel.snapshots!, rel.snapshots!.indexOf(req.name, rel.volume.name)));
    });
  }

  deleteSnapshot(volume: string, name: string): Promise<void> {
    return this.reg.queue.run(`volume:${volume}`, async () => {
      const rel = this.reg.relations.get(volume);
      const chain = rel?.snapshots;
      if (!rel || !chain) throw new TricopyError('not-found', `volume ${volume} has no snapshot named ${name}`);
      const index = chain.indexOf(name, volume);
      const user = this.snapshotInUse?.(volume, name);
      if (user) throw new TricopyError('conflict', `snapshot ${volume}@${name} is in use: ${user}`);
      this.env.host.disconnect(`${volume}@${name}`);
      // Move what the older neighbour reads through it while the volume is in use, then the rest with the gate held.
      const moved = await chain.mergeIntoOlder(index);
      await rel.whileHeld(async () => {
        await chain.finishDelete(chain.indexOf(name, volume));
        rel.refresh();
      });
      this.env.host.disconnect(`${volume}@${name}`);
      this.reg.dropRelationsIfEmpty(volume);
      this.env.host.emit('snapshot-deleted', `${volume}@${name}`, 'deleted by operator; its space is free', { volume, snapshot: name, bytesMovedToOlder: moved });
    });
  }

  /** Rolls a volume back to a snapshot: writes the snapshot's image over the regions changed since. */
  rollback(volume: string, to: string, force: boolean): Promise<SnapshotView> {
    return this.reg.queue.run(`volume:${volume}`, async () => {
      const rel = this.reg.relations.get(volume);
      const chain = rel?.snapshots;
      if (!rel || !chain) throw new TricopyError('not-found', `volume ${volume} has no snapshot named ${to}`);
      chain.indexOf(to, volume);
      const host = this.env.host;
      if (host.clientsOf(volume) > 0 && !force) {
        throw new TricopyError('busy', `volume ${volume} has ${host.clientsOf(volume)} attached client(s): the data would change under them`,
          'stop the application and detach, or pass --force to disconnect them');
      }
      const refusal = host.writeRefusal(volume);
      if (refusal) throw new TricopyError('conflict', `volume ${volume} cannot be written here now: ${refusal}`, 'roll back at the node where the volume is the primary');
      if (rel.exclusive) throw new TricopyError('busy', `volume ${volume} is not available: ${rel.exclusive}`);
      rel.exclusive = `it is being rolled back to snapshot ${to}`;
      host.disconnect(volume);
      let bytes = 0;
      try {
        const front = host.front(volume);
        const changed = chain.changedSince(chain.indexOf(to, volume));
        const regions = regionCountOf(rel.volume.sizeBytes);
        const zero = Buffer.alloc(regionBytes * 64);
        for (let r = 0; r < regions;) {
          if ((r & 7) === 0 && changed[r >>> 3] === 0) {
            r += 8;
            continue;
          }
          if (!(changed[r >>> 3]! & (1 << (r & 7)))) {
            r++;
            continue;
          }
          let end = r + 1;
          while (end < regions && end - r < 64 && (changed[end >>> 3]! & (1 << (end & 7)))) end++;
          const start = r * regionBytes;
          const stop = Math.min(rel.volume.sizeBytes, end * regionBytes);
          // The index is looked up again each time: only this command deletes snapshots of the volume, but be exact.
          const data = await rel.readSnapshot(() => chain.list().findIndex((s) => s.name === to), start, stop - start);
          if (data.equals(zero.subarray(0, data.length))) await front.writeZeroes(start, stop - start, { fua: false, noHole: false, fastOnly: false });
          else await front.write(start, data, { fua: false });
          bytes += stop - start;
          r = end;
        }
        await front.flush();
      } finally {
        rel.exclusive = null;
      }
      host.emit('snapshot-rolled-back', `${volume}@${to}`, `volume ${volume} holds snapshot ${to}'s image again`, { volume, snapshot: to, bytesWritten: bytes });
      return this.snapshotView(volume, chain, chain.indexOf(to, volume));
    });
  }

  private snapshotView(volume: string, chain: SnapshotChain, index: number): SnapshotView {
    const r = chain.list()[index]!;
    const exportName = `${volume}@${r.name}`;
    return {
      volume, name: r.name, createdAt: r.createdAt, group: r.group, usedBytes: chain.usedBytes(index), exportName,
      exportUri: this.env.host.exportUri(exportName), bitmaps: r.bitmaps,
    };
  }
}
