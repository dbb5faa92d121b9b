// A simulated disk for one node: files with a page-cache view (what reads see) and a durable view
// (what survives a power loss). Data becomes durable by datasync; names (creates, renames, removals)
// by a directory sync, which commits every earlier name change, as a journaling file system does.
// A power loss keeps the durable view plus, at random, some of what was not synced: unsynced data
// writes survive each with a probability (optionally torn at 512-byte sectors), unsynced name
// changes survive as a prefix. A process kill keeps everything (the kernel still has it). Every
// operation takes virtual time, and an operation of a crashed incarnation never completes.
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import type { Disk, DiskFile, OpenFlags } from '../src/common/disk';
import { PagedBytes } from './pages';
import type { Random } from './random';
import type { Lifetime, Scheduler } from './scheduler';
import { freshBytes, freshCopy } from './fresh-bytes';

export const sectorBytes = 512;

interface Inode {
  id: number;
  data: PagedBytes;
  size: number;
  durable: PagedBytes;
  durableSize: number;
  /** Changes since the last datasync, in order (kept or lost one by one at a power loss). */
  pending: Array<{ kind: 'write'; position: number; bytes: Buffer } | { kind: 'truncate'; size: number }>;
  /**
   * The page-cache view is the durable view with `pending` applied (no write was kept from the
   * durable view on purpose), so a sync can publish its pages instead of applying each change.
   */
  inSync: boolean;
}

type NameOp = { kind: 'link'; name: string; inode: Inode } | { kind: 'unlink'; name: string };

export interface DiskFaults {
  /** Probability that an unsynced write survives a power loss. */
  keepUnsyncedWrite: number;
  /** Probability that a surviving unsynced write is torn (only some of its sectors survive). */
  tearWrite: number;
  /** Probability that each unsynced name change survives (as a prefix: the first lost ends it). */
  keepUnsyncedName: number;
}

export const defaultDiskFaults: DiskFaults = { keepUnsyncedWrite: 0.5, tearWrite: 0.2, keepUnsyncedName: 0.5 };

/** Broken-on-purpose behaviour for the simulator's self-test (never used in a normal run). */
export interface DiskSabotage {
  /** datasync of files matching this returns without making anything durable. */
  skipSyncOf?: RegExp;
  /** writes to files matching this are kept in memory only (never reach the durable view)… */
  volatileFiles?: RegExp;
  /** …those at or past this byte (a header written before stays durable). */
  volatileFromByte?: number;
}

function errno(code: string, message: string): Error {
  return Object.assign(new Error(`${code}: ${message}`), { code });
}

export class SimDisk {
  private names = new Map<string, Inode>();
  private durableNames = new Map<string, Inode>();
  private pendingNames: NameOp[] = [];
  private dirs = new Set<string>(['/']);
  private nextInode = 1;
  /** Temporary files named so far (uniqueTempPart), over all incarnations: the disk's, not the process's. */
  private tempNames = 0;
  /** Every name this disk was given (creates and renames, temporary files too), in order. */
  private readonly nameHistory = createHash('sha256');
  sabotage: DiskSabotage = {};

  constructor(private readonly scheduler: Scheduler, private readonly rng: Random, readonly faults: DiskFaults = defaultDiskFaults) {}

  /** The Disk interface for one incarnation of the node: its operations end with it. */
  forIncarnation(lifetime: Lifetime): Disk {
    return new IncarnationDisk(this, this.scheduler, this.rng, lifetime);
  }

  /** What reads would return now (the checker's view of a live node's file). */
  readNow(file: string, position: number, length: number): Buffer {
    const inode = this.names.get(path.normalize(file));
    const out = freshBytes(length).fill(0);
    if (inode) inode.data.copyOut(out, 0, position, Math.max(position, Math.min(inode.size, position + length)));
    return out;
  }

  /**
   * The first `length` bytes reads would return now, like readNow, but without a copy of its own:
   * the caller must not change it, and it is valid only until the file next changes (the checker
   * reads a whole volume, decodes or compares it, and drops it).
   */
  imageNow(file: string, length: number): Buffer {
    const inode = this.names.get(path.normalize(file));
    // Bytes past a file's size are always zero in its pages, so a view of `length` bytes is what readNow returns.
    return inode ? inode.data.image(length) : Buffer.alloc(length);
  }

  /** Flips bits of bytes in the page-cache view only, as a disk returning bad data would (tests). */
  corruptNow(file: string, offsets: number[], mask: number): void {
    const inode = this.names.get(path.normalize(file));
    if (!inode) throw errno('ENOENT', `no such file ${file}`);
    for (const at of offsets) {
      const byte = Buffer.alloc(1);
      inode.data.copyOut(byte, 0, at, at + 1);
      byte[0] = byte[0]! ^ mask;
      inode.data.write(at, byte);
    }
    inode.inSync = false;
  }

  exists(file: string): boolean {
    return this.names.has(path.normalize(file));
  }

