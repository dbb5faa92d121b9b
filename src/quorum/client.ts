// The quorum API of a node as typed calls: what the host control software (Figs. 5–6) sends to
// its local storage, and what the CLI's `tricopy quorum` commands use.
import type { AttributeView, CommandAnswer, QuorumVolumeStatus, ReservationAnswer } from '../contracts/quorum';
import { HttpNodeClient } from '../node/api-client';

/** The local storage as the pair-volume control software sees it (through the standard driver). */
export interface QuorumStorage {
  readonly address: string;
  reserve(volume: string, host: string): Promise<ReservationAnswer>;
  release(volume: string, host: string): Promise<ReservationAnswer>;
  /** A bus device reset on this host's path: clears the volume's reservation. */
  reset(volume: string, host: string): Promise<ReservationAnswer>;
  /** Step 113. */
  attribute(volume: string): Promise<AttributeView>;
  /** Step 114 (PAIR_RESYNC). */
  pairResync(volume: string): Promise<CommandAnswer>;
  /** Step 115 (PAIR_SWAP_RESYNC). */
  pairSwapResync(volume: string): Promise<CommandAnswer>;
  /** Fig. 10: the quorum pair's split, accepted at either node. */
  pairSplit(volume: string): Promise<AttributeView>;
  quorumStatus(volume: string): Promise<QuorumVolumeStatus>;
  quorumVolumes(): Promise<QuorumVolumeStatus[]>;
}

const volumePath = (volume: string): string => `/v1/quorum/volumes/${encodeURIComponent(volume)}`;

export class HttpQuorumClient extends HttpNodeClient implements QuorumStorage {
  reserve(volume: string, host: string): Promise<ReservationAnswer> {
    return this.request('POST', `${volumePath(volume)}/reserve`, { host });
  }

  release(volume: string, host: string): Promise<ReservationAnswer> {
    return this.request('POST', `${volumePath(volume)}/release`, { host });
  }

  reset(volume: string, host: string): Promise<ReservationAnswer> {
    return this.request('POST', `${volumePath(volume)}/reset`, { host });
  }

  attribute(volume: string): Promise<AttributeView> {
    return this.request('GET', `${volumePath(volume)}/attribute`);
  }

  pairResync(volume: string): Promise<CommandAnswer> {
    return this.request('POST', `${volumePath(volume)}/resync`, {});
  }

  pairSwapResync(volume: string): Promise<CommandAnswer> {
    return this.request('POST', `${volumePath(volume)}/swap-resync`, {});
  }

  pairSplit(volume: string): Promise<AttributeView> {
    return this.request('POST', `${volumePath(volume)}/split`, {});
  }

  quorumStatus(volume: string): Promise<QuorumVolumeStatus> {
    return this.request('GET', volumePath(volume));
  }

  async quorumVolumes(): Promise<QuorumVolumeStatus[]> {
    return (await this.request<{ volumes: QuorumVolumeStatus[] }>('GET', '/v1/quorum/volumes')).volumes;
  }
}
