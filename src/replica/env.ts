// What the replica modules need from their node: the volume store, the node's hosts-facing side
// (front devices, exports, events) and the environment (disk, clock, log, copy limits).
import type { Clock } from '../common/clock';
import type { Disk } from '../common/disk';
import type { Logger } from '../common/log';
import type { AccessList } from '../volume/access';
import type { BlockDevice } from '../volume/block-device';
import type { VolumeMeta } from '../volume/store';
import type { Volume } from '../volume/volume';

/** The volumes of the node, as replicas need them (the volume store). */
export interface ReplicaVolumes {
  has(name: string): boolean;
  get(name: string): VolumeMeta;
  volume(name: string): Volume;
  create(options: { name: string; sizeBytes: number; description?: string; thin?: boolean; access?: AccessList }): Promise<VolumeMeta>;
  delete(name: string): Promise<void>;
}

/** What the service asks of its node. */
export interface ReplicaHost {
  /** The device hosts change the volume through (remote copy included): restores and rollbacks write there. */
  front(volume: string): BlockDevice;
  /** Disconnects the clients of an export; returns how many there were. */
  disconnect(exportName: string): number;
  clientsOf(exportName: string): number;
  exportUri(exportName: string): string;
  /** Why hosts may not write the volume for now (the secondary of a remote pair), else undefined. */
  writeRefusal(volume: string): string | undefined;
  /** The volume takes part in a remote copy pair. */
  remotePaired(volume: string): boolean;
  /** The volumes of a consistency group on this node (empty: no such group here). */
  groupVolumes(group: string): string[];
  emit(kind: string, subject: string, reason: string, details?: Record<string, unknown>): void;
}

export interface ReplicaEnv {
  volumes: ReplicaVolumes;
  disk: Disk;
  clock: Clock;
  log: Logger;
  host: ReplicaHost;
  /** Awaited before each background copy batch (tests hold copies back with it; the node passes none). */
  beforeCopyBatch?: () => Promise<void>;
  /** Bytes per second each background copy may copy; 0 or absent: unthrottled (spec 003 §8.2). */
  copyRateBytesPerSecond?: number;
}
