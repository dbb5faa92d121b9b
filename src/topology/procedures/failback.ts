// Failback: bring the application back to the primary site of the topology file and restore the
// original copies, sending only what differs (spec 001 §6.6, §6.9).
//
// From the sync site, Fig. 11 (Fig. 12 is the same end state with the async side first):
//   1101       forget the pairs the returning primary held before (except those the sync site took
//              over and kept: they know what changed)
//   1102       the async copy sync site → async site is dissolved when the legs are restored (1107)
//   1103–1104  sync copy sync site → primary, only what differs (fence never: the application
//              still runs at the sync site); wait for duplex
//   1105       the application stops at the sync site
//   1106       swap: the primary site becomes the primary, no copy
//   1107–1110  restore the original legs from the primary site (async leg: delta resync)
//   1108       the application may start at the primary site; 1111–1112 wait until all is duplex
// From the async site, Fig. 15 (Fig. 16 is the same end state with the sync side first):
//   1501       as 1101
//   1502       the async site stops sending to the sync site (its journal drains first)
//   1503–1504  async copy async site → primary in the topology's group, only what differs; wait
//   1505       the application stops at the async site
//   1506       swap: the primary site becomes the primary (the journal drains first), no copy
//   1507–1510  restore the original legs; 1508 the application may start at the primary site
//   1511–1512  wait until every copy is duplex
// Before all: a swap stopped half-way (both ends secondaries) is finished where the generation is
// newer, so the active site is known. A site that lost its data gets a full copy. Every step skips what is done, so a failback
// interrupted anywhere is finished by running it again. Repair reuses the restoring of the legs.
import { TricopyError } from '../../common/errors';
import type { PairStatus } from '../../contracts/pairs';
import type { Site, TopologyContext } from '../context';
import { releaseOrdersFromReturningSite } from '../network-failover';
import { topologyStatus } from '../status';
import { dissolveEverywhere, ensurePair, ensureVolume, finishInterruptedSwaps, swapTo, waitAll } from '../steps';
import { type TopologyVolume, asyncVolumes, pairName, pairPeerSite, parsePairName } from '../topology-file';

/** Whether the active site took over pair `p` and kept it (SSWS there): it records what changed. */
type KeptTest = (p: PairStatus) => boolean;

export async function failback(ctx: TopologyContext, to: string): Promise<void> {
  await ctx.probe();
  const target = ctx.siteByName(to);
  if (target.role !== 'primary') {
    throw new TricopyError('invalid-argument', `failback returns to the primary site of the topology file (${ctx.t.primary.site})`,
      `tricopy topology failback <file> --to ${ctx.t.primary.site} --wait; to run at ${to} instead: tricopy topology failover <file> --to ${to}`);
  }
  if (!target.info) {
    throw new TricopyError('unavailable', `site ${to} is not reachable: ${target.error}`,
      `start its node (${target.spec.node}), with its data directory or an empty one (then it is copied in full), and run the failback again`);
  }
  await releaseOrdersFromReturningSite(ctx, target);
  await finishInterruptedSwaps(ctx);
  const status = await topologyStatus(ctx);
  // With no site accepting writes, the newest writes are where the survivors' copies point.
  const newest = status.activeSite ?? status.writer.site;
  if (newest === null) {
    throw new TricopyError('unavailable', `no site of ${ctx.t.name} accepts writes, and no copy names the site that holds the newest writes: failback would not know what to copy from`,
      'read tricopy topology status <file>; fail over to the site that holds the newest copy, then fail back');
  }
  const active = ctx.siteByName(newest);
  if (active === target) await refuseUnseenTakeover(ctx, target);
  ctx.header(`failback of ${ctx.t.name} to ${to} (spec 001 Figs. 11, 12, 15, 16)`);
  if (active !== target) {
    if (!active.info) {
      throw new TricopyError('unavailable', `the site holding the newest writes, ${active.spec.site}, is not reachable (${status.writer.basis}): failback copies from it`,
        `start its node (${active.spec.node}); if it is lost, read tricopy topology status <file> and fail over to a site that holds the newest copy`);
    }
    await moveBack(ctx, active, target);
  } else {
    ctx.print(`  the application already runs at ${to}`);
  }
  await restoreOriginalLegs(ctx, target);
  ctx.step(`steps 1108/1508: the application may start at ${to}`);
}

/**
 * The target counts as the active site by its own pairs, but a site it sends to (as primary) does
 * not answer and the target has no link to it: that site may have taken over while the target was
 * away (Fig. 10 at the sync site, Fig. 13 at the async site) and the application may have run there
 * since. The target learns of a takeover only from that site, so the facts cannot tell, and step
 * 1108 would start the application on the target's older image (sim seed 824: tokyo restarted after
 * osaka had taken over, written and gone down; the failback found tokyo "already" active).
 */
