// Relay link shaping: zstd frames (smaller only when it pays; a receiver refuses frames that hide or
// inflate their size) and the token bucket that keeps a link under its bandwidth, on a fake clock.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { compress } from 'zstd-napi';
import { Pacer, type PacerTimer, bucketBurstBytes, compressFrame, decompressFrame, parseBandwidth } from '../../src/edge/link-shaping';

test('a compressible frame shrinks and expands to the same bytes; an incompressible or tiny one is left alone', () => {
  const text = Buffer.from('INSERT INTO orders VALUES (42, \'pending\');\n'.repeat(2000));
  const c = compressFrame(text, 3);
  assert.ok(c && c.length < text.length / 10, `compressed to ${c?.length} of ${text.length}`);
  assert.deepEqual(decompressFrame(c, text.length), text);
  assert.equal(compressFrame(randomBytes(64 * 1024), 3), null, 'random data is sent as it is');
  assert.equal(compressFrame(Buffer.alloc(100), 3), null, 'too small to gain');
});

test('a receiver refuses a frame that would expand past its limit, lies about its size, or is not zstd', () => {
  const big = compress(Buffer.alloc(8 * 1024 * 1024));
  assert.throws(() => decompressFrame(big, 1024 * 1024), /would expand to 8388608 bytes \(the limit is 1048576\)/);
  assert.throws(() => decompressFrame(randomBytes(64), 1024), /not a zstd frame|does not state its size/);
  assert.deepEqual(decompressFrame(compress(Buffer.from('abc')), 16), Buffer.from('abc'));
});

test('bandwidths read as the network file writes them', () => {
  assert.equal(parseBandwidth('100Mbit'), 100_000_000);
  assert.equal(parseBandwidth('800kbit/s'), 800_000);
  assert.equal(parseBandwidth('1.5Gbit'), 1_500_000_000);
  assert.equal(parseBandwidth(2_000_000), 2_000_000);
  assert.equal(parseBandwidth('100MB'), null);
  assert.equal(parseBandwidth(-5), null);
});

class FakeTimer implements PacerTimer {
  t = 0;
  private pending: Array<{ at: number; fn: () => void }> = [];
  now(): number {
    return this.t;
  }
  after(ms: number, fn: () => void): { cancel(): void } {
    const entry = { at: this.t + ms, fn };
    this.pending.push(entry);
    return { cancel: () => { this.pending = this.pending.filter((x) => x !== entry); } };
  }
  /** Advances time to `until`, firing timers in order. */
  run(until: number): void {
    for (;;) {
      this.pending.sort((a, b) => a.at - b.at);
      const next = this.pending[0];
      if (!next || next.at > until) break;
      this.pending.shift();
      this.t = next.at;
      next.fn();
    }
    this.t = until;
  }
}

test('the pacer lets a burst through at once, then keeps to the rate, in order', () => {
  const clock = new FakeTimer();
  const bytesPerSecond = 1024 * 1024; // 8 Mbit/s
  const pacer = new Pacer(bytesPerSecond, clock);
  const sent: Array<{ i: number; at: number }> = [];
  const frame = 64 * 1024;
  const frames = 4 * 1024 * 1024 / frame + bucketBurstBytes / frame; // the burst plus 4 MiB
  for (let i = 0; i < frames; i++) pacer.send(frame, () => sent.push({ i, at: clock.t }));
  assert.equal(sent.length, bucketBurstBytes / frame, 'the burst leaves at once');
  assert.equal(pacer.queuedBytes, 4 * 1024 * 1024);
  clock.run(2000);
  assert.equal(sent.length, bucketBurstBytes / frame + 2 * 1024 * 1024 / frame, 'two seconds carry 2 MiB at 1 MiB/s');
  clock.run(10_000);
  assert.equal(sent.length, frames);
  assert.deepEqual(sent.map((s) => s.i), [...Array(frames).keys()], 'frames leave in the order given');
  const last = sent[sent.length - 1]!.at;
  assert.ok(last >= 3999 && last <= 4001, `4 MiB past the burst took ${last} ms at 1 MiB/s`);
});

test('a frame larger than the burst still leaves; a cleared pacer forgets what waits', () => {
  const clock = new FakeTimer();
  const pacer = new Pacer(1024 * 1024, clock);
  let sent = 0;
  pacer.send(4 * 1024 * 1024, () => sent++);
  assert.equal(sent, 1, 'a full bucket lets one large frame through');
  pacer.send(1024, () => sent++);
  assert.equal(sent, 1, 'the bucket is in debt: the next waits');
  assert.equal(pacer.clear(), 1);
  clock.run(60_000);
  assert.equal(sent, 1);
  assert.equal(pacer.queuedBytes, 0);
});
