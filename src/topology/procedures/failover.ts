// Failover: move the application to another site after a loss (spec 001 §6.5, §6.7, §6.8).
//
// To the sync site, Fig. 10:
//   1001–1002  make the sync copies writable (take over; swap when the old primary answers)
//   1003       the application may start at the sync site
//   1004       the async site stops receiving from the old primary (drained, or taken over)
//   1005–1007  async copy sync site → async site, only what the async site lacks; wait for duplex
// To the async site with its own consistent copy, Fig. 13:
//   1301–1302  the async site applies what it received and becomes writable (pair dissolved); a
//              survivor still receiving from a site that does not answer stops (left read-only)
//   1303       the application may start there and runs its recovery (the async lag is lost)
// To the async site with the sync site's newest data, Fig. 14:
//   1401       the sync and async sites can communicate
//   1402–1403  the sync copies become writable; the async site stops receiving from the old primary
//              and stays read-only (it holds the old image) until step 1405 makes it the primary
//   1404       make the async site identical to the sync site (only differing blocks travel)
//   1405       reverse it: async copy async site → sync site, no copy (they are identical); copies the
//              sync site still sends to the primary site are dissolved first (it cannot forward them)
//   1406       the application may start at the async site
// Cascade (spec 000 Fig. 1): to the intermediate, it keeps forwarding to the far site; to the far
// site, it takes over from the intermediate after receiving everything (or opens its own copy).
// Every step skips what is done, so a failover interrupted anywhere is finished by running it again.
import { TricopyError } from '../../common/errors';
import type { Site, TopologyContext } from '../context';
import { stopOrdersFromLostSite } from '../network-failover';
import { type TopologyStatus, topologyStatus } from '../status';
import { dissolveEverywhere, ensurePair, swapTo, takeoverAndDissolve, takeoverKeeping, waitAll, waitLagZero } from '../steps';
import { asyncVolumes, pairName, pairPeerSite } from '../topology-file';

/** How long a planned switchover waits for a suspended copy to be in step again before it gives up. */
const switchoverResyncTimeoutMs = 600_000;

/** Which site takes over from which, and whether the old one still answers (a planned switchover). */
interface Move {
  target: Site;
  from: Site;
  planned: boolean;
  /** What a failover to the target loses now, as status counts it (printed under the header). */
  loss: string | undefined;
}

export async function failover(ctx: TopologyContext, to: string, newestFrom: string | undefined): Promise<void> {
  const move = await planFailover(ctx, to, newestFrom);
  if (!move.planned && !move.from.info) await stopOrdersFromLostSite(ctx, move.from);
  if (ctx.t.layout === 'cascade') return failoverCascade(ctx, move);
  if (move.target === ctx.site('sync')) return failoverToSync(ctx, move);
  if (newestFrom === undefined) return failoverToAsync(ctx, move);
  return failoverWithNewest(ctx, move, newestFrom);
}

async function planFailover(ctx: TopologyContext, to: string, newestFrom: string | undefined): Promise<Move> {
  await ctx.probe();
  const target = ctx.siteByName(to);
  if (!target.info) {
    throw new TricopyError('unavailable', `site ${to} is not reachable: ${target.error}`,
      `the failover target must answer: start its node (${target.spec.node}), or choose another site after reading: tricopy topology status <file>`);
  }
  const primary = ctx.site('primary');
  const status = await topologyStatus(ctx);
  // A rerun (the target is already writable, perhaps because an earlier run was interrupted)
  // goes through every step again: each one skips what is done, so the copies the first run did
  // not create yet are created now. The site the application came from is then the primary's.
  const rerun = status.activeSite === to;
  const from = status.activeSite && !rerun ? ctx.siteByName(status.activeSite) : primary;
  const planned = !rerun && from.info !== undefined && status.activeSite !== null;
  if (target === primary) {
    throw new TricopyError('invalid-argument', `${to} is the primary site of the topology file: a failover moves the application away from it`,
      `to bring the application back there: tricopy topology failback <file> --to ${to} --wait; to route around a lost site: tricopy topology repair <file> --wait`);
  }
  if (rerun) ctx.print(`the application already runs at ${to}: checking that every step of the failover is done`);
  else refuseWithoutCopy(status, to, newestFrom);
  if (newestFrom !== undefined) await checkNewestFrom(ctx, target, newestFrom, rerun);
  const loss = rerun || newestFrom !== undefined ? undefined : status.sites.find((x) => x.site === to)!.atRisk.text;
  return { target, from, planned, loss };
}