async function refuseUnseenTakeover(ctx: TopologyContext, target: Site): Promise<void> {
  const to = target.spec.site;
  const silent = new Set<string>();
  for (const p of await ctx.pairsAt(target)) {
    const peer = pairPeerSite(ctx.t, p.name, to);
    if (p.role === 'primary' && !p.peer.connected && peer !== undefined && !ctx.siteByName(peer).info) silent.add(peer);
  }
  if (silent.size === 0) return;
  const sites = [...silent].join(' and ');
  throw new TricopyError('unavailable', `${sites} ${silent.size > 1 ? 'do' : 'does'} not answer and ${to} has no link to ${silent.size > 1 ? 'them' : 'it'}: ` +
    `${to} cannot tell whether ${sites} took over while it was away, so failback will not start the application at ${to}`,
    `start the node of ${sites} and run the failback again (${to} then learns of any takeover); ` +
    `if ${sites} ${silent.size > 1 ? 'are' : 'is'} lost and the application ran at ${to} all along, keep it there: tricopy topology repair <file> --wait`);
}

/** Steps 1101–1106 / 1501–1506: copy back from the active site, then swap the roles. */
async function moveBack(ctx: TopologyContext, active: Site, target: Site): Promise<void> {
  const t = ctx.t;
  const to = target.spec.site;
  // A pair the active site took over and kept (SSWS) records what changed there; with what
  // the returning site had not sent, that is all a swap needs to copy.
  const activePairs = await ctx.pairsAt(active);
  const kept: KeptTest = (p) => p.role === 'primary' && p.suspendCause === 'takeover-by-peer' &&
    activePairs.some((a) => a.name === p.name && a.code === 'SSWS');
  // A volume whose pair with the active site still has the returning site as its writable primary
  // (a failover that stopped before it moved this volume, sim seed 134): the active site holds only
  // a copy of it, so nothing travels back and the pair stays.
  const targetPairs = await ctx.pairsAt(target);
  const stillHere = new Set(t.volumes.map((v) => pairName(t, v.name, active.spec.site, to)).filter((name) => {
    const mine = targetPairs.find((p) => p.name === name);
    const theirs = activePairs.find((p) => p.name === name);
    return mine?.role === 'primary' && mine.suspendCause !== 'takeover-by-peer' && theirs?.role === 'secondary' && theirs.code !== 'SSWS';
  }));
  await forgetOldPairs(ctx, active, target, activePairs, (p) => kept(p) || stillHere.has(p.name));
  await forgetOrphans(ctx, active, target);
  // From the async site (Figs. 15, 16) the copy back is async in the topology's group, so the
  // swap of step 1506 leaves exactly the async leg the original layout needs (nothing to copy
  // again); from the sync site it is sync (Figs. 11, 12), with fence never so a hiccup does not
  // stop the application while it still runs there.
  const viaAsync = active.role === 'async';
  const copied = (viaAsync ? asyncVolumes(t) : t.volumes).filter((v) => {
    const name = pairName(t, v.name, active.spec.site, to);
    if (stillHere.has(name)) ctx.print(`    ${name}: ${to} is still its primary and ${active.spec.site} its secondary: nothing to copy back`);
    return !stillHere.has(name);
  });
  if (viaAsync) await stopSendingToSync(ctx, active, copied);
  await copyBack(ctx, active, target, copied, viaAsync, kept);
  await waitAll(ctx, `wait until ${to} holds everything ${active.spec.site} has`, true);
  ctx.step(`step 1105/1505: the application must stop at ${active.spec.site} now; its volumes stop accepting writes`);
  ctx.step(`step 1106/1506: swap: ${to} becomes the primary (${viaAsync ? 'the journal drains first; ' : ''}no copy: the volumes are identical)`);
  for (const v of copied) await swapTo(ctx, target, pairName(t, v.name, active.spec.site, to), { plannedOnly: true });
}

/** Step 1101/1501. */
async function forgetOldPairs(ctx: TopologyContext, active: Site, target: Site, activePairs: PairStatus[], kept: KeptTest): Promise<void> {
  const to = target.spec.site;
  ctx.step(`step 1101/1501: forget the pairs ${to} held before, except those ${active.spec.site} took over and kept (they know what changed)`);
  for (const p of await ctx.pairsAt(target)) {
    const parsed = parsePairName(ctx.t, p.name);
    const fromActive = parsed?.sites.includes(active.spec.site) && ((p.role === 'secondary' && p.code !== 'PSUE') || kept(p));
    if (!fromActive) await dissolveEverywhere(ctx, p.name);
  }
  // A pair the active site kept from the takeover, but the returning site no longer knows: it
  // lost its data, so there is nothing to swap; the copy below starts afresh.
  const targetPairs = new Set((await ctx.pairsAt(target)).map((p) => p.name));
  for (const p of activePairs) {
    if (p.code === 'SSWS' && parsePairName(ctx.t, p.name)?.sites.includes(to) && !targetPairs.has(p.name)) {
      await active.api.deletePair(p.name, { force: true });
      ctx.print(`    ${p.name}: ${to} has no such pair (it lost its data): dissolved at ${active.spec.site}; a full copy follows`);
    }
  }
}

