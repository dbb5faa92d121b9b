// Storage as the node's durable structures see it: files with positional reads and vectored writes,
// fdatasync, and the few directory operations crash-safe updates need. Volumes, bitmaps, journals
// and pair records all go through this interface, so the node wires the real file system and the
// simulator wires a disk that loses what was not synced when its node crashes. The real files are
// node-file.ts.
import * as fs from 'node:fs';
import { promises as fsp } from 'node:fs';
import { nativeIo } from './native-io';
import { NodeFile, type NodeFileOptions } from './node-file';

export type OpenFlags =
  | 'r' // read only; must exist
  | 'r+' // read and write; must exist
  | 'w+' // read and write; created or truncated
  | 'wx+'; // read and write; created, must not exist

export interface DiskFile {
  /** Reads up to `length` bytes at `position` into `target` from `targetOffset`; 0 at the end. */
  read(target: Buffer, targetOffset: number, length: number, position: number): Promise<number>;
  /** Writes the pieces back to back at `position`; resolves with the bytes written (may be short). */
  writev(pieces: Buffer[], position: number): Promise<number>;
  /** Every write completed before the call is on stable storage when it resolves. */
  datasync(): Promise<void>;
  truncate(sizeBytes: number): Promise<void>;
  sizeBytes(): Promise<number>;
  close(): Promise<void>;
}

export interface Disk {
  open(file: string, flags: OpenFlags): Promise<DiskFile>;
  /** A whole file; rejects with an ENOENT error when it does not exist. */
  readFile(file: string): Promise<Buffer>;
  /** Atomic replacement of `to` (rename(2)); durable once the directory is synced. */
  rename(from: string, to: string): Promise<void>;
  /** Removes a file or a directory tree; nothing when absent. */
  remove(file: string): Promise<void>;
  mkdirp(dir: string): Promise<void>;
  /** Names in a directory; [] when it does not exist. */
  list(dir: string): Promise<string[]>;
  /** Makes the directory's entries (creates, renames, removals) durable. */
  syncDir(dir: string): Promise<void>;
  /** Bytes an unprivileged writer may still allocate under `dir`. */
  freeBytes(dir: string): Promise<number>;
  /**
   * A name part no other temporary file written through this disk (or, on the real file system, by
   * another process) uses: atomic writes name their temporary files with it (fsutil.ts).
   */
  uniqueTempPart(): string;
}

/** The errno an operation failed with, as Node reports it (ENOENT, ENOSPC, …). */
export function diskErrorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string'
    ? (err as { code: string }).code : undefined;
}

/** How the real file system does its I/O (see node-file.ts); the node takes the default. */
export type NodeDiskOptions = NodeFileOptions;

/** The default: the native addon when it is built, inline I/O unless TRICOPY_INLINE_IO=0. */
export const defaultNodeDiskOptions: NodeDiskOptions = { native: nativeIo, inline: process.env.TRICOPY_INLINE_IO !== '0' };

/** Which I/O path real files take: the native addon inline, Node's fs inline, or the thread pool only. */
export function nodeDiskIoPath(options: NodeDiskOptions = defaultNodeDiskOptions): 'native' | 'js' | 'thread-pool' {
  return !options.inline ? 'thread-pool' : options.native ? 'native' : 'js';
}

/** Temporary files made by this process on the real file system (any of its disks), for uniqueTempPart. */
let tempFilesMade = 0;

/** The real file system. */
export function createNodeDisk(options: NodeDiskOptions = defaultNodeDiskOptions): Disk {
  return {
    open: (file, flags) => new Promise((resolve, reject) =>
      fs.open(file, flags, 0o600, (err, fd) => (err ? reject(err) : resolve(new NodeFile(fd, options))))),
    readFile: (file) => fsp.readFile(file),
    rename: (from, to) => fsp.rename(from, to),
    remove: (file) => fsp.rm(file, { recursive: true, force: true }),
    mkdirp: async (dir) => {
      await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    },
    list: async (dir) => {
      try {
        return await fsp.readdir(dir);
      } catch (err) {
        if (diskErrorCode(err) === 'ENOENT') return [];
        throw err;
      }
    },
    syncDir: async (dir) => {
      const handle = await fsp.open(dir, 'r');
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    },
    freeBytes: async (dir) => {
      const stats = await fsp.statfs(dir);
      return Number(stats.bavail) * Number(stats.bsize);
    },
    uniqueTempPart: () => {
      tempFilesMade = (tempFilesMade + 1) % Number.MAX_SAFE_INTEGER;
      return `${process.pid}-${tempFilesMade}`;
    },
  };
}

export const nodeDisk: Disk = createNodeDisk();

/** Writes every piece, continuing after short writes. */
export async function writeAll(file: DiskFile, pieces: Buffer[], position: number): Promise<void> {
  let rest = pieces;
  let at = position;
  for (;;) {
    // writev accepts at most IOV_MAX (1024) buffers.
    const chunk = rest.length > 1000 ? rest.slice(0, 1000) : rest;
    let total = 0;
    for (const b of chunk) total += b.length;
    const written = await file.writev(chunk, at);
    let remaining = rest.slice(chunk.length);
    if (written < total) {
      let skip = written;
      const left: Buffer[] = [];
      for (const b of chunk) {
        if (skip >= b.length) {
          skip -= b.length;
          continue;
        }
        left.push(skip > 0 ? b.subarray(skip) : b);
        skip = 0;
      }
      remaining = [...left, ...remaining];
    }
    if (remaining.length === 0) return;
    rest = remaining;
    at += written;
  }
}

/** Reads exactly `length` bytes at `position` (zeroes past the end of the file). */
export async function readFully(file: DiskFile, target: Buffer, length: number, position: number): Promise<Buffer> {
  let done = 0;
  while (done < length) {
    const n = await file.read(target, done, length - done, position + done);
    if (n === 0) {
      target.fill(0, done, length);
      break;
    }
    done += n;
  }
  return target;
}
