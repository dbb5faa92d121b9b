// In-node replica pairs (spec 003 §5.1, Figs. 4, 5a, 5b): the operator commands (create, split,
// quick split, resync, restore, delete, wait), the one place a pair changes state (decided by
// state-table.ts, applied with the primary's gate held, persisted in pair-store.ts), and the
// pairs' status.
import * as path from 'node:path';
import type { TimerHandle } from '../common/clock';
import { TricopyError, errorMessage } from '../common/errors';
import type { CreateReplicaRequest, ReplicaState, ReplicaStatus, ReplicaWaitState } from '../contracts/replicas';
import type { VolumeMeta } from '../volume/store';
import type { Volume } from '../volume/volume';
import { validateObjectName } from './changed-blocks';
import type { ReplicaEnv } from './env';
import { maxReplicasPerNode, maxReplicasPerVolume, regionBytes } from './limits';
import { ReplicaPair } from './pair';
import { type ReplicaRecord, ReplicaPairStore } from './pair-store';
import type { ReplicaRegistry } from './registry';
import type { VolumeRelations } from './relations';
import { regionCountOf } from './snapshots';
import { type ReplicaEvent, copyRunning, decideReplica, exported, replicaCode } from './state-table';

interface Waiter {
  name: string;
  state: ReplicaWaitState;
  resolve: () => void;
}

export class ReplicaPairCommands {
  readonly store: ReplicaPairStore;
  private readonly waiters = new Set<Waiter>();
  private readonly env: ReplicaEnv;

  constructor(private readonly reg: ReplicaRegistry) {
    this.env = reg.env;
    this.store = new ReplicaPairStore(path.join(reg.root, 'pairs'), reg.env.disk);
  }

  listReplicas(): ReplicaStatus[] {
    return [...this.reg.pairs.values()].map((p) => this.status(p)).sort((a, b) => a.name.localeCompare(b.name));
  }

  getReplica(name: string): ReplicaStatus {
    return this.status(this.reg.pair(name));
  }

  createReplica(req: CreateReplicaRequest): Promise<ReplicaStatus> {
    return this.reg.queue.run(`pair:${req.name}`, () => this.createNow(req));
  }

  split(name: string, quick: boolean): Promise<ReplicaStatus> {
    return this.reg.queue.run(`pair:${name}`, () => this.command(this.reg.pair(name), quick ? 'quick-split' : 'split', false));
  }

  resync(name: string, force: boolean): Promise<ReplicaStatus> {
    return this.reg.queue.run(`pair:${name}`, () => this.command(this.reg.pair(name), 'resync', force));
  }

  restore(name: string, force: boolean): Promise<ReplicaStatus> {
    return this.reg.queue.run(`pair:${name}`, () => this.command(this.reg.pair(name), 'restore', force));
  }

  deleteReplica(name: string, options: { deleteVolume?: boolean; force?: boolean }): Promise<void> {
    return this.reg.queue.run(`pair:${name}`, async () => {
      const pair = this.reg.pair(name);
      if (options.deleteVolume && (this.reg.relations.get(name)?.snapshots?.count ?? 0) > 0) {
        throw new TricopyError('conflict', `replica volume ${name} has snapshots`, `delete them first (tricopy snapshot list ${name}), or delete the pair without --delete-volume`);
      }
      if (options.deleteVolume && !options.force && this.env.host.clientsOf(name) > 0) {
        throw new TricopyError('busy', `replica ${name} has ${this.env.host.clientsOf(name)} attached client(s)`, 'detach them, or pass --force to disconnect them');
      }
      await this.command(pair, 'delete', true);
      if (options.deleteVolume) {
        this.env.host.disconnect(name);
        await this.reg.forgetVolume(name);
        await this.env.volumes.delete(name);
        this.env.host.emit('volume-deleted', name, `deleted with replica pair ${name}`);
      }
    });
  }

