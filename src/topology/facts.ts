// What the reachable nodes of a topology say, read once per status: each site's node, its pairs of
// this topology, its consistency groups and volumes, and every pair as seen from both its ends.
// The read model (status.ts) and its parts (writer, agreement, loss, protection) are computed from
// these facts only, so they can be tested without nodes.
import type { NodeInfo, VolumeView } from '../contracts/node';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import type { SiteRole, TopologyContext } from './context';
import { type Topology, asyncVolumes, parsePairName } from './topology-file';

export interface SiteFacts {
  site: string;
  role: SiteRole;
  node: string;
  /** What the node said of itself; undefined when it did not answer. */
  info: NodeInfo | undefined;
  error: string | null;
  /** This topology's pairs at the site. */
  pairs: PairStatus[];
  groups: GroupStatus[];
  /** This topology's volumes that exist at the site. */
  volumes: VolumeView[];
}

/** One pair of the topology with the record each of its two sites holds (absent: no record, or the site did not answer). */
export interface PairEnds {
  name: string;
  volume: string;
  sites: [string, string];
  at: Map<string, PairStatus>;
}

export interface Facts {
  t: Topology;
  sites: SiteFacts[];
  pairs: PairEnds[];
}

export async function readFacts(ctx: TopologyContext): Promise<Facts> {
  await ctx.probe();
  const sites = await Promise.all(ctx.sites.map(async (s): Promise<SiteFacts> => {
    const base = { site: s.spec.site, role: s.role, node: s.spec.node, info: s.info, error: s.error ?? null };
    if (!s.info) return { ...base, pairs: [], groups: [], volumes: [] };
    try {
      const [pairs, groups, volumes] = await Promise.all([ctx.pairsAt(s), s.api.listGroups(), s.api.listVolumes()]);
      const names = new Set(ctx.t.volumes.map((v) => v.name));
      return { ...base, pairs, groups: groups.filter((g) => g.group === ctx.t.name), volumes: volumes.filter((v) => names.has(v.name)) };
    } catch (err) {
      // Answered the probe but not the reads: as good as unreachable for this status.
      return { ...base, info: undefined, error: err instanceof Error ? err.message : String(err), pairs: [], groups: [], volumes: [] };
    }
  }));
  return { t: ctx.t, sites, pairs: pairEnds(ctx.t, sites) };
}

function pairEnds(t: Topology, sites: SiteFacts[]): PairEnds[] {
  const byName = new Map<string, PairEnds>();
  for (const s of sites) {
    for (const p of s.pairs) {
      const parsed = parsePairName(t, p.name);
      if (!parsed) continue;
      let ends = byName.get(p.name);
      if (!ends) {
        ends = { name: p.name, volume: parsed.volume, sites: [parsed.sites[0], parsed.sites[1]], at: new Map() };
        byName.set(p.name, ends);
      }
      ends.at.set(s.site, p);
    }
  }
  return [...byName.values()].sort((a, b) => a.name.localeCompare(b.name));
}

export function siteFacts(f: Facts, site: string): SiteFacts {
  const s = f.sites.find((x) => x.site === site);
  if (!s) throw new Error(`no site ${site} in topology ${f.t.name}`);
  return s;
}

export function reachable(f: Facts, site: string): boolean {
  return siteFacts(f, site).info !== undefined;
}

/** The site whose node has this name (as pair records name their peers). */
export function siteOfNode(f: Facts, node: string): string | undefined {
  return f.sites.find((s) => s.info?.name === node)?.site ??
    // An unreachable site's node name is not known from the probe: pairs that name it do.
    f.pairs.flatMap((e) => [...e.at.entries()].filter(([, p]) => p.peer.node === node).map(([at]) => e.sites.find((x) => x !== at)!))[0];
}

export function otherEnd(e: PairEnds, site: string): string {
  return e.sites[0] === site ? e.sites[1] : e.sites[0];
}

/** The volumes the topology's layout keeps at a site (a log/data layout keeps only the logs at the async site). */
export function volumesKeptAt(f: Facts, site: string): string[] {
  const s = siteFacts(f, site);
  return (s.role === 'async' ? asyncVolumes(f.t) : f.t.volumes).map((v) => v.name);
}
