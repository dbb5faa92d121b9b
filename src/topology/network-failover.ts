// A topology whose pairs go through a remote copy network (spec 002) loses a site: before the
// surviving sites take over, each one's edge has the lost site's edge flush what it still holds and
// stops the orders from it (§6.9), so the survivors hold every write the lost site's edge
// acknowledged and see the lost site gone (their links to it are held down). When the site
// returns, its failback lets the others reach it again first (E-22).
import type { NetworkNodeClient, NodeClient } from '../contracts/node-client';
import { HttpRelayClient } from '../edge/client';
import type { Site, TopologyContext } from './context';

export async function stopOrdersFromLostSite(ctx: TopologyContext, lost: Site): Promise<void> {
  const network = ctx.t.network;
  if (network === undefined) return;
  ctx.step(`the network ${network} delivers what ${lost.spec.site}'s edge acknowledged, then stops its orders (spec 002 §6.9)`);
  for (const { order, edge, edgeApi, fromEdge } of await ordersFrom(ctx, network, lost)) {
    const r = await new HttpRelayClient(edgeApi).failover(order);
    ctx.print(`    order ${order} stopped at ${edge}: reflected through ${r.reflected}; ` +
      (r.highWaterMark === null ? `${fromEdge} did not answer (what it held is lost)` : `high-water mark ${r.highWaterMark}, ${r.missing} missing`));
  }
}

/** Failback to `returning`: the other sites' edges let their storages reach it again where a failover held them apart. */
export async function releaseOrdersFromReturningSite(ctx: TopologyContext, returning: Site): Promise<void> {
  const network = ctx.t.network;
  if (network === undefined) return;
  for (const { order, edge, edgeApi } of await ordersFrom(ctx, network, returning)) {
    const r = await new HttpRelayClient(edgeApi).failback(order);
    if (r.released) ctx.print(`    order ${order} at ${edge}: ${returning.spec.site} is reachable again through the network`);
  }
}

/** Orders from `from`'s edge to the edges of the other reachable sites, where they arrive. */
async function ordersFrom(ctx: TopologyContext, network: string, from: Site): Promise<Array<{ order: string; edge: string; edgeApi: string; fromEdge: string }>> {
  const out: Array<{ order: string; edge: string; edgeApi: string; fromEdge: string }> = [];
  for (const site of [ctx.site('primary'), ctx.site('sync'), ctx.site('async')]) {
    if (site === from || !site.info) continue;
    const api = site.api as NodeClient & Partial<NetworkNodeClient>;
    if (!api.getNetwork) continue;
    const a = await api.getNetwork(network);
    const fromEdge = Object.values(a.peers).find((p) => p.api === from.spec.node)?.edge;
    if (fromEdge === undefined) continue;
    for (const [order, o] of Object.entries(a.orders)) {
      if (o.from === fromEdge && o.to === a.edge.name) out.push({ order, edge: a.edge.name, edgeApi: a.edge.api, fromEdge });
    }
  }
  return out;
}
