// The virtual storages an edge presents (spec 002 §9.50) and what a configuration query to one
// answers (§9.55), base variant: the partner's name and configuration; other customers' nodes and
// nodes with no order-guarantee id toward this edge are not presented.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeInfo, VolumeView } from '../../src/contracts/node';
import type { AttachedStorage, OrderConfig, RelayNetworkConfig } from '../../src/contracts/network';
import { maxListedVolumes, storageConfiguration, virtualStorage, virtualStorages } from '../../src/edge/virtual-storage';

const order = (from: string, to: string): OrderConfig => ({
  from, to, pairs: [], retransmitMs: 500, retransmitMaxMs: 2000, giveUpMs: 60_000, logBytes: 1 << 30, fullTimeoutMs: 30_000, failoverTimeoutMs: 30_000,
});
const storage = (edge: string, customer = 'default', volumes = 0): AttachedStorage => ({
  edge, customer, api: `http://${edge}`, host: '127.0.0.1', replPort: 7800,
  configuration: { product: 'tricopy', version: '1.0.0', site: edge, emulation: 'NBD export', volumeCount: volumes, capacityBytes: volumes * 1024, volumes: [] },
});

function network(storages: Record<string, AttachedStorage>, orders: Record<string, OrderConfig>): RelayNetworkConfig {
  const relay = { role: 'edge' as const, host: '127.0.0.1', port: 1, api: 'http://x' };
  return {
    network: 'rcn', version: 'v1', relays: { 'e-tokyo': relay, 'e-osaka': relay, 'e-sapporo': relay }, links: [], linkAddresses: [], routes: [],
    storages, orders, customers: {},
  };
}

test('an edge presents each partner it has an order with, under the partner\'s name, to its own nodes of the same customer', () => {
  const cfg = network({
    tokyo: storage('e-tokyo'), tokyo2: storage('e-tokyo', 'acme'), osaka: storage('e-osaka', 'default', 3),
    sapporo: storage('e-sapporo'), acmeFar: storage('e-sapporo', 'acme'),
  }, { erp: order('e-tokyo', 'e-osaka'), back: order('e-osaka', 'e-tokyo'), far: order('e-sapporo', 'e-tokyo') });
  const atTokyo = virtualStorages(cfg, 'e-tokyo');
  assert.deepEqual(atTokyo.map((v) => [v.wwn, v.partnerEdge, v.presentedTo, v.orders]), [
    ['acmeFar', 'e-sapporo', ['tokyo2'], ['far']],
    ['osaka', 'e-osaka', ['tokyo'], ['back', 'erp']],
    ['sapporo', 'e-sapporo', ['tokyo'], ['far']],
  ]);
  assert.equal(virtualStorage(cfg, 'e-tokyo', 'osaka').configuration?.volumeCount, 3, 'answers with the partner\'s configuration');
  // No order between e-osaka and e-sapporo: neither presents the other.
  assert.deepEqual(virtualStorages(cfg, 'e-osaka').map((v) => v.wwn), ['tokyo']);
  assert.throws(() => virtualStorage(cfg, 'e-osaka', 'sapporo'), /edge e-osaka presents no virtual storage sapporo/);
  assert.throws(() => virtualStorage(cfg, 'e-osaka', 'tokyo2'), /hint|presents no virtual storage tokyo2/);
});

test('a configuration lists the volumes by name with their LUNs, bounded, and counts them all', () => {
  const info = { version: '2.1.0', site: 'dc1' } as NodeInfo;
  const volume = (name: string, sizeBytes: number, hostGroups: VolumeView['hostGroups'] = []): VolumeView => ({ name, sizeBytes, hostGroups } as VolumeView);
  const c = storageConfiguration(info, [volume('b', 2048, [{ hostGroup: 'app', lun: 3 }]), volume('a', 1024)]);
  assert.deepEqual([c.product, c.version, c.site, c.volumeCount, c.capacityBytes], ['tricopy', '2.1.0', 'dc1', 2, 3072]);
  assert.deepEqual(c.volumes, [{ name: 'a', sizeBytes: 1024, luns: [] }, { name: 'b', sizeBytes: 2048, luns: [{ hostGroup: 'app', lun: 3 }] }]);
  const many = storageConfiguration(info, Array.from({ length: maxListedVolumes + 5 }, (_, i) => volume(`v${String(i).padStart(4, '0')}`, 1)));
  assert.equal(many.volumes.length, maxListedVolumes);
  assert.equal(many.volumeCount, maxListedVolumes + 5);
  assert.equal(many.capacityBytes, maxListedVolumes + 5);
});
