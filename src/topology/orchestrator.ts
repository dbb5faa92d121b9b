// Three-data-centre procedures of spec 001 over the nodes' control APIs: apply a topology, report
// it, fail over to the sync or async site (Figs. 10, 13, 14), repair around a lost site, and fail
// back (Figs. 11, 12, 15, 16). Every step checks whether the current state already satisfies it,
// so a command interrupted anywhere converges when it is run again.
import { TricopyError, errorMessage } from '../common/errors';
import { HttpNodeClient } from '../node/api-client';
import type { NodeClient } from '../contracts/node-client';
import type { NodeInfo, VolumeView } from '../contracts/node';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import { type SiteSpec, type Topology, type TopologyVolume, asyncVolumes, pairName, parsePairName } from './topology-file';

export interface Printer {
  (line: string): void;
}

interface Site {
  role: 'primary' | 'sync' | 'async';
  spec: SiteSpec;
  api: NodeClient;
  info: NodeInfo | undefined;
  error: string | undefined;
}

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

export interface RunOptions {
  token?: string | undefined;
  print: Printer;
  /** Seconds to wait for copies to finish (0 = do not wait). */
  waitSeconds: number;
}

const stepTimeoutMs = 30_000;
const probeTimeoutMs = 5000;
/** Takeover and swap apply or drain a journal first. */
const commandTimeoutMs = 600_000;

export class Orchestrator {
  private readonly sites: Site[];
  private stepNo = 0;

  constructor(private readonly t: Topology, private readonly options: RunOptions) {
    const make = (role: Site['role'], spec: SiteSpec): Site => ({ role, spec, api: new HttpNodeClient(spec.node, options.token, stepTimeoutMs), info: undefined, error: undefined });
    this.sites = [make('primary', t.primary), make('sync', t.sync), make('async', t.async)];
  }

  // ----------------------------------------------------------------------------------------------
  // Status

