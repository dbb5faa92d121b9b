// Log entry transfer (programs 407 and 420, spec 002 §5.7): every relay sends an entry to the relay
// after its own on the entry's carried path (chosen by the edge it left, paths.ts), processes it
// itself when it is the target edge, and never changes 801–805. An entry that carries no path (from
// an older relay) follows the route between its source and target edges (key (802, 801), mapped to
// edges through the attached storages). A relay whose next relay on the carried path is unreachable
// drops the entry, counts it, and sends a PathDown entry back along the path to the edge it came
// from, which chooses a path around the link and sends again (issue 15). Large entries cross a link
// in fragments (§5.7(7)); a core with batch transfer holds entries for a fixed time and sends what
// gathered for one next hop in one frame. A link the network file shapes compresses its frames and
// keeps under its bandwidth (link-shaping.ts).
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { LinkShaping, RelayNetworkConfig } from '../contracts/network';
import type { PeerLink } from '../replication/transport/link';
import { maxFramePayloadBytes } from '../replication/transport/frame';
import { EntryKind, type RelayEntry, Reassembly, decodeBatch, decodeDeadLink, decodeFragment, encodeDeadLink, encodeEntry, fragment, withPath } from './entry';
import type { RelayLinks } from './links';
import { Pacer, compressFrame, decompressFrame } from './link-shaping';
import { linkKey } from './network-file';
import { type PathChange, PathChooser } from './paths';

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
/** A relay tells an edge about one dead link at most this often (every entry dropped there would). */
export const pathDownNoticeIntervalMs = 200;
/** The (link, edge) pairs whose last notice time a relay remembers; the oldest is forgotten first. */
const maxRememberedNotices = 4096;
/**
 * A relay whose link to a neighbour goes down tells the edges that sent entries over it this
 * recently: what it had just put on that link is lost without a trace, and an edge that then waits
 * for answers (a direct request) sends nothing that could meet the dead link and bring a PathDown.
 */
export const recentSenderMs = 10_000;

export type NextHop = { local: true } | { local: false; relay: string; why?: undefined } | { local: false; relay: undefined; why: string };

export interface ForwarderCounters {
  entriesForwarded: number;
  bytesForwarded: number;
  bytesSent: number;
  entriesDropped: number;
  /** PathDown entries this relay sent (it could not forward on a carried path). */
  pathDownNotices: number;
  /** Times this edge changed the path it sends on toward another edge. */
  reroutes: number;
}

interface Gathering {
  pieces: Buffer[];
  bytes: number;
  timer: NodeJS.Timeout;
}

export class Forwarder {
  readonly counters: ForwarderCounters = { entriesForwarded: 0, bytesForwarded: 0, bytesSent: 0, entriesDropped: 0, pathDownNotices: 0, reroutes: 0 };
  readonly paths: PathChooser;
  /** The path toward an edge changed (set by the relay: it records the event and may resend). */
  onPathChange: (change: PathChange) => void = () => undefined;
  /** When this relay last told an edge about a dead link (`link key > edge`). */
  private readonly noticesSentAt = new Map<string, number>();
  /** Per next hop: per edge that sent entries over that link, its last such entry (without payload), its path and when. */
  private readonly recentSenders = new Map<string, Map<string, { e: RelayEntry; path: readonly string[]; at: number; atMs: number }>>();
  private readonly reassembly = new WeakMap<PeerLink, Reassembly>();
  /** Per next hop with a bandwidth limit: its token bucket, and the limit it was made for. */
  private readonly pacers = new Map<string, { pacer: Pacer; bitsPerSecond: number }>();
  private readonly gathering = new Map<string, Gathering>();
  private nextFragmentId = 1;
  /** Shutting down: links closing now are no reason to choose paths again. */
  private closed = false;
  private lastDropLogAt = 0;

  constructor(
    private readonly name: string,
    private readonly links: RelayLinks,
    private readonly config: () => RelayNetworkConfig | null,
    private readonly log: Logger,
    /** An entry whose target edge is this relay. */
    private readonly local: (e: RelayEntry) => void,
    readonly fragmentBytes = defaultFragmentBytes,
    private readonly now: () => number = Date.now,
  ) {
    this.paths = new PathChooser(name, config, (n) => this.links.get('relay', n, this.name) !== undefined, now, (c) => {
      this.counters.reroutes++;
      this.onPathChange(c);
    });
  }

