// Apply: create what the topology file describes. Spec 001 Fig. 3 (initial setup):
//   302–304  create the volumes at the primary site
//   310      sync copy primary → sync site of every volume, until duplex
//   305      async copy primary → async site (the log volumes, or every volume) in one
//            consistency group named after the topology, until duplex
//   306      wait until both copies are duplex; normal operation may begin
// A cascade sends the async copy from the sync site instead (spec 000 Fig. 1). Every step skips
// what already exists, so applying twice changes nothing.
import { TricopyError } from '../../common/errors';
import type { TopologyContext } from '../context';
import { topologyStatus } from '../status';
import { ensurePair, ensureVolume, waitAll } from '../steps';
import { asyncVolumes } from '../topology-file';

export async function apply(ctx: TopologyContext): Promise<void> {
  const t = ctx.t;
  ctx.header(`apply topology ${t.name} (${t.layout}; spec 001 Fig. 3)`);
  await ctx.probe();
  for (const s of ctx.sites) {
    if (!s.info) {
      throw new TricopyError('unavailable', `site ${s.spec.site} (${s.spec.node}) is not reachable: ${s.error}`,
        `apply needs every site: start its node; when a site is lost for good, see docs/runbook.md (tricopy topology repair <file> keeps the others protected)`);
    }
  }
  const status = await topologyStatus(ctx);
  if (status.activeSite !== null && status.activeSite !== t.primary.site) {
    throw new TricopyError('conflict', `topology ${t.name} runs at ${status.activeSite} after a failover`,
      `bring it back with: tricopy topology failback <file> --to ${t.primary.site}`);
  }
  const primary = ctx.site('primary');
  const sync = ctx.site('sync');
  const far = ctx.site('async');
  ctx.step('create the volumes at the primary site');
  for (const v of t.volumes) await ensureVolume(ctx, primary, v);
  if (t.layout === 'multi-target') {
    ctx.step(`step 310: sync copy ${primary.spec.site} → ${sync.spec.site} of every volume (fence ${t.sync.fence})`);
    for (const v of t.volumes) await ensurePair(ctx, primary, sync, v, 'sync', 'full');
    ctx.step(`step 305: async copy ${primary.spec.site} → ${far.spec.site} of ${t.logLayout ? 'the log volumes' : 'every volume'} in consistency group ${t.name}`);
    for (const v of asyncVolumes(t)) await ensurePair(ctx, primary, far, v, 'async', 'full');
  } else {
    ctx.step(`cascade: sync copy ${primary.spec.site} → ${sync.spec.site} of every volume (fence ${t.sync.fence})`);
    for (const v of t.volumes) await ensurePair(ctx, primary, sync, v, 'sync', 'full');
    ctx.step(`cascade: ${sync.spec.site} forwards ${t.logLayout ? 'the log volumes' : 'every volume'} asynchronously to ${far.spec.site} in group ${t.name}`);
    for (const v of asyncVolumes(t)) await ensurePair(ctx, sync, far, v, 'async', 'full');
  }
  await waitAll(ctx, 'step 306: wait until every copy is duplex');
}