/** Step 1502. */
async function stopSendingToSync(ctx: TopologyContext, active: Site, copied: TopologyVolume[]): Promise<void> {
  const sync = ctx.site('sync');
  ctx.step(`step 1502: ${active.spec.site} stops sending to ${sync.spec.site} (its journal drains first)`);
  for (const v of copied) {
    const name = pairName(ctx.t, v.name, sync.spec.site, active.spec.site);
    const p = await ctx.pairAt(active, name);
    if (p && p.role === 'primary') await dissolveEverywhere(ctx, name);
    else if (await ctx.pairAt(sync, name)) {
      // The active site dissolved its side (it took over): the half left at the sync site would
      // only ever report a failed copy (sim seed 384: failback waited on it forever).
      ctx.print(`    ${name}: ${active.spec.site} no longer sends to ${sync.spec.site}; the half left at ${sync.spec.site} goes too`);
      await dissolveEverywhere(ctx, name);
    } else ctx.print(`    ${name}: no copy from ${active.spec.site} to ${sync.spec.site}`);
  }
}

/** Steps 1103–1104/1503–1504. */
async function copyBack(ctx: TopologyContext, active: Site, target: Site, copied: TopologyVolume[], viaAsync: boolean, kept: KeptTest): Promise<void> {
  const to = target.spec.site;
  ctx.step(`steps 1103–1104/1503–1504: copy ${active.spec.site} → ${to} ${viaAsync ? `asynchronously in group ${ctx.t.name}` : 'synchronously'}, only what differs (a full copy if ${to} lost its data)`);
  for (const v of copied) {
    await ensureVolume(ctx, target, v);
    const name = pairName(ctx.t, v.name, active.spec.site, to);
    const existing = await ctx.pairAt(target, name);
    if (existing && existing.role === 'secondary') {
      ctx.print(`    ${name}: ${active.spec.site} → ${to} exists (${existing.code})`);
      continue;
    }
    if (existing && kept(existing)) {
      // The regions changed on either side since the takeover travel; the returning site's own
      // changes after it lost contact are discarded (the application has run at the active site since).
      await swapTo(ctx, active, name, { discardPeer: target.info!.name });
      await active.api.setProtection(name, { fence: 'never', fenceGroup: null });
      continue;
    }
    if (viaAsync) await ensurePair(ctx, active, target, v, 'async', 'delta');
    else await ensurePair(ctx, active, target, v, 'sync', 'delta', { fenceGroup: false, fence: 'never' });
  }
}

/** From the primary site, rebuild the original legs (reusing any that already fit). Steps 1107–1112/1509–1512. */
export async function restoreOriginalLegs(ctx: TopologyContext, primary: Site): Promise<void> {
  const t = ctx.t;
  const mid = ctx.site('sync');
  const far = ctx.site('async');
  const asyncLegFrom = t.layout === 'cascade' ? mid : primary;
  ctx.step('steps 1107–1110/1509–1510: restore the original copies from the primary site (only differing blocks travel)');
  await dissolveMisfits(ctx, primary, asyncLegFrom);
  if (mid.info) {
    for (const v of t.volumes) await restoreSyncLeg(ctx, primary, mid, v);
  } else {
    ctx.print(`  ${mid.spec.site} is not reachable: its copies wait until it returns (run topology repair then)`);
  }
  if (far.info && asyncLegFrom.info) {
    for (const v of asyncVolumes(t)) await ensurePair(ctx, asyncLegFrom, far, v, 'async', 'delta');
  } else if (!far.info) {
    ctx.print(`  ${far.spec.site} is not reachable: its copies wait until it returns (run topology repair then)`);
  }
  await waitAll(ctx, 'steps 1111–1112/1511–1512: wait until every copy is duplex');
}

type HalfTest = (s: Site, p: PairStatus) => boolean;

/**
 * Every reachable site's pairs; a test for a half whose peer answers without the pair, and one for
 * a primary half so left (orphaned).
 */
