// The building blocks of the topology procedures, each idempotent: it first checks whether the
// nodes already are as the step wants them (and says so), so a procedure interrupted anywhere
// converges when it is run again.
import { TricopyError } from '../common/errors';
import type { NetworkNodeClient, NodeClient } from '../contracts/node-client';
import type { PairStatus } from '../contracts/pairs';
import { type PairThroughNetwork, bindAtSourceEdge, pairThroughNetwork } from '../edge/pair-via';
import type { Site, TopologyContext } from './context';
import { readFacts } from './facts';
import { type TopologyStatus, topologyStatus } from './status';
import { interruptedSwap } from './writer';
import { type TopologyVolume, pairName } from './topology-file';

/** Takeover and swap apply or drain a journal before they answer. */
const commandTimeoutMs = 600_000;
/** Longest an async pair may take to send what its journal holds. */
const drainTimeoutMs = 600_000;

export async function ensureVolume(ctx: TopologyContext, s: Site, v: TopologyVolume): Promise<void> {
  try {
    const existing = await s.api.getVolume(v.name);
    if (existing.sizeBytes < v.sizeBytes) {
      throw new TricopyError('conflict', `volume ${v.name} at ${s.spec.site} is smaller than the topology says`,
        `grow it (while it is in no pair): tricopy --node ${s.spec.node} volume resize ${v.name} --size ${v.sizeBytes}`);
    }
    ctx.print(`    volume ${v.name} at ${s.spec.site}: exists`);
  } catch (err) {
    if (!(err instanceof TricopyError) || err.code !== 'not-found') throw err;
    await s.api.createVolume({ name: v.name, size: v.sizeBytes, thin: true, description: `topology ${ctx.t.name}` });
    ctx.print(`    volume ${v.name} at ${s.spec.site}: created`);
  }
}

export async function ensurePair(ctx: TopologyContext, from: Site, to: Site, v: TopologyVolume, mode: 'sync' | 'async', initialCopy: 'full' | 'delta',
  options: { fenceGroup?: boolean; fence?: 'data' | 'never' } = {}): Promise<void> {
  const name = pairName(ctx.t, v.name, from.spec.site, to.spec.site);
  const existing = await ctx.pairAt(from, name);
  if (existing && existing.role === 'primary') {
    ctx.print(`    ${name}: ${from.spec.site} → ${to.spec.site} ${existing.mode} exists (${existing.code})`);
    return;
  }
  if (existing) {
    throw new TricopyError('conflict', `pair ${name} points from ${to.spec.site} to ${from.spec.site}; it must be dissolved first`,
      `read tricopy topology status <file>; where the application runs decides: failback <file> --to ${ctx.t.primary.site} restores the layout, repair keeps it`);
  }
  const stale = await ctx.pairAt(to, name);
  if (stale) await to.api.deletePair(name, { force: true });
  const info = to.info!;
  const fence = options.fence ?? (mode === 'sync' ? ctx.t.sync.fence : 'never');
  const addressed = await throughNetwork(ctx, from, info.name, name);
  await from.api.createPair({
    name, volume: v.name, peer: { node: info.name, host: info.replAddress.host, replPort: info.replAddress.port, ...addressed?.peer }, mode, fence,
    ...(addressed ? { returnAddress: addressed.returnAddress } : {}),
    ...(mode === 'async' ? { group: ctx.t.name } : {}), initialCopy,
    ...(options.fenceGroup === false ? {} : { fenceGroup: ctx.t.name }),
    // The node keeps it: status can then tell when the secondary comes back on another data directory.
    peerDataDirId: info.dataDirId,
  });
  ctx.print(`    ${name}: ${from.spec.site} → ${to.spec.site} ${mode} created (${initialCopy === 'delta' ? 'copying only differing blocks' : 'full initial copy'})`);
}