/**
 * A failover is refused when the target holds no usable copy of the newest writes: none reaches it
 * from the site holding them, or it lost its data, or its copy is incomplete. Where the loss is
 * bounded or unknown (the writer is lost), the operator decides: the claim is printed first.
 */
function refuseWithoutCopy(status: TopologyStatus, to: string, newestFrom: string | undefined): void {
  const claim = status.sites.find((x) => x.site === to)!.atRisk;
  const writer = status.writer.site;
  if (claim.kind !== 'unbounded' || newestFrom !== undefined) return;
  const primary = status.sites.find((x) => x.role === 'primary')!.site;
  throw new TricopyError('conflict', `a failover to ${to} would lose ${claim.text}`,
    writer && writer !== primary && status.activeSite === writer
      ? `the application runs at ${writer}; bring the original layout back first (tricopy topology failback <file> --to ${primary} --wait), then fail over from there`
      : `restore ${to}'s copies first: tricopy topology repair <file> --wait (or failback --to ${primary} when the application runs elsewhere); read tricopy topology status <file>`);
}

/** Fig. 14 needs the sync site answering, and must not overwrite an async site that already runs on its own copy. */
async function checkNewestFrom(ctx: TopologyContext, target: Site, newestFrom: string, rerun: boolean): Promise<void> {
  const to = target.spec.site;
  const sync = ctx.site('sync');
  const far = ctx.site('async');
  const source = ctx.siteByName(newestFrom);
  if (target.role !== 'async' || source.role !== 'sync') {
    throw new TricopyError('invalid-argument', '--newest-from takes the sync site and is used with a failover to the async site (Fig. 14)',
      `tricopy topology failover <file> --to ${far.spec.site} --newest-from ${sync.spec.site}`);
  }
  if (!source.info) {
    throw new TricopyError('unavailable', `cannot take the newest data from ${newestFrom}: it is not reachable (${source.error})`,
      `fail over with the async site's own consistent copy instead: tricopy topology failover <file> --to ${to}`);
  }
  const reversed = await Promise.all(asyncVolumes(ctx.t).map(async (v) => (await ctx.pairAt(far, pairName(ctx.t, v.name, sync.spec.site, far.spec.site)))?.role === 'primary'));
  if (rerun && !reversed.every(Boolean)) {
    // Fig. 14 leaves the async site read-only from its detach (steps 1402–1403) until step 1405
    // makes it the primary, so a rerun finds it active only when that swap is done. Active without
    // it, the async site runs on its own copy (Fig. 13) and hosts wrote there: step 1404 would copy
    // the sync site's image over those writes. (Whether the sync site is writable says nothing: it
    // also is when the application ran there and the async site failed over from it, Fig. 13.)
    throw new TricopyError('conflict', `${to} already runs on its own copy (Fig. 13): ` +
      `making ${to} identical to ${newestFrom} now would discard the writes made at ${to} since`,
      `keep running at ${to}; bring the other sites back with: tricopy topology failback <file> --to ${ctx.t.primary.site}`);
  }
}

/** Fig. 10. */
function printLoss(ctx: TopologyContext, move: Move): void {
  if (move.loss !== undefined) ctx.print(`  loss if failed over to ${move.target.spec.site} now: ${move.loss}`);
}

