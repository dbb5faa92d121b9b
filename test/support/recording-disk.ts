// A real disk (the node's own) that records when each write and each fdatasync started and ended, so
// a test can check the order a power loss depends on: which writes were on stable storage before
// another write was issued. A write is durable from the end of the first datasync of its file that
// started after the write had ended.
import type { Disk, DiskFile, OpenFlags } from '../../src/common/disk';
import { nodeDisk } from '../../src/common/disk';

export interface RecordedOp {
  file: string;
  kind: 'write' | 'datasync';
  position: number;
  /** The bytes written (a copy), for writes. */
  bytes: Buffer;
  startedAt: number;
  endedAt: number;
}

export class RecordingDisk implements Disk {
  readonly ops: RecordedOp[] = [];
  private clock = 0;

  constructor(private readonly inner: Disk = nodeDisk) {}

  /** A logical clock: every start and end of an operation is one tick. */
  tick(): number {
    return ++this.clock;
  }

  async open(file: string, flags: OpenFlags): Promise<DiskFile> {
    return new RecordingFile(await this.inner.open(file, flags), file, this);
  }

  readFile(file: string): Promise<Buffer> { return this.inner.readFile(file); }
  rename(from: string, to: string): Promise<void> { return this.inner.rename(from, to); }
  remove(file: string): Promise<void> { return this.inner.remove(file); }
  mkdirp(dir: string): Promise<void> { return this.inner.mkdirp(dir); }
  list(dir: string): Promise<string[]> { return this.inner.list(dir); }
  syncDir(dir: string): Promise<void> { return this.inner.syncDir(dir); }
  freeBytes(dir: string): Promise<number> { return this.inner.freeBytes(dir); }
  uniqueTempPart(): string { return this.inner.uniqueTempPart(); }

  /** Writes of `file` (by a predicate on its path) that cover byte `at`, oldest first. */
  writesCovering(file: (name: string) => boolean, at: number, before = Number.POSITIVE_INFINITY): RecordedOp[] {
    return this.ops.filter((op) => op.kind === 'write' && file(op.file) && op.position <= at && at < op.position + op.bytes.length && op.startedAt < before);
  }

  /** True when `write` was durable at logical time `at`: a datasync of its file ran wholly between. */
  durableBefore(write: RecordedOp, at: number): boolean {
    return this.ops.some((op) => op.kind === 'datasync' && op.file === write.file && op.startedAt > write.endedAt && op.endedAt < at);
  }

  datasyncsOf(file: (name: string) => boolean): number {
    return this.ops.filter((op) => op.kind === 'datasync' && file(op.file)).length;
  }
}

class RecordingFile implements DiskFile {
  constructor(private readonly inner: DiskFile, private readonly file: string, private readonly disk: RecordingDisk) {}

  read(target: Buffer, targetOffset: number, length: number, position: number): Promise<number> {
    return this.inner.read(target, targetOffset, length, position);
  }

  async writev(pieces: Buffer[], position: number): Promise<number> {
    const startedAt = this.disk.tick();
    const n = await this.inner.writev(pieces, position);
    this.disk.ops.push({ file: this.file, kind: 'write', position, bytes: Buffer.concat(pieces).subarray(0, n), startedAt, endedAt: this.disk.tick() });
    return n;
  }

  async datasync(): Promise<void> {
    const startedAt = this.disk.tick();
    await this.inner.datasync();
    this.disk.ops.push({ file: this.file, kind: 'datasync', position: 0, bytes: Buffer.alloc(0), startedAt, endedAt: this.disk.tick() });
  }

  truncate(sizeBytes: number): Promise<void> { return this.inner.truncate(sizeBytes); }
  sizeBytes(): Promise<number> { return this.inner.sizeBytes(); }
  close(): Promise<void> { return this.inner.close(); }
}
