// The path an edge puts on the entries it sends (issue 15: rerouting around a failed link). This
// module owns the edge's knowledge of dead links and its choice of path per destination edge.
//
// Why the edge that sends chooses, and the path travels with the entry (entry.ts): a relay in the
// middle knows only its own links. When the link c-1–e-sapporo is cut while c-1 stays up, c-1 has
// no way on but back, and a relay that sent entries back toward the source could loop or reorder
// them across paths no one tracks. The sending edge, though, keeps every unacknowledged entry and
// already resends them (§5.8), and the target edge applies each number once and in order (§5.5).
// So rerouting is only: learn that a link is dead, choose a path without it, send again. Relays
// follow the carried path; one that cannot (its next relay's link is down) drops the entry, counts
// it and tells the sending edge with a PathDown entry back along the part of the path it came by.
//
// What the chooser knows: its own links (up or down, from the link layer), and links other relays
// reported dead (held for `deadLinkHoldMs`, doubled up to `maxDeadLinkHoldMs` while the same link
// is reported again soon after its hold ended, so a link that stays cut is not retried every few
// seconds). A retransmission timeout alone changes nothing: the target may only be slow (a pair's
// initial copy), and switching paths on it would make the route flap; a resend after a timeout
// that meets the dead link brings a report back like any entry. The chooser prefers the route,
// then the route's alternates (per core, then per link; fewest hops first), then any shortest path
// over cores through links it does not know to be dead; with nothing left, the route (entries wait
// there and are sent again, until retransmission gives up, §6.10).
import { invariant } from '../common/errors';
import type { RelayNetworkConfig } from '../contracts/network';
import { linkKey, shortestPath } from './network-file';

/** How long a link another relay reported dead is avoided, at first. */
export const deadLinkHoldMs = 10_000;
/** The longest a link is avoided on reports alone (its hold doubles while reports keep coming). */
export const maxDeadLinkHoldMs = 300_000;

/** A change of the path toward one destination edge. */
export interface PathChange {
  to: string;
  hops: string[];
  previous: string[];
  reason: string;
  /** Entries sent on the previous path were probably lost there: the sources should send again. */
  resend: boolean;
}

/** A link the chooser avoids (reported dead by a relay at one end), as `network status` shows it. */
export interface AvoidedLink {
  between: [string, string];
  untilMs: number;
  reason: string;
}

interface Avoided {
  between: [string, string];
  untilMs: number;
  holdMs: number;
  reason: string;
  /** The hold ended and that was acted on. */
  ended: boolean;
}

export class PathChooser {
  private readonly dead = new Map<string, Avoided>();
  private readonly chosen = new Map<string, string[]>();
  private neighbours = new Map<string, string[]>();
  private version: string | undefined;
  private nextExpiryMs = Number.POSITIVE_INFINITY;

  constructor(
    private readonly me: string,
    private readonly config: () => RelayNetworkConfig | null,
    /** Whether this relay's link to a neighbour is up now. */
    private readonly isUp: (neighbour: string) => boolean,
    private readonly now: () => number,
    private readonly onChange: (change: PathChange) => void,
  ) {}

  /** The path from this edge to edge `to` (undefined: no route between them is configured). */
  pathTo(to: string): string[] | undefined {
    this.sync();
    if (this.now() >= this.nextExpiryMs) this.expire();
    const known = this.chosen.get(to);
    if (known) return known;
    const hops = this.compute(to);
    if (hops) this.chosen.set(to, hops);
    return hops;
  }

  /** Whether `hops` crosses only links this edge does not know to be down or dead. */
  usable(hops: readonly string[]): boolean {
    return hops.every((h, i) => i === 0 || this.linkUsable(hops[i - 1]!, h));
  }

  /** A relay reported its link to a neighbour dead (a PathDown entry). */
  reportDead(from: string, to: string, reason: string): void {
    const now = this.now();
    const key = linkKey(from, to);
    const was = this.dead.get(key);
    if (was && now < was.untilMs) return; // known; entries sent before we chose around it are still arriving
    // Reported again soon after its hold ended: the link is still cut, avoid it longer this time.
    const holdMs = was && now - was.untilMs < 2 * was.holdMs ? Math.min(maxDeadLinkHoldMs, was.holdMs * 2) : deadLinkHoldMs;
    this.dead.set(key, { between: [from, to], untilMs: now + holdMs, holdMs, reason, ended: false });
    this.nextExpiryMs = Math.min(this.nextExpiryMs, now + holdMs);
    this.refresh(`${reason}: link ${from}–${to} is avoided for ${Math.round(holdMs / 1000)} s`, true);
  }