async function failoverToSync(ctx: TopologyContext, move: Move): Promise<void> {
  const { from, planned } = move;
  const sync = ctx.site('sync');
  const far = ctx.site('async');
  const to = sync.spec.site;
  ctx.header(`failover of ${ctx.t.name} to the sync site ${to} (spec 001 Fig. 10)${planned ? `; ${from.spec.site} is reachable: planned switchover` : ''}`);
  printLoss(ctx, move);
  await makePrimaryAt(ctx, sync, from, planned, 'steps 1001–1002', true);
  ctx.step(`step 1003: the application may start at ${to} (its volumes accept writes)`);
  await detachAsyncSite(ctx, far, from, 'step 1004');
  if (far.info) {
    ctx.step(`steps 1005–1007: async copy ${to} → ${far.spec.site}, sending only what ${far.spec.site} is missing (delta resync)`);
    for (const v of asyncVolumes(ctx.t)) await ensurePair(ctx, sync, far, v, 'async', 'delta');
    await waitAll(ctx, 'wait until the async copy is duplex');
  } else {
    ctx.print(`  ${far.spec.site} is not reachable: steps 1005–1007 skipped; run topology repair when it returns`);
  }
}

/** Fig. 13. */
async function failoverToAsync(ctx: TopologyContext, move: Move): Promise<void> {
  const far = ctx.site('async');
  const to = far.spec.site;
  ctx.header(`failover of ${ctx.t.name} to the async site ${to} with its own consistent copy (spec 001 Fig. 13)`);
  printLoss(ctx, move);
  const { from, planned } = move;
  await detachAsyncSite(ctx, far, from, 'steps 1301–1302', { fromRunsApplication: planned });
  // After a failover that did not reach its async leg, the async site may still receive from the
  // site the application left: that copy is its own consistent image too, and it must stop as well.
  for (const other of ctx.sites.filter((s) => s !== far && s !== from)) {
    for (const v of asyncVolumes(ctx.t)) {
      const name = pairName(ctx.t, v.name, other.spec.site, far.spec.site);
      if ((await ctx.pairAt(far, name))?.role === 'secondary') await takeoverAndDissolve(ctx, far, name);
    }
  }
  await stopFollowingLostSites(ctx, far);
  ctx.step(`step 1303: the application may start at ${to}; run its recovery (writes not yet applied there are lost)`);
}

/**
 * After Fig. 13 the application runs at the async site alone. A site that does not answer learns it
 * was taken over only from a reachable peer that dissolved a pair it sends (dissolvedByPeers in
 * writer.ts). When the async site's copy came from elsewhere (a failback that could not reach it
 * restored no async leg from that site), the async site holds none of its pairs; a survivor still
 * receiving from it is then the only witness, and if it keeps its end, the lost site comes back the
 * writable primary of pairs its peer still holds, and status ranks it above the async site (which
 * has none) as the active site. Sim seed 1804: tokyo came back so after a Fig. 13 failover away
 * from it; osaka did after another (a rerun, sapporo being still writable from the first), and
 * failback copied osaka's image over sapporo's newest writes. The survivor's end is dissolved and
 * its volume left read-only (it holds the lost site's image); the failback copies what differs.
 */
async function stopFollowingLostSites(ctx: TopologyContext, far: Site): Promise<void> {
  for (const s of ctx.sites.filter((x) => x !== far && x.info)) {
    for (const p of await ctx.pairsAt(s)) {
      const from = pairPeerSite(ctx.t, p.name, s.spec.site);
      if (p.role !== 'secondary' || p.code === 'SSWS' || from === undefined || ctx.siteByName(from).info) continue;
      ctx.print(`    ${p.name}: ${s.spec.site} stops following ${from}, which does not answer (the application runs at ${far.spec.site})`);
      await dissolveEverywhere(ctx, p.name);
    }
  }
}

