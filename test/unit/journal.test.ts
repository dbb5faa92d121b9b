// The async journals on disk: ordered appends, crash recovery of a torn tail, acknowledgement and
// trimming on the primary; consecutive receipt, duplicates, in-order apply and the durable apply
// position on the secondary.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { silentLogger } from '../../src/common/log';
import { PrimaryJournal } from '../../src/replication/async/primary-journal';
import { ReceivedJournal } from '../../src/replication/async/received-journal';
import { systemClock } from '../../src/common/clock';
import { nodeDisk } from '../../src/common/disk';

const env = { disk: nodeDisk, clock: systemClock };
import { type JournalEntry, JournalOp } from '../../src/replication/async/journal-entry';
import { JournalStore } from '../../src/replication/async/journal-store';
import { RecordingDisk } from '../support/recording-disk';
import { tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const log = silentLogger();

function write(pair: string, offset: number, text: string): Omit<JournalEntry, 'seq' | 'timeMs'> {
  return { op: JournalOp.Write, pair, offset, length: text.length, data: Buffer.from(text) };
}

test('store: appends land in order across segments; reopen finds exactly them', async () => {
  const dir = await tempDir('jstore');
  try {
    let { store } = await JournalStore.open(dir, env, log, 300);
    const writes = [];
    for (let seq = 1; seq <= 20; seq++) {
      writes.push(store.append({ seq, timeMs: seq, op: JournalOp.Write, pair: 'p', offset: seq * 10, length: 10, data: Buffer.alloc(10, seq) }).written);
    }
    await Promise.all(writes);
    assert.ok((await fsp.readdir(dir)).length > 1, 'small segments roll over');
    await store.close();
    const reopened = await JournalStore.open(dir, env, log, 300);
    store = reopened.store;
    assert.deepEqual(reopened.entries.map((e) => e.seq), Array.from({ length: 20 }, (_, i) => i + 1));
    assert.deepEqual(await store.readData(reopened.entries[6]!), Buffer.alloc(10, 7));
    await store.trimThrough(10);
    await store.close();
    const trimmed = await JournalStore.open(dir, env, log, 300);
    assert.ok(trimmed.entries[0]!.seq > 1 && trimmed.entries[0]!.seq <= 11, 'whole segments below the mark are gone');
    assert.equal(trimmed.entries.at(-1)!.seq, 20);
    await trimmed.store.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('store: a segment gets its first bytes only after the one before it is written and synced (no later segment ahead of an earlier tail)', async () => {
  const dir = await tempDir('jorder');
  try {
    const disk = new RecordingDisk();
    const { store } = await JournalStore.open(dir, { disk, clock: systemClock }, log, 300);
    // One batch (one event-loop turn) that crosses from the first segment into the next two.
    const writes = [];
    for (let seq = 1; seq <= 12; seq++) writes.push(store.append({ seq, timeMs: seq, op: JournalOp.Write, pair: 'p', offset: 0, length: 40, data: Buffer.alloc(40, seq) }).written);
    await Promise.all(writes);
    const segmentWrites = disk.ops.filter((op) => op.kind === 'write' && path.basename(op.file).startsWith('seg-'));
    const segments = [...new Set(segmentWrites.map((op) => op.file))];
    assert.ok(segments.length >= 3, `the batch crossed segments: ${segments.join(', ')}`);
    for (let i = 1; i < segments.length; i++) {
      const lastBefore = segmentWrites.filter((op) => op.file === segments[i - 1]).at(-1)!;
      const firstNext = segmentWrites.find((op) => op.file === segments[i])!;
      assert.ok(disk.durableBefore(lastBefore, firstNext.startedAt), `${path.basename(segments[i - 1]!)} durable before ${path.basename(segments[i]!)} is written`);
    }
    await store.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('received journal: entries after a gap (an earlier segment missing its tail) were never acknowledged; the journal ends at the gap', async () => {
  const dir = await tempDir('jgap');
  try {
    const { store } = await JournalStore.open(dir, env, log, 300);
    for (let seq = 1; seq <= 12; seq++) await store.append({ seq, timeMs: seq, op: JournalOp.Write, pair: 'p', offset: 0, length: 40, data: Buffer.alloc(40, seq) }).written;
    await store.close();
    const names = (await fsp.readdir(dir)).filter((n) => n.startsWith('seg-')).sort();
    assert.ok(names.length >= 3);
    // As a crash could leave it before segments were written in order: the first segment misses
    // its last entry while the later ones hold theirs.
    const first = path.join(dir, names[0]!);
    await fsp.truncate(first, (await fsp.stat(first)).size - 5);
    const asPrimary = await JournalStore.open(dir, env, log, 300);
    const kept = asPrimary.entries.map((e) => e.seq);
    await asPrimary.store.close();
    assert.ok(kept.length < 12 && kept.at(-1) === 12, `a primary journal reads the jump as a stream break: ${kept.join(',')}`);
    // A received journal has no breaks: it ends at the gap, so the primary sends the rest again.
    const received = await ReceivedJournal.open(dir, 'g', env, log);
    const gapAt = kept.findIndex((seq, i) => seq !== i + 1);
    assert.equal(received.receivedSeq, gapAt, `received through the last entry before the gap (${gapAt})`);
    assert.deepEqual(received.pendingEntries().map((e) => e.seq), Array.from({ length: gapAt }, (_, i) => i + 1));
    await received.receive([{ seq: gapAt + 1, timeMs: 0, op: JournalOp.Zero, pair: 'p', offset: 0, length: 512 }]);
    assert.equal(received.receivedSeq, gapAt + 1, 'the resent entry continues the journal');
    await received.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('store: a torn tail after a crash is cut off, and appends continue after it', async () => {
  const dir = await tempDir('jtorn');
  try {
    const { store } = await JournalStore.open(dir, env, log);
    for (let seq = 1; seq <= 5; seq++) await store.append({ seq, timeMs: 0, op: JournalOp.Zero, pair: 'p', offset: 0, length: 512 }).written;
    await store.close();
    const file = path.join(dir, (await fsp.readdir(dir))[0]!);
    const size = (await fsp.stat(file)).size;
    await fsp.truncate(file, size - 7); // the last entry was being written when the node died
    const again = await JournalStore.open(dir, env, log);
    assert.deepEqual(again.entries.map((e) => e.seq), [1, 2, 3, 4]);
    await again.store.append({ seq: 5, timeMs: 0, op: JournalOp.Zero, pair: 'p', offset: 0, length: 512 }).written;
    await again.store.close();
    const third = await JournalStore.open(dir, env, log);
    assert.deepEqual(third.entries.map((e) => e.seq), [1, 2, 3, 4, 5]);
    await third.store.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('store: a segment named before the node died holds nothing; entries after the next break are found again (sim seed 186)', async () => {
  const dir = await tempDir('jempty');
  try {
    const { store } = await JournalStore.open(dir, env, log);
    for (let seq = 1; seq <= 3; seq++) await store.append({ seq, timeMs: 0, op: JournalOp.Zero, pair: 'p', offset: 0, length: 512 }).written;
    await store.close();
    // The node restarted, numbered on from 100, named the segment and died before writing to it.
    await fsp.writeFile(path.join(dir, `seg-${String(100).padStart(16, '0')}.jnl`), Buffer.alloc(4096, 0xa5));
    const second = await JournalStore.open(dir, env, log);
    assert.deepEqual(second.entries.map((e) => e.seq), [1, 2, 3]);
    // The next start numbers on from 200: its entries must be readable after another restart.
    await second.store.append({ seq: 200, timeMs: 0, op: JournalOp.Write, pair: 'p', offset: 0, length: 3, data: Buffer.from('new') }).written;
    await second.store.sync();
    await second.store.close();
    const third = await JournalStore.open(dir, env, log);
    assert.deepEqual(third.entries.map((e) => e.seq), [1, 2, 3, 200]);
    assert.deepEqual(await third.store.readData(third.entries[3]!), Buffer.from('new'));
    await third.store.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('primary journal: numbers increase, lag is counted, acknowledged entries are trimmed, capacity is known', async () => {
  const dir = await tempDir('jprimary');
  try {
    const j = await PrimaryJournal.open(dir, 'g', 1024 * 1024, env, log);
    const a = j.append(write('p', 0, 'aaaa'));
    const b = j.append(write('q', 100, 'bbbbbb'));
    await Promise.all([a.written, b.written]);
    assert.deepEqual([a.seq, b.seq], [1, 2]);
    assert.equal(j.lag().entries, 2);
    assert.equal(j.lag().bytes, 10);
    assert.deepEqual(j.entriesAfter(0, 1, 100).map((e) => e.seq), [1], 'at least one entry even over the byte limit');
    assert.deepEqual(await j.dataOf(j.entriesAfter(1, 1 << 20, 100)[0]!), Buffer.from('bbbbbb'));
    await j.localDone(1);
    await j.acknowledge(2, 1);
    assert.deepEqual(j.retainedEntries().map((e) => e.seq), [2], 'entry 2 stays until its local write is done');
    await j.localDone(2);
    assert.deepEqual(j.retainedEntries(), []);
    assert.equal(j.lag().entries, 1);
    await j.acknowledge(2, 2);
    assert.deepEqual(j.lag(), { entries: 0, bytes: 0, seconds: 0 });
    assert.ok(!j.wouldOverflow(1000));
    assert.ok(j.wouldOverflow(2 * 1024 * 1024));
    await assert.rejects(j.acknowledge(99, 0), /beyond the last entry/);
    await j.close();
    const reopened = await PrimaryJournal.open(dir, 'g', 1024 * 1024, env, log);
    assert.equal(reopened.lastSeq, 2);
    assert.equal(reopened.append(write('p', 0, 'c')).seq, 3, 'numbering continues after a restart');
    await reopened.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('primary journal: shipping stops at the first held entry; what is blocked counts it and every entry after it (sim seed 1794)', async () => {
  const dir = await tempDir('jblocked');
  try {
    const j = await PrimaryJournal.open(dir, 'g', 1024 * 1024, env, log);
    const seqs: number[] = [];
    for (let i = 0; i < 5; i++) {
      const a = j.append(write('p', i * 10, 'x'), { held: i === 2 || i === 3 });
      await a.written;
      seqs.push(a.seq);
    }
    assert.deepEqual(seqs, [1, 2, 3, 4, 5]);
    assert.equal(j.heldCount, 2);
    assert.equal(j.blockedCount, 3, 'entries 3 and 4 are held and 5 waits behind them');
    assert.deepEqual(j.entriesAfter(0, 1 << 20, 100).map((e) => e.seq), [1, 2], 'shipping stops at the first held entry');
    await j.acknowledge(2, 2);
    assert.equal(j.lag().entries, 3);
    assert.equal(j.blockedCount, 3, 'everything unapplied is blocked: nothing more can ship');
    j.release(3);
    j.release(4);
    assert.equal(j.blockedCount, 0);
    await j.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('received journal: applies in order, skips duplicates, refuses gaps, resumes from the durable position', async () => {
  const dir = await tempDir('jreceived');
  try {
    const applied: number[] = [];
    let flushes = 0;
    const entry = (seq: number, offset: number): JournalEntry => ({ seq, timeMs: seq, op: JournalOp.Write, pair: 'p', offset, length: 1, data: Buffer.from([seq]) });
    let j = await ReceivedJournal.open(dir, 'g', env, log);
    j.start(async (e) => {
      applied.push(e.seq);
    }, async () => {
      flushes++;
    });
    await j.receive([entry(1, 0), entry(2, 0), entry(3, 10)]);
    await j.receive([entry(2, 0), entry(3, 10), entry(4, 20)]); // a resend overlapping what arrived
    await assert.rejects(j.receive([entry(6, 0)]), /expected entry 5, got 6/);
    await j.drain();
    assert.deepEqual(applied, [1, 2, 3, 4]);
    assert.equal(j.appliedSeq, 4);
    assert.ok(flushes > 0, 'data flushed before the position was recorded');
    await j.receive([entry(5, 0), entry(6, 30)]);
    await j.close();
    // Entries 5 and 6 may or may not have been applied before the close; either way they are
    // applied (again) in order after reopening, never skipped.
    const again: number[] = [];
    j = await ReceivedJournal.open(dir, 'g', env, log);
    assert.equal(j.receivedSeq, 6);
    j.start(async (e) => {
      again.push(e.seq);
    }, async () => undefined);
    await j.drain();
    assert.deepEqual(again.filter((s) => s >= 5), again.length > 0 ? [5, 6].slice(2 - again.length) : []);
    assert.equal(j.appliedSeq, 6);
    await j.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('received journal: holdApply stops at a batch boundary; nothing is applied until the release, then everything in order', async () => {
  const dir = await tempDir('jhold');
  try {
    const applied: number[] = [];
    let inFlight = 0;
    let releaseSlow: (() => void) | undefined;
    const entry = (seq: number, offset: number): JournalEntry => ({ seq, timeMs: seq, op: JournalOp.Write, pair: 'p', offset, length: 1, data: Buffer.from([seq]) });
    const j = await ReceivedJournal.open(dir, 'g', env, log);
    j.start(async (e) => {
      inFlight++;
      // Entry 1 is slow: the hold must wait for its batch to finish.
      if (e.seq === 1) await new Promise<void>((resolve) => (releaseSlow = resolve));
      applied.push(e.seq);
      inFlight--;
    }, async () => undefined);
    await j.receive([entry(1, 0), entry(2, 10), entry(3, 20)]);
    let held = false;
    const holding = j.holdApply().then((release) => {
      held = true;
      return release;
    });
    // Entries 2 and 3 (the same batch) finish; entry 1 does not, so neither does the batch.
    await waitFor('entries 2 and 3 applied', () => applied.includes(2) && applied.includes(3), { timeoutMs: 10_000, intervalMs: 2 });
    assert.equal(held, false, 'the hold waits for the running batch');
    releaseSlow!();
    const release = await holding;
    assert.equal(inFlight, 0, 'no apply runs while held');
    const before = [...applied];
    await j.receive([entry(4, 0), entry(5, 30)]); // durable, and the apply was kicked: it must not start
    assert.equal(inFlight, 0, 'no apply starts while held');
    assert.deepEqual(applied, before, 'entries received while held wait');
    assert.equal(j.appliedSeq, 3);
    release();
    await j.drain();
    assert.deepEqual([...applied].sort((a, b) => a - b), [1, 2, 3, 4, 5]);
    assert.equal(j.appliedSeq, 5);
    await j.close();
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
