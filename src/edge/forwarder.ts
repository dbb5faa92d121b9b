// Log entry transfer (programs 407 and 420, spec 002 §5.7): every relay sends an entry to the relay
// after its own in the route between the entry's source and target edges (key (802, 801), mapped
// to edges through the attached storages), processes it itself when it is the target edge, and
// never changes it. Large entries cross a link in fragments (§5.7(7)); a core with batch transfer
// holds entries for a fixed time and sends what gathered for one next hop in one frame. A link the
// network file shapes compresses its frames and keeps under its bandwidth (link-shaping.ts).
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { LinkShaping, RelayNetworkConfig } from '../contracts/network';
import type { PeerLink } from '../replication/transport/link';
import { maxFramePayloadBytes } from '../replication/transport/frame';
import { type RelayEntry, Reassembly, decodeBatch, decodeFragment, encodeEntry, fragment } from './entry';
import type { RelayLinks } from './links';
import { Pacer, compressFrame, decompressFrame } from './link-shaping';

export enum RelayMessage {
  /** One-way: entries back to back. */
  Entries = 100,
  /** One-way: a piece of one entry. */
  Fragment = 101,
  /** One-way: Entries, compressed with zstd. */
  CompressedEntries = 102,
  /** One-way: a piece of a compressed Entries frame (reassembled, then expanded). */
  CompressedFragment = 103,
}

/** Entries larger than this cross a link in fragments (so one big write does not hold up the others long). */
export const defaultFragmentBytes = 1024 * 1024;
/** A next hop whose socket holds more than this unsent is backed up: sources wait. */
export const maxLinkBacklogBytes = 16 * 1024 * 1024;
const maxBatchFrameBytes = Math.min(8 * 1024 * 1024, maxFramePayloadBytes - 1024);
/** The most a reassembled or expanded frame may hold. */
const maxReassembledBytes = 64 * 1024 * 1024;

export type NextHop = { local: true } | { local: false; relay: string; why?: undefined } | { local: false; relay: undefined; why: string };

export interface ForwarderCounters {
  entriesForwarded: number;
  bytesForwarded: number;
  bytesSent: number;
  entriesDropped: number;
}

interface Gathering {
  pieces: Buffer[];
  bytes: number;
  timer: NodeJS.Timeout;
}

export class Forwarder {
  readonly counters: ForwarderCounters = { entriesForwarded: 0, bytesForwarded: 0, bytesSent: 0, entriesDropped: 0 };
  private readonly reassembly = new WeakMap<PeerLink, Reassembly>();
  /** Per next hop with a bandwidth limit: its token bucket, and the limit it was made for. */
  private readonly pacers = new Map<string, { pacer: Pacer; bitsPerSecond: number }>();
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

  /**
   * The next hop from here toward edge `to`: on the route, or, when that hop's link is down, on the
   * first alternate route this relay is on whose next hop is up (a core failure reroutes, §5.7).
   * Nothing is lost or reordered by a detour: what was in flight through the dead core is sent again
   * by the source edge, and the target edge applies each order's entries strictly by number.
   */
  hopBetween(from: string, to: string): NextHop {
    const cfg = this.config();
    const route = cfg?.routes.find((r) => r.from === from && r.to === to);
    if (!route) return { local: false, relay: undefined, why: `no route from ${from} to ${to}` };
    let first: string | undefined;
    for (const hops of [route.hops, ...(route.alternates ?? [])]) {
      const at = hops.indexOf(this.name);
      if (at < 0) continue;
      if (at === hops.length - 1) return { local: true };
      const relay = hops[at + 1]!;
      if (this.links.get('relay', relay, this.name)) return { local: false, relay };
      first ??= relay;
    }
    // Every way on is down: the route's own hop (the entry waits for it, or is sent again).
    if (first) return { local: false, relay: first };
    return { local: false, relay: undefined, why: `${this.name} is not on the route ${route.hops.join(' → ')}` };
  }

