// Which peers this node keeps a link to. The side that sends (a primary, or a secondary that took
// over) dials and keeps the link up; the other side only answers, so the link always runs to the
// address the sender was given for its peer (which may be a relay or NAT address), never around it.
// One exception: an old primary that stepped down in a swap dials until the new primary acts, since
// if the swap stopped half-way both ends are secondaries and nobody else would (it dials the address
// it was given as the sender).
import type { PeerTransport } from '../transport/peer-transport';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';

export class PeerDemand {
  constructor(private readonly transport: PeerTransport, private readonly registry: PairRegistry) {}

  /** Dials the pair's peer when this side sends. */
  wantIfSender(p: PairRuntime): void {
    if (keepsLink(p)) this.transport.want(p.record.peer);
  }

  /** Stops dialing a peer no sending pair needs any more. */
  releaseIfUnneeded(node: string): void {
    for (const x of this.registry.all()) {
      if (x.record.peer.node === node && keepsLink(x)) return;
    }
    this.transport.release(node);
  }
}

function keepsLink(p: PairRuntime): boolean {
  return p.record.role === 'primary' || p.record.state === 'secondary-writable' || p.record.awaitingNewPrimary;
}
