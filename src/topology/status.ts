// The read model of a topology: where the application runs, every copy (leg) as the nodes report
// it, and what a failover to each site would lose now. Computed from what the reachable nodes say;
// nothing here changes a node.
import type { VolumeView } from '../contracts/node';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import type { Site, TopologyContext } from './context';
import { parsePairName } from './topology-file';

export interface LegStatus {
  pair: string;
  volume: string;
  from: string;
  to: string;
  mode: 'sync' | 'async';
  fence: 'data' | 'never';
  state: string;
  code: string;
  progressPercent: number | null;
  lagSeconds: number | null;
  lagBytes: number | null;
  reason: string;
}

export interface SiteStatus {
  site: string;
  role: string;
  node: string;
  reachable: boolean;
  error: string | null;
  /** Volumes of the topology hosts may write here now. */
  writable: string[];
  /** What a failover to this site would lose right now, as far as the reachable nodes tell. */
  atRisk: { bytes: number | null; seconds: number | null; text: string };
  /** Per volume: the delta record this site keeps for a delta resync of the async site, if any. */
  deltaRecords: Array<{ volume: string; usable: boolean; text: string }>;
}

export interface TopologyStatus {
  name: string;
  layout: string;
  /** The site where the application can run (its volumes are writable), or null. */
  activeSite: string | null;
  sites: SiteStatus[];
  legs: LegStatus[];
  healthy: boolean;
}

/** What each reachable site holds: its topology pairs, its groups and its writable volumes. */
interface SiteViews {
  pairs: Map<string, PairStatus[]>;
  groups: Map<string, GroupStatus[]>;
  writable: Map<string, string[]>;
}

export async function topologyStatus(ctx: TopologyContext): Promise<TopologyStatus> {
  await ctx.probe();
  const { pairs: views, groups, writable: writableVolumes } = await readSites(ctx);
  const legList = legsOf(ctx, views);
  const active = activeSite(ctx, views, writableVolumes);
  // Delta records follow the stream of the site where the application runs; others are history.
  const activeNode = ctx.sites.find((s) => s.spec.site === active)?.info?.name;
  const siteStatuses: SiteStatus[] = ctx.sites.map((s) => ({
    site: s.spec.site,
    role: s.role,
    node: s.spec.node,
    reachable: s.info !== undefined,
    error: s.error ?? null,
    writable: writableVolumes.get(s.spec.site) ?? [],
    atRisk: atRisk(ctx, s.spec.site, active, legList, groups),
    deltaRecords: deltaRecordsAt((views.get(s.spec.site) ?? []), activeNode),
  }));
  const healthy = legList.length > 0 && legList.every((l) => l.code === 'PAIR') && active !== null;
  return { name: ctx.t.name, layout: ctx.t.layout, activeSite: active, sites: siteStatuses, legs: legList, healthy };
}

async function readSites(ctx: TopologyContext): Promise<SiteViews> {
  const views = new Map<string, PairStatus[]>();
  const groups = new Map<string, GroupStatus[]>();
  const writableVolumes = new Map<string, string[]>();
  for (const s of ctx.sites) {
    if (!s.info) continue;
    views.set(s.spec.site, await ctx.pairsAt(s).catch(() => []));
    groups.set(s.spec.site, await s.api.listGroups().catch((): GroupStatus[] => []));
    const volumes = await s.api.listVolumes().catch((): VolumeView[] => []);
    const mine = views.get(s.spec.site)!;
    writableVolumes.set(s.spec.site, ctx.t.volumes.filter((v) => volumes.some((x) => x.name === v.name) && volumeWritable(ctx, v.name, mine)).map((v) => v.name));
  }
  return { pairs: views, groups, writable: writableVolumes };
}

/** Legs, as seen from the primary side when it answers. */
function legsOf(ctx: TopologyContext, views: Map<string, PairStatus[]>): LegStatus[] {
  const legs = new Map<string, LegStatus>();
  for (const [site, pairs] of views) {
    for (const p of pairs) {
      const parsed = parsePairName(ctx.t, p.name);
      if (!parsed) continue;
      const other = parsed.sites[0] === site ? parsed.sites[1] : parsed.sites[0];
      const from = p.role === 'primary' ? site : other;
      const to = p.role === 'primary' ? other : site;
      if (legs.has(p.name) && p.role !== 'primary') continue;
      legs.set(p.name, {
        pair: p.name, volume: parsed.volume, from, to, mode: p.mode, fence: p.fence, state: p.state, code: p.code, progressPercent: p.progressPercent,
        lagSeconds: p.lag?.seconds ?? null, lagBytes: p.lag && p.role === 'primary' ? p.lag.bytes : null, reason: p.reason,
      });
    }
  }
  return [...legs.values()].sort((a, b) => a.pair.localeCompare(b.pair));
}