/** Fig. 14. */
async function failoverWithNewest(ctx: TopologyContext, { from, planned }: Move, newestFrom: string): Promise<void> {
  const t = ctx.t;
  const primary = ctx.site('primary');
  const sync = ctx.site('sync');
  const far = ctx.site('async');
  const to = far.spec.site;
  ctx.header(`failover of ${t.name} to the async site ${to} with the newest data from ${newestFrom} (spec 001 Fig. 14)`);
  ctx.step(`step 1401: ${newestFrom} and ${to} can communicate`);
  requireLink(sync, far);
  // A rerun after an interruption may find the sync site already writable: the old primary is
  // then still the site the async copies came from.
  if (from === sync) ctx.print(`  steps 1402–1403: ${sync.spec.site}'s copies are already writable`);
  else await makePrimaryAt(ctx, sync, from, planned, 'steps 1402–1403');
  const origin = from === sync ? primary : from;
  // Read-only until step 1405: the application must not start there on the old image, and status
  // must not take it for the active site (a rerun tells Fig. 14 and Fig. 13 apart by that).
  await detachAsyncSite(ctx, far, origin, 'steps 1402–1403', { leaveReadOnly: true });
  ctx.step(`step 1404: make ${to} identical to ${newestFrom} (only the blocks that differ travel)`);
  for (const v of asyncVolumes(t)) {
    const name = pairName(t, v.name, sync.spec.site, far.spec.site);
    const reversed = await ctx.pairAt(far, name);
    if (reversed?.role === 'primary') ctx.print(`    ${name}: ${to} is already the primary (step 1405 done)`);
    else await ensurePair(ctx, sync, far, v, 'async', 'delta');
  }
  await waitAll(ctx, `wait until ${to} holds everything ${newestFrom} has`, true);
  // Duplex says nothing of what the secondary received: the sync site's journal must be applied there.
  for (const v of asyncVolumes(t)) await waitLagZero(ctx, sync, pairName(t, v.name, sync.spec.site, far.spec.site));
  await stopForwardingToPrimary(ctx, sync, primary);
  ctx.step(`step 1405: reverse it: async ${to} → ${newestFrom}, no copy (they are identical)`);
  // A planned swap only: a takeover without the sync site would leave its newest writes behind.
  for (const v of asyncVolumes(t)) await swapTo(ctx, far, pairName(t, v.name, sync.spec.site, far.spec.site), { plannedOnly: true });
  for (const v of t.volumes.filter((x) => !asyncVolumes(t).includes(x))) {
    ctx.print(`  note: ${v.name} is a data volume and does not exist at ${to}; the application rebuilds it from the logs`);
  }
  ctx.step(`step 1406: the application may start at ${to}`);
}

/** Step 1401: Fig. 14 needs the sync site's newest data to reach the async site, over their own link. */
function requireLink(sync: Site, far: Site): void {
  // Sites with no pair between them yet keep no link (step 1404 opens it); a link they keep must be up.
  const down = (a: Site, b: Site): boolean => a.info === undefined || b.info === undefined ||
    a.info.peerLinks.some((l) => l.node === b.info!.name && !l.up);
  if (!down(sync, far) && !down(far, sync)) return;
  throw new TricopyError('unavailable', `${sync.spec.site} and ${far.spec.site} cannot communicate now: the newest data cannot reach ${far.spec.site}`,
    `wait for the link between them and run the same command again, or fail over with ${far.spec.site}'s own consistent copy: ` +
    `tricopy topology failover <file> --to ${far.spec.site}`);
}

/**
 * Before the sync site receives asynchronously (step 1405) it must stop being the primary of its
 * copies at the primary site (after a failover to it, or a planned swap in step 1402): a volume that
 * receives asynchronously forwards nothing, so those copies would silently fall behind. They are
 * dissolved; the primary site keeps its image, and the failback copies what differs.
 */
async function stopForwardingToPrimary(ctx: TopologyContext, sync: Site, primary: Site): Promise<void> {
  const names = asyncVolumes(ctx.t).map((v) => pairName(ctx.t, v.name, primary.spec.site, sync.spec.site));
  const forwarding: string[] = [];
  for (const name of names) if ((await ctx.pairAt(sync, name))?.role === 'primary') forwarding.push(name);
  if (forwarding.length === 0) return;
  ctx.step(`${primary.spec.site} stops following ${sync.spec.site}, which will receive asynchronously and cannot forward (${primary.spec.site} keeps its image)`);
  for (const name of forwarding) await dissolveEverywhere(ctx, name);
}