  /** One of this edge's own links went down or came up: every destination is chosen again. */
  ownLinkChanged(neighbour: string, up: boolean): void {
    this.refresh(`the link to ${neighbour} is ${up ? 'up' : 'down'}`, !up);
  }

  /** What the chooser uses and avoids now (for status). */
  status(): { paths: Array<{ to: string; hops: string[] }>; avoided: AvoidedLink[] } {
    if (this.now() >= this.nextExpiryMs) this.expire();
    const paths = [...this.chosen].map(([to, hops]) => ({ to, hops: [...hops] })).sort((a, b) => a.to.localeCompare(b.to));
    const avoided: AvoidedLink[] = [...this.dead.values()].filter((d) => d.untilMs > this.now()).map((d) => ({ between: d.between, untilMs: d.untilMs, reason: d.reason }));
    return { paths, avoided };
  }

  /** A new network: the links and routes may differ, so choices start over (knowledge of dead links stays). */
  private sync(): void {
    const cfg = this.config();
    if (cfg?.version === this.version) return;
    this.version = cfg?.version;
    this.chosen.clear();
    const n = new Map<string, string[]>();
    for (const [a, b] of cfg?.links ?? []) {
      n.set(a, [...(n.get(a) ?? []), b].sort());
      n.set(b, [...(n.get(b) ?? []), a].sort());
    }
    this.neighbours = n;
  }

  /** Holds that ended: the route is tried again; a dead link is remembered a while after (to lengthen its next hold). */
  private expire(): void {
    const now = this.now();
    const ended: string[] = [];
    for (const [key, d] of this.dead) {
      if (now - d.untilMs >= 2 * d.holdMs) this.dead.delete(key);
      else if (d.untilMs <= now && !d.ended) {
        d.ended = true;
        ended.push(d.between.join('–'));
      }
    }
    const times = [...this.dead.values()].map((d) => (d.untilMs > now ? d.untilMs : d.untilMs + 2 * d.holdMs));
    this.nextExpiryMs = Math.min(Number.POSITIVE_INFINITY, ...times);
    if (ended.length > 0) this.refresh(`the hold on ${[...new Set(ended)].join(', ')} ended: trying the route again`, false);
  }

  private refresh(reason: string, resend: boolean): void {
    this.sync();
    for (const [to, previous] of [...this.chosen]) {
      const hops = this.compute(to);
      if (!hops) {
        this.chosen.delete(to);
        continue;
      }
      this.chosen.set(to, hops);
      if (hops.join('\u0000') !== previous.join('\u0000')) this.onChange({ to, hops, previous, reason, resend });
    }
  }

  private linkUsable(a: string, b: string): boolean {
    if (a === this.me) return this.isUp(b);
    if (b === this.me) return this.isUp(a);
    return (this.dead.get(linkKey(a, b))?.untilMs ?? 0) <= this.now();
  }

  private compute(to: string): string[] | undefined {
    const cfg = this.config();
    const route = cfg?.routes.find((r) => r.from === this.me && r.to === to);
    if (!cfg || !route) return undefined;
    if (to === this.me) return [this.me];
    const candidates = [route.hops, ...[...(route.alternates ?? [])].sort((x, y) => x.length - y.length)];
    const isCore = (r: string): boolean => cfg.relays[r]?.role === 'core';
    const usable = (a: string, b: string): boolean => this.linkUsable(a, b);
    const hops = candidates.find((h) => this.usable(h)) ?? shortestPath(this.me, to, this.neighbours, isCore, usable) ?? route.hops;
    invariant(hops[0] === this.me && hops.at(-1) === to && new Set(hops).size === hops.length, `path ${hops.join(' → ')} does not lead from ${this.me} to ${to} once`);
    return hops;
  }
}
