// Crash-safe file helpers: a file replaced through these is either wholly old or wholly new after a
// crash at any instant (write to a temporary name, fsync, rename, fsync the directory).
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';

export async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

let atomicWriteCounter = 0;

export async function atomicWriteFile(file: string, data: string | Uint8Array): Promise<void> {
  const dir = path.dirname(file);
  // Unique per call: two saves of one file in the same millisecond must not share a temp file.
  atomicWriteCounter = (atomicWriteCounter + 1) % Number.MAX_SAFE_INTEGER;
  const tmp = path.join(dir, `.${path.basename(file)}.tmp-${process.pid}-${Date.now()}-${atomicWriteCounter}`);
  const handle = await fsp.open(tmp, 'w', 0o600);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fsp.rename(tmp, file);
  await fsyncDir(dir);
}

export async function atomicWriteJson(file: string, value: unknown): Promise<void> {
  await atomicWriteFile(file, `${JSON.stringify(value, null, 2)}\n`);
}

export async function readJsonIfExists(file: string): Promise<unknown | undefined> {
  try {
    return JSON.parse(await fsp.readFile(file, 'utf8')) as unknown;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

export async function removeIfExists(file: string): Promise<void> {
  await fsp.rm(file, { force: true });
}

/** Leftover temporary files of an interrupted atomic write. */
export function isAtomicTemp(name: string): boolean {
  return name.startsWith('.') && name.includes('.tmp-');
}
