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
import { asyncVolumes, topologyDocument } from '../topology-file';
import { ensureQuorumPair } from './quorum-arbiter';

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
  // Only nodes that can take part are asked (a simulator's nodes cannot; nothing changes for them).
  if (t.failover?.mode === 'automatic' || ctx.sites.some((s) => s.api.failoverStatus !== undefined)) await configureFailover(ctx);
}

/**
 * failover: automatic — every site's node is given its part (the primary first, so that it claims
 * the arbiter before the sync site may), then apply waits until the primary holds the arbiter and
 * so accepts writes. failover: manual — nodes that took part before stop.
 */
async function configureFailover(ctx: TopologyContext): Promise<void> {
  const t = ctx.t;
  const f = t.failover;
  if (f?.mode !== 'automatic') {
    for (const s of ctx.sites) {
      if (!s.api.failoverStatus || !s.info) continue;
      const taking = (await s.api.failoverStatus().catch(() => [])).some((x) => x.topology === t.name);
      if (!taking) continue;
      await s.api.removeFailover!(t.name);
      ctx.print(`  ${s.spec.site} no longer takes part in automatic failover (failover: manual)`);
    }
    return;
  }
  const a = f.arbiter!;
  const arbiter = a.kind === 'etcd' ? `etcd ${a.endpoints.join(',')}` : `quorum pair ${a.volume}`;
  if (a.kind === 'quorum-pair') await ensureQuorumPair(ctx, a.volume, a.sizeBytes);
  ctx.step(`automatic failover: every site's node takes part (arbiter ${arbiter}; lease ${f.leaseMs} ms, renew ${f.renewMs} ms, fence margin ${f.fenceMarginMs} ms; arbiter lost: ${f.onArbiterLost})`);
  const document = topologyDocument(t);
  for (const s of ctx.sites) {
    if (!s.api.configureFailover) {
      throw new TricopyError('invalid-argument', `the client of ${s.spec.site} cannot give its node a part in automatic failover`, 'run topology apply from the CLI against the nodes');
    }
    const status = await s.api.configureFailover({ topology: document, name: t.name, site: s.spec.site, role: s.role, ...(ctx.options.apiToken ? { apiToken: ctx.options.apiToken } : {}) });
    ctx.print(`  ${s.spec.site} (${s.role}): ${status.state === 'observer' ? 'observes' : 'contends for the arbiter'}`);
  }
  const primary = ctx.site('primary');
  const deadline = ctx.clock.now() + f.leaseMs + 5 * f.renewMs;
  for (;;) {
    const mine = (await primary.api.failoverStatus!()).find((x) => x.topology === t.name);
    if (mine?.state === 'holding' && mine.writesAllowed) {
      ctx.print(`  ${primary.spec.site} holds the arbiter: writes are accepted there`);
      return;
    }
    if (ctx.clock.now() > deadline) {
      throw new TricopyError('unavailable', `${primary.spec.site} did not get the arbiter: ${mine?.reason ?? 'no answer'}`,
        `writes at ${primary.spec.site} are refused until it holds the arbiter; check that ${arbiter} answers from ${primary.spec.site}'s node`);
    }
    await ctx.clock.sleep(Math.min(200, f.renewMs));
  }
}