async function pairsOfSites(ctx: TopologyContext): Promise<{ pairsBySite: Map<Site, PairStatus[]>; peerDissolved: HalfTest; orphaned: HalfTest }> {
  const pairsBySite = new Map<Site, PairStatus[]>();
  for (const s of ctx.sites) if (s.info) pairsBySite.set(s, await ctx.pairsAt(s));
  const peerDissolved = (s: Site, p: PairStatus): boolean => {
    const peer = ctx.sites.find((x) => x !== s && parsePairName(ctx.t, p.name)?.sites.includes(x.spec.site));
    return peer !== undefined && pairsBySite.has(peer) && !pairsBySite.get(peer)!.some((x) => x.name === p.name);
  };
  const orphaned = (s: Site, p: PairStatus): boolean => p.role === 'primary' && peerDissolved(s, p);
  return { pairsBySite, peerDissolved, orphaned };
}

/**
 * Halves left at a site the failback does not copy from or to (its peer dissolved the pair, say
 * after a Fig. 14 reversal): they are no copy of anything, and the waits would count them as failed.
 * A secondary half too: its primary dissolved the pair while this site was down (a Fig. 13 failover
 * away from the primary while the sync site was down, sim seed 2084), and only a primary dials, so
 * the half never hears of it and reports its copy in progress for good. It is left read-only, as
 * every secondary a procedure leaves behind; one that took over (SSWS) may hold writes and stays.
 */
async function forgetOrphans(ctx: TopologyContext, active: Site, target: Site): Promise<void> {
  const { pairsBySite, peerDissolved } = await pairsOfSites(ctx);
  for (const [s, pairs] of pairsBySite) {
    if (s === active || s === target) continue;
    for (const p of pairs) {
      const leftBehind = p.role === 'secondary' && p.code !== 'SSWS';
      if ((p.role !== 'primary' && !leftBehind) || !peerDissolved(s, p)) continue;
      await s.api.deletePair(p.name, { force: true, ...(leftBehind ? { keepReadOnly: true } : {}) });
      ctx.print(`    ${p.name}: forgotten at ${s.spec.site} (its peer no longer has the pair${leftBehind ? '; its volume left read-only' : ''})`);
    }
  }
}

/**
 * Dissolves every topology pair that is not part of the original layout or points the wrong way,
 * and those whose secondary site came back without them (it lost its data: copy it again).
 */
async function dissolveMisfits(ctx: TopologyContext, syncLegFrom: Site, asyncLegFrom: Site): Promise<void> {
  const t = ctx.t;
  const mid = ctx.site('sync');
  const far = ctx.site('async');
  const wantedSync = new Set(t.volumes.map((v) => pairName(t, v.name, syncLegFrom.spec.site, mid.spec.site)));
  const wantedAsync = new Set(asyncVolumes(t).map((v) => pairName(t, v.name, asyncLegFrom.spec.site, far.spec.site)));
  const { pairsBySite, orphaned } = await pairsOfSites(ctx);
  for (const [s, pairs] of pairsBySite) {
    for (const p of pairs) {
      const stale = p.suspendCause === 'takeover-by-peer' || orphaned(s, p);
      const wrongDirection = stale || (wantedSync.has(p.name) && p.role === 'primary' && s !== syncLegFrom) ||
        (wantedAsync.has(p.name) && p.role === 'primary' && s !== asyncLegFrom) ||
        (wantedSync.has(p.name) && p.mode !== 'sync') || (wantedAsync.has(p.name) && p.mode !== 'async');
      if (!wantedSync.has(p.name) && !wantedAsync.has(p.name)) await dissolveEverywhere(ctx, p.name);
      else if (wrongDirection) await dissolveEverywhere(ctx, p.name);
    }
  }
}

/** The sync leg of one volume: give a failback copy the topology's protection, resync a split one, or create it. */
async function restoreSyncLeg(ctx: TopologyContext, primary: Site, mid: Site, v: TopologyVolume): Promise<void> {
  const t = ctx.t;
  const name = pairName(t, v.name, primary.spec.site, mid.spec.site);
  const p = await ctx.pairAt(primary, name);
  if (p && p.role === 'primary' && p.mode === 'sync' && (p.fence !== t.sync.fence || p.fenceGroup !== t.name)) {
    // A copy made for the failback (fence never): give it the topology's protection.
    await primary.api.setProtection(name, { fence: t.sync.fence, fenceGroup: t.name });
    ctx.print(`    ${name}: fence ${t.sync.fence}, protected with group ${t.name}`);
  }
  if (p && p.role === 'primary' && (p.code === 'PSUS' || p.code === 'PSUE')) {
    await primary.api.resync(name);
    ctx.print(`    ${name}: resync (changed regions only)`);
    return;
  }
  await ensurePair(ctx, primary, mid, v, 'sync', 'delta');
}
