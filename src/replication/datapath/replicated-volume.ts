// The block device hosts see for every volume of a node. A volume in no pair behaves exactly like the
// plain volume; otherwise each operation is routed through the replication service, which knows the
// volume's pairs and their states at the moment of the request.
import type { BlockDevice, Extent, WriteOptions, ZeroOptions } from '../../volume/block-device';
import type { Volume } from '../../volume/volume';

export interface ReplicationDataPath {
  /** True when the volume takes part in any pair (as primary or secondary). */
  isPaired(volume: string): boolean;
  /**
   * True when hosts may not write the volume for as long as its role lasts (an active secondary, a
   * primary taken over): the export is read-only. A fenced primary is not: the fence is temporary,
   * so its writes fail with EIO until it lifts, for every client alike.
   */
  refusesWrites(volume: string): boolean;
  write(volume: Volume, offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void>;
  writeZeroes(volume: Volume, offset: number, length: number, options: ZeroOptions): Promise<void>;
  flush(volume: Volume): Promise<void>;
}

export class ReplicatedVolume implements BlockDevice {
  constructor(private readonly volume: Volume, private readonly replication: ReplicationDataPath) {}

  get name(): string {
    return this.volume.name;
  }

  get sizeBytes(): number {
    return this.volume.sizeBytes;
  }

  get readOnly(): boolean {
    return this.replication.refusesWrites(this.volume.name);
  }

  read(offset: number, length: number, target?: Buffer): Promise<Buffer> {
    return this.volume.read(offset, length, target);
  }

  write(offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    if (!this.replication.isPaired(this.volume.name)) return this.volume.write(offset, data, options);
    return this.replication.write(this.volume, offset, data, options);
  }

  writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void> {
    if (!this.replication.isPaired(this.volume.name)) return this.volume.writeZeroes(offset, length, options);
    return this.replication.writeZeroes(this.volume, offset, length, options);
  }

  trim(offset: number, length: number, options: WriteOptions): Promise<void> {
    // Trim is advisory and changes nothing on disk, so it needs no replication.
    return this.volume.trim(offset, length, options);
  }

  flush(): Promise<void> {
    if (!this.replication.isPaired(this.volume.name)) return this.volume.flush();
    return this.replication.flush(this.volume);
  }

  extents(offset: number, length: number, maxExtents: number): Extent[] {
    return this.volume.extents(offset, length, maxExtents);
  }
}
