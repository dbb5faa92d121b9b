// The volume store: a data directory of volumes. Owns naming, creation, deletion, growth, access
// lists and the crash-safe metadata that says which volumes exist.
//
// Layout of <dataDir>/volumes/:  <name>.img (sparse data, when the volume's tier is `default`)
//                                <name>.alloc (allocation map)
//                                <name>.json (metadata; its presence is the commit point of a volume)
//           <area dir>/:         <name>.img (sparse data of a volume in that tier; see areas.ts)
// A relocation (relocation.ts) records its target tier in the metadata before it writes there, and
// commits the move by rewriting the metadata with the new tier: the metadata always names the one
// data file that holds the volume.
import * as path from 'node:path';
import { randomUUID } from 'node:crypto';
import { TricopyError, errnoCode, invariant } from '../common/errors';
import type { Clock } from '../common/clock';
import type { Disk, DiskFile } from '../common/disk';
import { atomicWriteJson, isAtomicTemp } from '../common/fsutil';
import { formatBytes } from '../common/units';
import type { Logger } from '../common/log';
import { PersistentBitmap } from './bitmap';
import { Volume, allocationChunkBytes, chunkCount } from './volume';
import { type AccessList, defaultAccessList, normalizeAccessList, validateClientRule, validateIdentityRule } from './access';
import { type DataArea, DataAreas, defaultTier } from './areas';

export const volumeNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
export const minVolumeSizeBytes = 1024 * 1024;
export const maxVolumeSizeBytes = 16 * 1024 ** 4;
/** Volume sizes are whole sectors so every block client can address the last byte. */
export const volumeSizeAlignmentBytes = 512;
export const maxVolumesPerNode = 4096;

export interface VolumeMeta {
  name: string;
  uuid: string;
  sizeBytes: number;
  createdAt: string;
  description: string;
  access: AccessList;
  /** The data area the volume's data file lives in (spec 003 areaId). */
  tier: string;
  /** Set while the volume moves: the tier whose file is being filled (not yet authoritative). */
  relocatingTo?: string;
}

/** A relocation the node did not finish before it stopped (its partial target was removed). */
export interface InterruptedRelocation {
  volume: string;
  from: string;
  to: string;
}

export interface CreateVolumeOptions {
  name: string;
  sizeBytes: number;
  description?: string;
  /** Allow the logical size to exceed the free space of the data directory. */
  thin?: boolean;
  access?: AccessList;
  /** The data area to create the data file in (default: the data directory). */
  tier?: string;
}

interface Entry {
  meta: VolumeMeta;
  volume: Volume;
}

export class VolumeStore {
  private readonly entries = new Map<string, Entry>();
  private opChain: Promise<unknown> = Promise.resolve();
  private interrupted: InterruptedRelocation[] = [];

  private constructor(
    readonly dir: string,
    readonly areas: DataAreas,
    private readonly disk: Disk,
    private readonly clock: Clock,
    private readonly newUuid: () => string,
    private readonly log: Logger,
  ) {}

  /**
   * Opens the store, finishing or undoing whatever a crash interrupted. New volumes get their uuid
   * from `env.uuid` (default randomUUID; the simulator's come from the node, so a seed reproduces them).
   */
  static async open(dataDir: string, env: { disk: Disk; clock: Clock; uuid?: () => string }, log: Logger, dataAreas: DataArea[] = []): Promise<VolumeStore> {
    const dir = path.join(dataDir, 'volumes');
    await env.disk.mkdirp(dir);
    const areas = new DataAreas(dir, dataAreas);
    for (const area of dataAreas) await env.disk.mkdirp(area.dir);
    const store = new VolumeStore(dir, areas, env.disk, env.clock, env.uuid ?? randomUUID, log);
    await store.recover();
    return store;
  }

  /** Relocations a crash or stop interrupted, found at open (each can be run again). */
  interruptedRelocations(): InterruptedRelocation[] {
    return [...this.interrupted];
  }

  list(): VolumeMeta[] {
    return [...this.entries.values()].map((e) => e.meta).sort((a, b) => a.name.localeCompare(b.name));
  }

  has(name: string): boolean {
    return this.entries.has(name);
  }

  get(name: string): VolumeMeta {
    return this.entry(name).meta;
  }

  volume(name: string): Volume {
    return this.entry(name).volume;
  }

