// DR drill without disruption: at a site that holds a copy of the topology (a secondary, read-only
// to hosts), snapshot every volume of the copy at one instant and export a writable throwaway clone
// of each (`VOLUME@NAME`, writes to an overlay), while the pairs stay as they are and keep applying
// the primary's writes into the real volumes. The operator mounts the clones and runs the
// application's checks; ending the drill discards the clones and their snapshots. The node records
// drill-started and drill-ended (with the duration and the operator's result) as events.
import { TricopyError, errorMessage } from '../../common/errors';
import type { DeletedCloneSet, DrillResult, DrillView } from '../../contracts/clones';
import type { CloneNodeClient } from '../../contracts/node-client';
import type { Site, TopologyContext } from '../context';

/** The clone client of a site's node (the HTTP client implements both). */
export type CloneClientOf = (site: Site) => CloneNodeClient;

export const defaultDrillName = 'drill';

export async function startDrill(ctx: TopologyContext, clones: CloneClientOf, at: string, name: string): Promise<void> {
  const t = ctx.t;
  await ctx.probe();
  const site = ctx.siteByName(at);
  if (!site.info) throw new TricopyError('unavailable', `the node of ${at} does not answer: ${site.error ?? 'no answer'}`, 'a drill runs on the copy a site holds; bring its node back first');
  const pairs = (await ctx.pairsAt(site)).filter((p) => t.volumes.some((v) => v.name === p.volume));
  // A copy is a secondary hosts cannot write; a cascade's intermediate is one too, though it also sends on.
  const copies = pairs.filter((p) => p.role === 'secondary' && p.state !== 'secondary-writable');
  const written = pairs.filter((p) => !copies.some((c) => c.volume === p.volume));
  if (copies.length === 0 || written.length > 0) {
    throw new TricopyError('conflict', `${at} holds no copy of ${t.name} to drill on${written.length > 0 ? `: hosts write ${written[0]!.volume} there` : ''}`,
      'drill at a site that receives a copy (the sync or async site); see tricopy topology status <file>');
  }
  const volumes = [...new Set(copies.map((p) => p.volume))].sort();
  ctx.header(`DR drill "${name}" of ${t.name} at ${at}: writable clones of its copy, replication goes on`);
  for (const p of copies) {
    ctx.step(`copy ${p.name} at ${at} is ${p.code}${p.code === 'PAIR' ? '' : ': the drill tests it as it is now'}`);
  }
  ctx.step(`snapshot ${volumes.join(', ')} at one instant (the apply of async copies held at a batch boundary) and export clones`);
  const set = await clones(site).createCloneSet({ name, volumes, drill: { topology: t.name, site: at, pairs: copies.map((p) => ({ name: p.name, code: p.code })) } });
  for (const c of set.clones) ctx.step(`clone ${c.exportName} (writable, throwaway): ${c.exportUri}`);
  ctx.print(`the drill "${name}" started at ${set.createdAt}; end it with: tricopy topology drill <file> --end --at ${at}${name === defaultDrillName ? '' : ` --name ${name}`}`);
}

export async function endDrill(ctx: TopologyContext, clones: CloneClientOf, options: { at?: string; name?: string; force: boolean; result?: DrillResult; note?: string }): Promise<DeletedCloneSet[]> {
  const t = ctx.t;
  await ctx.probe();
  const sites = options.at ? [ctx.siteByName(options.at)] : ctx.sites.filter((s) => s.info);
  const ended: DeletedCloneSet[] = [];
  for (const site of sites) {
    if (!site.info) throw new TricopyError('unavailable', `the node of ${site.spec.site} does not answer: ${site.error ?? 'no answer'}`, 'its clones stay until it answers; end the drill then');
    const sets = (await clones(site).listCloneSets()).filter((s) => s.drill?.topology === t.name && (options.name === undefined || s.name === options.name));
    for (const set of sets) {
      const done = await clones(site).endCloneSet(set.name, {
        force: options.force, ...(options.result ? { result: options.result } : {}), ...(options.note ? { note: options.note } : {}),
      });
      ctx.step(`${site.spec.site}: the drill "${set.name}" ended after ${(done.durationMs / 1000).toFixed(1)} s: clones and snapshots discarded (${done.writtenBytes} bytes written to the clones)`);
      ended.push(done);
    }
  }
  if (ended.length === 0) {
    throw new TricopyError('not-found', `no drill of ${t.name}${options.name ? ` named ${options.name}` : ''} runs${options.at ? ` at ${options.at}` : ''}`, 'see them with: tricopy topology drill <file> --status');
  }
  return ended;
}

export async function drillStatus(ctx: TopologyContext, clones: CloneClientOf): Promise<{ drills: DrillView[]; unreachable: string[] }> {
  const t = ctx.t;
  await ctx.probe();
  const drills: DrillView[] = [];
  const unreachable: string[] = [];
  for (const site of ctx.sites) {
    if (!site.info) {
      unreachable.push(`${site.spec.site}: ${site.error ?? 'no answer'}`);
      continue;
    }
    try {
      const sets = (await clones(site).listCloneSets()).filter((s) => s.drill?.topology === t.name);
      if (sets.length === 0) continue;
      const pairs = await ctx.pairsAt(site);
      const appliedOf = async (group: string | null): Promise<number | null> => (group ? (await site.api.getGroup(group).catch(() => undefined))?.appliedSeq ?? null : null);
      const pairsNow = await Promise.all(pairs.filter((p) => p.role === 'secondary').map(async (p) => ({ name: p.name, code: p.code, appliedSeq: await appliedOf(p.group) })));
      for (const s of sets) {
        drills.push({
          site: site.spec.site, name: s.name, startedAt: s.createdAt, runningMs: Math.max(0, ctx.clock.now() - Date.parse(s.createdAt)),
          clones: s.clones, pairsAtStart: s.drill?.pairs ?? [], pairsNow,
        });
      }
    } catch (err) {
      unreachable.push(`${site.spec.site}: ${errorMessage(err)}`);
    }
  }
  return { drills, unreachable };
}