/** A topology whose pairs go through a network: the pair's addresses at the edges, and its order assigned. */
async function throughNetwork(ctx: TopologyContext, from: Site, peerNode: string, pair: string): Promise<PairThroughNetwork | undefined> {
  if (ctx.t.network === undefined) return undefined;
  const api = from.api as NodeClient & Partial<NetworkNodeClient>;
  if (!api.getNetwork) throw new TricopyError('internal', `the client of ${from.spec.site} cannot read network attachments`);
  const route = pairThroughNetwork(await api.getNetwork(ctx.t.network), peerNode, undefined, { realNamesOnly: true });
  await bindAtSourceEdge(route, pair);
  return route;
}

/**
 * At `site`, take over a pair whose primary is gone, then dissolve it: the volume becomes independent.
 * `leavePeerReadOnly`: the old primary answers, so the takeover swaps and it becomes the secondary;
 * its end is then dissolved first and its volume stays read-only (the application left it).
 */
export async function takeoverAndDissolve(ctx: TopologyContext, site: Site, name: string, how: { leavePeerReadOnly?: Site } = {}): Promise<void> {
  const p = await ctx.pairAt(site, name);
  if (!p) {
    ctx.print(`    ${name}: already dissolved at ${site.spec.site}`);
    return;
  }
  if (p.role === 'secondary' && p.code !== 'SSWS') {
    const pairs = await site.api.takeover(name, { timeoutMs: commandTimeoutMs });
    ctx.print(`    ${name}: takeover at ${site.spec.site} → ${pairs[0]?.code ?? '?'} (${pairs[0]?.reason ?? ''})`);
  }
  // Only when it did become the secondary: a primary end left in place learns of the takeover instead.
  const peer = how.leavePeerReadOnly;
  if (peer && (await ctx.pairAt(peer, name))?.role === 'secondary') {
    await dissolveEverywhere(ctx, name);
    return;
  }
  await site.api.deletePair(name, { force: true });
  ctx.print(`    ${name}: dissolved at ${site.spec.site}`);
}

/** At `site`, take over a pair whose primary is gone and keep it (SSWS): it records the changes made here. */
export async function takeoverKeeping(ctx: TopologyContext, site: Site, name: string): Promise<void> {
  const p = await ctx.pairAt(site, name);
  if (!p) {
    ctx.print(`    ${name}: already dissolved at ${site.spec.site}`);
    return;
  }
  if (p.role === 'primary' || p.code === 'SSWS') {
    ctx.print(`    ${name}: ${site.spec.site} already accepts writes (${p.code})`);
    return;
  }
  const pairs = await site.api.takeover(name, { timeoutMs: commandTimeoutMs });
  ctx.print(`    ${name}: takeover at ${site.spec.site} → ${pairs[0]?.code ?? '?'}; kept, so the failback copies only what changed`);
}

/** Planned role reversal: `site` becomes the primary of `name` (its peer answers). */
/**
 * Makes `site` the primary of `name`: a swap (with the old primary discarding its changes when
 * `how.discardPeer` names it), or a takeover, which without the old primary makes the copy writable on
 * its own; `plannedOnly` refuses that (the old primary holds data the copy must not go without).
 */
export async function swapTo(ctx: TopologyContext, site: Site, name: string, how: { discardPeer?: string; plannedOnly?: boolean } = {}): Promise<void> {
  const p = await ctx.pairAt(site, name);
  if (!p) {
    throw new TricopyError('conflict', `pair ${name} does not exist at ${site.spec.site}: ${site.spec.site} holds no copy to take over`,
      `read what each site holds with tricopy topology status <file>; a site without a copy gets one from tricopy topology repair <file> --wait (or failback --to ${ctx.t.primary.site})`);
  }
  if (p.role === 'primary') {
    ctx.print(`    ${name}: ${site.spec.site} is already the primary`);
    return;
  }
  const pairs = how.discardPeer !== undefined
    ? await site.api.swap(name, { discard: how.discardPeer }, { timeoutMs: commandTimeoutMs })
    : how.plannedOnly
      ? await site.api.swap(name, undefined, { timeoutMs: commandTimeoutMs })
      : await site.api.takeover(name, { timeoutMs: commandTimeoutMs });
  const mine = pairs.find((x) => x.name === name);
  ctx.print(`    ${name}: swapped, ${site.spec.site} is the primary${mine ? ` (${mine.reason})` : ''}`);
}

