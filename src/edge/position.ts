// The reflection counter (733) of one order-guarantee id at its target edge, on stable storage: a
// 16-byte record rewritten in place (magic, the number, a crc32c), synced before the number is
// relied upon. One sector, so a write is whole or absent after a crash; a torn or missing record
// reads as 0, and the relay state file's copy (written less often) is the floor.
import * as path from 'node:path';
import { crc32c } from '../common/crc32c';
import { type Disk, type DiskFile, diskErrorCode, writeAll } from '../common/disk';

const magic = 0x52434e50; // "RCNP"

export class PositionFile {
  private writing: Promise<void> = Promise.resolve();

  private constructor(private readonly handle: DiskFile, private value: number) {}

  static async open(dataDir: string, order: string, disk: Disk): Promise<PositionFile> {
    const dir = path.join(dataDir, 'reflected');
    await disk.mkdirp(dir);
    const file = path.join(dir, `${order}.pos`);
    let handle: DiskFile;
    let value = 0;
    try {
      handle = await disk.open(file, 'r+');
      const b = Buffer.alloc(16);
      const n = await handle.read(b, 0, 16, 0);
      if (n === 16 && b.readUInt32BE(0) === magic && crc32c(b.subarray(0, 12)) === b.readUInt32BE(12)) value = b.readUInt32BE(4) * 0x100000000 + b.readUInt32BE(8);
    } catch (err) {
      if (diskErrorCode(err) !== 'ENOENT') throw err;
      handle = await disk.open(file, 'w+');
      await disk.syncDir(dir);
    }
    return new PositionFile(handle, value);
  }

  get stored(): number {
    return this.value;
  }

  /** Makes `value` durable (writes are serialised; each waits for the ones before it). */
  store(value: number): Promise<void> {
    const next = this.writing.then(async () => {
      if (value <= this.value) return;
      const b = Buffer.alloc(16);
      b.writeUInt32BE(magic, 0);
      b.writeUInt32BE(Math.floor(value / 0x100000000), 4);
      b.writeUInt32BE(value >>> 0, 8);
      b.writeUInt32BE(crc32c(b.subarray(0, 12)), 12);
      await writeAll(this.handle, [b], 0);
      await this.handle.datasync();
      this.value = value;
    });
    this.writing = next.catch(() => undefined);
    return next;
  }

  /** A resynchronisation point may set it below what it was: written as is. */
  async reset(value: number): Promise<void> {
    await this.writing;
    this.value = -1;
    await this.store(value);
  }

  close(): Promise<void> {
    return this.handle.close();
  }
}