  tryVolume(name: string): Volume | undefined {
    return this.entries.get(name)?.volume;
  }

  create(options: CreateVolumeOptions): Promise<VolumeMeta> {
    return this.serialized(() => this.createNow(options));
  }

  delete(name: string): Promise<void> {
    return this.serialized(() => this.deleteNow(name));
  }

  resize(name: string, newSize: number): Promise<VolumeMeta> {
    return this.serialized(() => this.resizeNow(name, newSize));
  }

  allow(name: string, rule: { client?: string; identity?: string }): Promise<VolumeMeta> {
    return this.serialized(async () => {
      const entry = this.entry(name);
      const access = { clients: [...entry.meta.access.clients], identities: [...entry.meta.access.identities] };
      if (rule.client !== undefined) access.clients.push(validateClientRule(rule.client));
      if (rule.identity !== undefined) access.identities.push(validateIdentityRule(rule.identity));
      return this.updateMeta(entry, { ...entry.meta, access: normalizeAccessList(access) });
    });
  }

  disallow(name: string, rule: { client?: string; identity?: string }): Promise<VolumeMeta> {
    return this.serialized(async () => {
      const entry = this.entry(name);
      const access = { ...entry.meta.access };
      if (rule.client !== undefined) {
        const client = validateClientRule(rule.client);
        if (!access.clients.includes(client)) {
          throw new TricopyError('not-found', `volume ${name} has no access rule for client ${client}`,
            `its rules are: ${access.clients.join(', ') || '(none)'}`);
        }
        access.clients = access.clients.filter((c) => c !== client);
      }
      if (rule.identity !== undefined) {
        const identity = validateIdentityRule(rule.identity);
        if (!access.identities.includes(identity)) {
          throw new TricopyError('not-found', `volume ${name} has no access rule for identity ${identity}`);
        }
        access.identities = access.identities.filter((i) => i !== identity);
      }
      return this.updateMeta(entry, { ...entry.meta, access });
    });
  }

  async close(): Promise<void> {
    await this.serialized(async () => {
      for (const entry of this.entries.values()) await entry.volume.close();
      this.entries.clear();
    });
  }

  private entry(name: string): Entry {
    const entry = this.entries.get(name);
    if (!entry) {
      throw new TricopyError('not-found', `volume ${name} does not exist`, 'list volumes with: tricopy volume list');
    }
    return entry;
  }

  private serialized<T>(op: () => Promise<T>): Promise<T> {
    const result = this.opChain.then(op, op);
    this.opChain = result.catch(() => undefined);
    return result;
  }

  private paths(name: string, tier = defaultTier): { img: string; alloc: string; meta: string } {
    return {
      img: this.imagePath(name, tier),
      alloc: path.join(this.dir, `${name}.alloc`),
      meta: path.join(this.dir, `${name}.json`),
    };
  }

  /** Where a volume's data file lives in a tier. */
  imagePath(name: string, tier: string): string {
    return path.join(this.areas.dirOf(tier), `${name}.img`);
  }

  private async createNow(options: CreateVolumeOptions): Promise<VolumeMeta> {
    validateVolumeName(options.name);
    const tier = options.tier ?? defaultTier;
    const areaDir = this.areas.dirOf(tier);
    validateVolumeSize(options.sizeBytes);
    if (this.entries.has(options.name)) {
      throw new TricopyError('already-exists', `volume ${options.name} already exists`,
        'choose another name, or delete the existing volume first');
    }
    if (this.entries.size >= maxVolumesPerNode) {
      throw new TricopyError('no-space', `this node already holds the maximum of ${maxVolumesPerNode} volumes`);
    }
    if (!options.thin) await this.checkFreeSpace(options.sizeBytes, options.name, tier);
    const meta: VolumeMeta = {
      name: options.name,
      uuid: this.newUuid(),
      sizeBytes: options.sizeBytes,
      createdAt: new Date(this.clock.now()).toISOString(),
      description: options.description ?? '',
      access: options.access ? normalizeAccessList(options.access) : defaultAccessList(),
      tier,
    };
    const p = this.paths(options.name, tier);
    // Leftovers of a crashed create have no metadata and were removed at open; be strict here.
    await this.disk.remove(p.img);
    await this.disk.remove(p.alloc);
    let file: DiskFile | undefined;
    let bitmap: PersistentBitmap | undefined;
    try {
      file = await this.disk.open(p.img, 'wx+');
      await file.truncate(options.sizeBytes);
      await file.datasync();
      bitmap = await PersistentBitmap.create(this.disk, p.alloc, allocationChunkBytes, chunkCount(options.sizeBytes));
      if (areaDir !== this.dir) await this.disk.syncDir(areaDir);
      await this.disk.syncDir(this.dir);
      await atomicWriteJson(p.meta, meta, this.disk); // commit point
    } catch (err) {
      if (bitmap) await bitmap.close().catch(() => undefined);
      if (file !== undefined) await file.close().catch(() => undefined);
      await this.disk.remove(p.img);
      await this.disk.remove(p.alloc);
      throw storageError(err, `create volume ${options.name}`);
    }
    this.entries.set(meta.name, { meta, volume: new Volume(meta.name, meta.sizeBytes, file, bitmap) });
    this.log.info({ volume: meta.name, sizeBytes: meta.sizeBytes }, 'volume created');
    return meta;
  }

