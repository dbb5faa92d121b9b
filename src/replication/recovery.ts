// What a node does with its pairs when it starts after a crash, before it talks to any peer:
//   1. replay the async journal tail onto the primary volumes of pairs still journaling (every write
//      was journaled before it was issued locally, so the volume then holds at least what the
//      journal will deliver); pairs no longer journaling have their undelivered entries in their
//      differential records already, and replaying them would put older data over newer writes;
//   2. a split that was draining cannot go on: what the secondary lacks is recorded;
//   3. extents the activity log marked may differ from the copies: sync pairs record them and
//      suspend for a resync; async pairs journal their current contents again (as writes, with the
//      data read now: a copy marker would read it when shipped and could carry later writes), so
//      the secondary stays a consistent image; suspended pairs record them;
//   4. async entries whose sync copy is uncertain wait for it (3DC protection).
import type { Logger } from '../common/log';
import { JournalOp } from './async/journal-entry';
import { type Journals, journaling } from './async/journals';
import type { VolumeRuntimes } from './datapath/volume-runtimes';
import type { ByteRange } from './delta/delta-record';
import type { ReplicationEnv } from './env';
import { maxCopyRequestBytes } from './limits';
import type { PairRegistry } from './pairs/registry';
import type { PairRuntime } from './pairs/runtime';
import type { TransitionEngine } from './pairs/transitions';
import type { Volume } from '../volume/volume';

export async function recoverAfterRestart(env: ReplicationEnv, registry: PairRegistry, engine: TransitionEngine, journals: Journals,
  volumeRuntimes: VolumeRuntimes, log: Logger): Promise<void> {
  await replayJournals(env, registry, journals, log);
  await abandonDrains(registry, engine, journals);
  await resendActiveExtents(env, registry, engine, journals, volumeRuntimes, log);
  holdUncertainEntries(registry, journals, volumeRuntimes);
}

async function replayJournals(env: ReplicationEnv, registry: PairRegistry, journals: Journals, log: Logger): Promise<void> {
  for (const [group, journal] of journals.primaryEntries()) {
    const touched = new Set<string>();
    let replayed = 0;
    for (const e of journal.retainedEntries()) {
      const p = registry.get(e.pair);
      if (!p || p.record.role !== 'primary' || !journaling(p)) continue;
      const volume = env.volumes.volume(p.record.volume);
      touched.add(p.record.volume);
      if (e.op === JournalOp.Write) await volume.write(e.offset, await journal.dataOf(e), { fua: false });
      else if (e.op === JournalOp.Zero) await volume.writeZeroes(e.offset, e.length, { fua: false, noHole: false, fastOnly: false });
      else continue;
      replayed++;
    }
    await Promise.all([...touched].map((v) => env.volumes.volume(v).flush()));
    if (replayed > 0) log.info({ group, entries: replayed }, 'replayed the journal tail onto the primary volumes');
  }
}

async function abandonDrains(registry: PairRegistry, engine: TransitionEngine, journals: Journals): Promise<void> {
  for (const p of [...registry.all()]) {
    if (p.record.role !== 'primary' || p.record.state !== 'suspending' || !p.record.group) continue;
    const journal = journals.primary(p.record.group);
    for (const e of journal?.retainedEntries() ?? []) if (e.pair === p.record.name && e.seq > journal!.ackedSeq) p.bitmap.markBytes(e.offset, e.length);
    await p.bitmap.sync();
    await engine.apply(p, 'drain-failed', { reason: 'the node restarted while the split was draining; undelivered entries were recorded as changed regions' });
  }
  for (const [group] of [...journals.primaryEntries()]) await journals.retireIfSuspended(group);
}

async function resendActiveExtents(env: ReplicationEnv, registry: PairRegistry, engine: TransitionEngine, journals: Journals,
  volumeRuntimes: VolumeRuntimes, log: Logger): Promise<void> {
  for (const [volumeName, vr] of volumeRuntimes.entries()) {
    if (!vr.activity) continue;
    const size = env.volumes.volume(volumeName).sizeBytes;
    const ranges = vr.activity.markedRanges().map((r) => ({ offset: r.offset, length: Math.min(r.length, size - r.offset) })).filter((r) => r.length > 0);
    if (ranges.length === 0) continue;
    for (const p of registry.ofVolume(volumeName).filter((x) => x.record.role === 'primary')) {
      if (p.record.mode === 'async' && journaling(p)) {
        await journalAgain(p, env.volumes.volume(volumeName), ranges, journals);
        // The marks are cleared below: a power loss after that must still find these entries.
        await journals.primary(p.record.group!)?.sync();
        continue;
      }
      for (const r of ranges) p.bitmap.markBytes(r.offset, r.length);
      await p.bitmap.sync();
      if (p.record.mode === 'sync') {
        await engine.apply(p, 'crash-recovery', { reason: `node restarted with ${ranges.length} region(s) of writes in flight; they will be resynchronised` });
      }
    }
    log.info({ volume: volumeName, extents: ranges.length }, 'extents with writes in flight at the crash are sent again');
    await vr.activity.clearIdle();
  }
}

/** The regions' current contents as writes in the group's journal: the secondary gets them in order. */
async function journalAgain(p: PairRuntime, volume: Volume, ranges: ByteRange[], journals: Journals): Promise<void> {
  for (const r of ranges) {
    for (let at = r.offset; at < r.offset + r.length; at += maxCopyRequestBytes) {
      const length = Math.min(maxCopyRequestBytes, r.offset + r.length - at);
      const data = await volume.read(at, length);
      // Nothing ships before the node listens: no waiting for space; a full journal falls back to bitmaps.
      const appended = await journals.append(p, { op: JournalOp.Write, pair: p.record.name, offset: at, length, data }, false, false);
      if (!appended) return; // the group fell back to bitmaps: the regions are recorded
    }
  }
}

function holdUncertainEntries(registry: PairRegistry, journals: Journals, volumeRuntimes: VolumeRuntimes): void {
  for (const [group, journal] of journals.primaryEntries()) {
    for (const e of journal.retainedEntries()) {
      const p = registry.get(e.pair);
      if (!p) continue;
      const syncLag = registry.ofVolume(p.record.volume).some((x) => x.record.role === 'primary' && x.record.mode === 'sync' &&
        x.record.fence === 'data' && x.record.state !== 'duplex');
      if (syncLag) {
        journal.hold(e.seq);
        volumeRuntimes.get(p.record.volume).held.push({ group, seq: e.seq });
      }
    }
  }
}
