// What the replication core takes from its node: time, the disk its records and journals live on,
// the network to its peers and the volumes it copies. The node wires the real ones (node.ts); the
// simulator wires virtual ones (sim/), so the same core runs in both.
import type { Clock } from '../common/clock';
import type { Disk } from '../common/disk';
import type { Volume } from '../volume/volume';
import type { PeerTransport } from './transport/peer-transport';

/** The volumes of the node, as remote copy needs them. */
export interface VolumeAccess {
  has(name: string): boolean;
  get(name: string): { sizeBytes: number };
  volume(name: string): Volume;
  create(options: { name: string; sizeBytes: number; description?: string }): Promise<unknown>;
}

export interface ReplicationEnv {
  clock: Clock;
  disk: Disk;
  transport: PeerTransport;
  volumes: VolumeAccess;
}
