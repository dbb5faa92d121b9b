// Repair: keep the application at the primary site and restore protection with the sites that
// answer. Spec 001 has no figure for it; it is §9's case 6 (the sync site or its link lost with
// protection on: "availability is lost until the pair is repaired") and the return of a lost site.
//   0  a swap stopped half-way (both ends secondaries) is finished where the generation is newer
//   1  refused unless the application runs at the primary site (then it is failback's work)
//   2  sync site lost: split its sync copies by operator decision, so writes continue and the
//      changed regions are recorded for the resync
//   3  cascade with the intermediate lost: the far site takes over from the intermediate and the
//      primary sends to it directly, only what it lacks (delta resync); wait for duplex
//   4  otherwise restore the original legs as failback does (steps 1107–1112): a returned site's
//      copies are resynchronised or created, a cascade routed around the intermediate is restored
import { TricopyError } from '../../common/errors';
import type { TopologyContext } from '../context';
import { topologyStatus } from '../status';
import { ensurePair, finishInterruptedSwaps, splitAt, takeoverAndDissolve, waitAll } from '../steps';
import { asyncVolumes, pairName } from '../topology-file';
import { restoreOriginalLegs } from './failback';

export async function repair(ctx: TopologyContext): Promise<void> {
  const t = ctx.t;
  await ctx.probe();
  await finishInterruptedSwaps(ctx);
  const status = await topologyStatus(ctx);
  if (!status.activeSite) {
    const m = status.missing[0];
    throw new TricopyError('conflict', `no site of ${t.name} accepts writes${m ? `: ${m.detail}` : ''}`,
      m?.hint ?? 'read tricopy topology status <file>, then fail over: tricopy topology failover <file> --to <site>');
  }
  const active = ctx.siteByName(status.activeSite);
  if (active !== ctx.site('primary')) {
    throw new TricopyError('conflict', `${t.name} runs at ${active.spec.site}; repair works on the original layout`,
      `to restore it, run: tricopy topology failback <file> --to ${t.primary.site}`);
  }
  const primary = active;
  const mid = ctx.site('sync');
  const far = ctx.site('async');
  ctx.header(`repair of ${t.name}: keep the application at ${primary.spec.site}, protect it with the sites that answer`);
  if (t.layout === 'multi-target') {
    if (!mid.info) {
      ctx.step(`${mid.spec.site} is lost: suspend its sync copies by operator decision so writes continue (changes are recorded)`);
      for (const v of t.volumes) await splitAt(ctx, primary, pairName(t, v.name, primary.spec.site, mid.spec.site));
    }
    return restoreOriginalLegs(ctx, primary);
  }
  // Cascade: with the intermediate lost, the primary sends to the far site directly.
  if (!mid.info) {
    ctx.step(`${mid.spec.site} is lost: suspend the sync copies by operator decision so writes continue (changes are recorded)`);
    for (const v of t.volumes) await splitAt(ctx, primary, pairName(t, v.name, primary.spec.site, mid.spec.site));
    if (far.info) {
      ctx.step(`${far.spec.site} stops waiting for ${mid.spec.site} and receives from ${primary.spec.site} directly, only what it lacks`);
      for (const v of asyncVolumes(t)) await takeoverAndDissolve(ctx, far, pairName(t, v.name, mid.spec.site, far.spec.site));
      for (const v of asyncVolumes(t)) await ensurePair(ctx, primary, far, v, 'async', 'delta');
      await waitAll(ctx, 'wait until the direct async copy is duplex');
    }
    return;
  }
  return restoreOriginalLegs(ctx, primary);
}
