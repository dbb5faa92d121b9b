// Since when each replication link of this node has been up or down: what `topology status` needs
// to say "async site unreachable for 40 s" (the CLI keeps no memory between runs), and the events
// that record a link loss and its return with the reason.
import type { Clock } from '../common/clock';
import type { EventJournal } from '../common/events';
import type { PeerLinkView } from '../contracts/node';
import type { PeerTransport } from '../replication/transport/peer-transport';

interface LinkState {
  up: boolean;
  sinceMs: number;
  reason: string;
}

export class PeerLinks {
  private readonly links = new Map<string, LinkState>();

  constructor(transport: PeerTransport, private readonly events: EventJournal, private readonly startedAtMs: number,
    private readonly clock: Clock) {
    transport.onPeerUp((node) => this.change(node, true, 'link up'));
    transport.onPeerDown((node, reason) => this.change(node, false, reason));
  }

  /** Every peer some pair names (`peers`) and every peer seen; one never connected is down since the node started. */
  view(peers: Iterable<string>): PeerLinkView[] {
    const names = new Set([...peers, ...this.links.keys()]);
    return [...names].sort().map((node) => {
      const s = this.links.get(node) ?? { up: false, sinceMs: this.startedAtMs, reason: 'not connected since this node started' };
      return { node, up: s.up, since: new Date(s.sinceMs).toISOString(), reason: s.reason };
    });
  }

  private change(node: string, up: boolean, reason: string): void {
    const before = this.links.get(node);
    if (before?.up === up) return;
    this.links.set(node, { up, sinceMs: this.clock.now(), reason });
    if (up) this.events.emit('peer-link-up', node, `replication link to ${node} is up`);
    else this.events.emit('peer-link-down', node, `replication link to ${node} lost: ${reason}`);
  }
}