  private async deleteNow(name: string): Promise<void> {
    const entry = this.entry(name);
    const p = this.paths(name, entry.meta.tier);
    await this.disk.remove(p.meta); // commit point: without metadata the volume no longer exists
    await this.disk.syncDir(this.dir);
    this.entries.delete(name);
    await entry.volume.close().catch((err: unknown) => this.log.warn({ err, volume: name }, 'closing deleted volume'));
    await this.disk.remove(p.img);
    if (entry.meta.relocatingTo !== undefined) await this.disk.remove(this.imagePath(name, entry.meta.relocatingTo));
    await this.disk.remove(p.alloc);
    this.log.info({ volume: name }, 'volume deleted');
  }

  private async resizeNow(name: string, newSize: number): Promise<VolumeMeta> {
    const entry = this.entry(name);
    if (newSize < entry.meta.sizeBytes) {
      throw new TricopyError('invalid-argument',
        `volume ${name} is ${formatBytes(entry.meta.sizeBytes)}; shrinking it to ${formatBytes(newSize)} is refused`,
        'volumes only grow: shrinking would cut off data a host may still use. Create a smaller volume and copy instead.');
    }
    if (newSize === entry.meta.sizeBytes) return entry.meta;
    validateVolumeSize(newSize);
    try {
      await entry.volume.grow(newSize);
    } catch (err) {
      throw storageError(err, `grow volume ${name}`);
    }
    return this.updateMeta(entry, { ...entry.meta, sizeBytes: newSize });
  }

  private async updateMeta(entry: Entry, meta: VolumeMeta): Promise<VolumeMeta> {
    invariant(meta.name === entry.meta.name, 'metadata updates keep the volume name');
    await atomicWriteJson(this.paths(meta.name).meta, meta, this.disk);
    entry.meta = meta;
    return meta;
  }

  private async checkFreeSpace(sizeBytes: number, name: string, tier: string): Promise<void> {
    const freeBytes = await this.disk.freeBytes(this.areas.dirOf(tier));
    const committedBytes = [...this.entries.values()].filter((e) => e.meta.tier === tier)
      .reduce((sum, e) => sum + (e.meta.sizeBytes - e.volume.allocatedBytes), 0);
    if (sizeBytes + committedBytes > freeBytes) {
      throw new TricopyError('no-space',
        `volume ${name} of ${formatBytes(sizeBytes)} does not fit: data area ${tier} has ${formatBytes(freeBytes)} free ` +
        `and existing volumes may still grow by ${formatBytes(committedBytes)}`,
        'free space, choose a smaller size, or pass --thin to overcommit (writes then fail with ENOSPC when the disk fills)');
    }
  }