async function failoverCascade(ctx: TopologyContext, move: Move): Promise<void> {
  const { target, from, planned } = move;
  const t = ctx.t;
  const primary = ctx.site('primary');
  const mid = ctx.site('sync');
  const far = ctx.site('async');
  if (target === mid) {
    ctx.header(`failover of ${t.name} to the intermediate site ${mid.spec.site} (cascade)`);
    printLoss(ctx, move);
    await makePrimaryAt(ctx, mid, from, planned, 'make its copies writable', true);
    ctx.step(`${mid.spec.site} keeps forwarding to ${far.spec.site} asynchronously; the application may start at ${mid.spec.site}`);
    return;
  }
  if (target === far) {
    ctx.header(`failover of ${t.name} to the far site ${far.spec.site} (cascade)`);
    printLoss(ctx, move);
    if (mid.info) {
      await makePrimaryAt(ctx, mid, from, planned, `stop ${mid.spec.site} from taking writes from ${primary.spec.site}`);
      ctx.step(`${far.spec.site} takes over from ${mid.spec.site} after receiving everything it has (no acknowledged write lost)`);
      for (const v of asyncVolumes(t)) await swapTo(ctx, far, pairName(t, v.name, mid.spec.site, far.spec.site), { plannedOnly: true });
    } else {
      ctx.step(`${mid.spec.site} is lost: ${far.spec.site} opens its own consistent copy (the async lag is lost)`);
      for (const v of asyncVolumes(t)) await takeoverAndDissolve(ctx, far, pairName(t, v.name, mid.spec.site, far.spec.site));
    }
    ctx.step(`the application may start at ${far.spec.site}`);
    return;
  }
  throw new TricopyError('invalid-argument', `${target.spec.site} is the primary site: a failover moves the application away from it`,
    `tricopy topology failback <file> --to ${target.spec.site} --wait, or tricopy topology repair <file> --wait`);
}

/**
 * Makes the sync copy at `site` the writable primary: a swap when the old primary answers, else a
 * takeover. With `keep`, a taken-over pair stays (SSWS): it records what changes here, so the
 * failback copies only that (plus what the old primary had not sent) instead of comparing volumes.
 */
async function makePrimaryAt(ctx: TopologyContext, site: Site, from: Site, planned: boolean, steps: string, keep = false): Promise<void> {
  const how = planned ? ` (swap with ${from.spec.site}, which keeps a sync copy)` : from.info ? '' : ` (${from.spec.site} is unreachable)`;
  ctx.step(`${steps}: make ${site.spec.site}'s copies writable${how}`);
  for (const v of ctx.t.volumes) {
    const name = pairName(ctx.t, v.name, from.spec.site, site.spec.site);
    if (planned) await switchOver(ctx, site, from, name);
    else if (keep) await takeoverKeeping(ctx, site, name);
    else await takeoverAndDissolve(ctx, site, name);
  }
}

/**
 * A planned switchover loses nothing: a suspended copy is resynchronised from the old primary first
 * (a swap from a suspended secondary would copy the new primary's older data over the writes made
 * meanwhile), and the roles change only by a swap both ends take part in, never by a takeover.
 */
async function switchOver(ctx: TopologyContext, site: Site, from: Site, name: string): Promise<void> {
  const sending = await ctx.pairAt(from, name);
  if (sending?.role === 'primary' && sending.code !== 'PAIR') {
    ctx.print(`    ${name}: ${sending.code} at ${from.spec.site}: resynchronising ${site.spec.site} first`);
    if (sending.state === 'suspended') await from.api.resync(name);
    await from.api.waitPair(name, 'duplex', switchoverResyncTimeoutMs);
  }
  await swapTo(ctx, site, name, { plannedOnly: true });
}

