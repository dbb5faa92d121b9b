// Virtual storages with names of their own (spec 002 §6.13, Fig. 2, §9.56): an edge presents each
// partner of its attached nodes under an allocated name instead of the partner's. The edge owns the
// translation at its storage-facing side only (program 403 with table 404): what an attached node
// sends is turned back into real names before it is numbered and logged, and what goes to an
// attached node carries the presented names, so entries, routes, pair rows and order groups hold
// real names throughout (§6.13 recommendation). Besides the link's own name (the Port ID of the
// spec's frames), node names travel inside four control messages; those are rewritten here, pure
// functions on bytes. Everything else (data, journal batches, pair updates) names pairs only.
import type { RelayNetworkConfig } from '../contracts/network';
import { MessageType } from '../replication/transport/messages';
import { bitmapReplyCodec, pairCreateCodec, pairsSyncCodec, swapPrepareCodec } from '../replication/transport/control-messages';

/** How names cross the edge: `toReal` for what an attached node sends, `toPresented` for what it receives. */
export type NameMapping = (name: string) => string;

/** A request's payload with its node names mapped (unchanged bytes when it carries none, or none change). */
export function mapRequestNames(type: number, payload: Buffer, map: NameMapping): Buffer {
  switch (type) {
    case MessageType.PairsSync:
      return mapPairsSync(payload, map);
    case MessageType.PairCreate: {
      const m = pairCreateCodec.decode(payload);
      return map(m.primary.node) === m.primary.node ? payload : pairCreateCodec.encode({ ...m, primary: { ...m.primary, node: map(m.primary.node) } });
    }
    case MessageType.SwapPrepare: {
      const m = swapPrepareCodec.decode(payload);
      return map(m.newPrimary) === m.newPrimary ? payload : swapPrepareCodec.encode({ ...m, newPrimary: map(m.newPrimary) });
    }
    default:
      return payload;
  }
}

/** A successful answer's payload with its node names mapped (the answer to a request of `type`). */
export function mapAnswerNames(type: number, payload: Buffer, map: NameMapping): Buffer {
  switch (type) {
    case MessageType.PairsSync:
      return mapPairsSync(payload, map);
    case MessageType.PairCreate:
    case MessageType.PairBitmap: {
      // The origin of an applied mark: the primary the secondary applied an async stream of.
      const m = bitmapReplyCodec.decode(payload);
      if (!m.mark || map(m.mark.origin) === m.mark.origin) return payload;
      return bitmapReplyCodec.encode({ ...m, mark: { ...m.mark, origin: map(m.mark.origin) } });
    }
    default:
      return payload;
  }
}

/** A pair exchange names its sender, asking and answering alike. */
function mapPairsSync(payload: Buffer, map: NameMapping): Buffer {
  const m = pairsSyncCodec.decode(payload);
  return map(m.node) === m.node ? payload : pairsSyncCodec.encode({ ...m, node: map(m.node) });
}

/** The names one edge presents its attached nodes' partners under (table 404 of that edge). */
export class VirtualNames {
  private readonly presentedOf: ReadonlyMap<string, string>;
  private readonly partnerOf: ReadonlyMap<string, string>;

  constructor(cfg: RelayNetworkConfig | undefined, edge: string) {
    const own = cfg?.virtualNames?.[edge] ?? {};
    this.presentedOf = new Map(Object.entries(own));
    this.partnerOf = new Map(Object.entries(own).map(([partner, presented]) => [presented, partner]));
  }

  /** True when this edge presents partners under names of their own (the Fig. 2 variant). */
  get ownNames(): boolean {
    return this.presentedOf.size > 0;
  }

  /** The name `partner` is presented under at this edge (its own name in the base variant). */
  presented(partner: string): string {
    return this.presentedOf.get(partner) ?? partner;
  }

  /** The partner a presented name stands for, or undefined when `name` is none this edge presents. */
  partner(name: string): string | undefined {
    if (!this.ownNames) return name;
    return this.partnerOf.get(name);
  }

  /** What an attached node sent: presented names back to real ones. */
  readonly toReal: NameMapping = (name) => this.partnerOf.get(name) ?? name;
  /** What goes to an attached node: partners' real names to the names presented here. */
  readonly toPresented: NameMapping = (name) => this.presentedOf.get(name) ?? name;

  /** A request from an attached node, as the network carries it. */
  requestFromNode(type: number, payload: Buffer): Buffer {
    return this.ownNames ? mapRequestNames(type, payload, this.toReal) : payload;
  }

  /** The answer this edge gives an attached node. */
  answerToNode(type: number, payload: Buffer): Buffer {
    return this.ownNames ? mapAnswerNames(type, payload, this.toPresented) : payload;
  }

  /** A request delivered to an attached node. */
  requestToNode(type: number, payload: Buffer): Buffer {
    return this.ownNames ? mapRequestNames(type, payload, this.toPresented) : payload;
  }

  /** An attached node's answer, as the network carries it. */
  answerFromNode(type: number, payload: Buffer): Buffer {
    return this.ownNames ? mapAnswerNames(type, payload, this.toReal) : payload;
  }
}