  /** The edge a storage node is attached to. */
  edgeOf(node: string): string | undefined {
    return this.config()?.storages[node]?.edge;
  }

  /** Where an entry that carries no path goes from here (§5.7(1), (5)): the route tables. */
  nextHop(e: Pick<RelayEntry, 'source' | 'target'>): NextHop {
    const cfg = this.config();
    if (!cfg) return { local: false, relay: undefined, why: 'no network applied' };
    const from = cfg.storages[e.source.node]?.edge;
    const to = cfg.storages[e.target.node]?.edge;
    if (!from || !to) return { local: false, relay: undefined, why: `storage ${from ? e.target.node : e.source.node} is attached to no edge` };
    return this.hopBetween(from, to);
  }

  /**
   * The next hop from here toward edge `to` for an entry without a carried path: on the route, or,
   * when that hop's link is down, on the first alternate route this relay is on whose next hop is
   * up. Only entries of relays that carry no path use this.
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

  /** Whether this edge's entries toward edge `to` can leave now (the first hop of its path is up and not backed up). */
  canSend(to: string): boolean {
    const hops = this.paths.pathTo(to);
    if (!hops) return false;
    if (hops.length === 1) return true;
    const link = this.links.get('relay', hops[1]!, this.name);
    return link !== undefined && link.bufferedBytes + (this.pacers.get(hops[1]!)?.pacer.queuedBytes ?? 0) < maxLinkBacklogBytes;
  }

  /** How the link to a neighbour is shaped, when the network file says. */
  shaping(relay: string): LinkShaping | undefined {
    return this.config()?.linkShaping?.find((s) => (s.between[0] === this.name && s.between[1] === relay) || (s.between[1] === this.name && s.between[0] === relay));
  }

  /** A neighbour's link went down: frames waiting for bandwidth are dropped (their source edge sends them again). */
  linkDown(relay: string): void {
    const p = this.pacers.get(relay);
    if (p) this.counters.entriesDropped += p.pacer.clear();
    if (this.closed) return;
    this.paths.ownLinkChanged(relay, false);
    // The edges whose entries this relay carried over the link lately learn of it now (a PathDown
    // each), not when their next entry happens to meet it.
    const senders = this.recentSenders.get(relay);
    this.recentSenders.delete(relay);
    const now = this.now();
    for (const r of senders?.values() ?? []) if (now - r.atMs <= recentSenderMs) this.tellPathDown(r.e, r.path, r.at, relay);
  }

  /** A neighbour's link came up: the route through it may be usable again. */
  linkUp(relay: string): void {
    if (!this.closed) this.paths.ownLinkChanged(relay, true);
  }

  /**
   * Sends an entry this edge originates (a request, an answer, a notice) on its way; false when it
   * was dropped. It goes on the path it carries when that starts here and looks usable (an answer
   * goes back the way its request came), else on the path this edge chooses.
   */
  send(e: RelayEntry): boolean {
    const to = this.edgeOf(e.target.node);
    if (!to) return this.drop(e, `storage ${e.target.node} is attached to no edge`);
    const carried = e.path;
    if (carried !== undefined && carried[0] === this.name && carried.at(-1) === to && this.paths.usable(carried)) return this.onPath(e, carried);
    const path = this.paths.pathTo(to);
    if (!path) return this.drop(e, `no route from ${this.name} to ${to}`);
    return this.onPath({ ...e, path }, path);
  }

