// The status document: sites, nodes, volumes, pairs, groups, every topology's picture (active
// site, legs, what a failover to each site would lose now), alerts open and the management tables,
// all from what the nodes pushed and the store holds. The topology read model runs unchanged over
// the stored state (StoredNodeClient), so building this sends no query to any node.
import type { ManagerInfo, StatusDocument, TopologyStatus } from '../contracts/manager';
import { TopologyContext } from '../topology/context';
import { topologyStatus } from '../topology/status';
import type { Topology } from '../topology/topology-file';
import type { NodeState, StoredNode } from './store/collections';
import { StoredNodeClient, normalizeUrl } from './stored-node-client';
import { publicNode } from './registry';

export interface StatusInputs {
  manager: ManagerInfo;
  nodes: StoredNode[];
  states: NodeState[];
  topologies: Topology[];
  alertsOpen: number;
}

export async function buildStatus(i: StatusInputs): Promise<StatusDocument> {
  const stateOf = new Map(i.states.map((s) => [s.name, s]));
  const reachable = i.nodes.filter((n) => n.reachable);
  const topologies: TopologyStatus[] = [];
  for (const t of i.topologies) {
    const ctx = new TopologyContext(t, {
      clientFor: (url) => {
        const node = i.nodes.find((n) => normalizeUrl(n.url) === normalizeUrl(url));
        return new StoredNodeClient(url, node, node ? stateOf.get(node.name) : undefined);
      },
      print: () => undefined,
      waitSeconds: 0,
    });
    topologies.push(await topologyStatus(ctx));
  }
  const sites = new Map<string, StoredNode[]>();
  for (const n of i.nodes) sites.set(n.site, [...(sites.get(n.site) ?? []), n]);
  const flat = <T>(pick: (s: NodeState) => T[]): Array<T & { node: string }> =>
    reachable.flatMap((n) => (stateOf.get(n.name) ? pick(stateOf.get(n.name)!).map((x) => ({ ...x, node: n.name })) : []));
  return {
    manager: i.manager,
    time: new Date().toISOString(),
    healthy: i.alertsOpen === 0 && i.nodes.every((n) => n.reachable) && topologies.every((t) => t.healthy),
    sites: [...sites.entries()].map(([site, nodes]) => ({ site, nodes: nodes.map((n) => n.name), reachable: nodes.some((n) => n.reachable) })),
    nodes: i.nodes.map(publicNode),
    volumes: flat((s) => s.volumes),
    pairs: flat((s) => s.pairs),
    groups: flat((s) => s.groups),
    topologies,
    dataAtRisk: topologies.flatMap((t) => t.sites.map((s) => ({
      topology: t.name, site: s.site, kind: s.atRisk.kind, text: s.atRisk.text,
      bytes: s.atRisk.kind === 'none' ? 0 : s.atRisk.bytes, seconds: s.atRisk.kind === 'none' ? 0 : s.atRisk.seconds,
    }))),
    alertsOpen: i.alertsOpen,
    tables: i.states.map((s) => ({ node: s.name, rows: s.table })),
  };
}
