// Log entry transfer (programs 407 and 420, spec 002 §5.7): every relay sends an entry to the relay
// after its own in the route between the entry's source and target edges (key (802, 801), mapped
// to edges through the attached storages), processes it itself when it is the target edge, and
// never changes it. Large entries cross a link in fragments (§5.7(7)); a core with batch transfer
// holds entries for a fixed time and sends what gathered for one next hop in one frame.
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { RelayNetworkConfig } from '../contracts/network';
import type { PeerLink } from '../replication/transport/link';
import { maxFramePayloadBytes } from '../replication/transport/frame';
import { type RelayEntry, Reassembly, decodeBatch, decodeFragment, encodeEntry, fragment } from './entry';
import type { RelayLinks } from './links';

export enum RelayMessage {
  /** One-way: entries back to back. */
  Entries = 100,
  /** One-way: a piece of one entry. */
  Fragment = 101,
}

/** Entries larger than this cross a link in fragments (so one big write does not hold up the others long). */
export const defaultFragmentBytes = 1024 * 1024;
/** A next hop whose socket holds more than this unsent is backed up: sources wait. */
export const maxLinkBacklogBytes = 16 * 1024 * 1024;
const maxBatchFrameBytes = Math.min(8 * 1024 * 1024, maxFramePayloadBytes - 1024);

export type NextHop = { local: true } | { local: false; relay: string; why?: undefined } | { local: false; relay: undefined; why: string };

export interface ForwarderCounters {
  entriesForwarded: number;
  bytesForwarded: number;
  entriesDropped: number;
}

interface Gathering {
  pieces: Buffer[];
  bytes: number;
  timer: NodeJS.Timeout;
}

export class Forwarder {
  readonly counters: ForwarderCounters = { entriesForwarded: 0, bytesForwarded: 0, entriesDropped: 0 };
  private readonly reassembly = new WeakMap<PeerLink, Reassembly>();
  private readonly gathering = new Map<string, Gathering>();
  private nextFragmentId = 1;
  private lastDropLogAt = 0;

  constructor(
    private readonly name: string,
    private readonly links: RelayLinks,
    private readonly config: () => RelayNetworkConfig | null,
    private readonly log: Logger,
    /** An entry whose target edge is this relay. */
    private readonly local: (e: RelayEntry) => void,
    readonly fragmentBytes = defaultFragmentBytes,
  ) {}

  /** The edge a storage node is attached to. */
  edgeOf(node: string): string | undefined {
    return this.config()?.storages[node]?.edge;
  }

  /** Where an entry goes from here (§5.7(1), (5)). */
  nextHop(e: Pick<RelayEntry, 'source' | 'target'>): NextHop {
    const cfg = this.config();
    if (!cfg) return { local: false, relay: undefined, why: 'no network applied' };
    const from = cfg.storages[e.source.node]?.edge;
    const to = cfg.storages[e.target.node]?.edge;
    if (!from || !to) return { local: false, relay: undefined, why: `storage ${from ? e.target.node : e.source.node} is attached to no edge` };
    return this.hopBetween(from, to);
  }

  hopBetween(from: string, to: string): NextHop {
    const cfg = this.config();
    const route = cfg?.routes.find((r) => r.from === from && r.to === to);
    if (!route) return { local: false, relay: undefined, why: `no route from ${from} to ${to}` };
    const at = route.hops.indexOf(this.name);
    if (at < 0) return { local: false, relay: undefined, why: `${this.name} is not on the route ${route.hops.join(' → ')}` };
    if (at === route.hops.length - 1) return { local: true };
    return { local: false, relay: route.hops[at + 1]! };
  }

  /** Whether an edge's entries toward `to` can leave now (its next hop is up and not backed up). */
  canSend(from: string, to: string): boolean {
    const hop = this.hopBetween(from, to);
    if (hop.local) return true;
    if (!hop.relay) return false;
    const link = this.links.get('relay', hop.relay, this.name);
    return link !== undefined && link.bufferedBytes < maxLinkBacklogBytes;
  }

  /** Sends an entry (or its encoded bytes) on its way; false when it was dropped. */
  send(e: RelayEntry, encoded?: Buffer | Buffer[]): boolean {
    const hop = this.nextHop(e);
    if (hop.local) {
      this.local(e);
      return true;
    }
    if (!hop.relay) return this.drop(e, hop.why ?? 'no route');
    return this.toRelay(hop.relay, e, encoded ?? encodeEntry(e));
  }