/**
 * Pairs whose ends are both secondaries (a planned swap stopped half-way, say by a cut link): the
 * swap is finished at the end with the newer generation, which wrote last, so the procedure that
 * follows sees one primary per pair and status names the right site.
 */
export async function finishInterruptedSwaps(ctx: TopologyContext): Promise<void> {
  const halted = (await readFacts(ctx)).pairs.flatMap((e) => {
    const newer = interruptedSwap(e);
    return newer ? [{ name: e.name, site: ctx.siteByName(newer.site) }] : [];
  });
  if (halted.length === 0) return;
  ctx.step('finish the swaps that stopped half-way (both ends secondaries): the end with the newer generation becomes the primary');
  for (const h of halted) await swapTo(ctx, h.site, h.name, { plannedOnly: true });
}

export async function splitAt(ctx: TopologyContext, site: Site, name: string): Promise<void> {
  const p = await ctx.pairAt(site, name);
  if (!p || p.role !== 'primary') return;
  if (p.code === 'PSUS') {
    ctx.print(`    ${name}: already split`);
    return;
  }
  await site.api.split(name);
  ctx.print(`    ${name}: split (operator) at ${site.spec.site}`);
}

/**
 * Deletes a pair on both sides (forced where a side is unreachable); an async pair in step drains
 * first. The secondary goes first and keeps its volume read-only: the site is left behind with the
 * primary's image, and a host that writes it there would write what the application never sees.
 */
export async function dissolveEverywhere(ctx: TopologyContext, name: string): Promise<void> {
  const ends: Array<{ s: Site; p: PairStatus }> = [];
  for (const s of ctx.sites) {
    const p = s.info ? await ctx.pairAt(s, name) : undefined;
    if (p) ends.push({ s, p });
  }
  // The async secondary then holds everything, and a delta resync from its position sends the least.
  for (const { s, p } of ends) {
    if (p.role === 'primary' && p.mode === 'async' && p.code === 'PAIR' && p.peer.connected) await waitLagZero(ctx, s, name);
  }
  const leftBehind = (p: PairStatus): boolean => p.role === 'secondary' && p.code !== 'SSWS';
  for (const { s, p } of [...ends].sort((a, b) => Number(leftBehind(b.p)) - Number(leftBehind(a.p)))) {
    await s.api.deletePair(name, { force: true, ...(leftBehind(p) ? { keepReadOnly: true } : {}) }).catch((err: unknown) => {
      if (!(err instanceof TricopyError && err.code === 'not-found')) throw err;
    });
    ctx.print(`    ${name}: dissolved (was ${p.role} at ${s.spec.site}${leftBehind(p) ? ', its volume left read-only' : ''})`);
  }
}

/**
 * Waits until the async secondary of `name` applied every entry its group's journal held when the
 * wait began (writes forwarded meanwhile, say through a cascade, do not keep it waiting forever).
 */
