// What a node does with its pairs when it starts after a crash: replay the async journal tail onto
// the primary volumes (every write was journaled before it was issued locally), record the regions
// of sync writes that were in flight (the activity log) and suspend those pairs for a resync, and
// hold back async entries whose sync copy is uncertain (3DC protection).
import type { Logger } from '../common/log';
import type { Journals } from './async/journals';
import { JournalOp } from './async/journal-entry';
import type { VolumeRuntimes } from './datapath/volume-runtimes';
import type { ReplicationEnv } from './env';
import type { PairRegistry } from './pairs/registry';
import type { TransitionEngine } from './pairs/transitions';

export async function recoverAfterRestart(env: ReplicationEnv, registry: PairRegistry, engine: TransitionEngine, journals: Journals,
  volumeRuntimes: VolumeRuntimes, log: Logger): Promise<void> {
  await replayJournals(env, registry, journals, log);
  await resyncInFlightRegions(env, registry, engine, volumeRuntimes);
  holdUncertainEntries(registry, journals, volumeRuntimes);
}

/** Replaying the journal tail in order makes the local volumes hold at least what the journal will deliver. */
async function replayJournals(env: ReplicationEnv, registry: PairRegistry, journals: Journals, log: Logger): Promise<void> {
  for (const [group, journal] of journals.primaryEntries()) {
    const retained = journal.retainedEntries();
    if (retained.length === 0) continue;
    const touched = new Set<string>();
    for (const e of retained) {
      const p = registry.get(e.pair);
      if (!p || p.record.role !== 'primary') continue;
      const volume = env.volumes.volume(p.record.volume);
      touched.add(p.record.volume);
      if (e.op === JournalOp.Write) await volume.write(e.offset, await journal.dataOf(e), { fua: false });
      else if (e.op === JournalOp.Zero) await volume.writeZeroes(e.offset, e.length, { fua: false, noHole: false, fastOnly: false });
    }
    await Promise.all([...touched].map((v) => env.volumes.volume(v).flush()));
    log.info({ group, entries: retained.length }, 'replayed the journal tail onto the primary volumes');
  }
}

async function resyncInFlightRegions(env: ReplicationEnv, registry: PairRegistry, engine: TransitionEngine, volumeRuntimes: VolumeRuntimes): Promise<void> {
  for (const [volumeName, vr] of volumeRuntimes.entries()) {
    if (!vr.activity) continue;
    const ranges = vr.activity.markedRanges();
    if (ranges.length === 0) continue;
    const size = env.volumes.volume(volumeName).sizeBytes;
    for (const p of registry.ofVolume(volumeName).filter((x) => x.record.role === 'primary' && x.record.mode === 'sync')) {
      for (const r of ranges) p.bitmap.markBytes(r.offset, Math.min(r.length, size - r.offset));
      await p.bitmap.sync();
      await engine.apply(p, 'crash-recovery', { reason: `node restarted with ${ranges.length} region(s) of writes in flight; they will be resynchronised` });
    }
    await vr.activity.clearIdle();
  }
}

/** 3DC protection after a crash: entries whose sync copy is uncertain wait for it. */
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
