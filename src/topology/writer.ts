// Which site accepts the application's writes now (the active site), and which site accepted them
// last when no reachable site does: every loss a status reports is counted against that site.
import type { PairStatus } from '../contracts/pairs';
import { type Facts, type PairEnds, type SiteFacts, otherEnd, reachable, siteFacts } from './facts';
import { parsePairName } from './topology-file';

export interface Writer {
  /** The site that holds the newest writes, or null when no fact names one. */
  site: string | null;
  reachable: boolean;
  /** Why this site (for status and messages). */
  basis: string;
}

/**
 * Where the application can run: a reachable site whose copies of all the topology's volumes accept
 * writes by their role. Right after a failed primary returns it may look writable for a moment
 * (until it learns it was taken over): the site with the newer pair generations wins. Ties are
 * between sites whose volumes have no pairs left: only the async site gets there by taking over
 * (Fig. 13); the sync site keeps its taken-over pairs (Fig. 10), so it is without pairs only
 * because a command dissolved them (step 1101, 1402) and the async site wins.
 */
export function activeSite(f: Facts): string | null {
  const candidates = f.sites.filter((s) => s.info && f.t.volumes.every((v) => writableByRole(f, s, v.name)) && !dissolvedByPeers(f, s));
  const roleRank = { primary: 0, sync: 0.25, async: 0.5 } as const;
  const rank = (s: SiteFacts): number => s.pairs.reduce((n, p) => n + p.generation, 0) + roleRank[s.role];
  return candidates.sort((a, b) => rank(b) - rank(a))[0]?.site ?? null;
}

/**
 * A primary whose pair a reachable peer no longer holds, on the data directory the pair was built
 * with and with the volume still there, was taken over while it was away: the peer dissolved the
 * pair after its takeover (steps 1101, 1402) and the application moved on. Such a site has not
 * learnt it yet (its side looks like a suspended primary) and is not where the application runs.
 */
function dissolvedByPeers(f: Facts, s: SiteFacts): boolean {
  return f.pairs.some((e) => {
    const mine = e.at.get(s.site);
    if (!mine || mine.role !== 'primary') return false;
    const peer = siteFacts(f, otherEnd(e, s.site));
    if (!peer.info || e.at.has(peer.site)) return false;
    if (mine.peerDataDirId && peer.info.dataDirId !== mine.peerDataDirId) return false;
    return peer.volumes.some((v) => v.name === mine.peer.volume);
  });
}

/** Volumes of the topology that hosts may write at `s` by the roles of its pairs (a fence is not counted). */
export function writableVolumes(f: Facts, s: SiteFacts): string[] {
  return f.t.volumes.filter((v) => writableByRole(f, s, v.name)).map((v) => v.name);
}

function writableByRole(f: Facts, s: SiteFacts, volume: string): boolean {
  const view = s.volumes.find((v) => v.name === volume);
  if (!view) return false;
  const mine = s.pairs.filter((p) => parsePairName(f.t, p.name)?.volume === volume);
  // A former secondary left read-only when its pair was dissolved (Fig. 14 step 1405 leaves the
  // sync site so) holds its old primary's image, not the application's writes.
  if (mine.length === 0 && view.detachedSecondary) return false;
  return mine.every((p) => (p.role === 'primary' && !(p.code === 'PSUE' && p.suspendCause === 'takeover-by-peer')) || p.code === 'SSWS');
}

/**
 * The active site; else the site the survivors' copies follow: the primary their pairs name (or
 * the peer that took a pair over from them), the newest generation winning.
 */
export function lastWriter(f: Facts, active: string | null): Writer {
  if (active !== null) return { site: active, reachable: true, basis: `its volumes accept writes` };
  let best: { site: string; generation: number; by: string } | undefined;
  for (const e of f.pairs) {
    const halted = interruptedSwap(e);
    if (halted) {
      if (!best || halted.generation > best.generation) best = { ...halted, by: halted.site };
      continue;
    }
    for (const [at, p] of e.at) {
      const claim = upstreamOf(e.sites, at, p);
      if (claim && (!best || claim.generation > best.generation)) best = { ...claim, by: at };
    }
  }
  for (const s of f.sites) {
    for (const v of s.volumes) {
      // A former secondary left read-only follows the primary it had.
      const d = v.detachedSecondary;
      const from = d ? parsePairName(f.t, d.pair)?.sites.find((x) => x !== s.site) : undefined;
      if (d && from && s.pairs.every((p) => parsePairName(f.t, p.name)?.volume !== v.name) && (!best || d.generation > best.generation)) {
        best = { site: from, generation: d.generation, by: s.site };
      }
    }
  }
  if (!best) return { site: null, reachable: false, basis: 'no site accepts writes and no copy names the site it follows' };
  // Generations of different pairs do not compare: a site named so may itself have been left
  // read-only behind another (a Fig. 13 failover away from it, which swaps first), and then that
  // other site wrote after it (sim seed 194: tokyo followed osaka, osaka followed sapporo, which
  // ran the application; failback copied osaka's image over sapporo's writes).
  for (const seen = new Set<string>(); !seen.has(best.site);) {
    seen.add(best.site);
    const next = followedBy(f, best.site);
    if (next === undefined) break;
    best = { site: next, generation: best.generation, by: best.site };
  }
  return { site: best.site, reachable: reachable(f, best.site), basis: `${best.by}'s copies follow it, pair generation ${best.generation}` };
}

/** The site a reachable site's volumes were left read-only behind, when all of them were (none is writable there). */
function followedBy(f: Facts, site: string): string | undefined {
  const s = siteFacts(f, site);
  if (!s.info) return undefined;
  const from = new Set<string>();
  for (const v of s.volumes) {
    const d = v.detachedSecondary;
    const other = d ? parsePairName(f.t, d.pair)?.sites.find((x) => x !== site) : undefined;
    if (!other || s.pairs.some((p) => parsePairName(f.t, p.name)?.volume === v.name)) return undefined;
    from.add(other);
  }
  return from.size === 1 ? [...from][0] : undefined;
}

/**
 * Both ends secondaries: a planned swap stopped after the old primary stepped down (its generation
 * went up) and before the new one took over. The end with the newer generation wrote last (a swap
 * there finishes it); equal generations name no one.
 */
export function interruptedSwap(e: PairEnds): { site: string; generation: number } | undefined {
  const ends = [...e.at.entries()];
  if (ends.length !== 2 || !ends.every(([, p]) => p.role === 'secondary' && p.code !== 'SSWS')) return undefined;
  const [[a, pa], [b, pb]] = ends as [[string, PairStatus], [string, PairStatus]];
  if (pa.generation === pb.generation) return undefined;
  return pa.generation > pb.generation ? { site: a, generation: pa.generation } : { site: b, generation: pb.generation };
}

function upstreamOf(sites: [string, string], at: string, p: PairStatus): { site: string; generation: number } | undefined {
  const other = otherEnd({ name: p.name, volume: p.volume, sites, at: new Map() }, at);
  if (p.role === 'secondary' && p.code !== 'SSWS') return { site: other, generation: p.generation };
  // The peer took this pair over: it wrote after this side did.
  if (p.role === 'primary' && p.suspendCause === 'takeover-by-peer') return { site: other, generation: p.generation + 1 };
  return undefined;
}