  /** A process kill: the kernel keeps every write and name change. */
  kill(): void {
    for (const inode of new Set(this.names.values())) this.makeDurable(inode);
    this.durableNames = new Map(this.names);
    this.pendingNames = [];
  }

  /** A power loss: the durable view plus some of what was not synced. */
  powerLoss(): void {
    const names = new Map(this.durableNames);
    for (const op of this.pendingNames) {
      if (!this.rng.chance(this.faults.keepUnsyncedName)) break;
      if (op.kind === 'link') names.set(op.name, op.inode);
      else names.delete(op.name);
    }
    for (const inode of new Set([...names.values()])) this.loseUnsynced(inode);
    this.names = names;
    this.durableNames = new Map(names);
    this.pendingNames = [];
  }

  /**
   * A digest of every name this disk was given and of what it holds now (each file's name, size and
   * bytes as reads see them): the disk's part of a run's fingerprint (run.ts).
   */
  fingerprint(): string {
    const h = createHash('sha256');
    h.update(this.nameHistory.copy().digest());
    for (const name of [...this.names.keys()].sort()) {
      const inode = this.names.get(name)!;
      h.update(`\n${name} ${inode.size}\n`);
      inode.data.digestInto(h, inode.size);
    }
    return h.digest('hex');
  }

  /** A name part for a temporary file, unique over the disk's life (a new incarnation never reuses a leftover's name). */
  nextTempPart(): string {
    return `sim-${++this.tempNames}`;
  }

  // --- operations (called by IncarnationDisk when the operation completes) ---------------------

  lookup(file: string): Inode | undefined {
    return this.names.get(file);
  }

  create(file: string): Inode {
    const inode: Inode = { id: this.nextInode++, data: new PagedBytes(), size: 0, durable: new PagedBytes(), durableSize: 0, pending: [], inSync: true };
    this.link(file, inode);
    return inode;
  }

  link(file: string, inode: Inode): void {
    this.names.set(file, inode);
    this.nameHistory.update(`${file}\n`);
    this.pendingNames.push({ kind: 'link', name: file, inode });
  }

  unlink(file: string): void {
    if (!this.names.delete(file)) return;
    this.pendingNames.push({ kind: 'unlink', name: file });
  }

  listNames(dir: string): string[] {
    const out = new Set<string>();
    for (const name of this.names.keys()) if (path.dirname(name) === dir) out.add(path.basename(name));
    for (const d of this.dirs) if (d !== dir && path.dirname(d) === dir) out.add(path.basename(d));
    return [...out].sort();
  }

  namesUnder(dir: string): string[] {
    return [...this.names.keys()].filter((n) => n === dir || n.startsWith(`${dir}/`));
  }

  mkdirp(dir: string): void {
    for (let d = dir; d !== '/' && d !== '.'; d = path.dirname(d)) this.dirs.add(d);
  }

  removeDir(dir: string): void {
    for (const d of [...this.dirs]) if (d === dir || d.startsWith(`${dir}/`)) this.dirs.delete(d);
  }

  /** A directory sync commits every name change made so far (a journal commit). */
  commitNames(): void {
    this.durableNames = new Map(this.names);
    this.pendingNames = [];
  }

  /** `bytes` becomes the disk's: the caller must not change it afterwards. */
  write(inode: Inode, position: number, bytes: Buffer, file: string): void {
    inode.data.write(position, bytes);
    inode.size = Math.max(inode.size, position + bytes.length);
    if (this.sabotage.volatileFiles?.test(file) && position >= (this.sabotage.volatileFromByte ?? 0)) {
      inode.inSync = false;
      return;
    }
    inode.pending.push({ kind: 'write', position, bytes });
  }

  truncate(inode: Inode, size: number): void {
    if (size < inode.size) inode.data.zero(size, inode.size);
    inode.size = size;
    inode.pending.push({ kind: 'truncate', size });
  }

  datasync(inode: Inode, file: string): void {
    if (this.sabotage.skipSyncOf?.test(file)) return;
    this.makeDurable(inode);
  }

  private makeDurable(inode: Inode): void {
    if (inode.inSync) {
      inode.data.publishTo(inode.durable);
      inode.durableSize = inode.size;
    } else {
      for (const change of inode.pending) applyChange(inode, change);
    }
    inode.pending = [];
  }

  private loseUnsynced(inode: Inode): void {
    for (const change of inode.pending) {
      if (change.kind === 'truncate') {
        if (this.rng.chance(this.faults.keepUnsyncedWrite)) applyChange(inode, change);
        continue;
      }
      if (!this.rng.chance(this.faults.keepUnsyncedWrite)) continue;
      if (change.bytes.length > sectorBytes && this.rng.chance(this.faults.tearWrite)) {
        for (let at = 0; at < change.bytes.length; at += sectorBytes) {
          if (this.rng.chance(0.5)) applyChange(inode, { kind: 'write', position: change.position + at, bytes: change.bytes.subarray(at, at + sectorBytes) });
        }
      } else {
        applyChange(inode, change);
      }
    }
    inode.pending = [];
    inode.data = inode.durable.copy();
    inode.size = inode.durableSize;
    inode.inSync = true;
  }
}

