import { test, after } from 'node:test';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Cluster } from '../support/cluster';
import { killAllNodes } from '../support/node-process';
import { tempDir } from '../support/tools';
after(() => { killAllNodes(); });
test('probe direct', async () => {
  const dir = await tempDir('probe2');
  const c = await Cluster.create(path.join(dir, 'p'), ['a', 'b']);
  try {
    await c.volume('a', 'v', 4 * 1024 * 1024);
    await c.volume('a', 'u', 4 * 1024 * 1024);
    await c.pair({ name: 'v-b', primary: 'a', secondary: 'b', volume: 'v', mode: 'sync' });
    await c.waitState('a', 'v-b', 'duplex');
    for (const vol of ['u', 'v']) {
      const client = await c.client('a', vol);
      const t0 = Date.now();
      for (let i = 0; i < 3000; i++) await client.write((i % 1000) * 4096, randomBytes(4096));
      console.log(vol, '3000 writes in', Date.now() - t0, 'ms');
      await client.disconnect();
    }
  } finally {
    await c.stopAll();
  }
});
