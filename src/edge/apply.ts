// `network apply` without a manager (spec 002 §6.12 steps 903 and 7): the network file is resolved
// against what runs — each relay is asked who it is and where it listens, each attached storage node
// its name and replication address — into the tables every relay runs with, which go to every relay;
// each attached node is told its edge and its possible peers' edges.
import { TricopyError } from '../common/errors';
import type { NodeInfo } from '../contracts/node';
import type { AttachedStorage, NetworkAttachment, RelayAddress, RelayInfo, RelayNetworkConfig } from '../contracts/network';
import { type NetworkFile, computeRoutes } from './network-file';
import { createHash } from 'node:crypto';

export interface ApplyPlan {
  config: RelayNetworkConfig;
  /** Per attached node: its API URL and what it is told. */
  attachments: Array<{ api: string; attachment: NetworkAttachment }>;
}

/** The address other relays and nodes dial: the listen address, or the API URL's host when it listens on all. */
function dialHost(listenHost: string, api: string): string {
  if (listenHost !== '0.0.0.0' && listenHost !== '::') return listenHost;
  return new URL(api).hostname;
}

export async function planNetwork(
  file: NetworkFile,
  relayInfo: (api: string) => Promise<RelayInfo>,
  nodeInfo: (api: string) => Promise<NodeInfo>,
): Promise<ApplyPlan> {
  const relays: Record<string, RelayAddress> = {};
  const all = [...Object.entries(file.edges).map(([n, e]) => [n, e.api, 'edge', null] as const),
    ...Object.entries(file.cores).map(([n, c]) => [n, c.api, 'core', c.batch] as const)];
  for (const [name, api, role, batch] of all) {
    const info = await relayInfo(api);
    if (info.name !== name) {
      throw new TricopyError('invalid-argument', `the relay at ${api} is named ${info.name}, but the network file calls it ${name}`,
        'fix the api URL or the name in the file (a relay\'s name is its --name)');
    }
    if (info.role !== role) {
      throw new TricopyError('invalid-argument', `relay ${name} runs as ${info.role === 'edge' ? 'an edge' : 'a core'}, but the network file lists it under ${role}s`,
        `start it with --role ${role}, or move it in the file`);
    }
    if (info.network !== null && info.network !== file.name) {
      throw new TricopyError('conflict', `relay ${name} already serves network ${info.network}`, 'a relay serves one network; start another relay (another --data-dir)');
    }
    relays[name] = { role, host: dialHost(info.listen.host, api), port: info.listen.port, api, ...(batch ? { batch } : {}) };
  }
  const storages: Record<string, AttachedStorage> = {};
  for (const [edge, spec] of Object.entries(file.edges)) {
    for (const a of spec.attach) {
      const info = await nodeInfo(a.node);
      if (!info.replication) {
        throw new TricopyError('invalid-argument', `storage node ${info.name} at ${a.node} has no cluster secret`, 'start every node and relay with the same --cluster-secret-file');
      }
      if (storages[info.name]) throw new TricopyError('invalid-argument', `two attached URLs (${storages[info.name]!.api} and ${a.node}) are the same node ${info.name}`);
      if (relays[info.name]) throw new TricopyError('invalid-argument', `storage node ${info.name} has the name of a relay; names must differ`);
      storages[info.name] = { edge, customer: a.customer, api: a.node, host: info.replAddress.host, replPort: info.replAddress.port };
    }
  }
  const orders = Object.fromEntries(Object.entries(file.orders).map(([id, o]) => {
    const { customer: _customer, ...rest } = o;
    return [id, rest];
  }));
  const body = {
    network: file.name, relays, links: file.links.map(([a, b]) => [a, b] as [string, string]), linkAddresses: file.linkAddresses, linkShaping: file.linkShaping, routes: computeRoutes(file), storages, orders, customers: file.customers,
  };
  const config: RelayNetworkConfig = { ...body, version: configDigest(body) };
  const attachments = Object.entries(storages).map(([node, s]) => {
    const edge = relays[s.edge]!;
    const peers: NetworkAttachment['peers'] = {};
    for (const [other, o] of Object.entries(storages)) {
      if (other === node || o.customer !== s.customer) continue;
      const oe = relays[o.edge]!;
      peers[other] = { edge: o.edge, host: oe.host, port: oe.port, api: o.api };
    }
    const attachment: NetworkAttachment = {
      network: file.name, version: config.version, node, edge: { name: s.edge, host: edge.host, port: edge.port, api: edge.api }, peers,
      orders: Object.fromEntries(Object.entries(file.orders).map(([id, o]) => [id, { from: o.from, to: o.to }])),
    };
    return { api: s.api, attachment };
  });
  return { config, attachments };
}

/** A digest of a network config (its version). */
export function configDigest(cfg: Omit<RelayNetworkConfig, 'version'>): string {
  return createHash('sha256').update(JSON.stringify(cfg)).digest('hex').slice(0, 16);
}
