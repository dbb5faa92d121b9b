// The identity of a data directory: a UUID created once, when a node first starts on an empty
// directory, and kept in <dataDir>/identity.json. A node that comes back with another (or a fresh)
// data directory has another identity, so its peers and `topology status` can tell "the copy this
// pair was built with" from "a site that lost its data and was started again". A copied data
// directory keeps the identity: that is the same copy.
import { randomUUID } from 'node:crypto';
import * as path from 'node:path';
import { TricopyError } from '../common/errors';
import type { Disk } from '../common/disk';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';

export interface DataDirIdentity {
  id: string;
  createdAt: string;
}

export const identityFile = 'identity.json';

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Reads the directory's identity, creating it (durably) the first time. */
export async function dataDirIdentity(dataDir: string, disk: Disk): Promise<DataDirIdentity> {
  const file = path.join(dataDir, identityFile);
  const existing = await readJsonIfExists(file, disk);
  if (existing !== undefined) return parseIdentity(existing, file);
  const created: DataDirIdentity = { id: randomUUID(), createdAt: new Date().toISOString() };
  await atomicWriteJson(file, created, disk);
  return created;
}

function parseIdentity(raw: unknown, file: string): DataDirIdentity {
  const r = raw as Partial<DataDirIdentity> | null;
  if (r === null || typeof r !== 'object' || typeof r.id !== 'string' || !uuidPattern.test(r.id) || typeof r.createdAt !== 'string') {
    throw new TricopyError('internal', `${file} is malformed; the data directory is damaged`,
      'restore it from a backup of this data directory; deleting it makes the node a new copy to its peers');
  }
  return { id: r.id, createdAt: r.createdAt };
}
