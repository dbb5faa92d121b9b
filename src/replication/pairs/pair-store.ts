// Durable pair records and differential records (bitmaps), one of each per pair, in
// <dataDir>/pairs/. A record file written atomically is the commit point of every state change.
// Also per-volume marks: applied marks of volumes detached from an async stream (<dataDir>/pairs/marks/)
// and detached secondaries (<dataDir>/pairs/detached/).
import * as path from 'node:path';
import { TricopyError } from '../../common/errors';
import { type Disk, diskErrorCode } from '../../common/disk';
import { atomicWriteJson, isAtomicTemp } from '../../common/fsutil';
import type { Logger } from '../../common/log';
import { PersistentBitmap } from '../../volume/bitmap';
import { chunkCount } from '../../volume/volume';
import { diffChunkBytes } from '../limits';
import { type PairRecord, pairNamePattern, pairStates } from './pair-model';

export { diffChunkBytes };

/** The folders of per-volume marks: applied marks (delta/marks.ts), detached secondaries (pairs/detached.ts). */
export const markFolders = ['marks', 'detached'] as const;
export type MarkFolder = typeof markFolders[number];

export class PairStore {
  private readonly saving = new Map<string, Promise<void>>();

  private constructor(readonly dir: string, private readonly disk: Disk, private readonly log: Logger) {}

  static async open(dataDir: string, disk: Disk, log: Logger): Promise<PairStore> {
    const dir = path.join(dataDir, 'pairs');
    await disk.mkdirp(dir);
    for (const name of await disk.list(dir)) if (isAtomicTemp(name)) await disk.remove(path.join(dir, name));
    for (const folder of markFolders) await disk.mkdirp(path.join(dir, folder));
    return new PairStore(dir, disk, log);
  }

  /**
   * Per-volume marks of one kind, in <dataDir>/pairs/<folder>/<volume>.json, each checked by
   * `parse` (which throws on a malformed file: the data directory is damaged).
   */
  async loadMarks<T>(folder: MarkFolder, parse: (value: unknown, file: string) => T): Promise<Map<string, T>> {
    const out = new Map<string, T>();
    const dir = path.join(this.dir, folder);
    for (const file of (await this.disk.list(dir)).filter((n) => n.endsWith('.json') && !isAtomicTemp(n))) {
      out.set(file.slice(0, -'.json'.length), parse(JSON.parse((await this.disk.readFile(path.join(dir, file))).toString('utf8')) as unknown, file));
    }
    return out;
  }

  saveMark(folder: MarkFolder, volume: string, mark: object): Promise<void> {
    return atomicWriteJson(path.join(this.dir, folder, `${volume}.json`), mark, this.disk);
  }

  async removeMark(folder: MarkFolder, volume: string): Promise<void> {
    await this.disk.remove(path.join(this.dir, folder, `${volume}.json`));
    await this.disk.syncDir(path.join(this.dir, folder));
  }

  async loadAll(): Promise<PairRecord[]> {
    const out: PairRecord[] = [];
    for (const file of (await this.disk.list(this.dir)).filter((n) => n.endsWith('.json') && !isAtomicTemp(n)).sort()) {
      const record = parseRecord(JSON.parse((await this.disk.readFile(path.join(this.dir, file))).toString('utf8')) as unknown, file);
      out.push(record);
    }
    return out;
  }

  /** Saves of one record run one after another, each writing the record as it is then. */
  save(record: PairRecord): Promise<void> {
    const previous = this.saving.get(record.name) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => atomicWriteJson(path.join(this.dir, `${record.name}.json`), record, this.disk));
    this.saving.set(record.name, next);
    void next.finally(() => {
      if (this.saving.get(record.name) === next) this.saving.delete(record.name);
    }).catch(() => undefined);
    return next;
  }

  async remove(name: string): Promise<void> {
    await this.disk.remove(path.join(this.dir, `${name}.json`));
    await this.disk.remove(path.join(this.dir, `${name}.diff`));
    await this.disk.syncDir(this.dir);
  }

  /** Opens the pair's differential record, creating it (all clear) for a new pair. */
  async bitmap(name: string, volumeBytes: number): Promise<PersistentBitmap> {
    const file = path.join(this.dir, `${name}.diff`);
    try {
      const b = await PersistentBitmap.open(this.disk, file, diffChunkBytes);
      if (b.bitCount < chunkCount(volumeBytes)) await b.grow(chunkCount(volumeBytes), true);
      return b;
    } catch (err) {
      if (diskErrorCode(err) !== 'ENOENT') throw err;
      this.log.debug({ pair: name }, 'creating differential record');
      const created = await PersistentBitmap.create(this.disk, file, diffChunkBytes, chunkCount(volumeBytes));
      await this.disk.syncDir(this.dir);
      return created;
    }
  }
}

function parseRecord(value: unknown, file: string): PairRecord {
  const r = value as Partial<PairRecord>;
  const ok = typeof r === 'object' && r !== null && typeof r.name === 'string' && pairNamePattern.test(r.name) &&
    (r.role === 'primary' || r.role === 'secondary') && typeof r.volume === 'string' && typeof r.peerVolume === 'string' &&
    typeof r.peer === 'object' && r.peer !== null && typeof r.peer.node === 'string' && (r.mode === 'sync' || r.mode === 'async') &&
    (r.fence === 'data' || r.fence === 'never') && typeof r.state === 'string' && (pairStates as readonly string[]).includes(r.state) &&
    typeof r.generation === 'number';
  if (!ok) throw new TricopyError('internal', `pair record ${file} is malformed; the data directory is damaged`);
  return {
    name: r.name!, role: r.role!, volume: r.volume!, peerVolume: r.peerVolume!, peer: r.peer!, mode: r.mode!, purpose: r.purpose === 'quorum' ? 'quorum' : 'data', fence: r.fence!,
    group: r.group ?? null, fenceGroup: r.fenceGroup ?? null, state: r.state!, suspendCause: r.suspendCause ?? null, reason: r.reason ?? '',
    secondaryWritable: r.secondaryWritable === true, generation: r.generation!, createdAt: r.createdAt ?? new Date(0).toISOString(),
    updatedAt: r.updatedAt ?? new Date(0).toISOString(), copy: r.copy ?? null, hostWritesRecorded: r.hostWritesRecorded === true,
    receivedSeqAtTakeover: typeof r.receivedSeqAtTakeover === 'number' ? r.receivedSeqAtTakeover : null,
    awaitingNewPrimary: r.awaitingNewPrimary === true,
  };
}
