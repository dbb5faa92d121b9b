import { test, after } from 'node:test';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { killAllNodes } from '../support/node-process';
import { killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { tempDir } from '../support/tools';
after(() => { killAllRelays(); killAllNodes(); });
test('probe', async () => {
  const dir = await tempDir('probe');
  const rcn = await Rcn.create(path.join(dir, 'p'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } },
  });
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 4 * 1024 * 1024);
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    const client = await rcn.cluster.client('tokyo', 'db1');
    await rcn.killRelay('e-sapporo');
    let t0 = Date.now();
    for (let i = 0; i < 3000; i++) await client.write((i % 256) * 4096, randomBytes(4096));
    console.log('3000 writes acked in', Date.now() - t0, 'ms');
    await rcn.restartRelay('e-sapporo');
    t0 = Date.now();
    await rcn.drained('erp', 120_000);
    console.log('drained after', Date.now() - t0, 'ms', JSON.stringify(await rcn.order('e-sapporo', 'erp', 'target')));
    await client.disconnect();
  } finally {
    await rcn.stopAll();
    console.log('dir', dir);
  }
});
