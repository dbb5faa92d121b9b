// `network apply` (spec 002 §6.12 steps 903 and 7), by the CLI without a manager and by the manager
// for the networks it keeps: the network file is resolved against what runs — each relay is asked
// who it is and where it listens, each attached storage node its name and replication address —
// into the tables every relay runs with, which go to every relay; each attached node is told its
// edge and its possible peers' edges. Each node's configuration (version, volumes) goes into the
// tables too: the virtual storages that answer as it at other edges answer queries with it.
import { TricopyError } from '../common/errors';
import type { NodeInfo, VolumeView } from '../contracts/node';
import type { AttachedStorage, NetworkAttachment, RelayAddress, RelayInfo, RelayNetworkConfig } from '../contracts/network';
import { type NetworkFile, computeRoutes, virtualNamePattern } from './network-file';
import { createHash } from 'node:crypto';
import { HttpNodeClient } from '../node/api-client';
import { HttpRelayClient } from './client';
import { storageConfiguration } from './virtual-storage';

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
  nodeVolumes: (api: string) => Promise<VolumeView[]>,
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
      storages[info.name] = {
        edge, customer: a.customer, api: a.node, host: info.replAddress.host, replPort: info.replAddress.port,
        configuration: storageConfiguration(info, await nodeVolumes(a.node)),
      };
    }
  }
  const orders = Object.fromEntries(Object.entries(file.orders).map(([id, o]) => {
    const { customer: _customer, ...rest } = o;
    return [id, rest];
  }));
  const virtualNames = file.virtualStorages === 'own' ? allocateVirtualNames(file, relays, storages) : undefined;
  const body = {
    network: file.name, relays, links: file.links.map(([a, b]) => [a, b] as [string, string]), linkAddresses: file.linkAddresses, linkShaping: file.linkShaping, routes: computeRoutes(file), storages, orders, customers: file.customers,
    ...(virtualNames ? { virtualNames } : {}),
  };
  const config: RelayNetworkConfig = { ...body, version: configDigest(body) };
  const attachments = Object.entries(storages).map(([node, s]) => {
    const edge = relays[s.edge]!;
    const peers: NetworkAttachment['peers'] = {};
    for (const [other, o] of Object.entries(storages)) {
      if (other === node || o.customer !== s.customer) continue;
      const oe = relays[o.edge]!;
      const as = virtualNames?.[s.edge]?.[other];
      peers[other] = { edge: o.edge, host: oe.host, port: oe.port, api: o.api, ...(as ? { as } : {}) };
    }
    const attachment: NetworkAttachment = {
      network: file.name, version: config.version, node, edge: { name: s.edge, host: edge.host, port: edge.port, api: edge.api }, peers,
      orders: Object.fromEntries(Object.entries(file.orders).map(([id, o]) => [id, { from: o.from, to: o.to }])),
    };
    return { api: s.api, attachment };
  });
  return { config, attachments };
}

/**
 * The Fig. 2 variant (§6.13 step 1: the management server chooses the names): at every edge with
 * attached nodes, a name for each partner they may pair with (a node of the same customer at
 * another edge). The file's own choice where it gives one, else `PARTNER.EDGE`, or a digest when
 * that is too long. A name never equals a node's or relay's, nor another virtual storage's.
 */
function allocateVirtualNames(file: NetworkFile, relays: Record<string, RelayAddress>, storages: Record<string, AttachedStorage>): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  const taken = new Map<string, string>();
  for (const [edge, given] of Object.entries(file.virtualNames)) {
    for (const partner of Object.keys(given)) {
      const p = storages[partner];
      if (!p || p.edge === edge) {
        throw new TricopyError('invalid-argument', `virtualNames.${edge}.${partner}: ${p ? `${partner} is attached to ${edge} itself` : `no attached storage node is named ${partner}`}`,
          `name partners of ${edge}'s nodes: ${Object.keys(storages).filter((n) => storages[n]!.edge !== edge).join(', ') || 'none'}`);
      }
    }
  }
  for (const edge of Object.keys(file.edges)) {
    const customers = new Set(Object.values(storages).filter((s) => s.edge === edge).map((s) => s.customer));
    if (customers.size === 0) continue;
    const names: Record<string, string> = {};
    for (const [partner, p] of Object.entries(storages).sort(([a], [b]) => a.localeCompare(b))) {
      if (p.edge === edge || !customers.has(p.customer)) continue;
      const plain = `${partner}.${edge}`;
      const name = file.virtualNames[edge]?.[partner]
        ?? (virtualNamePattern.test(plain) ? plain : `v-${createHash('sha256').update(plain).digest('hex').slice(0, 16)}`);
      const clash = storages[name] ? `storage node ${name}` : relays[name] ? `relay ${name}` : taken.get(name);
      if (clash) {
        throw new TricopyError('invalid-argument', `the virtual storage of ${partner} at ${edge} would be named ${name}, as ${clash} is`,
          `give it another name: virtualNames: { ${edge}: { ${partner}: NAME } }`);
      }
      taken.set(name, `the virtual storage of ${partner} at ${edge}`);
      names[partner] = name;
    }
    out[edge] = names;
  }
  return out;
}

/**
 * A digest of a network config (its version). The nodes' configurations are left out: they are
 * what the apply found, not the network, and a relay given the same network again (the manager
 * re-applying to one that lost its tables) runs the same version.
 */
export function configDigest(cfg: Omit<RelayNetworkConfig, 'version'>): string {
  const storages = Object.fromEntries(Object.entries(cfg.storages).map(([name, { configuration: _configuration, ...s }]) => [name, s]));
  return createHash('sha256').update(JSON.stringify({ ...cfg, storages })).digest('hex').slice(0, 16);
}

/** How `applyNetwork` reaches relays and storage nodes (HTTP in the CLI and the manager, fakes in tests). */
export interface ApplyClients {
  relayInfo(api: string): Promise<RelayInfo>;
  applyRelay(api: string, config: RelayNetworkConfig): Promise<unknown>;
  nodeInfo(api: string): Promise<NodeInfo>;
  nodeVolumes(api: string): Promise<VolumeView[]>;
  attachNode(api: string, attachment: NetworkAttachment): Promise<unknown>;
}

/** The control APIs over HTTP; `nodeToken` gives the bearer token of a node's API (by its URL), if any. */
export function httpApplyClients(nodeToken: (api: string) => string | undefined): ApplyClients {
  return {
    relayInfo: (api) => new HttpRelayClient(api).info(),
    applyRelay: (api, config) => new HttpRelayClient(api).apply(config),
    nodeInfo: (api) => new HttpNodeClient(api, nodeToken(api)).nodeInfo(),
    nodeVolumes: (api) => new HttpNodeClient(api, nodeToken(api)).listVolumes(),
    attachNode: (api, attachment) => new HttpNodeClient(api, nodeToken(api)).putNetwork(attachment),
  };
}

/** Plans the network, then gives every relay its tables and every attached node its attachment. */
export async function applyNetwork(file: NetworkFile, clients: ApplyClients): Promise<ApplyPlan> {
  const plan = await planNetwork(file, (api) => clients.relayInfo(api), (api) => clients.nodeInfo(api), (api) => clients.nodeVolumes(api));
  for (const r of Object.values(plan.config.relays)) await clients.applyRelay(r.api, plan.config);
  for (const a of plan.attachments) await clients.attachNode(a.api, a.attachment);
  return plan;
}
