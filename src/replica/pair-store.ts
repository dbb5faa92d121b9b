// Durable records of replica pairs: <dir>/NAME.json (the commit point of a pair) and three region
// bitmaps beside it: NAME.copied (regions of the replica that hold what they should: in sync, or the
// split image), NAME.dirtyp and NAME.dirtys (regions changed on the primary / on the replica since
// the split).
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { atomicWriteJson, isAtomicTemp } from '../common/fsutil';
import type { ReadMissPolicy, ReplicaState } from '../contracts/replicas';
import { PersistentBitmap } from '../volume/bitmap';
import { regionBytes } from './limits';

export interface ReplicaRecord {
  name: string;
  /** The primary volume. */
  primary: string;
  state: ReplicaState;
  splitAt: string | null;
  readMissPolicy: ReadMissPolicy;
  createdAt: string;
  reason: string;
  /** The replica volume was created with the pair (not an existing volume). */
  createdVolume: boolean;
}

export interface ReplicaBitmaps {
  copied: PersistentBitmap;
  dirtyPrimary: PersistentBitmap;
  dirtySecondary: PersistentBitmap;
}

export class ReplicaPairStore {
  constructor(readonly dir: string, private readonly disk: Disk) {}

  async init(): Promise<void> {
    await this.disk.mkdirp(this.dir);
  }

  async loadAll(): Promise<Array<{ record: ReplicaRecord; bitmaps: ReplicaBitmaps }>> {
    const names = await this.disk.list(this.dir);
    const out: Array<{ record: ReplicaRecord; bitmaps: ReplicaBitmaps }> = [];
    const committed = new Set<string>();
    for (const file of names) {
      if (isAtomicTemp(file)) {
        await this.disk.remove(path.join(this.dir, file));
        continue;
      }
      if (!file.endsWith('.json')) continue;
      const record = JSON.parse((await this.disk.readFile(path.join(this.dir, file))).toString('utf8')) as ReplicaRecord;
      const bitmaps = {
        copied: await PersistentBitmap.open(this.disk, this.file(record.name, 'copied'), regionBytes),
        dirtyPrimary: await PersistentBitmap.open(this.disk, this.file(record.name, 'dirtyp'), regionBytes),
        dirtySecondary: await PersistentBitmap.open(this.disk, this.file(record.name, 'dirtys'), regionBytes),
      };
      committed.add(record.name);
      out.push({ record, bitmaps });
    }
    for (const file of names) {
      const match = /^(.*)\.(copied|dirtyp|dirtys)$/.exec(file);
      if (match && !committed.has(match[1]!)) await this.disk.remove(path.join(this.dir, file)); // a create that did not commit
    }
    return out;
  }

  /** Creates the bitmaps of a new pair (all clear); the record is saved after, as the commit point. */
  async createBitmaps(name: string, regionCount: number): Promise<ReplicaBitmaps> {
    for (const what of ['copied', 'dirtyp', 'dirtys']) await this.disk.remove(this.file(name, what));
    return {
      copied: await PersistentBitmap.create(this.disk, this.file(name, 'copied'), regionBytes, regionCount),
      dirtyPrimary: await PersistentBitmap.create(this.disk, this.file(name, 'dirtyp'), regionBytes, regionCount),
      dirtySecondary: await PersistentBitmap.create(this.disk, this.file(name, 'dirtys'), regionBytes, regionCount),
    };
  }

  save(record: ReplicaRecord): Promise<void> {
    return atomicWriteJson(this.file(record.name, 'json'), record, this.disk);
  }

  async remove(name: string, bitmaps: ReplicaBitmaps | undefined): Promise<void> {
    await this.disk.remove(this.file(name, 'json')); // commit point
    await this.disk.syncDir(this.dir);
    if (bitmaps) for (const b of Object.values(bitmaps)) await b.close().catch(() => undefined);
    for (const what of ['copied', 'dirtyp', 'dirtys']) await this.disk.remove(this.file(name, what));
  }

  private file(name: string, what: string): string {
    return path.join(this.dir, `${name}.${what}`);
  }
}
