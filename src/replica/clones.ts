// Clone sets: writable throwaway clones of a node's volumes at one instant, for a DR drill at a
// site that holds a copy (a secondary, read-only to hosts) while replication into the real volume
// goes on. A set NAME takes a snapshot NAME.base of each volume (the apply of async copies held at
// a batch boundary, so the volumes hold one prefix of the primary's writes) and exports a clone of
// each as `VOLUME@NAME`: reads come from the snapshot, writes go to an overlay (clone-overlay.ts).
// A set may instead read an existing snapshot of its volumes (an older image: `clone create NAME
// --volume V --snapshot S`); that snapshot is the operator's: it cannot be deleted while the set
// reads it, and ending the set leaves it.
// Ending the set discards overlays and snapshots. Clones survive a node restart (kept); a set caught
// half-created or half-ended is undone or finished when the node opens (clone-state.ts).
//
// Files: DATA_DIR/replica/clones/sets.json (the records; the commit point) and
//        DATA_DIR/replica/clones/NAME/VOLUME.{data,map} (the overlays).
import * as path from 'node:path';
import type { Clock } from '../common/clock';
import type { Disk } from '../common/disk';
import { TricopyError, errorMessage, invariant } from '../common/errors';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { Logger } from '../common/log';
import type {
  CloneSetState, CloneSetView, CreateCloneSetRequest, DeleteCloneSetRequest, DeletedCloneSet, DrillInfo,
} from '../contracts/clones';
import type { CreateSnapshotRequest, SnapshotView } from '../contracts/replicas';
import type { BlockDevice } from '../volume/block-device';
import { CloneDevice, CloneOverlay } from './clone-overlay';
import { nextCloneSetState, onRestart } from './clone-state';
import { cloneSetNamePattern, maxCloneSetsPerNode } from './limits';
import type { ExportAnswer } from './service';

/** What clone sets use of the node's snapshots (the replica service). */
export interface CloneSnapshots {
  createSnapshot(req: CreateSnapshotRequest): Promise<SnapshotView[]>;
  deleteSnapshot(volume: string, name: string): Promise<void>;
  listSnapshots(volume?: string): SnapshotView[];
  lookup(name: string): ExportAnswer | undefined;
}

/** What clone sets ask of their node. */
export interface CloneHost {
  hasVolume(name: string): boolean;
  volumeSize(name: string): number;
  /** Holds the apply of async copies into these volumes at a batch boundary until the release. */
  holdApply(volumes: string[]): Promise<() => void>;
  disconnect(exportName: string): number;
  clientsOf(exportName: string): number;
  exportUri(exportName: string): string;
  emit(kind: string, subject: string, reason: string, details?: Record<string, unknown>): void;
}

export interface CloneEnv {
  disk: Disk;
  clock: Clock;
  log: Logger;
  snapshots: CloneSnapshots;
  host: CloneHost;
}

interface CloneSetRecord {
  name: string;
  state: CloneSetState;
  createdAt: string;
  volumes: string[];
  drill: DrillInfo | null;
  /** The operator's snapshot the clones read; null (or absent, in older records): the set's own NAME.base. */
  snapshot?: string | null;
}

interface CloneSet {
  record: CloneSetRecord;
  overlays: Map<string, CloneOverlay>;
}

export function baseSnapshotOf(set: string): string {
  return `${set}.base`;
}

/** The snapshot a set's clones read: the operator's one it was made from, else its own base. */
function imageSnapshotOf(record: CloneSetRecord): string {
  return record.snapshot ?? baseSnapshotOf(record.name);
}

