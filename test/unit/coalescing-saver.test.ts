// CoalescingSaver: whole-file saves one at a time, a burst sharing writes, each save answered only
// by a write that started after it was asked for (so it holds that change).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CoalescingSaver } from '../../src/common/fsutil';

describe('CoalescingSaver', () => {
  it('writes a burst of saves in two writes, each save covered by a write that started after it', async () => {
    let state = 0;
    const written: number[] = [];
    let running = 0;
    const saver = new CoalescingSaver(async () => {
      running++;
      assert.equal(running, 1, 'one write at a time');
      const snapshot = state;
      await new Promise((r) => setTimeout(r, 20));
      written.push(snapshot);
      running--;
    });
    const saves: Array<Promise<number>> = [];
    for (let i = 1; i <= 10; i++) {
      state = i;
      const asked = i;
      saves.push(saver.save().then(() => {
        assert.ok(written.at(-1)! >= asked, `save ${asked} answered by a write holding ${written.at(-1)}`);
        return asked;
      }));
      // The first write starts at once; the others arrive while it runs and share the next one.
      if (i === 1) await new Promise((r) => setImmediate(r));
    }
    await Promise.all(saves);
    assert.deepEqual(written, [1, 10]);
  });

  it('passes a failed write to every save that joined it, and writes again on the next save', async () => {
    let fail = true;
    let writes = 0;
    const saver = new CoalescingSaver(async () => {
      writes++;
      if (fail) throw new Error('disk full');
    });
    const results = await Promise.allSettled([saver.save(), saver.save()]);
    assert.deepEqual(results.map((r) => r.status), ['rejected', 'rejected']);
    fail = false;
    await saver.save();
    await saver.settled();
    assert.equal(writes, 2);
  });
});