  /** Sends an encoded entry from edge `from` toward edge `to` (the route is known: no decoding). */
  sendBetween(from: string, to: string, bytes: Buffer): boolean {
    const hop = this.hopBetween(from, to);
    if (hop.local) {
      this.local(decodeBatch(bytes)[0]!);
      return true;
    }
    if (!hop.relay) {
      this.counters.entriesDropped++;
      return false;
    }
    const link = this.links.get('relay', hop.relay, this.name);
    if (!link) {
      this.counters.entriesDropped++;
      return false;
    }
    return this.toLink(hop.relay, link, [bytes], bytes.length);
  }

  /** A frame from another relay. */
  onFrame(link: PeerLink, type: number, payload: Buffer): void {
    if (type === RelayMessage.Fragment) {
      let r = this.reassembly.get(link);
      if (!r) this.reassembly.set(link, (r = new Reassembly(64 * 1024 * 1024)));
      const whole = r.add(decodeFragment(payload));
      if (whole) this.onEntries(whole);
      return;
    }
    if (type !== RelayMessage.Entries) throw new Error(`relay ${link.peerNode} sent message type ${type}`);
    this.onEntries(payload);
  }

  private onEntries(bytes: Buffer): void {
    for (const e of decodeBatch(bytes)) {
      const hop = this.nextHop(e);
      if (hop.local) {
        try {
          this.local(e);
        } catch (err) {
          this.log.warn({ err: errorMessage(err), order: e.order, seq: e.seq }, 'an entry could not be processed');
        }
      } else if (!hop.relay) this.drop(e, hop.why ?? 'no route');
      else this.toRelay(hop.relay, e, encodeEntry(e)); // 801–805 unchanged (E-31)
    }
  }

  private toRelay(relay: string, e: RelayEntry, encoded: Buffer | Buffer[]): boolean {
    const link = this.links.get('relay', relay, this.name);
    if (!link) return this.drop(e, `the link to ${relay} is down`);
    const pieces = Array.isArray(encoded) ? encoded : [encoded];
    return this.toLink(relay, link, pieces, pieces.reduce((n, p) => n + p.length, 0));
  }

  private toLink(relay: string, link: PeerLink, pieces: Buffer[], bytes: number): boolean {
    this.counters.entriesForwarded++;
    this.counters.bytesForwarded += bytes;
    if (bytes > this.fragmentBytes) {
      const whole = pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
      for (const f of fragment(this.nextFragmentId++, whole, this.fragmentBytes)) link.send(RelayMessage.Fragment as never, f);
      return true;
    }
    const batch = this.config()?.relays[this.name]?.batch;
    if (!batch) {
      link.send(RelayMessage.Entries as never, pieces);
      return true;
    }
    // Batch transfer (420): gather for the wait time after the first entry, then one frame.
    let g = this.gathering.get(relay);
    if (!g) {
      g = { pieces: [], bytes: 0, timer: setTimeout(() => this.flushGathered(relay), batch.waitMs) };
      this.gathering.set(relay, g);
    }
    g.pieces.push(...pieces);
    g.bytes += bytes;
    if (g.bytes >= Math.min(batch.maxBytes, maxBatchFrameBytes)) this.flushGathered(relay);
    return true;
  }

  private flushGathered(relay: string): void {
    const g = this.gathering.get(relay);
    if (!g) return;
    clearTimeout(g.timer);
    this.gathering.delete(relay);
    const link = this.links.get('relay', relay, this.name);
    if (link) link.send(RelayMessage.Entries as never, g.pieces);
    else this.counters.entriesDropped++;
  }

  private drop(e: RelayEntry, why: string): false {
    this.counters.entriesDropped++;
    const now = Date.now();
    if (now - this.lastDropLogAt > 5000) {
      this.lastDropLogAt = now;
      this.log.warn({ order: e.order, seq: e.seq, source: e.source.node, target: e.target.node, why }, 'entry dropped (the source edge sends it again)');
    }
    return false;
  }

  close(): void {
    for (const g of this.gathering.values()) clearTimeout(g.timer);
    this.gathering.clear();
  }
}
