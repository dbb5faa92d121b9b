// The manager's embedded store and what is built on it: batches survive a reopen, the event history
// is numbered on and found by time, alerts follow their lifecycle table (one per key, ack, clear),
// and samples thin out with age.
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Clock } from '../../src/common/clock';
import { systemClock } from '../../src/common/clock';
import { TricopyError } from '../../src/common/errors';
import { AlertBook, type AlertInput, alertTransitions } from '../../src/manager/alerts';
import { EventHistory } from '../../src/manager/history';
import { keepSample, parseMetrics, samplesBetween, thinnedKeys, volumeCounters } from '../../src/manager/sampler';
import { ManagerStore } from '../../src/manager/store/collections';
import { LevelKv } from '../../src/manager/store/level-kv';

function fakeClock(start: number): Clock & { advance(ms: number): void } {
  let now = start;
  return { ...systemClock, now: () => now, advance: (ms) => { now += ms; } };
}

const failure = (copy: string): AlertInput => ({
  key: `copy:${copy}`, kind: 'copy-failed', severity: 'critical', subject: copy, message: `${copy} failed`, copy, reportedBy: 'tokyo', topology: null, report: null,
});

describe('manager store', () => {
  let dir: string;
  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-mstore-'));
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  it('keeps committed batches across a reopen and refuses a second opener', async () => {
    const kv = await LevelKv.open(path.join(dir, 'a'));
    await kv.batch([{ type: 'put', key: 'x/1', value: '"one"' }, { type: 'put', key: 'x/2', value: '"two"' }]);
    await assert.rejects(LevelKv.open(path.join(dir, 'a')), (err: unknown) => err instanceof TricopyError && err.code === 'busy');
    await kv.close();
    const again = await LevelKv.open(path.join(dir, 'a'));
    assert.deepEqual((await again.list('x/')).map((r) => r.key), ['x/1', 'x/2']);
    assert.deepEqual((await again.list('x/', { reverse: true, limit: 1 })).map((r) => r.key), ['x/2']);
    await again.close();
  });

  it('numbers events on after a reopen and finds them by time', async () => {
    const clock = fakeClock(Date.parse('2030-01-01T00:00:00Z'));
    let kv = await LevelKv.open(path.join(dir, 'b'));
    let history = new EventHistory(new ManagerStore(kv), clock);
    await history.load();
    for (let i = 0; i < 10; i++) {
      await history.append([{ kind: 'k', node: null, subject: `s${i}`, reason: 'r' }]);
      clock.advance(60_000);
    }
    await kv.close();
    kv = await LevelKv.open(path.join(dir, 'b'));
    history = new EventHistory(new ManagerStore(kv), clock);
    await history.load();
    const [next] = await history.append([{ kind: 'k', node: null, subject: 'after', reason: 'r' }]);
    assert.equal(next!.seq, 11);
    const recent = await history.query({ sinceMs: clock.now() - 3.5 * 60_000 });
    assert.deepEqual(recent.map((e) => e.subject), ['s7', 's8', 's9', 'after']);
    assert.deepEqual((await history.query({ afterSeq: 9 })).map((e) => e.seq), [10, 11]);
    await kv.close();
  });

  it('opens one alert per key, acknowledges it, closes it, and opens a new one after', async () => {
    const kv = await LevelKv.open(path.join(dir, 'c'));
    const store = new ManagerStore(kv);
    const book = new AlertBook(store, systemClock);
    await book.load();
    const first = book.raise(failure('db'));
    await store.commit(first.ops);
    assert.equal(first.change, 'opened');
    const repeat = book.raise(failure('db'));
    assert.equal(repeat.change, 'updated');
    assert.equal(repeat.alert.id, first.alert.id);
    await store.commit(repeat.ops);
    const acked = await book.ack(first.alert.id, 'ops');
    await store.commit(acked.ops);
    assert.equal(acked.alert.state, 'acknowledged');
    assert.equal(book.raise(failure('db')).alert.state, 'acknowledged', 'a repeat keeps the acknowledgement');
    const closed = book.clear('copy:db', 'healthy')!;
    await store.commit(closed.ops);
    assert.equal(closed.alert.state, 'closed');
    await assert.rejects(book.ack(first.alert.id, 'ops'), (err: unknown) => err instanceof TricopyError && err.code === 'conflict');
    assert.equal(book.raise(failure('db')).alert.id, String(Number(first.alert.id) + 1));
    assert.deepEqual(alertTransitions.closed, {}, 'nothing leaves closed');
    await kv.close();
  });

  it('derives rates from two scrapes and thins old samples', () => {
    const text = (reads: number, writes: number): string => [
      `tricopy_nbd_requests_total{volume="db",op="read",result="ok",node="n"} ${reads}`,
      `tricopy_nbd_requests_total{volume="db",op="write",result="ok",node="n"} ${writes}`,
      'tricopy_nbd_bytes_total{volume="db",op="write",node="n"} 1048576',
    ].join('\n');
    const a = volumeCounters(parseMetrics(text(100, 100)));
    const b = volumeCounters(parseMetrics(text(300, 900)));
    const [s] = samplesBetween('n', new Date().toISOString(), 10, a, b, new Map());
    assert.equal(s!.iops, 100);
    assert.equal(s!.readRatio, 0.2);
    const hour = 3_600_000;
    assert.equal(keepSample(0, 10 * 60_000, 0), true, 'recent samples are all kept');
    assert.equal(keepSample(30_000, 2 * hour, 10_000), false, 'one a minute after an hour');
    assert.equal(keepSample(70_000, 2 * hour, 10_000), true);
    assert.equal(keepSample(0, 31 * 24 * hour, null), false, 'nothing after 30 days');
    // Per series: two hours ago, samples 10 s apart keep one a minute; the last hour keeps all.
    const now = 10 * hour;
    const rows = [...[0, 10, 20, 60, 70].map((s) => ({ series: 'a', timeMs: now - 2 * hour + s * 1000 })), ...[0, 10].map((s) => ({ series: 'b', timeMs: now - 2 * hour + s * 1000 })),
      ...[0, 10].map((s) => ({ series: 'a', timeMs: now - 60_000 + s * 1000 }))].map((r, i) => ({ ...r, key: `k${i}` }));
    const rowsInStoreOrder = [...rows].sort((x, y) => x.series.localeCompare(y.series) || x.timeMs - y.timeMs);
    assert.deepEqual(thinnedKeys(rowsInStoreOrder, now).sort(), ['k1', 'k2', 'k4', 'k6'], 'the first of each minute bucket, per series, stays');
  });
});