  /** Whether an edge's entries toward `to` can leave now (its next hop is up and not backed up). */
  canSend(from: string, to: string): boolean {
    const hop = this.hopBetween(from, to);
    if (hop.local) return true;
    if (!hop.relay) return false;
    const link = this.links.get('relay', hop.relay, this.name);
    return link !== undefined && link.bufferedBytes + (this.pacers.get(hop.relay)?.pacer.queuedBytes ?? 0) < maxLinkBacklogBytes;
  }

  /** How the link to a neighbour is shaped, when the network file says. */
  shaping(relay: string): LinkShaping | undefined {
    return this.config()?.linkShaping?.find((s) => (s.between[0] === this.name && s.between[1] === relay) || (s.between[1] === this.name && s.between[0] === relay));
  }

  /** A neighbour's link went down: frames waiting for bandwidth are dropped (their source edge sends them again). */
  linkDown(relay: string): void {
    const p = this.pacers.get(relay);
    if (p) this.counters.entriesDropped += p.pacer.clear();
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
    return this.toLink(hop.relay, [bytes], bytes.length);
  }

  /** A frame from another relay. */
  onFrame(link: PeerLink, type: number, payload: Buffer): void {
    if (type === RelayMessage.Fragment || type === RelayMessage.CompressedFragment) {
      let r = this.reassembly.get(link);
      if (!r) this.reassembly.set(link, (r = new Reassembly(maxReassembledBytes)));
      const whole = r.add(decodeFragment(payload));
      if (whole) this.onEntries(type === RelayMessage.CompressedFragment ? decompressFrame(whole, maxReassembledBytes) : whole);
      return;
    }
    if (type === RelayMessage.CompressedEntries) return this.onEntries(decompressFrame(payload, maxReassembledBytes));
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
    return this.toLink(relay, pieces, pieces.reduce((n, p) => n + p.length, 0));
  }

  private toLink(relay: string, pieces: Buffer[], bytes: number): boolean {
    this.counters.entriesForwarded++;
    this.counters.bytesForwarded += bytes;
    const batch = this.config()?.relays[this.name]?.batch;
    if (!batch || bytes > this.fragmentBytes) {
      this.emit(relay, pieces, bytes);
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
    this.emit(relay, g.pieces, g.bytes);
  }

  /** Entries leave for a neighbour: compressed when its link says so, in fragments when large, paced when limited. */
  private emit(relay: string, pieces: Buffer[], bytes: number): void {
    const shaping = this.shaping(relay);
    let payload = pieces;
    let compressed = false;
    if (shaping?.compressLevel) {
      const c = compressFrame(pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces), shaping.compressLevel);
      if (c) {
        payload = [c];
        bytes = c.length;
        compressed = true;
      }
    }
    this.counters.bytesSent += bytes;
    if (bytes <= this.fragmentBytes) return this.sendFrame(relay, shaping, compressed ? RelayMessage.CompressedEntries : RelayMessage.Entries, payload, bytes);
    const type = compressed ? RelayMessage.CompressedFragment : RelayMessage.Fragment;
    for (const f of fragment(this.nextFragmentId++, payload.length === 1 ? payload[0]! : Buffer.concat(payload), this.fragmentBytes)) this.sendFrame(relay, shaping, type, f, f.length);
  }

  private sendFrame(relay: string, shaping: LinkShaping | undefined, type: RelayMessage, payload: Buffer | Buffer[], bytes: number): void {
    const go = (): void => {
      const link = this.links.get('relay', relay, this.name);
      if (link) link.send(type as never, payload);
      else this.counters.entriesDropped++;
    };
    const bitsPerSecond = shaping?.bandwidthBitsPerSecond ?? null;
    if (bitsPerSecond === null) return go();
    let p = this.pacers.get(relay);
    if (!p || p.bitsPerSecond !== bitsPerSecond) {
      p?.pacer.clear();
      p = { pacer: new Pacer(bitsPerSecond / 8), bitsPerSecond };
      this.pacers.set(relay, p);
    }
    p.pacer.send(bytes, go);
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
    for (const p of this.pacers.values()) p.pacer.clear();
  }
}