export async function waitLagZero(ctx: TopologyContext, s: Site, name: string): Promise<void> {
  const clock = ctx.clock;
  const deadline = clock.now() + drainTimeoutMs;
  let target: number | undefined;
  for (;;) {
    const pairs = s.info ? await ctx.pairsAt(s) : [];
    const p = pairs.find((x) => x.name === name);
    if (!p || (p.lag?.entries ?? 0) === 0 || !p.group) return;
    const group = await s.api.getGroup(p.group);
    target ??= group.lastSeq;
    if (group.appliedSeq >= target) return;
    // Entries held back for a sync copy that cannot be updated are writes refused to hosts (fence
    // data): the sync site never had them, so the async site must not get them either. They stay,
    // and so does whatever the journal holds behind the first of them (the stream is a prefix).
    // Counted by the group's journal: every pair of the group reports the same journal's.
    const blocked = group.blockedEntries;
    if (blocked > 0 && group.lag.entries <= blocked) {
      ctx.print(`    ${name}: everything shippable arrived; ${blocked} entries stay behind, held for the sync copy or queued after one (writes refused to hosts)`);
      return;
    }
    if (clock.now() > deadline) {
      throw new TricopyError('unavailable', `pair ${name} did not drain within ${drainTimeoutMs / 1000} s (${p.peer.node} applied through entry ${group.appliedSeq} of ${target}${blocked > 0 ? `; ${blocked} entries held for the sync copy or queued after one` : ''}; ${p.state})`,
        `follow its lag with tricopy --node ${s.spec.node} group status, then run the same command again (it continues where it stopped)`);
    }
    await clock.sleep(100);
  }
}

/** Waits for every copy to be duplex; `required` when the next step depends on it (else only with --wait). */
export async function waitAll(ctx: TopologyContext, title: string, required = false): Promise<void> {
  const waitSeconds = ctx.options.waitSeconds;
  if (waitSeconds <= 0 && !required) {
    ctx.print(`  (not waiting for copies; follow them with: tricopy topology status <file>)`);
    return;
  }
  ctx.step(title);
  const clock = ctx.clock;
  const deadline = clock.now() + (waitSeconds > 0 ? waitSeconds : 3600) * 1000;
  let last = '';
  for (;;) {
    const status = await topologyStatus(ctx);
    // Copies to or from a site that does not answer wait for it; repair restores them later.
    const down = new Set(status.sites.filter((x) => !x.reachable).map((x) => x.site));
    const waiting = status.legs.filter((l) => l.code !== 'PAIR' && (down.has(l.from) || down.has(l.to)));
    const pending = status.legs.filter((l) => l.code !== 'PAIR' && !waiting.includes(l));
    const failed = pending.filter((l) => l.code === 'PSUE');
    if (failed.length > 0) {
      throw new TricopyError('io-error', `copies failed: ${failed.map((l) => `${l.pair} (${l.reason})`).join('; ')}`,
        'fix the cause (see tricopy topology status <file>), then run the same command again: it continues where it stopped');
    }
    // The primary end reports duplex first; the next step (a swap, say) needs the secondary there too.
    const behind = pending.length === 0 ? await secondariesBehind(ctx, status.legs.filter((l) => !waiting.includes(l))) : [];
    const line = [...pending.map((l) => `${l.pair} ${l.code}${l.progressPercent !== null ? ` ${l.progressPercent}%` : ''}`), ...behind].join(', ');
    if (pending.length === 0 && behind.length === 0) {
      if (waiting.length === 0) ctx.print('    every copy is duplex');
      else ctx.print(`    every copy is duplex except those of unreachable sites: ${waiting.map((l) => `${l.pair} ${l.code}`).join(', ')}`);
      return;
    }
    if (line !== last) ctx.print(`    waiting: ${line}`);
    last = line;
    if (clock.now() > deadline) {
      throw new TricopyError('unavailable', `copies still running after ${waitSeconds} s: ${line}`,
        'they go on without the command: follow them with tricopy topology status <file>, or run the command again with a longer --timeout');
    }
    await clock.sleep(500);
  }
}

/** Legs in step at their primary whose secondary end does not say so yet (it learns it from the primary). */
async function secondariesBehind(ctx: TopologyContext, legs: TopologyStatus['legs']): Promise<string[]> {
  const behind: string[] = [];
  for (const l of legs) {
    const p = await ctx.pairAt(ctx.siteByName(l.to), l.pair);
    if (p && p.role === 'secondary' && p.code !== 'PAIR') behind.push(`${l.pair} at ${l.to} ${p.code}`);
  }
  return behind;
}