  private async recover(): Promise<void> {
    const names = await this.disk.list(this.dir);
    for (const file of names) {
      if (isAtomicTemp(file)) await this.disk.remove(path.join(this.dir, file));
    }
    const metas = names.filter((n) => n.endsWith('.json') && !isAtomicTemp(n));
    for (const metaFile of metas) {
      const meta = parseMeta(JSON.parse((await this.disk.readFile(path.join(this.dir, metaFile))).toString('utf8')), metaFile);
      if (!this.areas.has(meta.tier)) {
        throw new TricopyError('invalid-argument', `volume ${meta.name} lives in data area ${meta.tier}, which this node is not given`,
          `start the node with --data-area ${meta.tier}=DIRECTORY (the directory it had before)`);
      }
      const p = this.paths(meta.name, meta.tier);
      const file = await this.disk.open(p.img, 'r+');
      const bitmap = await PersistentBitmap.open(this.disk, p.alloc, allocationChunkBytes);
      const fileSize = await file.sizeBytes();
      let recovered = meta;
      if (bitmap.bitCount < chunkCount(meta.sizeBytes)) {
        // Metadata is committed last, so a map smaller than the committed size is damage, not a crash.
        throw new Error(`allocation map ${p.alloc} is smaller than volume ${meta.name}; the data directory is damaged`);
      }
      if (bitmap.bitCount > chunkCount(meta.sizeBytes)) {
        // A grow finished its data file and map but not its metadata: roll it forward to the file size.
        invariant(bitmap.bitCount === chunkCount(fileSize), `interrupted grow of ${meta.name} left a consistent file`);
        recovered = { ...meta, sizeBytes: fileSize };
        await atomicWriteJson(p.meta, recovered, this.disk);
        this.log.warn({ volume: meta.name, sizeBytes: fileSize }, 'completed a grow interrupted by a crash');
      } else if (fileSize !== meta.sizeBytes) {
        // A grow stopped after extending the file only: no write beyond the old size was ever accepted.
        await file.truncate(meta.sizeBytes);
      }
      if (recovered.relocatingTo !== undefined) {
        // The move did not commit: the file in the old tier holds the volume; the partial target goes below.
        this.interrupted.push({ volume: meta.name, from: meta.tier, to: recovered.relocatingTo });
        const { relocatingTo: _dropped, ...rest } = recovered;
        recovered = rest;
        await atomicWriteJson(p.meta, recovered, this.disk);
        this.log.warn({ volume: meta.name, from: meta.tier, to: _dropped }, 'a relocation was interrupted; the volume stays where it was');
      }
      this.entries.set(meta.name, { meta: recovered, volume: new Volume(meta.name, recovered.sizeBytes, file, bitmap) });
    }
    await this.removeLeftovers(names);
    this.log.info({ volumes: this.entries.size }, 'volume store opened');
  }

  /** Files no committed volume owns: crashed creates, interrupted relocations' targets, sources of committed ones. */
  private async removeLeftovers(defaultDirNames: string[]): Promise<void> {
    for (const tier of this.areas.tiers()) {
      const dir = this.areas.dirOf(tier);
      const names = dir === this.dir ? defaultDirNames : await this.disk.list(dir);
      for (const file of names) {
        const match = /^(.*)\.(img|alloc)$/.exec(file);
        if (!match) continue;
        const owner = this.entries.get(match[1]!);
        const owned = owner !== undefined && (match[2] === 'alloc' ? dir === this.dir : owner.meta.tier === tier);
        if (owned) continue;
        this.log.warn({ file: path.join(dir, file) }, 'removing a data file no volume owns (an interrupted create or relocation)');
        await this.disk.remove(path.join(dir, file));
      }
    }
  }

  // --- relocation (the steps relocation.ts takes; each durable before it returns) -------------------

  /**
   * Records that `name` moves to `tier` and creates the empty target file there. Refuses an
   * unknown tier, the current tier, a move already recorded, and a target without room for the
   * volume's allocated data.
   */
  beginRelocation(name: string, tier: string): Promise<DiskFile> {
    return this.serialized(async () => {
      const entry = this.entry(name);
      const dir = this.areas.dirOf(tier);
      if (entry.meta.tier === tier) {
        throw new TricopyError('conflict', `volume ${name} is in tier ${tier} already`, `its tier is ${tier}; name another: ${this.areas.tiers().filter((t) => t !== tier).join(', ') || '(none configured)'}`);
      }
      if (entry.meta.relocatingTo !== undefined) {
        throw new TricopyError('busy', `volume ${name} is moving to tier ${entry.meta.relocatingTo} already`, `follow it with: tricopy volume show ${name}`);
      }
      const needBytes = entry.volume.allocatedBytes;
      const freeBytes = await this.disk.freeBytes(dir);
      if (needBytes > freeBytes) {
        throw new TricopyError('no-space', `volume ${name} holds ${formatBytes(needBytes)} of data; data area ${tier} has ${formatBytes(freeBytes)} free`,
          'free space in that area, or choose another tier');
      }
      const img = this.imagePath(name, tier);
      await this.disk.remove(img);
      let file: DiskFile | undefined;
      try {
        file = await this.disk.open(img, 'wx+');
        await file.truncate(entry.meta.sizeBytes);
        await file.datasync();
        await this.disk.syncDir(dir);
        await this.updateMeta(entry, { ...entry.meta, relocatingTo: tier }); // the durable record of the move
      } catch (err) {
        await file?.close().catch(() => undefined);
        await this.disk.remove(img);
        throw storageError(err, `start moving volume ${name} to tier ${tier}`);
      }
      return file;
    });
  }

