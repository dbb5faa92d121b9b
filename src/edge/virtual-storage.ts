// Virtual storages (spec 002 §4.4, §9.50, §9.55): an edge presents each node attached to it with a
// virtual storage of every partner it may pair with through the network, one attached to another
// edge, of the same customer, with an order-guarantee id between the two edges. The virtual storage
// answers as the partner: under the partner's name (WWN) in the base variant or its own in the
// Fig. 2 variant (virtual-names.ts), and, for configuration queries, with the partner's
// configuration as `network apply` collected it. Pure functions over the applied tables.
import { TricopyError } from '../common/errors';
import type { NodeInfo, VolumeView } from '../contracts/node';
import type { RelayNetworkConfig, StorageConfiguration, VirtualStorage } from '../contracts/network';

/** Volumes listed in a storage's configuration: the tables every relay holds stay small. */
export const maxListedVolumes = 256;

/** What a configuration query answers for a node, from what its API reports. */
export function storageConfiguration(info: NodeInfo, volumes: VolumeView[]): StorageConfiguration {
  const sorted = [...volumes].sort((a, b) => a.name.localeCompare(b.name));
  return {
    product: 'tricopy',
    version: info.version,
    site: info.site,
    emulation: 'NBD export (one per volume, named as the volume)',
    volumeCount: sorted.length,
    capacityBytes: sorted.reduce((sum, v) => sum + v.sizeBytes, 0),
    volumes: sorted.slice(0, maxListedVolumes).map((v) => ({ name: v.name, sizeBytes: v.sizeBytes, luns: v.hostGroups.map((h) => ({ hostGroup: h.hostGroup, lun: h.lun })) })),
  };
}

/** The virtual storages `edge` presents, by name. */
export function virtualStorages(config: RelayNetworkConfig, edge: string): VirtualStorage[] {
  const attached = Object.entries(config.storages).filter(([, s]) => s.edge === edge);
  const out: VirtualStorage[] = [];
  for (const [partner, p] of Object.entries(config.storages)) {
    if (p.edge === edge) continue;
    const orders = Object.entries(config.orders)
      .filter(([, o]) => (o.from === edge && o.to === p.edge) || (o.from === p.edge && o.to === edge)).map(([id]) => id).sort();
    const presentedTo = attached.filter(([, s]) => s.customer === p.customer).map(([node]) => node).sort();
    if (orders.length === 0 || presentedTo.length === 0) continue;
    out.push({ wwn: config.virtualNames?.[edge]?.[partner] ?? partner, partner, partnerEdge: p.edge, presentedTo, orders, configuration: p.configuration ?? null });
  }
  return out.sort((a, b) => a.wwn.localeCompare(b.wwn));
}

/** A configuration query to the virtual storage `wwn` at `edge` (§9.55). */
export function virtualStorage(config: RelayNetworkConfig, edge: string, wwn: string): VirtualStorage {
  const all = virtualStorages(config, edge);
  const v = all.find((x) => x.wwn === wwn);
  if (!v) {
    throw new TricopyError('not-found', `edge ${edge} presents no virtual storage ${wwn}`,
      all.length > 0 ? `it presents: ${all.map((x) => x.wwn).join(', ')}` : 'no node attached to another edge shares a customer and an order-guarantee id with this edge\'s nodes');
  }
  return v;
}