  /** Resolves when the pair is in `state` (`simplex`: deleted); rejects at the deadline (spec 003 waitPairEvent). */
  async waitReplica(name: string, state: ReplicaWaitState, timeoutMs: number): Promise<ReplicaStatus | { name: string; state: 'simplex' }> {
    const deadline = this.env.clock.now() + timeoutMs;
    for (;;) {
      const pair = this.reg.pairs.get(name);
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
    if (this.reg.pairs.has(req.name)) throw new TricopyError('already-exists', `replica pair ${req.name} exists already`, `see it with: tricopy replica status ${req.name}`);
    if (this.reg.pairs.size >= maxReplicasPerNode) throw new TricopyError('no-space', `this node has ${maxReplicasPerNode} replica pairs, the most it may have`);
    if (this.reg.pairs.has(req.volume)) {
      throw new TricopyError('conflict', `volume ${req.volume} is itself the replica of ${this.reg.pairs.get(req.volume)!.record.primary}`,
        'a volume is never a primary and a replica at the same time (spec 003 §5.1); split the pair and copy it elsewhere, or delete that pair first');
    }
    const primaryRel = this.reg.relationsOf(req.volume);
    if (primaryRel.replicas.length >= maxReplicasPerVolume) {
      throw new TricopyError('no-space', `volume ${req.volume} has ${maxReplicasPerVolume} replicas, the most it may have`, 'delete one first');
    }
    if (primaryRel.exclusive) throw new TricopyError('busy', `volume ${req.volume} is not available: ${primaryRel.exclusive}`);
    const primary = volumes.volume(req.volume);
    const primaryMeta = volumes.get(req.volume);
    await this.replicaVolume(req, primaryMeta);
    const secondary = volumes.volume(req.name);
    const regions = regionCountOf(primaryMeta.sizeBytes);
    const bitmaps = await this.store.createBitmaps(req.name, regions);
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
        await this.store.save(record); // commit point
        primaryRel.replicas.push(pair);
        this.reg.pairs.set(record.name, pair);
        primaryRel.refresh();
      });
    } catch (err) {
      await this.store.remove(record.name, bitmaps).catch(() => undefined);
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
    if ((this.reg.relations.get(req.name)?.replicas.length ?? 0) > 0) {
      throw new TricopyError('conflict', `volume ${req.name} is the primary of replicas itself`, 'a volume is never a primary and a replica at the same time');
    }
    if (host.clientsOf(req.name) > 0) throw new TricopyError('busy', `volume ${req.name} has attached clients`, 'detach them first: its content will be overwritten');
    if (host.remotePaired(req.name)) throw new TricopyError('conflict', `volume ${req.name} is in a remote copy pair`, 'a replica volume is written by its pair only');
    return meta;
  }

  /** A pair object wired to this command area (creation and recovery). */
  newPair(record: ReplicaRecord, bitmaps: ReplicaPair['bitmaps'], primary: Volume, secondary: Volume, rel: VolumeRelations): ReplicaPair {
    return new ReplicaPair(record, bitmaps, primary, secondary, rel, {
      failed: (p, reason) => {
        void this.reg.queue.run(`pair:${p.name}`, () => this.reg.pairs.get(p.name) === p ? this.transition(p, 'failure', false, reason) : Promise.resolve(undefined))
          .catch((err: unknown) => this.env.log.error({ err: errorMessage(err), replica: p.name }, 'could not suspend a failed replica pair'));
      },
      copyComplete: (p) => {
        void this.reg.queue.run(`pair:${p.name}`, async () => {
          if (this.reg.pairs.get(p.name) !== p) return undefined;
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
    const rel = this.reg.relationsOf(pair.record.primary);
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
      this.reg.dropRelationsIfEmpty(pair.record.primary);
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
      this.reg.pairs.delete(r.name);
      rel.refresh();
      await this.store.remove(r.name, pair.bitmaps);
      return;
    }
    await this.store.save(next);
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

  private notify(pair: ReplicaPair, gone = false): void {
    for (const w of [...this.waiters]) {
      if (w.name !== pair.name) continue;
      if (gone ? w.state === 'simplex' : w.state === pair.state) w.resolve();
      else if (gone) w.resolve(); // the loop reports the pair is gone
    }
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
