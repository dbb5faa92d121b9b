// A pair command refused because the pair runs another command did not start: the CLI runs it
// again for a while; any other error ends it at once.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { TricopyError } from '../../src/common/errors';
import { whenNotBusy } from '../../src/cli/globals';

test('a busy refusal is tried again until the command runs', async () => {
  let calls = 0;
  const result = await whenNotBusy(async () => {
    calls++;
    if (calls < 3) throw new TricopyError('busy', 'node tokyo: pair db1-far on tokyo is running another command');
    return 'swapped';
  }, 5_000);
  assert.deepEqual([result, calls], ['swapped', 3]);
});

test('another error ends it at once, and a busy refusal ends it when the time is up', async () => {
  let calls = 0;
  await assert.rejects(whenNotBusy(async () => {
    calls++;
    throw new TricopyError('conflict', 'split brain');
  }, 5_000), /split brain/);
  assert.equal(calls, 1);
  calls = 0;
  await assert.rejects(whenNotBusy(async () => {
    calls++;
    throw new TricopyError('busy', 'running another command');
  }, 600), (err: TricopyError) => err.code === 'busy');
  assert.ok(calls >= 2 && calls <= 4, `tried ${calls} times in 600 ms`);
});
