// Crash-safe file helpers: a file replaced through these is either wholly old or wholly new after a
// crash at any instant (write to a temporary name, fsync, rename, fsync the directory).
import * as path from 'node:path';
import { type Disk, diskErrorCode, writeAll } from './disk';

export async function atomicWriteFile(file: string, data: string | Uint8Array, disk: Disk): Promise<void> {
  const dir = path.dirname(file);
  // Unique per call (the disk's count; on the real file system with the process id): two saves of
  // one file at once must not share a temporary file.
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${disk.uniqueTempPart()}`);
  const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const handle = await disk.open(tmp, 'w+');
  try {
    await writeAll(handle, [bytes], 0);
    await handle.datasync();
  } finally {
    await handle.close();
  }
  await disk.rename(tmp, file);
  await disk.syncDir(dir);
}

export async function atomicWriteJson(file: string, value: unknown, disk: Disk): Promise<void> {
  await atomicWriteFile(file, `${JSON.stringify(value, null, 2)}\n`, disk);
}

export async function readJsonIfExists(file: string, disk: Disk): Promise<unknown | undefined> {
  try {
    return JSON.parse((await disk.readFile(file)).toString('utf8')) as unknown;
  } catch (err) {
    if (diskErrorCode(err) === 'ENOENT') return undefined;
    throw err;
  }
}

export async function removeIfExists(file: string, disk: Disk): Promise<void> {
  await disk.remove(file);
}

/** Leftover temporary files of an interrupted atomic write. */
export function isAtomicTemp(name: string): boolean {
  return name.startsWith('.') && name.includes('.tmp-');
}

/**
 * Saves a whole file one write at a time, each the state at its turn (a slow older write never
 * lands after a newer one). A save asked for while another waits to start joins it: that write
 * takes the state when it starts, so it holds both changes. A burst of N changes (a site lost: one
 * per copy) costs two writes, not N one after another.
 */
export class CoalescingSaver {
  private chain: Promise<void> = Promise.resolve();
  private waiting: Promise<void> | undefined;

  constructor(private readonly write: () => Promise<void>) {}

  save(): Promise<void> {
    if (this.waiting) return this.waiting;
    const next = this.chain.then(() => {
      this.waiting = undefined; // changes from now on need the next write
      return this.write();
    });
    this.waiting = next;
    this.chain = next.catch(() => undefined);
    return next;
  }

  /** Resolves once every save asked for so far has been written (or failed). */
  settled(): Promise<void> {
    return this.chain;
  }
}
