// What a module above the node (src/quorum/) may use to add behaviour to pairs without a copy of
// the machinery: the pairs and their command queues, the transition engine (its overlays and
// listeners), the peers, and the few operations it needs that are otherwise private to the core.
// Everything it changes still goes through the transition engine.
import type { Clock } from '../common/clock';
import type { EventJournal } from '../common/events';
import type { PairStatus } from '../contracts/pairs';
import type { ExtraPeerHandler } from './control/peer-requests';
import type { PairRegistry } from './pairs/registry';
import type { PairRuntime } from './pairs/runtime';
import type { TransitionEngine } from './pairs/transitions';
import type { MessageType } from './transport/messages';
import type { PeerTransport } from './transport/peer-transport';

export interface PairExtensionPoint {
  readonly localNode: string;
  readonly clock: Clock;
  readonly events: EventJournal;
  readonly registry: PairRegistry;
  readonly engine: TransitionEngine;
  readonly transport: PeerTransport;
  status(p: PairRuntime): PairStatus;
  /**
   * Primary: tells the secondary this side's view of the pair and resolves only once the secondary
   * took it (the engine's own message after a transition is best effort); rejects when it cannot.
   */
  tellConfirmed(p: PairRuntime, timeoutMs: number): Promise<void>;
  /** Requests of `type` from peers go to `handler`. */
  handlePeerRequests(type: MessageType, handler: ExtraPeerHandler): void;
}
