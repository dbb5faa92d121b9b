// The network file (spec 002 §6.12): the smallest form, validation errors that say what to
// fix, contract limits (§9.49) and routes (§9.48: fewest cores, capacity respected, reverse installed).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeRoutes, defaultOrderTimings, parseNetworkFile } from '../../src/edge/network-file';

const smallest = {
  name: 'rcn',
  edges: {
    'e-tokyo': { api: 'http://127.0.0.1:7831', attach: ['http://127.0.0.1:7801'] },
    'e-sapporo': { api: 'http://127.0.0.1:7851', attach: ['http://127.0.0.1:7821'] },
  },
  cores: { 'c-1': { api: 'http://127.0.0.1:7841' } },
  links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
  orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } },
};

test('the smallest form of the issue parses, with defaults; the route goes through the core, reversed too', () => {
  const n = parseNetworkFile(smallest);
  assert.equal(n.name, 'rcn');
  assert.deepEqual(n.edges['e-tokyo']!.attach, [{ node: 'http://127.0.0.1:7801', customer: 'default' }]);
  assert.deepEqual(n.orders.erp, { from: 'e-tokyo', to: 'e-sapporo', pairs: [], customer: 'default', ...defaultOrderTimings });
  assert.deepEqual(computeRoutes(n), [
    { from: 'e-sapporo', to: 'e-tokyo', hops: ['e-sapporo', 'c-1', 'e-tokyo'] },
    { from: 'e-tokyo', to: 'e-sapporo', hops: ['e-tokyo', 'c-1', 'e-sapporo'] },
  ]);
});

test('errors say what to fix', () => {
  const bad = (patch: Record<string, unknown>, message: RegExp): void => {
    assert.throws(() => parseNetworkFile({ ...smallest, ...patch }, 'rcn.yaml'), (err: Error & { hint?: string }) => {
      assert.match(err.message, /^rcn\.yaml: /);
      assert.match(`${err.message} ${err.hint ?? ''}`, message);
      return true;
    });
  };
  bad({ colour: 'blue' }, /unknown key "colour".*known keys: name, edges/);
  bad({ name: 'r c n' }, /"name" must be/);
  bad({ links: [['e-tokyo', 'c-9']] }, /"c-9" is neither an edge nor a core/);
  bad({ links: [['e-tokyo', 'e-tokyo']] }, /connects a relay to itself/);
  bad({ links: [['e-tokyo', 'c-1'], ['c-1', 'e-tokyo']] }, /given twice/);
  bad({ links: [['e-tokyo', 'c-1']] }, /order erp: no path from e-tokyo to e-sapporo.*add links/);
  bad({ orders: { erp: { from: 'e-tokyo', to: 'c-1' } } }, /"to" must name an edge/);
  bad({ orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: 'soon' } } } }, /not a duration/);
  bad({ orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', logSize: '1MiB' } } }, /at least 4MiB/);
  bad({ edges: { ...smallest.edges, 'e-osaka': { api: 'http://127.0.0.1:7861', attach: ['http://127.0.0.1:7801'] } } }, /attached to both e-tokyo and e-osaka/);
  bad({ cores: { 'c-1': { api: 'ftp://x' } } }, /not an http\(s\) URL/);
  bad({ routes: [['e-tokyo', 'e-sapporo']] }, /no link between e-tokyo and e-sapporo/);
  bad({ orders: { a: { from: 'e-tokyo', to: 'e-sapporo', pairs: ['p'] }, b: { from: 'e-tokyo', to: 'e-sapporo', pairs: ['p'] } } }, /pair p is in both order a and order b/);
});