/**
 * Where the application can run. Right after a failed primary returns, it may look writable for
 * a moment (until it learns it was taken over): the site with the newer pair generations wins.
 * Ties are between sites whose volumes have no pairs left: only the async site gets there by
 * taking over (Fig. 13); the sync site keeps its taken-over pairs (Fig. 10), so it is without
 * pairs only because a command dissolved them (step 1101, 1402) and the async site wins.
 */
function activeSite(ctx: TopologyContext, views: Map<string, PairStatus[]>, writableVolumes: Map<string, string[]>): string | null {
  const allVolumes = ctx.t.volumes.map((v) => v.name);
  const candidates = ctx.sites.filter((s) => s.info && allVolumes.every((v) => writableVolumes.get(s.spec.site)?.includes(v)));
  const roleRank = { primary: 0, sync: 0.25, async: 0.5 } as const;
  const rank = (s: Site): number => (views.get(s.spec.site) ?? []).reduce((n, p) => n + p.generation, 0) + roleRank[s.role];
  return candidates.sort((a, b) => rank(b) - rank(a))[0]?.spec.site ?? null;
}

function volumeWritable(ctx: TopologyContext, volume: string, pairs: PairStatus[]): boolean {
  const mine = pairs.filter((p) => parsePairName(ctx.t, p.name)?.volume === volume);
  return mine.every((p) => (p.role === 'primary' && !(p.code === 'PSUE' && p.suspendCause === 'takeover-by-peer')) || p.code === 'SSWS');
}

function deltaRecordsAt(pairs: PairStatus[], activeNode: string | undefined): SiteStatus['deltaRecords'] {
  const out = new Map<string, SiteStatus['deltaRecords'][number]>();
  for (const p of pairs) {
    if (!p.deltaRecord || out.has(p.volume)) continue;
    if (activeNode !== undefined && p.deltaRecord.origin !== activeNode) continue;
    out.set(p.volume, { volume: p.volume, usable: p.deltaRecord.usable, text: p.deltaRecord.text });
  }
  return [...out.values()].sort((a, b) => a.volume.localeCompare(b.volume));
}

/** What a failover to `site` would lose now: nothing when it is in step, else the leg's backlog. */
function atRisk(ctx: TopologyContext, site: string, active: string | null, legs: LegStatus[], groups: Map<string, GroupStatus[]>): SiteStatus['atRisk'] {
  if (site === active) return { bytes: 0, seconds: 0, text: 'none (the application runs here)' };
  const incoming = legs.filter((l) => l.to === site);
  if (incoming.length === 0) return { bytes: null, seconds: null, text: active ? 'everything: no copy reaches this site' : 'unknown: no site is active' };
  const syncLegs = incoming.filter((l) => l.mode === 'sync');
  const asyncLegs = incoming.filter((l) => l.mode === 'async');
  if (syncLegs.length > 0 && asyncLegs.length === 0) {
    if (syncLegs.every((l) => l.code === 'PAIR')) return { bytes: 0, seconds: 0, text: 'nothing (sync copy in step)' };
    // Fence data: the primary refused every write it could not copy here (a failure suspends as
    // PSUE; an operator's split, PSUS, lets writes go on without this site).
    if (syncLegs.every((l) => l.code === 'PAIR' || (l.code === 'PSUE' && l.fence === 'data'))) {
      return { bytes: 0, seconds: 0, text: 'nothing acknowledged (fence data: writes this site did not get were refused)' };
    }
    return { bytes: null, seconds: null, text: `writes since the sync copy was suspended (${syncLegs.filter((l) => l.code !== 'PAIR').map((l) => `${l.volume} ${l.code}`).join(', ')})` };
  }
  // The legs of one consistency group report the group's lag: take it once, not per leg.
  const lagBytes = asyncLegs.reduce((m, l) => Math.max(m, l.lagBytes ?? 0), 0);
  const lagSeconds = asyncLegs.reduce((m, l) => Math.max(m, l.lagSeconds ?? 0), 0);
  const known = asyncLegs.every((l) => l.lagBytes !== null);
  if (!asyncLegs.every((l) => l.code === 'PAIR')) {
    return { bytes: null, seconds: null, text: `the async copy is not in step (${asyncLegs.map((l) => `${l.volume} ${l.code}`).join(', ')})` };
  }
  const receivedBacklog = [...groups.values()].flat().filter((g) => g.group === ctx.t.name && g.role === 'secondary')
    .reduce((n, g) => n + g.lag.entries, 0);
  return known
    ? { bytes: lagBytes, seconds: lagSeconds, text: `${formatMiB(lagBytes)} / ${lagSeconds.toFixed(1)} s of writes not yet applied there` }
    : { bytes: null, seconds: null, text: `unknown (primary unreachable); ${receivedBacklog} received entries still to apply` };
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