function applyChange(inode: Inode, change: Inode['pending'][number]): void {
  if (change.kind === 'truncate') {
    if (change.size < inode.durableSize) inode.durable.zero(change.size, inode.durableSize);
    inode.durableSize = change.size;
    return;
  }
  inode.durable.write(change.position, change.bytes);
  inode.durableSize = Math.max(inode.durableSize, change.position + change.bytes.length);
}

/** Virtual latencies of disk operations, in milliseconds. */
function latency(rng: Random, kind: 'io' | 'sync' | 'meta'): number {
  if (kind === 'sync') return 0.5 + rng.next() * 4;
  if (kind === 'meta') return 0.05 + rng.next() * 0.5;
  return 0.02 + rng.next() * 0.3;
}

class IncarnationDisk implements Disk {
  constructor(private readonly disk: SimDisk, private readonly scheduler: Scheduler, private readonly rng: Random, private readonly lifetime: Lifetime) {}

  /** Runs `op` when the operation completes, in virtual time; never, once the incarnation is dead. */
  later<T>(kind: 'io' | 'sync' | 'meta', op: () => T): Promise<T> {
    return new Promise((resolve, reject) => {
      this.scheduler.schedule(latency(this.rng, kind), () => {
        try {
          resolve(op());
        } catch (err) {
          reject(err);
        }
      }, this.lifetime);
    });
  }

  open(file: string, flags: OpenFlags): Promise<DiskFile> {
    const name = path.normalize(file);
    return this.later('meta', () => {
      let inode = this.disk.lookup(name);
      if (flags === 'wx+' && inode) throw errno('EEXIST', `${name} exists`);
      if ((flags === 'r' || flags === 'r+') && !inode) throw errno('ENOENT', `no such file ${name}`);
      if (!inode) inode = this.disk.create(name);
      else if (flags === 'w+') this.disk.truncate(inode, 0);
      return new SimFile(this, this.disk, inode, name);
    });
  }

  readFile(file: string): Promise<Buffer> {
    const name = path.normalize(file);
    return this.later('io', () => {
      const inode = this.disk.lookup(name);
      if (!inode) throw errno('ENOENT', `no such file ${name}`);
      const out = Buffer.allocUnsafe(inode.size);
      inode.data.copyOut(out, 0, 0, inode.size);
      return out;
    });
  }

  rename(from: string, to: string): Promise<void> {
    const a = path.normalize(from);
    const b = path.normalize(to);
    return this.later('meta', () => {
      const inode = this.disk.lookup(a);
      if (!inode) throw errno('ENOENT', `no such file ${a}`);
      this.disk.link(b, inode);
      this.disk.unlink(a);
    });
  }

  remove(file: string): Promise<void> {
    const name = path.normalize(file);
    return this.later('meta', () => {
      for (const n of this.disk.namesUnder(name)) this.disk.unlink(n);
      this.disk.removeDir(name);
    });
  }

  mkdirp(dir: string): Promise<void> {
    return this.later('meta', () => this.disk.mkdirp(path.normalize(dir)));
  }

  list(dir: string): Promise<string[]> {
    return this.later('meta', () => this.disk.listNames(path.normalize(dir)));
  }

  syncDir(_dir: string): Promise<void> {
    return this.later('sync', () => this.disk.commitNames());
  }

  freeBytes(_dir: string): Promise<number> {
    return Promise.resolve(1024 ** 4);
  }

  uniqueTempPart(): string {
    return this.disk.nextTempPart();
  }
}

class SimFile implements DiskFile {
  private closed = false;

  constructor(private readonly owner: IncarnationDisk, private readonly disk: SimDisk, private readonly inode: Inode, private readonly name: string) {}

  read(target: Buffer, targetOffset: number, length: number, position: number): Promise<number> {
    return this.owner.later('io', () => {
      this.check();
      const n = Math.max(0, Math.min(length, this.inode.size - position));
      if (n > 0) this.inode.data.copyOut(target, targetOffset, position, position + n);
      return n;
    });
  }

  writev(pieces: Buffer[], position: number): Promise<number> {
    // The bytes are taken when the call is made, as the kernel copies them (this copy is the disk's).
    const bytes = freshCopy(pieces);
    return this.owner.later('io', () => {
      this.check();
      this.disk.write(this.inode, position, bytes, this.name);
      return bytes.length;
    });
  }

  datasync(): Promise<void> {
    return this.owner.later('sync', () => {
      this.check();
      this.disk.datasync(this.inode, this.name);
    });
  }

  truncate(sizeBytes: number): Promise<void> {
    return this.owner.later('meta', () => {
      this.check();
      this.disk.truncate(this.inode, sizeBytes);
    });
  }

  sizeBytes(): Promise<number> {
    return this.owner.later('meta', () => this.inode.size);
  }

  close(): Promise<void> {
    return this.owner.later('meta', () => {
      this.closed = true;
    });
  }

  private check(): void {
    if (this.closed) throw errno('EBADF', `${this.name} is closed`);
  }
}