test('§9.49: the contract limits of a customer are enforced', () => {
  const withCustomers = (customers: Record<string, unknown>, edges = smallest.edges): unknown => ({ ...smallest, customers, edges });
  assert.throws(() => parseNetworkFile(withCustomers({ c1: { maxStorages: 1 } }, {
    'e-tokyo': { ...smallest.edges['e-tokyo'], customer: 'c1' } as never, 'e-sapporo': { ...smallest.edges['e-sapporo'], customer: 'c1' } as never,
  })), /customer c1 attaches 2 storage nodes; its contract allows 1/);
  assert.throws(() => parseNetworkFile(withCustomers({ c1: { edges: ['e-sapporo'] } }, {
    'e-tokyo': { ...smallest.edges['e-tokyo'], customer: 'c1' } as never, 'e-sapporo': smallest.edges['e-sapporo'] as never,
  })), /customer c1 may not attach storages here/);
  assert.throws(() => parseNetworkFile({ ...withCustomers({ c1: { maxOrders: 0 } }) as object, orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', customer: 'c1' } } }),
    /customer c1 has 1 order-guarantee ids; its contract allows 0/);
  assert.throws(() => parseNetworkFile(withCustomers({ c1: {} }, {
    'e-tokyo': { ...smallest.edges['e-tokyo'], customer: 'c2' } as never, 'e-sapporo': smallest.edges['e-sapporo'] as never,
  })), /customer "c2" is not in "customers"/);
});

test('§9.48: the fewest cores, cores at capacity skipped, routes from the file kept', () => {
  const mesh = {
    name: 'mesh',
    edges: { a: { api: 'http://h:1' }, b: { api: 'http://h:2' }, c: { api: 'http://h:3' } },
    cores: { x: { api: 'http://h:4', capacity: 1 }, y: { api: 'http://h:5' }, z: { api: 'http://h:6' } },
    links: [['a', 'x'], ['x', 'b'], ['a', 'y'], ['y', 'z'], ['z', 'b'], ['x', 'c'], ['y', 'c']],
    orders: { o1: { from: 'a', to: 'b' }, o2: { from: 'c', to: 'b' } },
  };
  const routes = computeRoutes(parseNetworkFile(mesh));
  const hops = (from: string, to: string): string[] | undefined => routes.find((r) => r.from === from && r.to === to)?.hops;
  assert.deepEqual(hops('a', 'b'), ['a', 'x', 'b'], 'one core');
  assert.deepEqual(hops('b', 'a'), ['b', 'x', 'a'], 'reverse installed');
  // x carries one route already (its capacity): c reaches b through y and z instead.
  assert.deepEqual(hops('c', 'b'), ['c', 'y', 'z', 'b']);
  // Edges never relay: a path through another edge is not taken.
  assert.throws(() => computeRoutes(parseNetworkFile({ ...mesh, links: [['a', 'c'], ['c', 'b']] })), /no path from a to b/);
  // A route given in the file wins.
  const given = computeRoutes(parseNetworkFile({ ...mesh, routes: [['a', 'y', 'z', 'b']] }));
  assert.deepEqual(given.find((r) => r.from === 'a' && r.to === 'b')?.hops, ['a', 'y', 'z', 'b']);
});

test('§5.7: every route has its detours around each of its cores (both directions); none where there is no other way', () => {
  const mesh = {
    name: 'mesh',
    edges: { a: { api: 'http://h:1' }, b: { api: 'http://h:2' } },
    cores: { x: { api: 'http://h:4' }, y: { api: 'http://h:5' }, z: { api: 'http://h:6' } },
    links: [['a', 'x'], ['x', 'b'], ['a', 'y'], ['y', 'z'], ['z', 'b']],
    orders: { o1: { from: 'a', to: 'b' } },
  };
  const routes = computeRoutes(parseNetworkFile(mesh));
  const ab = routes.find((r) => r.from === 'a' && r.to === 'b')!;
  assert.deepEqual(ab.hops, ['a', 'x', 'b']);
  assert.deepEqual(ab.alternates, [['a', 'y', 'z', 'b']], 'around x');
  assert.deepEqual(routes.find((r) => r.from === 'b' && r.to === 'a')!.alternates, [['b', 'z', 'y', 'a']], 'reversed');
  const single = computeRoutes(parseNetworkFile(smallest));
  assert.ok(single.every((r) => r.alternates === undefined), 'one core, no other way: no detour');
});

test('issue 15: every route also has its detours around each of its links, for a link cut while its relays are up', () => {
  // Two cores between two edges: around c-1, or around either of its links, the way is c-2.
  const two = computeRoutes(parseNetworkFile({
    ...smallest, cores: { 'c-1': { api: 'http://127.0.0.1:7841' }, 'c-2': { api: 'http://127.0.0.1:7842' } },
    links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo'], ['e-tokyo', 'c-2'], ['c-2', 'e-sapporo']],
  }));
  assert.deepEqual(two.find((r) => r.from === 'e-tokyo')!.alternates, [['e-tokyo', 'c-2', 'e-sapporo']]);
  // Where a core has another way on, the detour around its link keeps the core: a → x → y → b when
  // x–b is cut, while the one around x goes a → z → w → b.
  const mesh = {
    name: 'mesh',
    edges: { a: { api: 'http://h:1' }, b: { api: 'http://h:2' } },
    cores: { x: { api: 'http://h:3' }, y: { api: 'http://h:4' }, z: { api: 'http://h:5' }, w: { api: 'http://h:6' } },
    links: [['a', 'x'], ['x', 'b'], ['x', 'y'], ['y', 'b'], ['a', 'z'], ['z', 'w'], ['w', 'b']],
    orders: { o1: { from: 'a', to: 'b' } },
  };
  const routes = computeRoutes(parseNetworkFile(mesh));
  const ab = routes.find((r) => r.from === 'a' && r.to === 'b')!;
  assert.deepEqual(ab.hops, ['a', 'x', 'b']);
  assert.deepEqual(ab.alternates, [['a', 'z', 'w', 'b'], ['a', 'x', 'y', 'b']], 'around x, then around x–b (around a–x is the same as around x)');
  assert.deepEqual(routes.find((r) => r.from === 'b' && r.to === 'a')!.alternates, [['b', 'w', 'z', 'a'], ['b', 'y', 'x', 'a']], 'reversed');
  // A route given in the file gets them too; none repeats the route.
  const given = computeRoutes(parseNetworkFile({ ...mesh, routes: [['a', 'x', 'y', 'b']] })).find((r) => r.from === 'a' && r.to === 'b')!;
  assert.deepEqual(given.alternates, [['a', 'z', 'w', 'b'], ['a', 'x', 'b']]);
});

test('links may name the address one end dials (a NAT or WAN proxy)', () => {
  const n = parseNetworkFile({ ...smallest, links: [['e-tokyo', 'c-1'], { between: ['c-1', 'e-sapporo'], address: { 'e-sapporo': '10.0.0.9:7850' } }] });
  assert.deepEqual(n.linkAddresses, [{ from: 'c-1', to: 'e-sapporo', host: '10.0.0.9', port: 7850 }]);
  assert.throws(() => parseNetworkFile({ ...smallest, links: [{ between: ['c-1', 'e-sapporo'], address: { 'e-tokyo': '10.0.0.9:1' } }] }), /not an end of the link/);
});

test('links may be compressed and limited in bandwidth; mistakes are named', () => {
  const n = parseNetworkFile({ ...smallest, links: [{ between: ['e-tokyo', 'c-1'], compress: 3, bandwidth: '100Mbit' }, { between: ['c-1', 'e-sapporo'], compress: true }] });
  assert.deepEqual(n.linkShaping, [
    { between: ['e-tokyo', 'c-1'], compressLevel: 3, bandwidthBitsPerSecond: 100_000_000 },
    { between: ['c-1', 'e-sapporo'], compressLevel: 3, bandwidthBitsPerSecond: null },
  ]);
  assert.deepEqual(parseNetworkFile({ ...smallest, links: [{ between: ['e-tokyo', 'c-1'], bandwidth: '1.5Gbit/s', compress: 'off' }, ['c-1', 'e-sapporo']] }).linkShaping,
    [{ between: ['e-tokyo', 'c-1'], compressLevel: null, bandwidthBitsPerSecond: 1_500_000_000 }]);
  assert.deepEqual(parseNetworkFile(smallest).linkShaping, []);
  const bad = (link: Record<string, unknown>, message: RegExp): void => {
    assert.throws(() => parseNetworkFile({ ...smallest, links: [{ between: ['e-tokyo', 'c-1'], ...link }, ['c-1', 'e-sapporo']] }), message);
  };
  bad({ compress: 25 }, /compress must be a zstd level from 1 to 19/);
  bad({ compress: 'fast' }, /compress must be a zstd level/);
  bad({ bandwidth: 'fast' }, /bandwidth must be a rate such as 100Mbit/);
  bad({ bandwidth: '100MB' }, /bandwidth must be a rate/);
  bad({ bandwidth: '10kbit' }, /below 100kbit/);
});