/**
 * The async site stops receiving from the old primary, after everything it can get: when the old
 * primary still sends to it, its journal drains first (nothing is lost); otherwise the async site
 * applies everything it received and takes over. `leaveReadOnly` (Fig. 14): a receiving async site
 * is dissolved with its volumes kept read-only instead (dissolveEverywhere; it drains the same way).
 * `fromRunsApplication` (Fig. 13, planned): `from` runs the application and answers (leaveRunningSite).
 */
interface DetachHow { leaveReadOnly?: boolean; fromRunsApplication?: boolean }

async function detachAsyncSite(ctx: TopologyContext, far: Site, from: Site, steps: string, how: DetachHow = {}): Promise<void> {
  if (!far.info) {
    ctx.print(`  ${far.spec.site} is not reachable: ${steps} skipped`);
    return;
  }
  ctx.step(`${steps}: ${far.spec.site} stops receiving from ${from.spec.site}${how.leaveReadOnly ? ' (its volumes stay read-only)' : ''}`);
  if (how.fromRunsApplication === true) await leaveRunningSite(ctx, far, from);
  for (const v of asyncVolumes(ctx.t)) {
    const name = pairName(ctx.t, v.name, from.spec.site, far.spec.site);
    const sending = await ctx.pairAt(from, name);
    const receiving = how.leaveReadOnly ? await ctx.pairAt(far, name) : undefined;
    if (receiving && receiving.role === 'secondary' && receiving.code !== 'SSWS') {
      // Fig. 14: its image is replaced by the sync site's next (step 1404), so nothing it received
      // needs applying; dissolved with its volume kept read-only (the journal drains first when
      // the old primary still sends, so the delta copy sends less).
      await dissolveEverywhere(ctx, name);
    } else if (how.fromRunsApplication === true && sending !== undefined && sending.peer.connected) {
      // (Already a secondary when the takeover of an earlier volume swapped the whole group.) The
      // swap drains a journal in step first, so nothing acknowledged at `from` stays behind.
      await takeoverAndDissolve(ctx, far, name, { leavePeerReadOnly: from });
    } else if (sending && sending.role === 'primary' && sending.code === 'PAIR' && sending.peer.connected) {
      await waitLagZero(ctx, from, name);
      await from.api.deletePair(name);
      ctx.print(`    ${name}: drained and dissolved`);
    } else {
      await takeoverAndDissolve(ctx, far, name);
    }
  }
}

/**
 * Fig. 13 away from the site that runs the application and answers (its async copy in step or
 * suspended): the takeover at the async site then swaps (a journal in step drains first; a
 * suspended copy gets the async site's older image over the regions that differ at `from`). `from`
 * must not stay writable after that: with the copies it still has with the third site (the sync
 * copy it sends, or the pairs it took over from the primary site and kept, Fig. 10) its volume
 * accepted writes, and status, ranking it by their newer generations, kept naming it the active
 * site, so the application stayed on a half overwritten image (sim seed 1064), or, with a copy in
 * step (dissolved, and `from` left writable beside the async site), stayed there until `from` was
 * lost; then status named the async site and a failback copied its image over the writes made at
 * `from` since (sim seed 824). Those copies are dissolved first, for every volume before any
 * takeover (the takeover swaps the whole consistency group, and a volume that still sends a sync
 * copy cannot become an async secondary); the takeover leaves `from`'s end read-only.
 */
async function leaveRunningSite(ctx: TopologyContext, far: Site, from: Site): Promise<void> {
  for (const v of asyncVolumes(ctx.t)) {
    const sending = await ctx.pairAt(from, pairName(ctx.t, v.name, from.spec.site, far.spec.site));
    if (!sending?.peer.connected) continue;
    for (const other of ctx.sites.filter((s) => s !== from && s !== far)) {
      const otherName = pairName(ctx.t, v.name, from.spec.site, other.spec.site);
      const p = await ctx.pairAt(from, otherName);
      if (!p || (p.role !== 'primary' && p.code !== 'SSWS')) continue;
      ctx.print(`    ${otherName}: the application leaves ${from.spec.site}; its ${v.name} stops accepting writes`);
      await dissolveEverywhere(ctx, otherName);
    }
  }
}
