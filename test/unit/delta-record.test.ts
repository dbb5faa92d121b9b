// The delta record: which regions an async site that applied a stream through entry S may lack,
// when the record can tell (and when it must say it cannot), trimming and its bound.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeltaRecords } from '../../src/replication/delta/delta-record';

const KiB = 1024;
const chunk = 64 * KiB;
const volumeBytes = 64 * chunk;

function regions(bits: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bits.length * 8; i++) if (bits[i >> 3]! & (1 << (i & 7))) out.push(i);
  return out;
}

const mark = (appliedSeq: number, origin = 'tokyo', group = 'erp'): { origin: string; group: string; appliedSeq: number } => ({ origin, group, appliedSeq });
const tag = (seq: number, appliedSeq = 0, inStep = true): { group: string; seq: number; appliedSeq: number; inStep: boolean } => ({ group: 'erp', seq, appliedSeq, inStep });

test('the regions of the writes after the peer\'s applied entry are the candidates; earlier ones are not', () => {
  const r = new DeltaRecords(chunk);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(10), 0, 4 * KiB);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(11), 5 * chunk, 4 * KiB);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(12), 7 * chunk - 4 * KiB, 8 * KiB); // spans two regions
  const c = r.candidates('db', mark(10));
  assert.ok(c.usable, c.text);
  assert.deepEqual(regions(c.bits), [5, 6, 7]);
  assert.deepEqual(c.exact, [{ offset: 5 * chunk, length: 4 * KiB }, { offset: 7 * chunk - 4 * KiB, length: 8 * KiB }], 'the exact bytes to send');
  assert.deepEqual(regions(c.coarse), []);
  assert.equal(c.entries, 2);
  const all = r.candidates('db', mark(9));
  assert.ok(all.usable);
  assert.deepEqual(regions(all.bits), [0, 5, 6, 7]);
  const none = r.candidates('db', mark(12));
  assert.ok(none.usable);
  assert.deepEqual(regions(none.bits), [], 'an up-to-date peer needs nothing');
});

test('the record says why it cannot tell: no mark, another stream, a peer behind its start, a peer ahead of it', () => {
  const r = new DeltaRecords(chunk);
  assert.match(r.candidates('db', mark(1)).text, /keeps no delta record/);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(5, 0, false), 0, 4 * KiB);
  assert.match(r.candidates('db', mark(1)).text, /no write has arrived while both copies were in step/);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(20), 0, 4 * KiB);
  assert.equal(r.candidates('db', mark(19)).usable, true, 'usable from the first in-step write on');
  assert.match(r.candidates('db', mark(18)).text, /applied through entry 18; the record covers only writes after entry 19/);
  assert.match(r.candidates('db', mark(19, 'osaka')).text, /follows tokyo's group erp; the peer applied osaka's group erp/);
  assert.match(r.candidates('db', null).text, /no position in an async stream/);
  assert.match(r.candidates('db', mark(21)).text, /beyond the newest this node received \(20\): it holds writes this node lacks/);
  // The newest entry is per stream, across volumes: another volume's later write makes 21 plausible.
  r.tagged('log', volumeBytes, 'tokyo', 'forwarded', tag(21), 0, 4 * KiB);
  assert.equal(r.candidates('db', mark(21)).usable, true);
  // A cascade primary learns tags from answers: the peer may be ahead of what it heard.
  const c = new DeltaRecords(chunk);
  c.tagged('db', volumeBytes, 'osaka', 'acknowledged', tag(3), 0, 4 * KiB);
  assert.equal(c.candidates('db', mark(9, 'osaka')).usable, true);
});