  /** Sends an encoded entry this edge stored toward edge `to` on the chosen path (not decoded: the path is put in front). */
  sendLogged(to: string, bytes: Buffer): boolean {
    const path = this.paths.pathTo(to);
    if (!path) {
      this.counters.entriesDropped++;
      return false;
    }
    if (path.length === 1) {
      this.local(decodeBatch(bytes)[0]!);
      return true;
    }
    if (!this.links.get('relay', path[1]!, this.name)) {
      // Chosen a moment ago with the link up: it just went down, and the chooser hears of it now.
      this.counters.entriesDropped++;
      return false;
    }
    const pieces = withPath(bytes, path);
    return this.toLink(path[1]!, pieces, pieces.reduce((n, p) => n + p.length, 0));
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
      if (e.path) {
        this.onPath(e, e.path);
        continue;
      }
      const hop = this.nextHop(e);
      if (hop.local) this.deliverLocal(e);
      else if (!hop.relay) this.drop(e, hop.why ?? 'no route');
      else this.toRelay(hop.relay, e, encodeEntry(e)); // 801–805 unchanged (E-31)
    }
  }

  /** Forwards an entry along its carried path (801–805 and the path unchanged, E-31), or takes it here at its end. */
  private onPath(e: RelayEntry, path: readonly string[]): boolean {
    const at = path.indexOf(this.name);
    if (at < 0) return this.drop(e, `${this.name} is not on its carried path ${path.join(' → ')}`);
    if (at === path.length - 1) {
      const to = this.edgeOf(e.target.node);
      if (to !== this.name) return this.drop(e, `its carried path ends at ${this.name}, but ${e.target.node} is attached to ${to ?? 'no edge'}`);
      this.deliverLocal(e);
      return true;
    }
    const next = path[at + 1]!;
    if (this.links.get('relay', next, this.name)) {
      if (at > 0 && e.kind !== EntryKind.PathDown) this.rememberSender(e, path, at, next);
      return this.toRelay(next, e, encodeEntry(e));
    }
    this.drop(e, `the link to ${next} on its carried path is down`);
    if (at > 0) this.tellPathDown(e, path, at, next);
    else this.paths.ownLinkChanged(next, false); // this edge chose it an instant before the link went down
    return false;
  }

  /** Keeps what a PathDown about the link to `next` needs to reach the edge the entry came from. */
  private rememberSender(e: RelayEntry, path: readonly string[], at: number, next: string): void {
    let m = this.recentSenders.get(next);
    if (!m) this.recentSenders.set(next, (m = new Map()));
    const origin = path[0]!;
    const r = m.get(origin);
    if (r && r.path.length === path.length && r.path.every((h, i) => h === path[i])) {
      r.atMs = this.now();
      return;
    }
    if (!r && m.size >= maxRememberedNotices) m.delete(m.keys().next().value!);
    m.set(origin, { e: { ...e, rio: { type: 0, status: 0, payload: Buffer.alloc(0) } }, path, at, atMs: this.now() });
  }

  private deliverLocal(e: RelayEntry): void {
    try {
      if (e.kind === EntryKind.PathDown) this.onPathDown(e);
      else this.local(e);
    } catch (err) {
      this.log.warn({ err: errorMessage(err), order: e.order, seq: e.seq }, 'an entry could not be processed');
    }
  }

  /**
   * This relay cannot forward `e` to `next`: the edge it came from learns of the dead link by a
   * PathDown entry sent back along the part of the path the entry crossed (at most one per link
   * and edge per `pathDownNoticeIntervalMs`: it acts on the first and sends everything again).
   */
  private tellPathDown(e: RelayEntry, path: readonly string[], at: number, next: string): void {
    if (e.kind === EntryKind.PathDown) return; // never a notice about a notice
    const origin = path[0]!;
    const key = `${linkKey(this.name, next)}>${origin}`;
    const now = this.now();
    if (now - (this.noticesSentAt.get(key) ?? Number.NEGATIVE_INFINITY) < pathDownNoticeIntervalMs) return;
    this.noticesSentAt.set(key, now);
    if (this.noticesSentAt.size > maxRememberedNotices) this.noticesSentAt.delete(this.noticesSentAt.keys().next().value!);
    this.counters.pathDownNotices++;
    const back = path.slice(0, at + 1).reverse();
    this.onPath({
      kind: EntryKind.PathDown, flags: 0, target: e.source, source: e.target, order: e.order, ioTimeMs: e.ioTimeMs, seq: e.seq, corr: e.corr,
      rio: { type: 0, status: 0, payload: encodeDeadLink({ from: this.name, to: next }) }, path: back,
    }, back);
  }

  private onPathDown(e: RelayEntry): void {
    const link = decodeDeadLink(e.rio.payload);
    this.paths.reportDead(link.from, link.to, `${link.from} could not forward entry ${e.seq} of ${e.order || 'a direct message'} to ${link.to}`);
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
    this.closed = true;
    for (const g of this.gathering.values()) clearTimeout(g.timer);
    this.gathering.clear();
    for (const p of this.pacers.values()) p.pacer.clear();
  }
}
