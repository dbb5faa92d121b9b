// The read model of a topology: where the application runs, every copy (leg) as both its ends
// report it, whether they agree, what a failover to each site would lose now, and which
// protection is missing. Computed from what the reachable nodes say (facts.ts); nothing here
// changes a node.
import type { DeltaMethod, PairStatus } from '../contracts/pairs';
import { type EndsState, type PairAgreement, checkAgreement } from './agreement';
import type { TopologyContext } from './context';
import { type Facts, type PairEnds, readFacts, siteFacts } from './facts';
import { type LossClaim, lossAt } from './loss';
import { type MissingProtection, missingProtection } from './protection';
import { asyncVolumes } from './topology-file';
import { type Writer, activeSite, lastWriter, writableVolumes } from './writer';

export type { LossClaim, LossKind } from './loss';
export type { MissingProtection } from './protection';
export type { PairAgreement } from './agreement';
export type { Writer } from './writer';

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
  /** Whether both ends agree on the pair (see agreement.ts). */
  ends: EndsState;
  /** The last delta copy into `to`: how it chose what to send, how much it sent, why. */
  deltaMethod: DeltaMethod | null;
  deltaBytes: number | null;
  deltaNote: string | null;
}

export interface SiteStatus {
  site: string;
  role: string;
  node: string;
  reachable: boolean;
  error: string | null;
  /** Volumes of the topology whose role lets hosts write them here (a fence is shown apart). */
  writable: string[];
  /** Why hosts' writes are refused here now although the roles allow them (fence data), or null. */
  fenced: string | null;
  /** What a failover to this site would lose right now (see loss.ts). */
  atRisk: LossClaim;
  /** Per volume: the delta record this site keeps for a delta resync of the async site, if any. */
  deltaRecords: Array<{ volume: string; usable: boolean; text: string }>;
  /** How a failover here would rebuild the async copy: from sequence numbers, or by comparing whole volumes. */
  deltaResync: { method: DeltaMethod; why: string } | null;
  /** The identity of the site's data directory (NodeInfo.dataDirId), when it answers. */
  dataDirId: string | null;
}

export interface TopologyStatus {
  name: string;
  layout: string;
  /** The site where the application can run (its volumes are writable), or null. */
  activeSite: string | null;
  /** The site holding the newest writes: the active site, or the one the survivors' copies follow. */
  writer: Writer;
  sites: SiteStatus[];
  legs: LegStatus[];
  /** Pairs whose ends were compared and disagree, or could not be compared. */
  pairs: PairAgreement[];
  /** Every protection missing now; empty exactly when healthy. */
  missing: MissingProtection[];
  healthy: boolean;
}

export async function topologyStatus(ctx: TopologyContext): Promise<TopologyStatus> {
  return statusFromFacts(await readFacts(ctx), ctx.clock.now());
}

export function statusFromFacts(f: Facts, now: number): TopologyStatus {
  const active = activeSite(f);
  const writer = lastWriter(f, active);
  const agreements = f.pairs.map((e) => checkAgreement(f, e, active));
  const legs = f.pairs.map((e) => legOf(e, agreements.find((a) => a.pair === e.name)!.state)).filter((l): l is LegStatus => l !== undefined);
  const writerNode = writer.site ? siteFacts(f, writer.site).info?.name ?? nodeNamedBy(f, writer.site) : undefined;
  const sites: SiteStatus[] = f.sites.map((s) => ({
    site: s.site, role: s.role, node: s.node, reachable: s.info !== undefined, error: s.error,
    writable: s.info ? writableVolumes(f, s) : [],
    fenced: s.volumes.find((v) => v.hostWrites.state === 'refused')?.hostWrites.reason ?? null,
    atRisk: lossAt(f, s.site, writer),
    deltaRecords: deltaRecordsAt(s.pairs, writerNode),
    deltaResync: s.site === writer.site || !s.info ? null : deltaResyncAt(f, s.pairs, s.role, writerNode),
    dataDirId: s.info?.dataDirId ?? null,
  }));
  const missing = missingProtection(f, active, writer, legs, agreements, now);
  return {
    name: f.t.name, layout: f.t.layout, activeSite: active, writer, sites, legs,
    pairs: agreements.filter((a) => a.state !== 'agree'), missing, healthy: missing.length === 0,
  };
}

/** A leg as its primary end reports it (the secondary's view when the primary does not answer). */
function legOf(e: PairEnds, ends: EndsState): LegStatus | undefined {
  const records = [...e.at.entries()];
  const [site, p] = records.find(([, x]) => x.role === 'primary') ?? records[0] ?? [];
  if (!site || !p) return undefined;
  const other = e.sites[0] === site ? e.sites[1] : e.sites[0];
  const from = p.role === 'primary' ? site : other;
  return {
    pair: e.name, volume: e.volume, from, to: from === site ? other : site, mode: p.mode, fence: p.fence, state: p.state, code: p.code,
    progressPercent: p.progressPercent, lagSeconds: p.lag?.seconds ?? null, lagBytes: p.lag && p.role === 'primary' ? p.lag.bytes : null,
    reason: p.reason, ends, deltaMethod: p.role === 'primary' ? p.deltaMethod : null, deltaBytes: p.role === 'primary' ? p.deltaBytes : null,
    deltaNote: p.role === 'primary' ? p.deltaNote : null,
  };
}

function nodeNamedBy(f: Facts, site: string): string | undefined {
  for (const e of f.pairs) {
    if (!e.sites.includes(site)) continue;
    for (const [at, p] of e.at) if (at !== site) return p.peer.node;
  }
  return undefined;
}

/** Delta records follow the stream of the site holding the newest writes; others are history. */
function deltaRecordsAt(pairs: PairStatus[], writerNode: string | undefined): SiteStatus['deltaRecords'] {
  const out = new Map<string, SiteStatus['deltaRecords'][number]>();
  for (const p of pairs) {
    if (!p.deltaRecord || out.has(p.volume)) continue;
    if (writerNode !== undefined && p.deltaRecord.origin !== writerNode) continue;
    out.set(p.volume, { volume: p.volume, usable: p.deltaRecord.usable, text: p.deltaRecord.text });
  }
  return [...out.values()].sort((a, b) => a.volume.localeCompare(b.volume));
}

/**
 * How a failover to a site that keeps delta records (the sync site of a multi-target topology, the
 * primary of a cascade) would bring the async site up to date: 'sequence' when every async volume
 * has a usable record of the writer's stream, else 'compare' (checksums of the whole volumes).
 */
function deltaResyncAt(f: Facts, pairs: PairStatus[], role: string, writerNode: string | undefined): SiteStatus['deltaResync'] {
  if (role === 'async' || writerNode === undefined) return null;
  const volumes = asyncVolumes(f.t).map((v) => v.name);
  const records = volumes.map((v) => pairs.find((p) => p.volume === v && p.deltaRecord?.origin === writerNode)?.deltaRecord ?? null);
  if (records.every((r) => r === null) && role !== 'sync') return null;
  const unusable = volumes.map((v, i) => ({ v, r: records[i] })).filter(({ r }) => !r || !r.usable);
  if (unusable.length === 0) return { method: 'sequence', why: `its delta records cover ${writerNode}'s stream for ${volumes.join(', ')}` };
  return {
    method: 'compare',
    why: unusable.map(({ v, r }) => `${v}: ${r ? r.text : `no delta record of ${writerNode}'s stream here`}`).join('; '),
  };
}
