// Where a pair through a network is addressed: its own edge under the peer's name, the peer's edge
// for the way back, and the order that leads from one edge to the other.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NetworkAttachment } from '../../src/contracts/network';
import { pairThroughNetwork } from '../../src/edge/pair-via';

const attachment = (orders: NetworkAttachment['orders']): NetworkAttachment => ({
  network: 'rcn', version: 'v1', node: 'tokyo', edge: { name: 'e-tokyo', host: '10.0.0.1', port: 7830, api: 'http://10.0.0.1:7831' },
  peers: {
    osaka: { edge: 'e-osaka', host: '10.0.1.1', port: 7830, api: 'http://10.0.1.2:7801' },
    sapporo: { edge: 'e-sapporo', host: '10.0.2.1', port: 7830, api: 'http://10.0.2.2:7801' },
  },
  orders,
});

test('a pair is addressed to its own edge under the peer\'s name, the peer reaches back through its edge, under the one order that leads there', () => {
  const a = attachment({ erp: { from: 'e-tokyo', to: 'e-osaka' }, back: { from: 'e-osaka', to: 'e-tokyo' }, far: { from: 'e-tokyo', to: 'e-sapporo' } });
  assert.deepEqual(pairThroughNetwork(a, 'osaka'), {
    peer: { node: 'osaka', host: '10.0.0.1', replPort: 7830 }, returnAddress: { host: '10.0.1.1', replPort: 7830 }, order: 'erp', edgeApi: 'http://10.0.0.1:7831',
  });
  assert.equal(pairThroughNetwork(a, 'sapporo').order, 'far');
  assert.equal(pairThroughNetwork(a, 'osaka', 'erp').order, 'erp');
});

test('a peer not attached, no order or several, an unknown order or one the other way are refused with what to do', () => {
  const a = attachment({ erp: { from: 'e-tokyo', to: 'e-osaka' }, crm: { from: 'e-tokyo', to: 'e-osaka' }, back: { from: 'e-osaka', to: 'e-tokyo' } });
  assert.throws(() => pairThroughNetwork(a, 'kushiro'), /node kushiro is not attached to network rcn/);
  assert.throws(() => pairThroughNetwork(a, 'sapporo'), /no order-guarantee id from e-tokyo to e-sapporo/);
  assert.throws(() => pairThroughNetwork(a, 'osaka'), /several order-guarantee ids \(erp, crm\) from e-tokyo to e-osaka/);
  assert.throws(() => pairThroughNetwork(a, 'osaka', 'nope'), /has no order-guarantee id nope/);
  assert.throws(() => pairThroughNetwork(a, 'osaka', 'back'), /back leads from e-osaka to e-tokyo, but this pair goes from e-tokyo to e-osaka/);
});
