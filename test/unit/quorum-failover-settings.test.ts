// The topology file's automatic failover settings: defaults, the timing relation asserted when the
// file is read, and every mistake refused with what to fix; what apply gives the nodes reads back
// to the same topology.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseTopology, topologyDocument } from '../../src/topology/topology-file';

const base = {
  name: 'erp', volumes: { db1: '10GiB', log1: { size: '2GiB', role: 'log' } },
  primary: { site: 'tokyo', node: 'http://127.0.0.1:7801' }, sync: { site: 'osaka', node: 'http://127.0.0.1:7811' },
  async: { site: 'sapporo', node: 'http://127.0.0.1:7821' },
};

test('failover settings: absent means manual; automatic with etcd and the defaults; per-site etcd endpoints', () => {
  assert.equal(parseTopology(base).failover, undefined);
  const t = parseTopology({ ...base, failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] } });
  assert.deepEqual(t.failover, {
    mode: 'automatic', arbiter: { kind: 'etcd', endpoints: ['http://127.0.0.1:2379'] }, leaseMs: 10_000, renewMs: 2000, fenceMarginMs: 2000, onArbiterLost: 'fence',
    failback: 'manual', failbackDelayMs: 60_000,
  });
  const own = parseTopology({ ...base, primary: { ...base.primary, etcd: ['http://10.0.0.1:2379'] }, failover: 'automatic', arbiter: { etcd: 'http://e:2379' }, lease: '5s', renew: '1s', 'fence-margin': '1500ms', 'arbiter-lost': 'continue' });
  assert.deepEqual(own.primary.etcd, ['http://10.0.0.1:2379']);
  assert.deepEqual([own.failover!.leaseMs, own.failover!.renewMs, own.failover!.fenceMarginMs, own.failover!.onArbiterLost], [5000, 1000, 1500, 'continue']);
  assert.deepEqual(parseTopology(topologyDocument(own)), own, 'what apply gives the nodes reads back the same');
  assert.deepEqual(parseTopology(topologyDocument(t)), t);
  const through = parseTopology({ ...base, network: 'rcn', failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] } });
  assert.deepEqual(parseTopology(topologyDocument(through)), through, 'a topology through a network keeps its network at the nodes');
  const back = parseTopology({ ...base, failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] }, failback: 'automatic', 'failback-delay': '90s' });
  assert.deepEqual([back.failover!.failback, back.failover!.failbackDelayMs], ['automatic', 90_000]);
  assert.equal(parseTopology({ ...base, failover: 'automatic', arbiter: { etcd: ['http://127.0.0.1:2379'] }, failback: 'automatic' }).failover!.failbackDelayMs, 60_000, 'default delay');
  assert.deepEqual(parseTopology(topologyDocument(back)), back);
  const quorum = parseTopology({ ...base, failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'erp-quorum' } } });
  assert.deepEqual(quorum.failover!.arbiter, { kind: 'quorum-pair', volume: 'erp-quorum', sizeBytes: 1024 * 1024 });
  assert.deepEqual(parseTopology({ ...base, failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'q', size: '16MiB' } } }).failover!.arbiter,
    { kind: 'quorum-pair', volume: 'q', sizeBytes: 16 * 1024 * 1024 });
  assert.deepEqual(parseTopology(topologyDocument(quorum)), quorum);
});

test('failover settings: mistakes are refused with what to fix', () => {
  const bad = (patch: Record<string, unknown>, message: RegExp): void => {
    assert.throws(() => parseTopology({ ...base, ...patch }), message, JSON.stringify(patch));
  };
  const etcd = { arbiter: { etcd: ['http://127.0.0.1:2379'] } };
  bad({ failover: 'sometimes' }, /"failover" must be manual or automatic/);
  bad({ failover: 'automatic' }, /failover: automatic needs an arbiter/);
  bad({ failover: 'automatic', arbiter: { zookeeper: ['x'] } }, /arbiter: unknown kind "zookeeper"/);
  bad({ failover: 'automatic', arbiter: { etcd: [] } }, /arbiter.etcd must list etcd client URLs/);
  bad({ failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'db1' } } }, /arbiter.quorum-pair.volume db1 is one of the topology's volumes/);
  bad({ failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'q', size: '2GiB' } } }, /arbiter.quorum-pair.size must be at most 1GiB/);
  bad({ failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'q', mode: 'x' } } }, /arbiter.quorum-pair: unknown key "mode"/);
  bad({ failover: 'automatic', arbiter: { 'quorum-pair': 'q' } }, /arbiter.quorum-pair must name the quorum volume/);
  bad({ failover: 'automatic', ...etcd, layout: 'cascade' }, /automatic failover is for multi-target topologies/);
  bad({ failover: 'automatic', ...etcd, lease: '4s', renew: '2s', 'fence-margin': '2s' }, /lease \(4000 ms\) must be longer than renew \(2000 ms\) \+ fence-margin \(2000 ms\)/);
  bad({ failover: 'automatic', ...etcd, lease: 'soon' }, /lease "soon" is not a duration/);
  bad({ failover: 'automatic', ...etcd, lease: '500ms' }, /"lease" must be from 1s/);
  bad({ failover: 'automatic', ...etcd, renew: '10ms' }, /"renew" must be at least 100ms/);
  bad({ failover: 'automatic', ...etcd, 'arbiter-lost': 'panic' }, /"arbiter-lost" must be fence or continue/);
  bad({ failover: 'automatic', ...etcd, 'arbiter-lost': 'continue', sync: { ...base.sync, fence: 'never' } }, /arbiter-lost: continue needs sync.fence: data/);
  bad({ primary: { ...base.primary, etcd: 'nope' } }, /primary.etcd must list etcd client URLs/);
  bad({ failover: 'automatic', ...etcd, failback: 'later' }, /"failback" must be manual or automatic/);
  bad({ failback: 'automatic' }, /failback: automatic needs failover: automatic/);
  bad({ failover: 'manual', failback: 'automatic', 'failback-delay': '60s' }, /failback: automatic needs failover: automatic/);
  bad({ failover: 'automatic', ...etcd, 'failback-delay': '60s' }, /"failback-delay" is only for failback: automatic/);
  bad({ failover: 'automatic', ...etcd, failback: 'automatic', 'failback-delay': '1s' }, /"failback-delay" must be from 5s to 24h \(got 1000 ms\)/);
  bad({ failover: 'automatic', ...etcd, failback: 'automatic', 'failback-delay': 'soon' }, /failback-delay "soon" is not a duration/);
});
