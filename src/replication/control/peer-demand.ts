// Which peers this node keeps a link to. The side that sends (a primary, or a secondary that took
// over) dials and keeps the link up; the other side only answers, so the link always runs to the
// address the sender was given for its peer (which may be a relay or NAT address), never around it.
import type { PeerTransport } from '../transport/peer-transport';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';

export class PeerDemand {
  constructor(private readonly transport: PeerTransport, private readonly registry: PairRegistry) {}

  /** Dials the pair's peer when this side sends. */
  wantIfSender(p: PairRuntime): void {
    if (p.record.role === 'primary' || p.record.state === 'secondary-writable') this.transport.want(p.record.peer);
  }

  /** Stops dialing a peer no sending pair needs any more. */
  releaseIfUnneeded(node: string): void {
    for (const x of this.registry.all()) {
      if (x.record.peer.node === node && (x.record.role === 'primary' || x.record.state === 'secondary-writable')) return;
    }
    this.transport.release(node);
  }
}
