// In-node replicas, snapshots and changed-block bitmaps of one node (spec 003 §5.1): wires the
// command areas (pair-commands.ts, snapshot-commands.ts, bitmap-commands.ts), the export queries
// (exports.ts) and recovery (recovery.ts) over one shared registry (registry.ts), and is what the
// node and its control API see.
//
// Layout under <dataDir>/replica/:  pairs/NAME.{json,copied,dirtyp,dirtys}   (pair-store.ts)
//                                   volumes/VOLUME/{bitmaps.json,bitmap-*.bits} (changed-blocks.ts)
//                                   volumes/VOLUME/{snapshots.json,snap-*}      (snapshots.ts)
//                                   boot.json (the boot this node last ran in, and whether it stopped cleanly)
import * as path from 'node:path';
import { errorMessage } from '../common/errors';
import type {
  BitmapView, CreateReplicaRequest, CreateSnapshotRequest, ReadMissPolicy, ReplicaState, ReplicaStatus, ReplicaWaitState, SnapshotView,
} from '../contracts/replicas';
import type { BlockDevice } from '../volume/block-device';
import { BitmapCommands } from './bitmap-commands';
import { saveBoot } from './boot';
import type { ReplicaEnv } from './env';
import { type ExportAnswer, ReplicaExports } from './exports';
import { ReplicaPairCommands } from './pair-commands';
import { recoverReplicas } from './recovery';
import { ReplicaRegistry } from './registry';
import { SnapshotCommands } from './snapshot-commands';

export type { ReplicaEnv, ReplicaHost, ReplicaVolumes } from './env';
export type { ExportAnswer } from './exports';

export class ReplicaService {
  private readonly reg: ReplicaRegistry;
  private readonly pairs: ReplicaPairCommands;
  private readonly snapshots: SnapshotCommands;
  private readonly bitmaps: BitmapCommands;
  private readonly exports: ReplicaExports;
  private closed = false;

  private constructor(root: string, private readonly env: ReplicaEnv) {
    this.reg = new ReplicaRegistry(root, env);
    this.pairs = new ReplicaPairCommands(this.reg);
    this.snapshots = new SnapshotCommands(this.reg);
    this.bitmaps = new BitmapCommands(this.reg);
    this.exports = new ReplicaExports(this.reg);
  }

  /** Opens the records and installs the volumes' hooks; background copies wait for start(). */
  static async open(dataDir: string, env: ReplicaEnv): Promise<ReplicaService> {
    const service = new ReplicaService(path.join(dataDir, 'replica'), env);
    await recoverReplicas(service.reg, service.pairs);
    return service;
  }

  /** Starts the background copies recovered pairs have (after remote copy started: a restore writes through it). */
  async start(): Promise<void> {
    for (const pair of this.reg.pairs.values()) await pair.restartCopy();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // Writes answered before their snapshot copies were durable reach their volumes first.
    for (const rel of this.reg.relations.values()) await rel.settle();
    for (const pair of this.reg.pairs.values()) await pair.close();
    for (const pair of this.reg.pairs.values()) for (const b of Object.values(pair.bitmaps)) await b.close().catch(() => undefined);
    for (const rel of this.reg.relations.values()) {
      await rel.bitmaps?.closeAll();
      await rel.snapshots?.closeAll();
    }
    await saveBoot(this.reg.root, this.env.disk, true).catch((err: unknown) => this.env.log.warn({ err: errorMessage(err) }, 'could not record the clean stop'));
  }

  // --- what the node asks ----------------------------------------------------------------------

  lookup(name: string): ExportAnswer | undefined { return this.exports.lookup(name); }
  decorate(volume: string, device: BlockDevice): BlockDevice { return this.exports.decorate(volume, device); }
  listed(volume: string): boolean { return this.exports.listed(volume); }
  snapshotExports(): Array<{ name: string; volume: string; description: string }> { return this.exports.snapshotExports(); }
  isReplica(volume: string): boolean { return this.exports.isReplica(volume); }
  refuseVolumeChange(volume: string, what: 'delete' | 'resize'): void { this.reg.refuseVolumeChange(volume, what); }
  forgetVolume(volume: string): Promise<void> { return this.reg.forgetVolume(volume); }

  // --- replica pairs -----------------------------------------------------------------------------

  listReplicas(): ReplicaStatus[] { return this.pairs.listReplicas(); }
  getReplica(name: string): ReplicaStatus { return this.pairs.getReplica(name); }
  createReplica(req: CreateReplicaRequest): Promise<ReplicaStatus> { return this.pairs.createReplica(req); }
  split(name: string, quick: boolean): Promise<ReplicaStatus> { return this.pairs.split(name, quick); }
  resync(name: string, force: boolean): Promise<ReplicaStatus> { return this.pairs.resync(name, force); }
  restore(name: string, force: boolean): Promise<ReplicaStatus> { return this.pairs.restore(name, force); }
  deleteReplica(name: string, options: { deleteVolume?: boolean; force?: boolean }): Promise<void> { return this.pairs.deleteReplica(name, options); }
  waitReplica(name: string, state: ReplicaWaitState, timeoutMs: number): Promise<ReplicaStatus | { name: string; state: 'simplex' }> {
    return this.pairs.waitReplica(name, state, timeoutMs);
  }

  // --- snapshots ---------------------------------------------------------------------------------

  listSnapshots(volume?: string): SnapshotView[] { return this.snapshots.listSnapshots(volume); }
  createSnapshot(req: CreateSnapshotRequest): Promise<SnapshotView[]> { return this.snapshots.createSnapshot(req); }
  deleteSnapshot(volume: string, name: string): Promise<void> { return this.snapshots.deleteSnapshot(volume, name); }
  /** Set by the node: why a snapshot may not be deleted now (a clone reads it, clones.ts), else undefined. */
  set snapshotInUse(check: ((volume: string, snapshot: string) => string | undefined) | undefined) { this.snapshots.snapshotInUse = check; }
  rollback(volume: string, to: string, force: boolean): Promise<SnapshotView> { return this.snapshots.rollback(volume, to, force); }

  // --- changed-block bitmaps ----------------------------------------------------------------------

  listBitmaps(volume: string): BitmapView[] { return this.bitmaps.listBitmaps(volume); }
  addBitmap(volume: string, name: string): Promise<BitmapView> { return this.bitmaps.addBitmap(volume, name); }
  clearBitmap(volume: string, name: string): Promise<BitmapView> { return this.bitmaps.clearBitmap(volume, name); }
  deleteBitmap(volume: string, name: string): Promise<void> { return this.bitmaps.deleteBitmap(volume, name); }
}

export type { ReadMissPolicy, ReplicaState };