export class CloneService {
  private readonly sets = new Map<string, CloneSet>();
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly dir: string, private readonly env: CloneEnv) {}

  /** Opens the records after the snapshots are open: keeps active sets, undoes or finishes the others. */
  static async open(dataDir: string, env: CloneEnv): Promise<CloneService> {
    const service = new CloneService(path.join(dataDir, 'replica', 'clones'), env);
    await service.recover();
    return service;
  }

  // --- what the node asks ----------------------------------------------------------------------

  /** The device of a clone export `VOLUME@SET`; undefined when the name is not a clone. */
  lookup(exportName: string): ExportAnswer | undefined {
    const at = exportName.indexOf('@');
    if (at <= 0) return undefined;
    const volume = exportName.slice(0, at);
    const set = this.sets.get(exportName.slice(at + 1));
    const overlay = set?.overlays.get(volume);
    if (!set || !overlay) return undefined;
    if (set.record.state !== 'active') return { status: 'denied', message: `clone ${exportName} is ${set.record.state === 'ending' ? 'being discarded' : 'being created'}` };
    const image = this.imageOf(volume, set.record);
    if (!image) return { status: 'denied', message: `clone ${exportName} lost its snapshot ${volume}@${imageSnapshotOf(set.record)}` };
    const drill = set.record.drill ? ` (drill of ${set.record.drill.topology} at ${set.record.drill.site})` : '';
    const from = set.record.snapshot ? ` (snapshot ${set.record.snapshot})` : '';
    return { status: 'ok', device: new CloneDevice(exportName, image, overlay), volume, description: `writable clone of ${volume} as of ${set.record.createdAt}${from}${drill}; discarded at the end` };
  }

  /** Clone exports, for NBD_OPT_LIST. */
  exports(): Array<{ name: string; volume: string; description: string }> {
    const out: Array<{ name: string; volume: string; description: string }> = [];
    for (const set of this.sets.values()) {
      if (set.record.state !== 'active') continue;
      for (const volume of set.record.volumes) out.push({ name: `${volume}@${set.record.name}`, volume, description: `writable clone of ${volume} as of ${set.record.createdAt}` });
    }
    return out.sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Why a snapshot may not be deleted now (a clone reads it), else undefined. */
  snapshotUser(volume: string, snapshot: string): string | undefined {
    for (const set of this.sets.values()) {
      if (set.record.state === 'active' && set.overlays.has(volume) && imageSnapshotOf(set.record) === snapshot) {
        return `clone ${volume}@${set.record.name} reads it; delete the clone set first (tricopy clone delete ${set.record.name}; a drill: tricopy topology drill FILE --end)`;
      }
    }
    return undefined;
  }

  async close(): Promise<void> {
    for (const set of this.sets.values()) for (const o of set.overlays.values()) await o.close();
  }

  // --- commands ----------------------------------------------------------------------------------

  list(): CloneSetView[] {
    return [...this.sets.values()].map((s) => this.view(s)).sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): CloneSetView {
    return this.view(this.set(name));
  }

  create(req: CreateCloneSetRequest): Promise<CloneSetView> {
    return this.serialized(() => this.createNow(req));
  }

  delete(name: string, req: DeleteCloneSetRequest): Promise<DeletedCloneSet> {
    return this.serialized(() => this.deleteNow(name, req));
  }

  private async createNow(req: CreateCloneSetRequest): Promise<CloneSetView> {
    const { snapshots, host } = this.env;
    if (!cloneSetNamePattern.test(req.name)) {
      throw new TricopyError('invalid-argument', `"${req.name}" is not a valid clone set name`, 'use 1–58 letters, digits, "_" or "-", starting with a letter or digit');
    }
    const volumes = [...new Set(req.volumes)].sort();
    if (volumes.length === 0) throw new TricopyError('invalid-argument', 'name the volumes to clone');
    if (this.sets.has(req.name)) throw new TricopyError('already-exists', `clone set ${req.name} exists already`, 'delete it first (tricopy clone delete NAME; a drill: tricopy topology drill FILE --end), or choose another name');
    if (this.sets.size >= maxCloneSetsPerNode) throw new TricopyError('no-space', `this node has ${maxCloneSetsPerNode} clone sets, the most it may have`, 'delete one first (tricopy clone list, tricopy clone delete NAME)');
    for (const v of volumes) {
      if (!host.hasVolume(v)) throw new TricopyError('not-found', `volume ${v} does not exist on this node`, 'list volumes with: tricopy volume list');
      const taken = snapshots.listSnapshots(v).find((s) => s.name === req.name || s.name === baseSnapshotOf(req.name));
      if (taken) throw new TricopyError('already-exists', `volume ${v} has a snapshot named ${taken.name}, which the clone would hide`, 'choose another name');
    }
    const fromSnapshot = req.snapshot === undefined ? null : this.existingImage(volumes, req.snapshot);
    const now = new Date(this.env.clock.now()).toISOString();
    const set: CloneSet = {
      record: { name: req.name, state: 'creating', createdAt: fromSnapshot?.createdAt ?? now, volumes, drill: req.drill ?? null, snapshot: fromSnapshot?.name ?? null },
      overlays: new Map(),
    };
    this.sets.set(req.name, set);
    let createdAt = set.record.createdAt;
    try {
      await this.save(); // intent: a restart from here on undoes the set
      if (fromSnapshot === null) createdAt = await this.takeBase(req.name, volumes, now);
      for (const v of volumes) set.overlays.set(v, await CloneOverlay.create(this.env.disk, this.setDir(req.name), v, host.volumeSize(v)));
      set.record = { ...set.record, createdAt, state: nextCloneSetState('creating', 'clones-ready')! };
      await this.save(); // commit point
    } catch (err) {
      await this.undo(set).catch((e: unknown) => this.env.log.error({ set: req.name, err: errorMessage(e) }, 'undoing a failed clone set left something behind'));
      throw err;
    }
    const from = fromSnapshot ? ` (snapshot ${fromSnapshot.name})` : '';
    for (const v of volumes) {
      host.emit('clone-created', `${v}@${req.name}`, `writable clone of ${v} as of ${createdAt}${from}; writes go to an overlay, ${v} goes on unchanged`,
        { volume: v, set: req.name, snapshot: `${v}@${imageSnapshotOf(set.record)}` });
    }
    const d = set.record.drill;
    if (d) {
      host.emit('drill-started', req.name, `DR drill of ${d.topology} at ${d.site}: clones ${volumes.map((v) => `${v}@${req.name}`).join(', ')} as of ${createdAt}; replication goes on`,
        { topology: d.topology, site: d.site, volumes, pairs: d.pairs, at: createdAt });
    }
    return this.view(set);
  }

  /** The set's own snapshot of its volumes at one instant (async copies held at a batch boundary); its instant. */
  private async takeBase(name: string, volumes: string[], now: string): Promise<string> {
    const release = await this.env.host.holdApply(volumes);
    try {
      const taken = await this.env.snapshots.createSnapshot({ name: baseSnapshotOf(name), volumes });
      return taken[0]?.createdAt ?? now;
    } finally {
      release();
    }
  }

  /** An operator's snapshot every volume has (a group snapshot for several), for clones to read; its instant. */
  private existingImage(volumes: string[], snapshot: string): { name: string; createdAt: string } {
    const owner = [...this.sets.values()].find((s) => !s.record.snapshot && baseSnapshotOf(s.record.name) === snapshot);
    if (owner) {
      throw new TricopyError('conflict', `snapshot ${snapshot} belongs to clone set ${owner.record.name} and goes when that set is deleted`,
        `clone the volume as it is now, or a snapshot of your own (tricopy snapshot list ${volumes[0]!})`);
    }
    const found = volumes.map((v) => {
      const s = this.env.snapshots.listSnapshots(v).find((x) => x.name === snapshot);
      if (!s) throw new TricopyError('not-found', `volume ${v} has no snapshot named ${snapshot}`, `list its snapshots with: tricopy snapshot list ${v}`);
      return s;
    });
    const instants = new Set(found.map((s) => s.createdAt));
    if (instants.size > 1) {
      throw new TricopyError('conflict', `the snapshots named ${snapshot} of ${volumes.join(', ')} were taken at different instants`,
        'clone volumes together only from a snapshot taken of them together (tricopy snapshot create V1 … --group G), or clone them in separate sets');
    }
    return { name: snapshot, createdAt: found[0]!.createdAt };
  }

  private async deleteNow(name: string, req: DeleteCloneSetRequest): Promise<DeletedCloneSet> {
    const set = this.set(name);
    const { host } = this.env;
    const exportsOf = set.record.volumes.map((v) => `${v}@${name}`);
    const attached = exportsOf.reduce((n, e) => n + host.clientsOf(e), 0);
    if (attached > 0 && req.force !== true) {
      throw new TricopyError('busy', `clone set ${name} has ${attached} attached client(s)`, 'stop the application on the clones and detach, or pass --force to disconnect them');
    }
    const writtenBytes = [...set.overlays.values()].reduce((n, o) => n + o.writtenBytes, 0);
    set.record = { ...set.record, state: nextCloneSetState(set.record.state, 'end')! };
    await this.save(); // a restart from here on finishes the deletion
    const disconnected = exportsOf.reduce((n, e) => n + host.disconnect(e), 0);
    await this.discard(set, 'removed');
    const durationMs = Math.max(0, this.env.clock.now() - Date.parse(set.record.createdAt));
    for (const e of exportsOf) host.emit('clone-deleted', e, `discarded with its overlay (${writtenBytes} bytes written to the set) and snapshot`, { set: name });
    const d = set.record.drill;
    if (d) {
      const result = req.result ?? 'not-given';
      host.emit('drill-ended', name, `DR drill of ${d.topology} at ${d.site} ended after ${(durationMs / 1000).toFixed(1)} s, result ${result}${req.note ? `: ${req.note}` : ''}`,
        { topology: d.topology, site: d.site, durationMs, result, note: req.note ?? null, writtenBytes, startedAt: set.record.createdAt });
    }
    return { name, durationMs, writtenBytes, disconnected };
  }

  // --- plumbing ------------------------------------------------------------------------------------

  private set(name: string): CloneSet {
    const set = this.sets.get(name);
    if (!set) throw new TricopyError('not-found', `no clone set named ${name} on this node`, 'list clone sets with: tricopy clone list');
    return set;
  }

  private imageOf(volume: string, record: CloneSetRecord): BlockDevice | undefined {
    const answer = this.env.snapshots.lookup(`${volume}@${imageSnapshotOf(record)}`);
    return answer?.status === 'ok' ? answer.device : undefined;
  }

  private view(set: CloneSet): CloneSetView {
    const { host } = this.env;
    return {
      name: set.record.name, state: set.record.state, createdAt: set.record.createdAt, drill: set.record.drill,
      clones: set.record.volumes.map((v) => {
        const exportName = `${v}@${set.record.name}`;
        return {
          volume: v, snapshot: `${v}@${imageSnapshotOf(set.record)}`, exportName, exportUri: host.exportUri(exportName),
          writtenBytes: set.overlays.get(v)?.writtenBytes ?? 0, clients: host.clientsOf(exportName),
        };
      }),
    };
  }

  /**
   * Overlays and snapshots go, then the record (the set is gone for good once that is saved):
   * `removed` ends an ending set, `failed` undoes a set that was being created.
   */
  private async discard(set: CloneSet, event: 'removed' | 'failed'): Promise<void> {
    invariant(nextCloneSetState(set.record.state, event) === null, 'a discarded clone set leaves no record');
    for (const o of set.overlays.values()) await o.close();
    set.overlays.clear();
    // An operator's snapshot the set read stays; only the set's own base goes.
    const base = baseSnapshotOf(set.record.name);
    for (const v of set.record.snapshot ? [] : set.record.volumes) {
      if (this.env.host.hasVolume(v) && this.env.snapshots.listSnapshots(v).some((s) => s.name === base)) await this.env.snapshots.deleteSnapshot(v, base);
    }
    await this.env.disk.remove(this.setDir(set.record.name));
    this.sets.delete(set.record.name);
    await this.save();
  }

  /** A set that failed while being created: whatever it made goes. */
  private undo(set: CloneSet): Promise<void> {
    return this.discard(set, 'failed');
  }

  private async recover(): Promise<void> {
    await this.env.disk.mkdirp(this.dir);
    const saved = (await readJsonIfExists(path.join(this.dir, 'sets.json'), this.env.disk)) as { sets?: CloneSetRecord[] } | undefined;
    for (const record of saved?.sets ?? []) this.sets.set(record.name, { record, overlays: new Map() });
    for (const set of [...this.sets.values()]) {
      const what = onRestart[set.record.state];
      if (what === 'keep') {
        try {
          for (const v of set.record.volumes) {
            if (!this.imageOf(v, set.record)) throw new Error(`snapshot ${v}@${imageSnapshotOf(set.record)} is gone`);
            set.overlays.set(v, await CloneOverlay.open(this.env.disk, this.setDir(set.record.name), v, this.env.host.volumeSize(v)));
          }
          continue;
        } catch (err) {
          this.env.log.error({ set: set.record.name, err: errorMessage(err) }, 'a clone set cannot be opened; discarding it');
          set.record = { ...set.record, state: nextCloneSetState(set.record.state, 'end')! };
        }
      }
      this.env.log.warn({ set: set.record.name, state: set.record.state }, what === 'undo' ? 'undoing a clone set the node stopped creating' : 'finishing the end of a clone set');
      await this.discard(set, what === 'undo' ? 'failed' : 'removed');
      this.env.host.emit('clone-deleted', set.record.name, what === 'undo' ? 'the node stopped while creating the clone set; undone' : 'discarded when the node opened');
    }
    for (const name of await this.env.disk.list(this.dir)) {
      if (name !== 'sets.json' && !name.startsWith('.') && !this.sets.has(name)) await this.env.disk.remove(path.join(this.dir, name));
    }
  }

  private setDir(name: string): string {
    return path.join(this.dir, name);
  }

  private save(): Promise<void> {
    return atomicWriteJson(path.join(this.dir, 'sets.json'), { sets: [...this.sets.values()].map((s) => s.record) }, this.env.disk);
  }

  private serialized<T>(op: () => Promise<T>): Promise<T> {
    const result = this.queue.then(op, op);
    this.queue = result.catch(() => undefined);
    return result;
  }
}
