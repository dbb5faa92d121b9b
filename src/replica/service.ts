// In-node replicas, snapshots and changed-block bitmaps of one node (spec 003 §5.1): the commands,
// the state transitions of replica pairs (only through state-table.ts), recovery after a restart,
// and what the node's NBD export provider asks (which device serves a name, who may not attach).
//
// Layout under <dataDir>/replica/:  pairs/NAME.{json,copied,dirtyp,dirtys}   (pair-store.ts)
//                                   volumes/VOLUME/{bitmaps.json,bitmap-*.bits} (changed-blocks.ts)
//                                   volumes/VOLUME/{snapshots.json,snap-*}      (snapshots.ts)
//                                   boot.json (the boot this node last ran in, and whether it stopped cleanly)
import * as path from 'node:path';
import type { Clock, TimerHandle } from '../common/clock';
import type { Disk } from '../common/disk';
import { TricopyError, errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type {
  BitmapView, CreateReplicaRequest, CreateSnapshotRequest, ReadMissPolicy, ReplicaState, ReplicaStatus, ReplicaWaitState, SnapshotView,
} from '../contracts/replicas';
import type { BlockDevice } from '../volume/block-device';
import type { AccessList } from '../volume/access';
import type { VolumeMeta } from '../volume/store';
import type { Volume } from '../volume/volume';
import { ChangedBlockBitmaps, dirtyBitmapContextPrefix, validateObjectName } from './changed-blocks';
import { checkBoot, saveBoot } from './boot';
import { holdAll } from './gate';
import { maxReplicasPerNode, maxReplicasPerVolume, regionBytes } from './limits';
import { ReplicaPair } from './pair';
import { type ReplicaRecord, ReplicaPairStore } from './pair-store';
import { ContextDevice, SnapshotDevice, VolumeRelations } from './relations';
import { SnapshotChain, regionCountOf } from './snapshots';
import { type ReplicaEvent, copyRunning, decideReplica, exported, replicaCode } from './state-table';

/** The volumes of the node, as replicas need them (the volume store). */
export interface ReplicaVolumes {
  has(name: string): boolean;
  get(name: string): VolumeMeta;
  volume(name: string): Volume;
  create(options: { name: string; sizeBytes: number; description?: string; thin?: boolean; access?: AccessList }): Promise<VolumeMeta>;
  delete(name: string): Promise<void>;
}

/** What the service asks of its node. */
export interface ReplicaHost {
  /** The device hosts change the volume through (remote copy included): restores and rollbacks write there. */
  front(volume: string): BlockDevice;
  /** Disconnects the clients of an export; returns how many there were. */
  disconnect(exportName: string): number;
  clientsOf(exportName: string): number;
  exportUri(exportName: string): string;
  /** Why hosts may not write the volume for now (the secondary of a remote pair), else undefined. */
  writeRefusal(volume: string): string | undefined;
  /** The volume takes part in a remote copy pair. */
  remotePaired(volume: string): boolean;
  /** The volumes of a consistency group on this node (empty: no such group here). */
  groupVolumes(group: string): string[];
  emit(kind: string, subject: string, reason: string, details?: Record<string, unknown>): void;
}

export interface ReplicaEnv {
  volumes: ReplicaVolumes;
  disk: Disk;
  clock: Clock;
  log: Logger;
  host: ReplicaHost;
  /** Awaited before each background copy batch (tests hold copies back with it; the node passes none). */
  beforeCopyBatch?: () => Promise<void>;
  /** Bytes per second each background copy may copy; 0 or absent: unthrottled (spec 003 §8.2). */
  copyRateBytesPerSecond?: number;
}

export type ExportAnswer =
  | { status: 'ok'; device: BlockDevice; volume: string; description: string }
  | { status: 'denied'; message: string };

interface Waiter {
  name: string;
  state: ReplicaWaitState;
  resolve: () => void;
}

export class ReplicaService {
  private readonly relations = new Map<string, VolumeRelations>();
  private readonly pairs = new Map<string, ReplicaPair>();
  private readonly waiters = new Set<Waiter>();
  private readonly queues = new Map<string, Promise<unknown>>();
  private readonly pairStore: ReplicaPairStore;
  private closed = false;
  /** Set by the node: why a snapshot may not be deleted now (a clone reads it, clones.ts), else undefined. */
  snapshotInUse: ((volume: string, snapshot: string) => string | undefined) | undefined;

  private constructor(private readonly root: string, private readonly env: ReplicaEnv) {
    this.pairStore = new ReplicaPairStore(path.join(root, 'pairs'), env.disk);
  }

  /** Opens the records and installs the volumes' hooks; background copies wait for start(). */
  static async open(dataDir: string, env: ReplicaEnv): Promise<ReplicaService> {
    const service = new ReplicaService(path.join(dataDir, 'replica'), env);
    await service.recover();
    return service;
  }

  /** Starts the background copies recovered pairs have (after remote copy started: a restore writes through it). */
  async start(): Promise<void> {
    for (const pair of this.pairs.values()) await pair.restartCopy();
  }

  // --- what the node asks ----------------------------------------------------------------------

  /**
   * Which device serves an export name this service owns: a snapshot (`volume@snapshot`), a replica
   * (while split), or a volume a restore or rollback owns now (refused). Undefined: the node serves
   * the name as a plain volume.
   */
  lookup(name: string): ExportAnswer | undefined {
    const at = name.indexOf('@');
    if (at > 0) {
      const volume = name.slice(0, at);
      const snapshot = name.slice(at + 1);
      const rel = this.relations.get(volume);
      if (!rel?.snapshots?.has(snapshot)) return undefined;
      return { status: 'ok', device: new SnapshotDevice(name, rel, snapshot), volume, description: `snapshot ${snapshot} of volume ${volume} (read-only)` };
    }
    const pair = this.pairs.get(name);
    if (pair) {
      if (!exported(pair.state)) {
        return { status: 'denied', message: `replica ${name} is ${pair.state} (${replicaCode(pair.state)}): hosts may use it only while it is split; split it with: tricopy replica split ${name}` };
      }
      return { status: 'ok', device: pair.device(), volume: name, description: `replica ${name} of volume ${pair.record.primary}, split at ${pair.record.splitAt}` };
    }
    const rel = this.relations.get(name);
    if (rel?.exclusive) return { status: 'denied', message: `volume ${name} is not available: ${rel.exclusive}` };
    return undefined;
  }

  /** The volume's export with its changed-block bitmaps as metadata contexts (or the device as is). */
  decorate(volume: string, device: BlockDevice): BlockDevice {
    const rel = this.relations.get(volume);
    if (!rel?.bitmaps || rel.bitmaps.size === 0) return device;
    return new ContextDevice(device, rel);
  }

  /** Whether the node lists the volume under its own name (a replica only while split). */
  listed(volume: string): boolean {
    const pair = this.pairs.get(volume);
    if (pair) return exported(pair.state);
    return !this.relations.get(volume)?.exclusive;
  }

  /** Snapshot exports, for NBD_OPT_LIST. */
  snapshotExports(): Array<{ name: string; volume: string; description: string }> {
    const out: Array<{ name: string; volume: string; description: string }> = [];
    for (const [volume, rel] of this.relations) {
      for (const s of rel.snapshots?.list() ?? []) out.push({ name: `${volume}@${s.name}`, volume, description: `snapshot ${s.name} of volume ${volume} (read-only)` });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** A replica volume (the secondary of an in-node pair). */
  isReplica(volume: string): boolean {
    return this.pairs.has(volume);
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

  /** The volume was deleted: its bitmaps go with it. */
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

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const pair of this.pairs.values()) await pair.close();
    for (const pair of this.pairs.values()) for (const b of Object.values(pair.bitmaps)) await b.close().catch(() => undefined);
    for (const rel of this.relations.values()) {
      await rel.bitmaps?.closeAll();
      await rel.snapshots?.closeAll();
    }
    await saveBoot(this.root, this.env.disk, true).catch((err: unknown) => this.env.log.warn({ err: errorMessage(err) }, 'could not record the clean stop'));
  }

  // --- replica pairs -----------------------------------------------------------------------------

  listReplicas(): ReplicaStatus[] {
    return [...this.pairs.values()].map((p) => this.status(p)).sort((a, b) => a.name.localeCompare(b.name));
  }

  getReplica(name: string): ReplicaStatus {
    return this.status(this.pair(name));
  }

  createReplica(req: CreateReplicaRequest): Promise<ReplicaStatus> {
    return this.serialized(`pair:${req.name}`, () => this.createNow(req));
  }

  split(name: string, quick: boolean): Promise<ReplicaStatus> {
    return this.serialized(`pair:${name}`, () => this.command(this.pair(name), quick ? 'quick-split' : 'split', false));
  }

  resync(name: string, force: boolean): Promise<ReplicaStatus> {
    return this.serialized(`pair:${name}`, () => this.command(this.pair(name), 'resync', force));
  }

  restore(name: string, force: boolean): Promise<ReplicaStatus> {
    return this.serialized(`pair:${name}`, () => this.command(this.pair(name), 'restore', force));
  }

  deleteReplica(name: string, options: { deleteVolume?: boolean; force?: boolean }): Promise<void> {
    return this.serialized(`pair:${name}`, async () => {
      const pair = this.pair(name);
      if (options.deleteVolume && (this.relations.get(name)?.snapshots?.count ?? 0) > 0) {
        throw new TricopyError('conflict', `replica volume ${name} has snapshots`, `delete them first (tricopy snapshot list ${name}), or delete the pair without --delete-volume`);
      }
      if (options.deleteVolume && !options.force && this.env.host.clientsOf(name) > 0) {
        throw new TricopyError('busy', `replica ${name} has ${this.env.host.clientsOf(name)} attached client(s)`, 'detach them, or pass --force to disconnect them');
      }
      await this.command(pair, 'delete', true);
      if (options.deleteVolume) {
        this.env.host.disconnect(name);
        await this.forgetVolume(name);
        await this.env.volumes.delete(name);
        this.env.host.emit('volume-deleted', name, `deleted with replica pair ${name}`);
      }
    });
  }

  /** Resolves when the pair is in `state` (`simplex`: deleted); rejects at the deadline (spec 003 waitPairEvent). */
  async waitReplica(name: string, state: ReplicaWaitState, timeoutMs: number): Promise<ReplicaStatus | { name: string; state: 'simplex' }> {
    const deadline = this.env.clock.now() + timeoutMs;
    for (;;) {
      const pair = this.pairs.get(name);
      if (!pair) {
        if (state === 'simplex') return { name, state: 'simplex' };
        throw new TricopyError('not-found', `replica pair ${name} does not exist on this node`, 'list them with: tricopy replica status');
      }
      if (pair.state === state) return this.status(pair);
      const left = deadline - this.env.clock.now();
      if (left <= 0) {
        throw new TricopyError('unavailable', `replica ${name} did not reach ${state} within ${timeoutMs} ms; it is ${pair.state} (${replicaCode(pair.state)})`,
          `last transition: ${pair.record.reason}`);
      }
      await new Promise<void>((resolve) => {
        let timer: TimerHandle | undefined;
        const waiter: Waiter = { name, state, resolve: () => {
          this.env.clock.clearTimer(timer);
          this.waiters.delete(waiter);
          resolve();
        } };
        timer = this.env.clock.setTimer(left, waiter.resolve);
        this.waiters.add(waiter);
      });
    }
  }

  private async createNow(req: CreateReplicaRequest): Promise<ReplicaStatus> {
    const { volumes, host } = this.env;
    validateObjectName(req.name, 'replica');
    if (!volumes.has(req.volume)) throw new TricopyError('not-found', `volume ${req.volume} does not exist`, 'list volumes with: tricopy volume list');
    if (req.name === req.volume) throw new TricopyError('invalid-argument', 'a volume cannot be its own replica', 'name the replica e.g. VOLUME-r1');
    if (this.pairs.has(req.name)) throw new TricopyError('already-exists', `replica pair ${req.name} exists already`, `see it with: tricopy replica status ${req.name}`);
    if (this.pairs.size >= maxReplicasPerNode) throw new TricopyError('no-space', `this node has ${maxReplicasPerNode} replica pairs, the most it may have`);
    if (this.pairs.has(req.volume)) {
      throw new TricopyError('conflict', `volume ${req.volume} is itself the replica of ${this.pairs.get(req.volume)!.record.primary}`,
        'a volume is never a primary and a replica at the same time (spec 003 §5.1); split the pair and copy it elsewhere, or delete that pair first');
    }
    const primaryRel = this.relationsOf(req.volume);
    if (primaryRel.replicas.length >= maxReplicasPerVolume) {
      throw new TricopyError('no-space', `volume ${req.volume} has ${maxReplicasPerVolume} replicas, the most it may have`, 'delete one first');
    }
    if (primaryRel.exclusive) throw new TricopyError('busy', `volume ${req.volume} is not available: ${primaryRel.exclusive}`);
    const primary = volumes.volume(req.volume);
    const primaryMeta = volumes.get(req.volume);
    await this.replicaVolume(req, primaryMeta);
    const secondary = volumes.volume(req.name);
    const regions = regionCountOf(primaryMeta.sizeBytes);
    const bitmaps = await this.pairStore.createBitmaps(req.name, regions);
    const record: ReplicaRecord = {
      name: req.name, primary: req.volume, state: 'copying', splitAt: null, readMissPolicy: req.readMissPolicy ?? 'copy-on-read',
      createdAt: new Date(this.env.clock.now()).toISOString(), reason: 'created: copying the primary to the replica; every write goes to both',
      createdVolume: !req.existing,
    };
    const pair = this.newPair(record, bitmaps, primary, secondary, primaryRel);
    try {
      await primaryRel.whileHeld(async () => {
        if (!req.existing) {
          // A new replica volume is all holes: it holds the primary's holes already.
          const allocated = primary.allocation.snapshot();
          for (let r = 0; r < regions; r++) if ((allocated[r >>> 3]! & (1 << (r & 7))) === 0) bitmaps.copied.setRange(r, 1);
          await bitmaps.copied.sync();
        }
        await this.pairStore.save(record); // commit point
        primaryRel.replicas.push(pair);
        this.pairs.set(record.name, pair);
        primaryRel.refresh();
      });
    } catch (err) {
      await this.pairStore.remove(record.name, bitmaps).catch(() => undefined);
      if (!req.existing) await volumes.delete(req.name).catch(() => undefined);
      throw err;
    }
    host.emit('replica-created', record.name, record.reason, { volume: req.volume, regions, pendingRegions: pair.pendingRegions });
    this.notify(pair);
    if (pair.inSync) {
      await this.transition(pair, 'copy-complete', false);
    } else {
      await pair.restartCopy();
    }
    return this.status(pair);
  }

  /** The replica volume: an existing one that may be overwritten (checked), or a new one like the primary. */
  private async replicaVolume(req: CreateReplicaRequest, primaryMeta: VolumeMeta): Promise<VolumeMeta> {
    const { volumes, host } = this.env;
    if (!req.existing) {
      if (volumes.has(req.name)) {
        throw new TricopyError('already-exists', `volume ${req.name} exists already`, 'choose another name, or pass --existing to overwrite it with the replica');
      }
      const meta = await volumes.create({
        name: req.name, sizeBytes: primaryMeta.sizeBytes, description: `replica of ${req.volume}`, thin: req.thin === true, access: primaryMeta.access,
      });
      host.emit('volume-created', req.name, `created as the replica of ${req.volume}`, { sizeBytes: meta.sizeBytes });
      return meta;
    }
    if (!volumes.has(req.name)) throw new TricopyError('not-found', `volume ${req.name} does not exist`, 'create the pair without --existing to create the replica volume');
    const meta = volumes.get(req.name);
    if (meta.sizeBytes < primaryMeta.sizeBytes) {
      throw new TricopyError('invalid-argument', `volume ${req.name} (${meta.sizeBytes} bytes) is smaller than ${req.volume} (${primaryMeta.sizeBytes} bytes)`,
        'a replica must be at least as large as its primary (spec 003 §5.1)');
    }
    if ((this.relations.get(req.name)?.replicas.length ?? 0) > 0) {
      throw new TricopyError('conflict', `volume ${req.name} is the primary of replicas itself`, 'a volume is never a primary and a replica at the same time');
    }
    if (host.clientsOf(req.name) > 0) throw new TricopyError('busy', `volume ${req.name} has attached clients`, 'detach them first: its content will be overwritten');
    if (host.remotePaired(req.name)) throw new TricopyError('conflict', `volume ${req.name} is in a remote copy pair`, 'a replica volume is written by its pair only');
    return meta;
  }

  private newPair(record: ReplicaRecord, bitmaps: ReplicaPair['bitmaps'], primary: Volume, secondary: Volume, rel: VolumeRelations): ReplicaPair {
    return new ReplicaPair(record, bitmaps, primary, secondary, rel, {
      failed: (p, reason) => {
        void this.serialized(`pair:${p.name}`, () => this.pairs.get(p.name) === p ? this.transition(p, 'failure', false, reason) : Promise.resolve(undefined))
          .catch((err: unknown) => this.env.log.error({ err: errorMessage(err), replica: p.name }, 'could not suspend a failed replica pair'));
      },
      copyComplete: (p) => {
        void this.serialized(`pair:${p.name}`, async () => {
          if (this.pairs.get(p.name) !== p) return undefined;
          if (!p.inSync) return p.restartCopy(); // regions were cleared behind the copy
          return this.transition(p, 'copy-complete', false);
        }).catch((err: unknown) => this.env.log.error({ err: errorMessage(err), replica: p.name }, 'could not complete a replica copy'));
      },
      primaryFront: () => this.env.host.front(record.primary),
      ...(this.env.beforeCopyBatch ? { beforeCopyBatch: this.env.beforeCopyBatch } : {}),
      copyRateBytesPerSecond: this.env.copyRateBytesPerSecond ?? 0,
    }, this.env.log.child({ replica: record.name }));
  }

  /** An operator command on a pair (already serialized). */
  private async command(pair: ReplicaPair, event: ReplicaEvent, force: boolean): Promise<ReplicaStatus> {
    await this.transition(pair, event, force);
    return this.status(pair);
  }

  /**
   * The one place that changes a pair's state: decide with the table, do what the transition
   * needs with the primary's gate held (no change in flight), persist, then restart the copy.
   */
  private async transition(pair: ReplicaPair, event: ReplicaEvent, force: boolean, reason?: string): Promise<void> {
    const from = pair.state;
    const outcome = decideReplica(from, event, { inSync: pair.inSync });
    if (outcome.kind === 'refuse') {
      throw new TricopyError('conflict', `replica ${pair.name} is ${from} (${replicaCode(from)}): ${outcome.code}: ${outcome.message.replaceAll('NAME', pair.name)}`);
    }
    if (outcome.kind === 'noop') {
      if (event === 'split' || event === 'quick-split' || event === 'resync' || event === 'restore') this.env.log.info({ replica: pair.name, event }, outcome.note);
      return;
    }
    const host = this.env.host;
    const rel = this.relationsOf(pair.record.primary);
    const to = outcome.to;
    const note = reason ? `${outcome.note} (${reason})` : outcome.note;
    if (event === 'resync' || event === 'restore') this.takeFromHosts(pair, event, force, rel);
    if (event === 'split' || event === 'quick-split') {
      // Most of what was dual-written reaches the disk before the gate closes, so the flush
      // inside (which makes the image durable) has little left to do.
      await pair.secondary.flush();
    }
    await pair.stopCopy();
    try {
      await rel.whileHeld(() => this.applyHeld(pair, rel, event, to, note));
    } catch (err) {
      if (event === 'restore') rel.exclusive = null;
      await pair.restartCopy();
      throw err;
    }
    if (from === 'restoring' && rel.exclusive?.startsWith(`replica ${pair.name} `)) rel.exclusive = null;
    if (to === 'simplex') {
      await pair.close();
      this.dropRelationsIfEmpty(pair.record.primary);
    } else {
      await pair.restartCopy();
    }
    if (!exported(pair.record.state) && to !== 'simplex') host.disconnect(pair.name);
    host.emit(`replica-${to}`, pair.name, note, { volume: pair.record.primary, from, event, ...(pair.record.splitAt ? { splitAt: pair.record.splitAt } : {}) });
    this.notify(pair, to === 'simplex');
  }

  /** Resync and restore change data hosts may be reading: refuse while attached (unless forced), then disconnect them. */
  private takeFromHosts(pair: ReplicaPair, event: 'resync' | 'restore', force: boolean, rel: VolumeRelations): void {
    const host = this.env.host;
    const attached = host.clientsOf(pair.name) + (event === 'restore' ? host.clientsOf(pair.record.primary) : 0);
    if (attached > 0 && !force) {
      throw new TricopyError('busy', `${event === 'restore' ? `volume ${pair.record.primary} or its replica ${pair.name}` : `replica ${pair.name}`} has ${attached} attached client(s): the data would change under them`,
        'detach them first, or pass --force to disconnect them');
    }
    if (event === 'restore') {
      const refusal = host.writeRefusal(pair.record.primary);
      if (refusal) throw new TricopyError('conflict', `volume ${pair.record.primary} cannot be written here now: ${refusal}`, 'restore at the node where the volume is the primary');
      if (rel.exclusive) throw new TricopyError('busy', `volume ${pair.record.primary} is not available: ${rel.exclusive}`);
      rel.exclusive = `replica ${pair.name} is being restored onto it`;
      host.disconnect(pair.record.primary);
    }
    host.disconnect(pair.name);
  }

  /** What a transition does with the primary held still: the bitmaps, then the record (the commit point). */
  private async applyHeld(pair: ReplicaPair, rel: VolumeRelations, event: ReplicaEvent, to: ReplicaState | 'simplex', note: string): Promise<void> {
    const r = pair.record;
    const next: ReplicaRecord = { ...r, state: to === 'simplex' ? r.state : to, reason: note };
    if ((to === 'split' || to === 'split-pending') && (event === 'split' || event === 'quick-split')) {
      await pair.secondary.flush();
      next.splitAt = new Date(this.env.clock.now()).toISOString();
      await clearChanged(pair);
    }
    if (to === 'resync' || to === 'restoring') {
      // What to copy: whatever changed on either side since the split, and what was never copied.
      const { copied, dirtyPrimary, dirtySecondary } = pair.bitmaps;
      const p = dirtyPrimary.snapshot();
      const s = dirtySecondary.snapshot();
      for (let i = 0; i < p.length; i++) {
        const changed = p[i]! | s[i]!;
        if (changed === 0) continue;
        for (let bit = 0; bit < 8; bit++) if (changed & (1 << bit)) copied.clearRange(i * 8 + bit, 1);
      }
      await copied.sync();
      next.splitAt = null;
    }
    if (to === 'duplex') next.splitAt = null;
    if (to === 'simplex') {
      rel.replicas = rel.replicas.filter((p) => p !== pair);
      this.pairs.delete(r.name);
      rel.refresh();
      await this.pairStore.remove(r.name, pair.bitmaps);
      return;
    }
    await this.pairStore.save(next);
    pair.record = next;
    // The changes are in the copy to run now (their record is no longer needed).
    if (to === 'resync' || to === 'restoring' || to === 'duplex') await clearChanged(pair);
  }

  private status(pair: ReplicaPair): ReplicaStatus {
    const r = pair.record;
    const total = pair.regionCount;
    const host = this.env.host;
    return {
      name: r.name,
      volume: r.primary,
      state: r.state,
      code: replicaCode(r.state),
      splitAt: r.splitAt,
      readMissPolicy: r.readMissPolicy,
      createdAt: r.createdAt,
      reason: r.reason,
      progressPercent: copyRunning(r.state) ? Math.floor(((total - pair.pendingRegions) / Math.max(1, total)) * 100) : null,
      regions: {
        regionBytes, total, pending: pair.pendingRegions,
        dirtyPrimary: pair.bitmaps.dirtyPrimary.setBitCount, dirtySecondary: pair.bitmaps.dirtySecondary.setBitCount,
      },
      copiedBytes: pair.copiedBytes,
      exportUri: exported(r.state) ? host.exportUri(r.name) : null,
      clients: host.clientsOf(r.name),
    };
  }

  private pair(name: string): ReplicaPair {
    const pair = this.pairs.get(name);
    if (!pair) throw new TricopyError('not-found', `replica pair ${name} does not exist on this node`, 'list them with: tricopy replica status');
    return pair;
  }

  private notify(pair: ReplicaPair, gone = false): void {
    for (const w of [...this.waiters]) {
      if (w.name !== pair.name) continue;
      if (gone ? w.state === 'simplex' : w.state === pair.state) w.resolve();
      else if (gone) w.resolve(); // the loop reports the pair is gone
    }
  }

  // --- snapshots ---------------------------------------------------------------------------------

  listSnapshots(volume?: string): SnapshotView[] {
    const out: SnapshotView[] = [];
    for (const [name, rel] of [...this.relations].sort(([a], [b]) => a.localeCompare(b))) {
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
    return this.serializedAll(volumes.map((v) => `volume:${v}`), async () => {
      for (const v of volumes) if (!this.env.volumes.has(v)) throw new TricopyError('not-found', `volume ${v} does not exist`, 'list volumes with: tricopy volume list');
      for (const v of volumes) await this.openChain(v);
      // Primaries before the replicas they write into, so a change in flight on one can finish.
      const ordered = [...volumes].sort((a, b) => Number(this.pairs.has(a)) - Number(this.pairs.has(b)) || a.localeCompare(b));
      const rels = ordered.map((v) => this.relationsOf(v));
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
    return this.serialized(`volume:${volume}`, async () => {
      const rel = this.relations.get(volume);
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
      this.dropRelationsIfEmpty(volume);
      this.env.host.emit('snapshot-deleted', `${volume}@${name}`, 'deleted by operator; its space is free', { volume, snapshot: name, regionsMovedToOlder: moved });
    });
  }

  /** Rolls a volume back to a snapshot: writes the snapshot's image over the regions changed since. */
  rollback(volume: string, to: string, force: boolean): Promise<SnapshotView> {
    return this.serialized(`volume:${volume}`, async () => {
      const rel = this.relations.get(volume);
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

  // --- changed-block bitmaps ----------------------------------------------------------------------

  listBitmaps(volume: string): BitmapView[] {
    if (!this.env.volumes.has(volume)) throw new TricopyError('not-found', `volume ${volume} does not exist`);
    const bitmaps = this.relations.get(volume)?.bitmaps;
    if (!bitmaps) return [];
    return bitmaps.names().map((n) => this.bitmapView(volume, bitmaps, n));
  }

  addBitmap(volume: string, name: string): Promise<BitmapView> {
    return this.serialized(`volume:${volume}`, async () => {
      if (!this.env.volumes.has(volume)) throw new TricopyError('not-found', `volume ${volume} does not exist`);
      await this.openBitmaps(volume);
      const rel = this.relationsOf(volume);
      await rel.whileHeld(async () => {
        await rel.bitmaps!.add(name, new Date(this.env.clock.now()).toISOString(), volume);
        rel.refresh();
      });
      this.env.host.emit('bitmap-added', volume, `changed-block bitmap ${name} records every change from now on`, { bitmap: name });
      return this.bitmapView(volume, rel.bitmaps!, name);
    });
  }

  clearBitmap(volume: string, name: string): Promise<BitmapView> {
    return this.serialized(`volume:${volume}`, async () => {
      const rel = this.relations.get(volume);
      if (!rel?.bitmaps?.has(name)) throw new TricopyError('not-found', `volume ${volume} has no bitmap named ${name}`);
      await rel.whileHeld(() => rel.bitmaps!.clear(name, new Date(this.env.clock.now()).toISOString()));
      this.env.host.emit('bitmap-cleared', volume, `changed-block bitmap ${name} starts over`, { bitmap: name });
      return this.bitmapView(volume, rel.bitmaps, name);
    });
  }

  deleteBitmap(volume: string, name: string): Promise<void> {
    return this.serialized(`volume:${volume}`, async () => {
      const rel = this.relations.get(volume);
      if (!rel?.bitmaps?.has(name)) throw new TricopyError('not-found', `volume ${volume} has no bitmap named ${name}`);
      await rel.whileHeld(async () => {
        await rel.bitmaps!.remove(name);
        rel.refresh();
      });
      this.dropRelationsIfEmpty(volume);
      this.env.host.emit('bitmap-deleted', volume, `changed-block bitmap ${name} deleted`, { bitmap: name });
    });
  }

  private bitmapView(volume: string, bitmaps: ChangedBlockBitmaps, name: string): BitmapView {
    const r = bitmaps.record(name);
    const size = this.env.volumes.get(volume).sizeBytes;
    return {
      volume, name, createdAt: r.createdAt, clearedAt: r.clearedAt, granularityBytes: regionBytes,
      dirtyBytes: Math.min(size, bitmaps.bits(name).setBitCount * regionBytes), context: `${dirtyBitmapContextPrefix}${name}`,
    };
  }

  // --- plumbing ------------------------------------------------------------------------------------

  private relationsOf(volume: string): VolumeRelations {
    let rel = this.relations.get(volume);
    if (!rel) {
      rel = new VolumeRelations(this.env.volumes.volume(volume));
      this.relations.set(volume, rel);
    }
    return rel;
  }

  private dropRelationsIfEmpty(volume: string): void {
    const rel = this.relations.get(volume);
    if (rel && rel.empty && rel.gate.busy === 0) {
      rel.refresh();
      if (!rel.volume.hooked) this.relations.delete(volume);
    }
  }

  private async openBitmaps(volume: string): Promise<void> {
    const rel = this.relationsOf(volume);
    rel.bitmaps ??= await ChangedBlockBitmaps.open(this.env.disk, this.volumeDir(volume), regionCountOf(rel.volume.sizeBytes));
  }

  private async openChain(volume: string): Promise<void> {
    const rel = this.relationsOf(volume);
    rel.snapshots ??= await SnapshotChain.open(this.env.disk, this.volumeDir(volume), rel.volume.sizeBytes);
  }

  private volumeDir(volume: string): string {
    return path.join(this.root, 'volumes', volume);
  }

  private serialized<T>(key: string, op: () => Promise<T>): Promise<T> {
    const previous = this.queues.get(key) ?? Promise.resolve();
    const result = previous.then(op, op);
    const tail = result.catch(() => undefined);
    this.queues.set(key, tail);
    void tail.then(() => {
      if (this.queues.get(key) === tail) this.queues.delete(key);
    });
    return result;
  }

  private serializedAll<T>(keys: string[], op: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const run = (i: number): Promise<T> => (i === sorted.length ? op() : this.serialized(sorted[i]!, () => run(i + 1)));
    return run(0);
  }

  private async recover(): Promise<void> {
    const { disk, volumes, log } = this.env;
    await disk.mkdirp(path.join(this.root, 'volumes'));
    await this.pairStore.init();
    const powerLost = await checkBoot(this.root, this.env.disk);
    for (const volume of await disk.list(path.join(this.root, 'volumes'))) {
      if (!volumes.has(volume)) {
        log.warn({ volume }, 'removing the replica records of a volume that no longer exists');
        await disk.remove(this.volumeDir(volume));
        continue;
      }
      await this.openBitmaps(volume);
      await this.openChain(volume);
      this.relationsOf(volume).refresh();
    }
    for (const { record, bitmaps } of await this.pairStore.loadAll()) {
      if (!volumes.has(record.primary) || !volumes.has(record.name)) {
        log.error({ replica: record.name, primary: record.primary }, 'a replica pair names a volume that no longer exists; dropping the pair');
        await this.pairStore.remove(record.name, bitmaps);
        continue;
      }
      const rel = this.relationsOf(record.primary);
      let current = record;
      if (powerLost && (record.state === 'duplex' || record.state === 'copying' || record.state === 'resync')) {
        // Dual writes not flushed before the power went may have reached one volume and not the
        // other: every allocated region is copied again.
        const primaryAllocated = this.env.volumes.volume(record.primary).allocation;
        const secondaryAllocated = this.env.volumes.volume(record.name).allocation;
        for (let r = 0; r < bitmaps.copied.bitCount; r++) {
          if (primaryAllocated.get(r) || (r < secondaryAllocated.bitCount && secondaryAllocated.get(r))) bitmaps.copied.clearRange(r, 1);
        }
        await bitmaps.copied.sync();
        current = { ...record, state: record.state === 'duplex' ? 'resync' : record.state, reason: 'the node lost power: every allocated region is copied again' };
        await this.pairStore.save(current);
        this.env.host.emit('replica-resync', record.name, current.reason, { volume: record.primary });
      }
      const pair = this.newPair(current, bitmaps, volumes.volume(record.primary), volumes.volume(record.name), rel);
      rel.replicas.push(pair);
      this.pairs.set(record.name, pair);
      rel.refresh();
      if (current.state === 'restoring') rel.exclusive = `replica ${record.name} is being restored onto it`;
    }
    log.info({ replicas: this.pairs.size, volumes: this.relations.size, powerLost }, 'replicas, snapshots and bitmaps opened');
  }
}

/** Clears a pair's records of the regions changed since the split. */
async function clearChanged(pair: ReplicaPair): Promise<void> {
  const { dirtyPrimary, dirtySecondary } = pair.bitmaps;
  if (dirtyPrimary.setBitCount === 0 && dirtySecondary.setBitCount === 0 && !dirtyPrimary.hasUnpersistedChanges && !dirtySecondary.hasUnpersistedChanges) return;
  dirtyPrimary.clearAll();
  dirtySecondary.clearAll();
  await dirtyPrimary.sync();
  await dirtySecondary.sync();
}

export type { ReadMissPolicy, ReplicaState };