test('writes without a position are always candidates; invalidation waits for the copies to be in step again', () => {
  const r = new DeltaRecords(chunk);
  r.untagged('db', 0, 4 * KiB); // no record yet: nothing to keep
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(1), chunk, 4 * KiB);
  r.untagged('db', 9 * chunk, 4 * KiB);
  const c = r.candidates('db', mark(1));
  assert.ok(c.usable);
  assert.deepEqual(regions(c.bits), [9]);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(2, 2), 2 * chunk, 4 * KiB);
  const after = r.candidates('db', mark(2));
  assert.ok(after.usable);
  assert.deepEqual(regions(after.bits), [9], 'an untagged region stays even when the peer applied past it');
  r.invalidate('db', 'pair p was split');
  assert.match(r.candidates('db', mark(2)).text, /split/);
  assert.match(r.status('db')!.text, /not usable: pair p was split/);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(3, 2, false), 3 * chunk, 4 * KiB);
  assert.equal(r.candidates('db', mark(3)).usable, false, 'not in step: still unusable');
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(4, 2, true), 4 * chunk, 4 * KiB);
  const again = r.candidates('db', mark(3));
  assert.ok(again.usable);
  assert.deepEqual(regions(again.bits), [4], 'the record restarted at the in-step write');
});

test('trimming follows the peer\'s applied position; beyond the bound old entries fold into a bitmap and status says so', () => {
  const r = new DeltaRecords(chunk, 4);
  for (let seq = 1; seq <= 10; seq++) r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(seq, 0), seq * chunk, 4 * KiB);
  const s = r.status('db')!;
  assert.equal(s.entries, 4);
  assert.equal(s.overflowRegions, 6);
  assert.match(s.text, /6 regions kept as a bitmap \(more than 4 entries\)/);
  const c = r.candidates('db', mark(8));
  assert.ok(c.usable);
  assert.deepEqual(regions(c.bits), [1, 2, 3, 4, 5, 6, 9, 10], 'folded regions stay candidates (coarser, still complete)');
  assert.deepEqual(regions(c.coarse), [1, 2, 3, 4, 5, 6], 'folded regions are compared, not sent whole');
  assert.deepEqual(c.exact, [{ offset: 9 * chunk, length: 4 * KiB }, { offset: 10 * chunk, length: 4 * KiB }]);
  // The peer applied through 8: entries up to 8 go, and so does the bitmap (all folded entries <= 8).
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(11, 8), 11 * chunk, 4 * KiB);
  const t = r.status('db')!;
  assert.equal(t.overflowRegions, 0);
  assert.equal(t.baseSeq, 8);
  assert.deepEqual(regions((r.candidates('db', mark(8)) as { bits: Uint8Array }).bits), [9, 10, 11]);
  assert.match(r.candidates('db', mark(7)).text, /covers only writes after entry 8/);
});

test('a new journal of the same group (positions start again) restarts the record: the new stream\'s writes are never dropped', () => {
  const r = new DeltaRecords(chunk);
  r.establish('db', volumeBytes, 'tokyo', 'forwarded', 'erp', 1000);
  for (let seq = 1001; seq <= 1003; seq++) r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(seq, 1000), 0, 4 * KiB);
  // A swap and back: tokyo's new journal for erp numbers from 1 again.
  r.establish('db', volumeBytes, 'tokyo', 'forwarded', 'erp', 0);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(1, 0), 10 * chunk, 4 * KiB);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(2, 0), 20 * chunk, 4 * KiB);
  const c = r.candidates('db', mark(1));
  assert.ok(c.usable, c.text);
  assert.ok(c.exact.some((x) => x.offset === 20 * chunk), 'the write after the peer\'s position in the new stream is sent');
  assert.ok(!c.exact.some((x) => x.offset === 10 * chunk), 'the one it applied is not');
  const ahead = r.candidates('db', mark(5));
  assert.equal(ahead.usable, false, 'the newest position is the new stream\'s, so a peer beyond it is noticed');
});

test('writes of a new journal that arrive before its base are kept', () => {
  const r = new DeltaRecords(chunk);
  r.establish('db', volumeBytes, 'tokyo', 'forwarded', 'erp', 1000);
  // tokyo's new journal: writes 2 and 3 reach this node before the message with the new base 1.
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(2, 0, false), 30 * chunk, 4 * KiB);
  r.tagged('db', volumeBytes, 'tokyo', 'forwarded', tag(3, 0, false), 31 * chunk, 4 * KiB);
  r.establish('db', volumeBytes, 'tokyo', 'forwarded', 'erp', 1);
  const c = r.candidates('db', mark(2));
  assert.ok(c.usable, c.text);
  assert.deepEqual(c.exact, [{ offset: 31 * chunk, length: 4 * KiB }], 'write 3, which the peer lacks, is sent');
});