  /** The commit point of a move: from now on the target tier's file is the volume. */
  commitRelocation(name: string): Promise<VolumeMeta> {
    return this.serialized(async () => {
      const entry = this.entry(name);
      const to = entry.meta.relocatingTo;
      invariant(to !== undefined, `volume ${name} has a relocation to commit`);
      const { relocatingTo: _committed, ...rest } = entry.meta;
      return this.updateMeta(entry, { ...rest, tier: to });
    });
  }

  /** Removes the data file a volume left in `tier` (after a commit, or the target of an abandoned move). */
  async removeImage(name: string, tier: string): Promise<void> {
    await this.disk.remove(this.imagePath(name, tier));
    await this.disk.syncDir(this.areas.dirOf(tier));
  }

  /** Forgets an uncommitted move: the volume stays in its tier; the partial target is removed. */
  abortRelocation(name: string): Promise<void> {
    return this.serialized(async () => {
      const entry = this.entries.get(name);
      const to = entry?.meta.relocatingTo;
      if (!entry || to === undefined) return;
      const { relocatingTo: _aborted, ...rest } = entry.meta;
      await this.updateMeta(entry, rest);
      await this.removeImage(name, to);
    });
  }
}

export function validateVolumeName(name: string): void {
  if (!volumeNamePattern.test(name)) {
    throw new TricopyError('invalid-argument', `"${name}" is not a valid volume name`,
      'use 1–63 letters, digits, ".", "_" or "-", starting with a letter or digit');
  }
}

export function validateVolumeSize(sizeBytes: number): void {
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes < minVolumeSizeBytes || sizeBytes > maxVolumeSizeBytes) {
    throw new TricopyError('invalid-argument',
      `volume size ${formatBytes(sizeBytes)} is outside the supported range`,
      `sizes run from ${formatBytes(minVolumeSizeBytes)} to ${formatBytes(maxVolumeSizeBytes)}`);
  }
  if (sizeBytes % volumeSizeAlignmentBytes !== 0) {
    throw new TricopyError('invalid-argument', `volume size ${sizeBytes} bytes is not a multiple of ${volumeSizeAlignmentBytes}`,
      'block clients address whole 512-byte sectors; round the size, e.g. 10GiB');
  }
}

function parseMeta(value: unknown, file: string): VolumeMeta {
  const v = value as Partial<VolumeMeta>;
  if (typeof v !== 'object' || v === null || typeof v.name !== 'string' || typeof v.sizeBytes !== 'number' ||
      typeof v.uuid !== 'string') {
    throw new Error(`volume metadata ${file} is malformed`);
  }
  return {
    name: v.name,
    uuid: v.uuid,
    sizeBytes: v.sizeBytes,
    createdAt: typeof v.createdAt === 'string' ? v.createdAt : new Date(0).toISOString(),
    description: typeof v.description === 'string' ? v.description : '',
    access: normalizeAccessList(v.access ?? defaultAccessList()),
    // Volumes created before data areas existed live in the data directory.
    tier: typeof v.tier === 'string' ? v.tier : defaultTier,
    ...(typeof v.relocatingTo === 'string' ? { relocatingTo: v.relocatingTo } : {}),
  };
}

function storageError(err: unknown, what: string): Error {
  if (err instanceof TricopyError) return err;
  const code = errnoCode(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') {
    return new TricopyError('no-space', `${what}: no space left in the data directory`, 'free space on the node and retry');
  }
  return new TricopyError('io-error', `${what} failed: ${err instanceof Error ? err.message : String(err)}`);
}
