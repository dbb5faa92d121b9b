// Where a pair through a remote copy network is addressed (spec 002 §4.6, method B): the primary
// dials its own edge, which answers as the peer; the peer reaches back through its own edge; the
// pair is assigned to an order-guarantee id at the source edge before it exists. Used by
// `pair create --via` and by topologies whose legs go through a network.
import { TricopyError } from '../common/errors';
import type { NetworkAttachment } from '../contracts/network';
import { HttpRelayClient } from './client';

export interface PairThroughNetwork {
  /** What the primary dials: its own edge, under the peer's name (its virtual storage's, Fig. 2). */
  peer: { node: string; host: string; replPort: number };
  /** What the peer dials back: its own edge. */
  returnAddress: { host: string; replPort: number };
  order: string;
  /** The source edge's control API (where the pair is assigned to the order). */
  edgeApi: string;
}

/**
 * The addresses of a pair from the node attached as `a` to `peerNode`, under `order` (or, when none
 * is named, the one order leading from this node's edge to the peer's).
 */
export function pairThroughNetwork(a: NetworkAttachment, peerNode: string, order?: string, options: { realNamesOnly?: boolean } = {}): PairThroughNetwork {
  const peerEdge = a.peers[peerNode];
  if (!peerEdge) {
    throw new TricopyError('invalid-argument', `node ${peerNode} is not attached to network ${a.network} for ${a.node} (not attached, or another customer's)`,
      'attach it to an edge in the network file and run tricopy network apply');
  }
  if (options.realNamesOnly && peerEdge.as !== undefined) {
    // A topology knows its sites by node name; under a virtual storage's own name a pair's peer is another.
    throw new TricopyError('invalid-argument', `network ${a.network} presents ${peerNode} to ${a.node} as ${peerEdge.as} (virtualStorages: own): a topology's legs need its sites' own names`,
      'give the topology a network with virtualStorages: partner, or create the pairs with tricopy pair create --via');
  }
  const leading = Object.entries(a.orders).filter(([, o]) => o.from === a.edge.name && o.to === peerEdge.edge).map(([id]) => id);
  let id = order;
  if (id === undefined) {
    if (leading.length !== 1) {
      throw new TricopyError('invalid-argument',
        `network ${a.network} has ${leading.length === 0 ? 'no order-guarantee id' : `several order-guarantee ids (${leading.join(', ')})`} from ${a.edge.name} to ${peerEdge.edge}`,
        `give it exactly one (orders: { ID: { from: ${a.edge.name}, to: ${peerEdge.edge} } }) and run tricopy network apply`);
    }
    id = leading[0]!;
  }
  const o = a.orders[id];
  if (!o) throw new TricopyError('invalid-argument', `network ${a.network} has no order-guarantee id ${id}`, `its orders: ${Object.keys(a.orders).join(', ') || 'none'}`);
  if (!leading.includes(id)) {
    throw new TricopyError('invalid-argument', `order-guarantee id ${id} leads from ${o.from} to ${o.to}, but this pair goes from ${a.edge.name} to ${peerEdge.edge}`,
      'name an order from this node\'s edge to the peer\'s edge');
  }
  return {
    peer: { node: peerEdge.as ?? peerNode, host: a.edge.host, replPort: a.edge.port }, returnAddress: { host: peerEdge.host, replPort: peerEdge.port }, order: id, edgeApi: a.edge.api,
  };
}

/** Assigns the pair to its order at the source edge (before it is created). */
export async function bindAtSourceEdge(route: PairThroughNetwork, pair: string): Promise<void> {
  await new HttpRelayClient(route.edgeApi).bind(pair, route.order);
}