  async status(): Promise<TopologyStatus> {
    await this.probe();
    const views = new Map<string, PairStatus[]>();
    const groups = new Map<string, GroupStatus[]>();
    const writableVolumes = new Map<string, string[]>();
    for (const s of this.sites) {
      if (!s.info) continue;
      views.set(s.spec.site, await this.pairsAt(s).catch(() => []));
      groups.set(s.spec.site, await s.api.listGroups().catch((): GroupStatus[] => []));
      const volumes = await s.api.listVolumes().catch((): VolumeView[] => []);
      const mine = views.get(s.spec.site)!;
      writableVolumes.set(s.spec.site, this.t.volumes.filter((v) => volumes.some((x) => x.name === v.name) && this.volumeWritable(v.name, mine)).map((v) => v.name));
    }
    // Legs, as seen from the primary side when it answers.
    const legs = new Map<string, LegStatus>();
    for (const [site, pairs] of views) {
      for (const p of pairs) {
        const parsed = parsePairName(this.t, p.name);
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
    const legList = [...legs.values()].sort((a, b) => a.pair.localeCompare(b.pair));
    const allVolumes = this.t.volumes.map((v) => v.name);
    // Where the application can run. Right after a failed primary returns, it may look writable for
    // a moment (until it learns it was taken over): the site with the newer pair generations wins.
    // Ties are between sites whose volumes have no pairs left: only the async site gets there by
    // taking over (Fig. 13); the sync site keeps its taken-over pairs (Fig. 10), so it is without
    // pairs only because a command dissolved them (step 1101, 1402) and the async site wins.
    const candidates = this.sites.filter((s) => s.info && allVolumes.every((v) => writableVolumes.get(s.spec.site)?.includes(v)));
    const roleRank = { primary: 0, sync: 0.25, async: 0.5 } as const;
    const rank = (s: Site): number => (views.get(s.spec.site) ?? []).reduce((n, p) => n + p.generation, 0) + roleRank[s.role];
    const active = candidates.sort((a, b) => rank(b) - rank(a))[0]?.spec.site ?? null;
    // Delta records follow the stream of the site where the application runs; others are history.
    const activeNode = this.sites.find((s) => s.spec.site === active)?.info?.name;
    const siteStatuses: SiteStatus[] = this.sites.map((s) => ({
      site: s.spec.site,
      role: s.role,
      node: s.spec.node,
      reachable: s.info !== undefined,
      error: s.error ?? null,
      writable: writableVolumes.get(s.spec.site) ?? [],
      atRisk: this.atRisk(s.spec.site, active, legList, groups),
      deltaRecords: this.deltaRecordsAt((views.get(s.spec.site) ?? []), activeNode),
    }));
    const healthy = legList.length > 0 && legList.every((l) => l.code === 'PAIR') && active !== null;
    return { name: this.t.name, layout: this.t.layout, activeSite: active, sites: siteStatuses, legs: legList, healthy };
  }

  private deltaRecordsAt(pairs: PairStatus[], activeNode: string | undefined): SiteStatus['deltaRecords'] {
    const out = new Map<string, SiteStatus['deltaRecords'][number]>();
    for (const p of pairs) {
      if (!p.deltaRecord || out.has(p.volume)) continue;
      if (activeNode !== undefined && p.deltaRecord.origin !== activeNode) continue;
      out.set(p.volume, { volume: p.volume, usable: p.deltaRecord.usable, text: p.deltaRecord.text });
    }
    return [...out.values()].sort((a, b) => a.volume.localeCompare(b.volume));
  }

  /** What a failover to `site` would lose now: nothing when it is in step, else the leg's backlog. */
  private atRisk(site: string, active: string | null, legs: LegStatus[], groups: Map<string, GroupStatus[]>): SiteStatus['atRisk'] {
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
    const receivedBacklog = [...groups.values()].flat().filter((g) => g.group === this.t.name && g.role === 'secondary')
      .reduce((n, g) => n + g.lag.entries, 0);
    return known
      ? { bytes: lagBytes, seconds: lagSeconds, text: `${formatMiB(lagBytes)} / ${lagSeconds.toFixed(1)} s of writes not yet applied there` }
      : { bytes: null, seconds: null, text: `unknown (primary unreachable); ${receivedBacklog} received entries still to apply` };
  }

  // ----------------------------------------------------------------------------------------------
  // Apply

  async apply(): Promise<void> {
    this.header(`apply topology ${this.t.name} (${this.t.layout}; spec 001 Fig. 3)`);
    await this.probe();
    for (const s of this.sites) if (!s.info) throw new TricopyError('unavailable', `site ${s.spec.site} (${s.spec.node}) is not reachable: ${s.error}`);
    const status = await this.status();
    if (status.activeSite !== null && status.activeSite !== this.t.primary.site) {
      throw new TricopyError('conflict', `topology ${this.t.name} runs at ${status.activeSite} after a failover`,
        `bring it back with: tricopy topology failback <file> --to ${this.t.primary.site}`);
    }
    const primary = this.site('primary');
    const sync = this.site('sync');
    const far = this.site('async');
    this.step('create the volumes at the primary site');
    for (const v of this.t.volumes) await this.ensureVolume(primary, v);
    if (this.t.layout === 'multi-target') {
      this.step(`step 310: sync copy ${primary.spec.site} → ${sync.spec.site} of every volume (fence ${this.t.sync.fence})`);
      for (const v of this.t.volumes) await this.ensurePair(primary, sync, v, 'sync', 'full');
      this.step(`step 305: async copy ${primary.spec.site} → ${far.spec.site} of ${this.t.logLayout ? 'the log volumes' : 'every volume'} in consistency group ${this.t.name}`);
      for (const v of asyncVolumes(this.t)) await this.ensurePair(primary, far, v, 'async', 'full');
    } else {
      this.step(`cascade: sync copy ${primary.spec.site} → ${sync.spec.site} of every volume (fence ${this.t.sync.fence})`);
      for (const v of this.t.volumes) await this.ensurePair(primary, sync, v, 'sync', 'full');
      this.step(`cascade: ${sync.spec.site} forwards ${this.t.logLayout ? 'the log volumes' : 'every volume'} asynchronously to ${far.spec.site} in group ${this.t.name}`);
      for (const v of asyncVolumes(this.t)) await this.ensurePair(sync, far, v, 'async', 'full');
    }
    await this.waitAll('step 306: wait until every copy is duplex');
  }

  // ----------------------------------------------------------------------------------------------
  // Failover

  async failover(to: string, newestFrom: string | undefined): Promise<void> {
    await this.probe();
    const target = this.siteByName(to);
    if (!target.info) throw new TricopyError('unavailable', `site ${to} is not reachable: ${target.error}`);
    const primary = this.site('primary');
    const sync = this.site('sync');
    const far = this.site('async');
    const status = await this.status();
    // A rerun (the target is already writable, perhaps because an earlier run was interrupted)
    // goes through every step again: each one skips what is done, so the copies the first run did
    // not create yet are created now. The site the application came from is then the primary's.
    const rerun = status.activeSite === to;
    const from = status.activeSite && !rerun ? this.siteByName(status.activeSite) : primary;
    const planned = !rerun && from.info !== undefined && status.activeSite !== null;
    if (target === primary) {
      throw new TricopyError('invalid-argument', `${to} is the primary site: to bring the application back there use failback; to route around a lost site use repair`);
    }
    if (rerun) this.print(`the application already runs at ${to}: checking that every step of the failover is done`);
    if (newestFrom !== undefined) {
      const source = this.siteByName(newestFrom);
      if (target.role !== 'async' || source.role !== 'sync') {
        throw new TricopyError('invalid-argument', '--newest-from takes the sync site and is used with a failover to the async site (Fig. 14)');
      }
      if (!source.info) {
        throw new TricopyError('unavailable', `cannot take the newest data from ${newestFrom}: it is not reachable (${source.error})`,
          `fail over with the async site's own consistent copy instead: tricopy topology failover <file> --to ${to}`);
      }
      const reversed = await Promise.all(asyncVolumes(this.t).map(async (v) => (await this.pairAt(far, pairName(this.t, v.name, sync.spec.site, far.spec.site)))?.role === 'primary'));
      const sourceWritable = status.sites.find((x) => x.site === newestFrom)!.writable.length === this.t.volumes.length;
      if (rerun && !reversed.every(Boolean) && !sourceWritable) {
        // Fig. 14 makes the sync site writable before it detaches the async site; without that,
        // the async site runs on its own copy (Fig. 13) and its writes would be overwritten.
        throw new TricopyError('conflict', `${to} already runs on its own copy (Fig. 13) while ${newestFrom} still holds the old primary's copy: ` +
          `making ${to} identical to ${newestFrom} now would discard the writes made at ${to}`,
          `keep running at ${to}; bring the other sites back with: tricopy topology failback <file> --to ${this.t.primary.site}`);
      }
    }
    if (this.t.layout === 'cascade') return this.failoverCascade(target, from, planned);
    if (target === sync) {
      this.header(`failover of ${this.t.name} to the sync site ${to} (spec 001 Fig. 10)${planned ? `; ${from.spec.site} is reachable: planned switchover` : ''}`);
      await this.makePrimaryAt(sync, from, planned, 'steps 1001–1002', true);
      this.step(`step 1003: the application may start at ${to} (its volumes accept writes)`);
      await this.detachAsyncSite(far, from, 'step 1004');
      if (far.info) {
        this.step(`steps 1005–1007: async copy ${to} → ${far.spec.site}, sending only what ${far.spec.site} is missing (delta resync)`);
        for (const v of asyncVolumes(this.t)) await this.ensurePair(sync, far, v, 'async', 'delta');
        await this.waitAll('wait until the async copy is duplex');
      } else {
        this.print(`  ${far.spec.site} is not reachable: steps 1005–1007 skipped; run topology repair when it returns`);
      }
      return;
    }
    if (target === far && newestFrom === undefined) {
      this.header(`failover of ${this.t.name} to the async site ${to} with its own consistent copy (spec 001 Fig. 13)`);
      await this.detachAsyncSite(far, from, 'steps 1301–1302');
      this.step(`step 1303: the application may start at ${to}; run its recovery (writes not yet applied there are lost)`);
      return;
    }
    if (target === far) {
      this.header(`failover of ${this.t.name} to the async site ${to} with the newest data from ${newestFrom} (spec 001 Fig. 14)`);
      this.step(`step 1401: ${newestFrom} and ${to} can communicate`);
      // A rerun after an interruption may find the sync site already writable: the old primary is
      // then still the site the async copies came from.
      if (from === sync) this.print(`  steps 1402–1403: ${sync.spec.site}'s copies are already writable`);
      else await this.makePrimaryAt(sync, from, planned, 'steps 1402–1403');
      const origin = from === sync ? primary : from;
      await this.detachAsyncSite(far, origin, 'steps 1402–1403');
      this.step(`step 1404: make ${to} identical to ${newestFrom} (only the blocks that differ travel)`);
      for (const v of asyncVolumes(this.t)) {
        const name = pairName(this.t, v.name, sync.spec.site, far.spec.site);
        const reversed = await this.pairAt(far, name);
        if (reversed?.role === 'primary') this.print(`    ${name}: ${to} is already the primary (step 1405 done)`);
        else await this.ensurePair(sync, far, v, 'async', 'delta');
      }
      await this.waitAll(`wait until ${to} holds everything ${newestFrom} has`, true);
      this.step(`step 1405: reverse it: async ${to} → ${newestFrom}, no copy (they are identical)`);
      for (const v of asyncVolumes(this.t)) await this.swapTo(far, pairName(this.t, v.name, sync.spec.site, far.spec.site));
      for (const v of this.t.volumes.filter((x) => !asyncVolumes(this.t).includes(x))) {
        this.print(`  note: ${v.name} is a data volume and does not exist at ${to}; the application rebuilds it from the logs`);
      }
      this.step(`step 1406: the application may start at ${to}`);
    }
  }

  private async failoverCascade(target: Site, from: Site, planned: boolean): Promise<void> {
    const primary = this.site('primary');
    const mid = this.site('sync');
    const far = this.site('async');
    if (target === mid) {
      this.header(`failover of ${this.t.name} to the intermediate site ${mid.spec.site} (cascade)`);
      await this.makePrimaryAt(mid, from, planned, 'make its copies writable', true);
      this.step(`${mid.spec.site} keeps forwarding to ${far.spec.site} asynchronously; the application may start at ${mid.spec.site}`);
      return;
    }
    if (target === far) {
      this.header(`failover of ${this.t.name} to the far site ${far.spec.site} (cascade)`);
      if (mid.info) {
        await this.makePrimaryAt(mid, from, planned, `stop ${mid.spec.site} from taking writes from ${primary.spec.site}`);
        this.step(`${far.spec.site} takes over from ${mid.spec.site} after receiving everything it has (no acknowledged write lost)`);
        for (const v of asyncVolumes(this.t)) await this.swapTo(far, pairName(this.t, v.name, mid.spec.site, far.spec.site));
      } else {
        this.step(`${mid.spec.site} is lost: ${far.spec.site} opens its own consistent copy (the async lag is lost)`);
        for (const v of asyncVolumes(this.t)) await this.takeoverAndDissolve(far, pairName(this.t, v.name, mid.spec.site, far.spec.site));
      }
      this.step(`the application may start at ${far.spec.site}`);
      return;
    }
    throw new TricopyError('invalid-argument', `${target.spec.site} is the primary site: use failback or repair`);
  }

  /**
   * Makes the sync copy at `site` the writable primary: a swap when the old primary answers, else a
   * takeover. With `keep`, a taken-over pair stays (SSWS): it records what changes here, so the
   * failback copies only that (plus what the old primary had not sent) instead of comparing volumes.
   */
  private async makePrimaryAt(site: Site, from: Site, planned: boolean, steps: string, keep = false): Promise<void> {
    const how = planned ? ` (swap with ${from.spec.site}, which keeps a sync copy)` : from.info ? '' : ` (${from.spec.site} is unreachable)`;
    this.step(`${steps}: make ${site.spec.site}'s copies writable${how}`);
    for (const v of this.t.volumes) {
      const name = pairName(this.t, v.name, from.spec.site, site.spec.site);
      if (planned) await this.swapTo(site, name);
      else if (keep) await this.takeoverKeeping(site, name);
      else await this.takeoverAndDissolve(site, name);
    }
  }

  /**
   * The async site stops receiving from the old primary, after everything it can get: when the old
   * primary still sends to it, its journal drains first (nothing is lost); otherwise the async site
   * applies everything it received and takes over.
   */
  private async detachAsyncSite(far: Site, from: Site, steps: string): Promise<void> {
    if (!far.info) {
      this.print(`  ${far.spec.site} is not reachable: ${steps} skipped`);
      return;
    }
    this.step(`${steps}: ${far.spec.site} stops receiving from ${from.spec.site}`);
    for (const v of asyncVolumes(this.t)) {
      const name = pairName(this.t, v.name, from.spec.site, far.spec.site);
      const sending = await this.pairAt(from, name);
      if (sending && sending.role === 'primary' && sending.code === 'PAIR' && sending.peer.connected) {
        await this.waitLagZero(from, name);
        await from.api.deletePair(name);
        this.print(`    ${name}: drained and dissolved`);
      } else {
        await this.takeoverAndDissolve(far, name);
      }
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Repair: keep the application where it runs, restore protection around lost or returned sites

  async repair(): Promise<void> {
    await this.probe();
    const status = await this.status();
    if (!status.activeSite) throw new TricopyError('conflict', `no site of ${this.t.name} is active`, 'fail over first');
    const active = this.siteByName(status.activeSite);
    if (active !== this.site('primary')) {
      throw new TricopyError('conflict', `${this.t.name} runs at ${active.spec.site}; repair works on the original layout`,
        `to restore it, run: tricopy topology failback <file> --to ${this.t.primary.site}`);
    }
    const primary = active;
    const mid = this.site('sync');
    const far = this.site('async');
    this.header(`repair of ${this.t.name}: keep the application at ${primary.spec.site}, protect it with the sites that answer`);
    if (this.t.layout === 'multi-target') {
      if (!mid.info) {
        this.step(`${mid.spec.site} is lost: suspend its sync copies by operator decision so writes continue (changes are recorded)`);
        for (const v of this.t.volumes) await this.splitAt(primary, pairName(this.t, v.name, primary.spec.site, mid.spec.site));
      }
      return this.failbackLegs(primary);
    }
    // Cascade: with the intermediate lost, the primary sends to the far site directly.
    if (!mid.info) {
      this.step(`${mid.spec.site} is lost: suspend the sync copies by operator decision so writes continue (changes are recorded)`);
      for (const v of this.t.volumes) await this.splitAt(primary, pairName(this.t, v.name, primary.spec.site, mid.spec.site));
      if (far.info) {
        this.step(`${far.spec.site} stops waiting for ${mid.spec.site} and receives from ${primary.spec.site} directly, only what it lacks`);
        for (const v of asyncVolumes(this.t)) await this.takeoverAndDissolve(far, pairName(this.t, v.name, mid.spec.site, far.spec.site));
        for (const v of asyncVolumes(this.t)) await this.ensurePair(primary, far, v, 'async', 'delta');
        await this.waitAll('wait until the direct async copy is duplex');
      }
      return;
    }
    return this.failbackLegs(primary);
  }

  // ----------------------------------------------------------------------------------------------
  // Failback

  async failback(to: string): Promise<void> {
    await this.probe();
    const target = this.siteByName(to);
    if (target.role !== 'primary') {
      throw new TricopyError('invalid-argument', `failback returns to the primary site of the topology file (${this.t.primary.site})`,
        'to run elsewhere, use failover');
    }
    if (!target.info) throw new TricopyError('unavailable', `site ${to} is not reachable: ${target.error}`);
    const status = await this.status();
    const active = status.activeSite ? this.siteByName(status.activeSite) : undefined;
    this.header(`failback of ${this.t.name} to ${to} (spec 001 Figs. 11, 12, 15, 16)`);
    if (active && active !== target) {
      if (!active.info) throw new TricopyError('unavailable', `the active site ${active.spec.site} is not reachable`);
      // A pair the active site took over and kept (SSWS) records what changed there; with what
      // the returning site had not sent, that is all a swap needs to copy.
      const activePairs = await this.pairsAt(active);
      const kept = (p: PairStatus): boolean => p.role === 'primary' && p.suspendCause === 'takeover-by-peer' &&
        activePairs.some((a) => a.name === p.name && a.code === 'SSWS');
      this.step(`step 1101/1501: forget the pairs ${to} held before, except those ${active.spec.site} took over and kept (they know what changed)`);
      for (const p of await this.pairsAt(target)) {
        const parsed = parsePairName(this.t, p.name);
        const fromActive = parsed?.sites.includes(active.spec.site) && ((p.role === 'secondary' && p.code !== 'PSUE') || kept(p));
        if (!fromActive) await this.dissolveEverywhere(p.name);
      }
      // A pair the active site kept from the takeover, but the returning site no longer knows: it
      // lost its data, so there is nothing to swap; the copy below starts afresh.
      const targetPairs = new Set((await this.pairsAt(target)).map((p) => p.name));
      for (const p of activePairs) {
        if (p.code === 'SSWS' && parsePairName(this.t, p.name)?.sites.includes(to) && !targetPairs.has(p.name)) {
          await active.api.deletePair(p.name, { force: true });
          this.print(`    ${p.name}: ${to} has no such pair (it lost its data): dissolved at ${active.spec.site}; a full copy follows`);
        }
      }
      // From the async site (Figs. 15, 16) the copy back is async in the topology's group, so the
      // swap of step 1506 leaves exactly the async leg the original layout needs (nothing to copy
      // again); from the sync site it is sync (Figs. 11, 12), with fence never so a hiccup does not
      // stop the application while it still runs there.
      const viaAsync = active.role === 'async';
      const copied = viaAsync ? asyncVolumes(this.t) : this.t.volumes;
      if (viaAsync) {
        const sync = this.site('sync');
        this.step(`step 1502: ${active.spec.site} stops sending to ${sync.spec.site} (its journal drains first)`);
        for (const v of copied) {
          const name = pairName(this.t, v.name, sync.spec.site, active.spec.site);
          const p = await this.pairAt(active, name);
          if (p && p.role === 'primary') await this.dissolveEverywhere(name);
          else this.print(`    ${name}: no copy from ${active.spec.site} to ${sync.spec.site}`);
        }
      }
      this.step(`steps 1103–1104/1503–1504: copy ${active.spec.site} → ${to} ${viaAsync ? `asynchronously in group ${this.t.name}` : 'synchronously'}, only what differs (a full copy if ${to} lost its data)`);
      for (const v of copied) {
        await this.ensureVolume(target, v);
        const name = pairName(this.t, v.name, active.spec.site, to);
        const existing = await this.pairAt(target, name);
        if (existing && existing.role === 'secondary') {
          this.print(`    ${name}: ${active.spec.site} → ${to} exists (${existing.code})`);
          continue;
        }
        if (existing && kept(existing)) {
          // The regions changed on either side since the takeover travel; the returning site's own
          // changes after it lost contact are discarded (the application has run at the active site since).
          await this.swapTo(active, name, target.info!.name);
          await active.api.setProtection(name, { fence: 'never', fenceGroup: null });
          continue;
        }
        if (viaAsync) await this.ensurePair(active, target, v, 'async', 'delta');
        else await this.ensurePair(active, target, v, 'sync', 'delta', { fenceGroup: false, fence: 'never' });
      }
      await this.waitAll(`wait until ${to} holds everything ${active.spec.site} has`, true);
      this.step(`step 1105/1505: the application must stop at ${active.spec.site} now; its volumes stop accepting writes`);
      this.step(`step 1106/1506: swap: ${to} becomes the primary (${viaAsync ? 'the journal drains first; ' : ''}no copy: the volumes are identical)`);
      for (const v of copied) await this.swapTo(target, pairName(this.t, v.name, active.spec.site, to));
    } else {
      this.print(`  the application already runs at ${to}`);
    }
    await this.failbackLegs(target);
    this.step(`steps 1108/1508: the application may start at ${to}`);
  }

  /** From the primary site, rebuild the original legs (reusing any that already fit). */
  private async failbackLegs(primary: Site): Promise<void> {
    const mid = this.site('sync');
    const far = this.site('async');
    const syncLegFrom = primary;
    const asyncLegFrom = this.t.layout === 'cascade' ? mid : primary;
    const wantedSync = new Set(this.t.volumes.map((v) => pairName(this.t, v.name, syncLegFrom.spec.site, mid.spec.site)));
    const wantedAsync = new Set(asyncVolumes(this.t).map((v) => pairName(this.t, v.name, asyncLegFrom.spec.site, far.spec.site)));
    this.step('steps 1107–1110/1509–1510: restore the original copies from the primary site (only differing blocks travel)');
    // Dissolve every topology pair that is not part of the original layout or points the wrong way,
    // and those whose secondary site came back without them (it lost its data: copy it again).
    const pairsBySite = new Map<Site, PairStatus[]>();
    for (const s of this.sites) if (s.info) pairsBySite.set(s, await this.pairsAt(s));
    const orphaned = (s: Site, p: PairStatus): boolean => {
      if (p.role !== 'primary') return false;
      const peer = this.sites.find((x) => x !== s && parsePairName(this.t, p.name)?.sites.includes(x.spec.site));
      return peer !== undefined && pairsBySite.has(peer) && !pairsBySite.get(peer)!.some((x) => x.name === p.name);
    };
    for (const [s, pairs] of pairsBySite) {
      for (const p of pairs) {
        const stale = p.suspendCause === 'takeover-by-peer' || orphaned(s, p);
        const wrongDirection = stale || (wantedSync.has(p.name) && p.role === 'primary' && s !== syncLegFrom) ||
          (wantedAsync.has(p.name) && p.role === 'primary' && s !== asyncLegFrom) ||
          (wantedSync.has(p.name) && p.mode !== 'sync') || (wantedAsync.has(p.name) && p.mode !== 'async');
        if (!wantedSync.has(p.name) && !wantedAsync.has(p.name)) await this.dissolveEverywhere(p.name);
        else if (wrongDirection) await this.dissolveEverywhere(p.name);
      }
    }
    if (mid.info) {
      for (const v of this.t.volumes) {
        const name = pairName(this.t, v.name, primary.spec.site, mid.spec.site);
        const p = await this.pairAt(primary, name);
        if (p && p.role === 'primary' && p.mode === 'sync' && (p.fence !== this.t.sync.fence || p.fenceGroup !== this.t.name)) {
          // A copy made for the failback (fence never): give it the topology's protection.
          await primary.api.setProtection(name, { fence: this.t.sync.fence, fenceGroup: this.t.name });
          this.print(`    ${name}: fence ${this.t.sync.fence}, protected with group ${this.t.name}`);
        }
        if (p && p.role === 'primary' && (p.code === 'PSUS' || p.code === 'PSUE')) {
          await primary.api.resync(name);
          this.print(`    ${name}: resync (changed regions only)`);
          continue;
        }
        await this.ensurePair(primary, mid, v, 'sync', 'delta');
      }
    } else {
      this.print(`  ${mid.spec.site} is not reachable: its copies wait until it returns (run topology repair then)`);
    }
    if (far.info && asyncLegFrom.info) {
      for (const v of asyncVolumes(this.t)) await this.ensurePair(asyncLegFrom, far, v, 'async', 'delta');
    } else if (!far.info) {
      this.print(`  ${far.spec.site} is not reachable: its copies wait until it returns (run topology repair then)`);
    }
    await this.waitAll('steps 1111–1112/1511–1512: wait until every copy is duplex');
  }

  // ----------------------------------------------------------------------------------------------
  // Building blocks (each idempotent)

  private async probe(): Promise<void> {
    await Promise.all(this.sites.map(async (s) => {
      try {
        s.info = await s.api.nodeInfo({ timeoutMs: probeTimeoutMs });
        s.error = undefined;
      } catch (err) {
        s.info = undefined;
        s.error = errorMessage(err);
      }
    }));
  }

  private site(role: Site['role']): Site {
    return this.sites.find((s) => s.role === role)!;
  }

  private siteByName(name: string): Site {
    const s = this.sites.find((x) => x.spec.site === name);
    if (!s) throw new TricopyError('invalid-argument', `${name} is not a site of topology ${this.t.name}`, `its sites: ${this.sites.map((x) => x.spec.site).join(', ')}`);
    return s;
  }

  private async pairsAt(s: Site): Promise<PairStatus[]> {
    const pairs = await s.api.listPairs();
    return pairs.filter((p) => parsePairName(this.t, p.name) !== undefined);
  }

  private async pairAt(s: Site, name: string): Promise<PairStatus | undefined> {
    if (!s.info) return undefined;
    return (await this.pairsAt(s)).find((p) => p.name === name);
  }

  private volumeWritable(volume: string, pairs: PairStatus[]): boolean {
    const mine = pairs.filter((p) => parsePairName(this.t, p.name)?.volume === volume);
    return mine.every((p) => (p.role === 'primary' && !(p.code === 'PSUE' && p.suspendCause === 'takeover-by-peer')) || p.code === 'SSWS');
  }

  private async ensureVolume(s: Site, v: TopologyVolume): Promise<void> {
    try {
      const existing = await s.api.getVolume(v.name);
      if (existing.sizeBytes < v.sizeBytes) {
        throw new TricopyError('conflict', `volume ${v.name} at ${s.spec.site} is smaller than the topology says`, 'grow it with tricopy volume resize');
      }
      this.print(`    volume ${v.name} at ${s.spec.site}: exists`);
    } catch (err) {
      if (!(err instanceof TricopyError) || err.code !== 'not-found') throw err;
      await s.api.createVolume({ name: v.name, size: v.sizeBytes, thin: true, description: `topology ${this.t.name}` });
      this.print(`    volume ${v.name} at ${s.spec.site}: created`);
    }
  }

  private async ensurePair(from: Site, to: Site, v: TopologyVolume, mode: 'sync' | 'async', initialCopy: 'full' | 'delta',
    options: { fenceGroup?: boolean; fence?: 'data' | 'never' } = {}): Promise<void> {
    const name = pairName(this.t, v.name, from.spec.site, to.spec.site);
    const existing = await this.pairAt(from, name);
    if (existing && existing.role === 'primary') {
      this.print(`    ${name}: ${from.spec.site} → ${to.spec.site} ${existing.mode} exists (${existing.code})`);
      return;
    }
    if (existing) throw new TricopyError('conflict', `pair ${name} points from ${to.spec.site} to ${from.spec.site}; it must be dissolved first`);
    const stale = await this.pairAt(to, name);
    if (stale) await to.api.deletePair(name, { force: true });
    const info = to.info!;
    const fence = options.fence ?? (mode === 'sync' ? this.t.sync.fence : 'never');
    await from.api.createPair({
      name, volume: v.name, peer: { node: info.name, host: info.replAddress.host, replPort: info.replAddress.port }, mode, fence,
      ...(mode === 'async' ? { group: this.t.name } : {}), initialCopy,
      ...(options.fenceGroup === false ? {} : { fenceGroup: this.t.name }),
    });
    this.print(`    ${name}: ${from.spec.site} → ${to.spec.site} ${mode} created (${initialCopy === 'delta' ? 'copying only differing blocks' : 'full initial copy'})`);
  }

  /** At `site`, take over a pair whose primary is gone, then dissolve it: the volume becomes independent. */
  private async takeoverAndDissolve(site: Site, name: string): Promise<void> {
    const p = await this.pairAt(site, name);
    if (!p) {
      this.print(`    ${name}: already dissolved at ${site.spec.site}`);
      return;
    }
    if (p.role === 'secondary' && p.code !== 'SSWS') {
      const pairs = await site.api.takeover(name, { timeoutMs: commandTimeoutMs });
      this.print(`    ${name}: takeover at ${site.spec.site} → ${pairs[0]?.code ?? '?'} (${pairs[0]?.reason ?? ''})`);
    }
    await site.api.deletePair(name, { force: true });
    this.print(`    ${name}: dissolved at ${site.spec.site}`);
  }

  /** At `site`, take over a pair whose primary is gone and keep it (SSWS): it records the changes made here. */
  private async takeoverKeeping(site: Site, name: string): Promise<void> {
    const p = await this.pairAt(site, name);
    if (!p) {
      this.print(`    ${name}: already dissolved at ${site.spec.site}`);
      return;
    }
    if (p.role === 'primary' || p.code === 'SSWS') {
      this.print(`    ${name}: ${site.spec.site} already accepts writes (${p.code})`);
      return;
    }
    const pairs = await site.api.takeover(name, { timeoutMs: commandTimeoutMs });
    this.print(`    ${name}: takeover at ${site.spec.site} → ${pairs[0]?.code ?? '?'}; kept, so the failback copies only what changed`);
  }

  /** Planned role reversal: `site` becomes the primary of `name` (its peer answers). */
  private async swapTo(site: Site, name: string, discardPeer?: string): Promise<void> {
    const p = await this.pairAt(site, name);
    if (!p) throw new TricopyError('conflict', `pair ${name} does not exist at ${site.spec.site}`);
    if (p.role === 'primary') {
      this.print(`    ${name}: ${site.spec.site} is already the primary`);
      return;
    }
    const pairs = discardPeer
      ? await site.api.swap(name, { discard: discardPeer }, { timeoutMs: commandTimeoutMs })
      : await site.api.takeover(name, { timeoutMs: commandTimeoutMs });
    const mine = pairs.find((x) => x.name === name);
    this.print(`    ${name}: swapped, ${site.spec.site} is the primary${mine ? ` (${mine.reason})` : ''}`);
  }

  private async splitAt(site: Site, name: string): Promise<void> {
    const p = await this.pairAt(site, name);
    if (!p || p.role !== 'primary') return;
    if (p.code === 'PSUS') {
      this.print(`    ${name}: already split`);
      return;
    }
    await site.api.split(name);
    this.print(`    ${name}: split (operator) at ${site.spec.site}`);
  }

  /** Deletes a pair on both sides (forced where a side is unreachable); an async pair in step drains first. */
  private async dissolveEverywhere(name: string): Promise<void> {
    for (const s of this.sites) {
      if (!s.info) continue;
      const p = await this.pairAt(s, name);
      if (!p) continue;
      // The async secondary then holds everything, and a delta resync from its position sends the least.
      if (p.role === 'primary' && p.mode === 'async' && p.code === 'PAIR' && p.peer.connected) await this.waitLagZero(s, name);
      await s.api.deletePair(name, { force: true }).catch((err: unknown) => {
        if (!(err instanceof TricopyError && err.code === 'not-found')) throw err;
      });
      this.print(`    ${name}: dissolved (was ${p.role} at ${s.spec.site})`);
    }
  }

  private async waitLagZero(s: Site, name: string): Promise<void> {
    const deadline = Date.now() + 600_000;
    for (;;) {
      const p = await this.pairAt(s, name);
      if (!p || (p.lag?.entries ?? 0) === 0) return;
      if (Date.now() > deadline) throw new TricopyError('unavailable', `pair ${name} did not drain`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** Waits for every copy to be duplex; `required` when the next step depends on it (else only with --wait). */
  private async waitAll(title: string, required = false): Promise<void> {
    if (this.options.waitSeconds <= 0 && !required) {
      this.print(`  (not waiting for copies; follow them with: tricopy topology status <file>)`);
      return;
    }
    this.step(title);
    const deadline = Date.now() + (this.options.waitSeconds > 0 ? this.options.waitSeconds : 3600) * 1000;
    let last = '';
    for (;;) {
      const status = await this.status();
      // Copies to or from a site that does not answer wait for it; repair restores them later.
      const down = new Set(status.sites.filter((x) => !x.reachable).map((x) => x.site));
      const waiting = status.legs.filter((l) => l.code !== 'PAIR' && (down.has(l.from) || down.has(l.to)));
      const pending = status.legs.filter((l) => l.code !== 'PAIR' && !waiting.includes(l));
      const failed = pending.filter((l) => l.code === 'PSUE');
      if (failed.length > 0) {
        throw new TricopyError('io-error', `copies failed: ${failed.map((l) => `${l.pair} (${l.reason})`).join('; ')}`);
      }
      const line = pending.map((l) => `${l.pair} ${l.code}${l.progressPercent !== null ? ` ${l.progressPercent}%` : ''}`).join(', ');
      if (pending.length === 0) {
        if (waiting.length === 0) this.print('    every copy is duplex');
        else this.print(`    every copy is duplex except those of unreachable sites: ${waiting.map((l) => `${l.pair} ${l.code}`).join(', ')}`);
        return;
      }
      if (line !== last) this.print(`    waiting: ${line}`);
      last = line;
      if (Date.now() > deadline) throw new TricopyError('unavailable', `copies still running after ${this.options.waitSeconds} s: ${line}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  private header(text: string): void {
    this.print(text);
  }

  private step(text: string): void {
    this.stepNo += 1;
    this.print(`  [${this.stepNo}] ${text}`);
  }

  private print(line: string): void {
    this.options.print(line);
  }
}

function formatMiB(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
