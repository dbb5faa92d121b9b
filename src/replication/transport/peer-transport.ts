// What the replication core needs from the network: authenticated request/response exchanges with
// named peer nodes, liveness, and the peers to keep dialing. The node wires the TCP link manager
// (peers.ts); the simulator wires a network with delays, losses and partitions.
import type { PeerAddress } from '../../contracts/pairs';
import type { MessageType } from './messages';

/** Answers a request from `peer`; resolves with the response payload (none for one-way messages). */
export type PeerRequestHandler = (type: MessageType, payload: Buffer, peer: string) => Promise<Buffer | Buffer[] | void>;

export interface PeerTransport {
  /** Replication needs a shared cluster secret; without one every peer is refused. */
  readonly hasSecret: boolean;
  listen(host: string, port: number): Promise<number>;
  close(): Promise<void>;
  setRequestHandler(handler: PeerRequestHandler): void;
  onPeerUp(listener: (node: string) => void): void;
  onPeerDown(listener: (node: string, reason: string) => void): void;
  isUp(node: string): boolean;
  /** Keeps a link to `address` up (dialing with back-off) until `release`. */
  want(address: PeerAddress): void;
  release(node: string): void;
  /** Dials now and resolves once the link is ready, or rejects after `timeoutMs`. */
  connectNow(address: PeerAddress, timeoutMs: number): Promise<unknown>;
  request(node: string, type: MessageType, payload: Buffer | Buffer[], timeoutMs?: number): Promise<Buffer>;
  /** One-way; dropped when the link is down. */
  send(node: string, type: MessageType, payload: Buffer | Buffer[]): void;
}
