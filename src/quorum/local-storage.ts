// The node's own quorum volumes as the pair-volume control software sees its local storage
// (QuorumStorage), in-process: what a node's failover agent arbitrates through (Figs. 5–6), with
// the same answers the control API gives a host.
import type { AttributeView, CommandAnswer, QuorumVolumeStatus, ReservationAnswer } from '../contracts/quorum';
import type { QuorumStorage } from './client';
import type { QuorumVolumes } from './storage';

export class LocalQuorumStorage implements QuorumStorage {
  readonly address = 'this node';

  constructor(private readonly volumes: QuorumVolumes) {}

  async reserve(volume: string, host: string): Promise<ReservationAnswer> {
    return this.volumes.reserve(volume, host);
  }

  async release(volume: string, host: string): Promise<ReservationAnswer> {
    return this.volumes.release(volume, host);
  }

  async reset(volume: string, host: string): Promise<ReservationAnswer> {
    return this.volumes.reset(volume, host);
  }

  async attribute(volume: string): Promise<AttributeView> {
    return this.volumes.attribute(volume);
  }

  pairResync(volume: string): Promise<CommandAnswer> {
    return this.volumes.resync(volume);
  }

  pairSwapResync(volume: string): Promise<CommandAnswer> {
    return this.volumes.swapResync(volume);
  }

  pairSplit(volume: string): Promise<AttributeView> {
    return this.volumes.split(volume);
  }

  async quorumStatus(volume: string): Promise<QuorumVolumeStatus> {
    return this.volumes.status(volume);
  }

  async quorumVolumes(): Promise<QuorumVolumeStatus[]> {
    return this.volumes.list();
  }
}
