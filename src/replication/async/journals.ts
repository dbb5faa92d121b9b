// The journals of this node's consistency groups: the primary journal of each group it sends and
// the received journal of each group it receives. Owns appending under the journal-full policy
// (delay, or fall back to bitmaps), entries held back for the sync copy (3DC protection), and
// opening and closing journals as pairs come, go and change roles.
import * as path from 'node:path';
import { invariant } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { JournalFullPolicy } from '../../contracts/pairs';
import type { ReplicationEnv } from '../env';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';
import { journalSpaceWaitMs } from '../limits';
import type { PairRecord } from '../pairs/pair-model';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import { type JournalEntry, JournalOp } from './journal-entry';
import type { JournalEnv } from './journal-store';
import { JournalFullError, PrimaryJournal } from './primary-journal';
import { ReceivedJournal, removeJournalDir } from './received-journal';

export interface JournalPolicy {
  capacityBytes: number;
  fullPolicy: JournalFullPolicy;
  /** With the delay policy: how long writes may wait for journal space before the group suspends. */
  stallTimeoutMs: number;
}

/** What the shipper needs to hear from the journals. */
export interface JournalSignals {
  /** New entries (or released ones) may be shipped. */
  wake(group: string): void;
  /** This node stops sending the group. */
  closing(group: string): void;
  /** The group's stream restarts after its last entry (the journal fell back to bitmaps). */
  restarted(group: string, lastSeq: number): void;
}

export interface Appended {
  seq: number;
  journal: PrimaryJournal;
}

/** An async pair whose writes go into the journal now. */
export function journaling(p: PairRuntime): boolean {
  const s = p.record.state;
  return s === 'duplex' || s === 'initial-copying' || s === 'duplex-pending';
}

export class Journals {
  private readonly primaries = new Map<string, PrimaryJournal>();
  private readonly opening = new Map<string, Promise<void>>();
  private readonly receivers = new Map<string, ReceivedJournal>();
  private readonly fallbacks = new Map<string, Promise<void>>();
  signals: JournalSignals = { wake: () => undefined, closing: () => undefined, restarted: () => undefined };
  /** Set by the applier: starts applying a received journal (once the node listens). */
  startApplying: ((journal: ReceivedJournal) => void) | undefined;

  constructor(
    private readonly env: ReplicationEnv,
    private readonly dataDir: string,
    private readonly policy: JournalPolicy,
    private readonly registry: PairRegistry,
    private readonly engine: TransitionEngine,
    private readonly volumeRuntimes: VolumeRuntimes,
    private readonly log: Logger,
  ) {
    // Held async entries go once the sync copy has their writes again, or once the operator chose
    // to run without the sync copy (a split).
    engine.onLocal((t) => {
      const r = t.pair.record;
      if (r.role === 'primary' && r.mode === 'sync' && (r.state === 'duplex' || (r.state === 'suspended' && r.suspendCause === 'operator'))) {
        this.releaseHeldOf(r.volume);
      }
    });
  }

  primary(group: string): PrimaryJournal | undefined {
    return this.primaries.get(group);
  }

  received(group: string): ReceivedJournal | undefined {
    return this.receivers.get(group);
  }

  primaryEntries(): IterableIterator<[string, PrimaryJournal]> {
    return this.primaries.entries();
  }

  receivedJournals(): IterableIterator<ReceivedJournal> {
    return this.receivers.values();
  }

  get fullPolicy(): JournalFullPolicy {
    return this.policy.fullPolicy;
  }

  dir(group: string, side: 'primary' | 'secondary'): string {
    return path.join(this.dataDir, 'groups', group, side);
  }

  private get journalEnv(): JournalEnv {
    return { disk: this.env.disk, clock: this.env.clock };
  }

  /** Opens the journal a pair's group needs on this side (if it is not open yet). */
  async openFor(record: Pick<PairRecord, 'role' | 'group'>): Promise<void> {
    const group = record.group;
    if (!group) return;
    // One open per journal even when two members join at once (two opens would share its files).
    const key = `${record.role}:${group}`;
    const pending = this.opening.get(key);
    if (pending) return pending;
    const opening = this.openNow(record.role, group).finally(() => this.opening.delete(key));
    this.opening.set(key, opening);
    return opening;
  }

  private async openNow(role: PairRecord['role'], group: string): Promise<void> {
    if (role === 'primary' && !this.primaries.has(group)) {
      this.primaries.set(group, await PrimaryJournal.open(this.dir(group, 'primary'), group, this.policy.capacityBytes, this.journalEnv,
        this.log.child({ group })));
    }
    if (role === 'secondary' && !this.receivers.has(group)) {
      const journal = await ReceivedJournal.open(this.dir(group, 'secondary'), group, this.journalEnv, this.log.child({ group }));
      this.receivers.set(group, journal);
      this.startApplying?.(journal);
    }
  }

  /** This node no longer sends the group: its shipper stops and its journal is closed. */
  async closePrimary(group: string, removeFiles: boolean): Promise<void> {
    this.signals.closing(group);
    await this.primaries.get(group)?.close();
    this.primaries.delete(group);
    if (removeFiles) await removeJournalDir(this.env.disk, this.dir(group, 'primary'));
  }

  async closeReceived(group: string, removeFiles: boolean): Promise<void> {
    await this.receivers.get(group)?.close();
    this.receivers.delete(group);
    if (removeFiles) await removeJournalDir(this.env.disk, this.dir(group, 'secondary'));
  }

  /** The group has no pair left on this node: both journals go, with their files. */
  async removeGroup(group: string): Promise<void> {
    await this.closePrimary(group, false);
    await this.closeReceived(group, false);
    await removeJournalDir(this.env.disk, path.join(this.dataDir, 'groups', group));
  }

  async close(): Promise<void> {
    for (const j of this.receivers.values()) await j.close();
    for (const j of this.primaries.values()) await j.close();
  }

  /**
   * Appends to the pair's group journal, honouring the journal-full policy. Returns undefined when
   * the group fell back to bitmaps meanwhile (the write's regions were recorded instead).
   */
  async append(p: PairRuntime, entry: Omit<JournalEntry, 'seq' | 'timeMs'>, held = false, mayWait = true): Promise<Appended | undefined> {
    const group = p.record.group!;
    // Every member stops journaling at the instant the group falls back: a write that comes while
    // the members change state is recorded, as it would be after.
    if (this.fallbacks.has(group)) {
      await this.record(p, entry);
      return undefined;
    }
    let journal = this.primaries.get(group);
    invariant(journal, `async pair ${p.record.name} has the journal of group ${group}`);
    const bytes = entry.op === JournalOp.Write ? entry.length + 64 : 64;
    let waitedSince: number | undefined;
    while (journal.wouldOverflow(bytes)) {
      if (this.policy.fullPolicy === 'suspend' || !mayWait ||
          (waitedSince !== undefined && this.env.clock.now() - waitedSince > this.policy.stallTimeoutMs)) {
        await this.fallBackToBitmaps(group, new JournalFullError(group, journal.capacityBytes).message);
        await this.record(p, entry);
        return undefined;
      }
      waitedSince ??= this.env.clock.now();
      await journal.waitForSpace(journalSpaceWaitMs);
      journal = this.primaries.get(group);
      if (!journal || !journaling(p)) {
        await this.record(p, entry);
        return undefined;
      }
    }
    const { seq, written } = journal.append(entry, { held });
    await written;
    this.signals.wake(group);
    return { seq, journal };
  }

  private async record(p: PairRuntime, entry: Omit<JournalEntry, 'seq' | 'timeMs'>): Promise<void> {
    p.bitmap.markBytes(entry.offset, entry.length);
    await p.bitmap.sync();
  }

  /** The group's journal cannot take more: every pair of the group continues on bitmaps. */
  fallBackToBitmaps(group: string, reason: string): Promise<void> {
    const running = this.fallbacks.get(group);
    if (running) return running;
    const task = (async () => {
      const journal = this.primaries.get(group)!;
      const members = this.registry.ofGroup(group).filter((p) => p.record.role === 'primary');
      await this.fallBack(group, journal, members, reason);
    })().finally(() => this.fallbacks.delete(group));
    this.fallbacks.set(group, task);
    return task;
  }

  private async fallBack(group: string, journal: PrimaryJournal, members: PairRuntime[], reason: string): Promise<void> {
    const dropped = await journal.dropAll();
    for (const e of dropped) {
      const p = this.registry.get(e.pair);
      if (p && members.includes(p)) p.bitmap.markBytes(e.offset, e.length);
    }
    for (const p of members) {
      const wrote = dropped.some((e) => e.pair === p.record.name && e.op !== JournalOp.CopyRegion);
      await p.bitmap.sync();
      if (journaling(p) || p.record.state === 'suspending') {
        await this.engine.apply(p, 'journal-full', { reason: `${reason}; ${dropped.length} undelivered entries became recorded regions`,
          hostWritesRecorded: p.record.hostWritesRecorded || wrote });
      } else if (wrote) {
        await this.engine.noteHostWrites(p, true);
      }
    }
    this.signals.restarted(group, journal.lastSeq);
  }

  /**
   * Once every pair of the group is suspended with what the secondary lacks recorded in its
   * bitmap, the journal's undelivered entries must never be shipped: the secondary stays at its
   * split point until a resync (a copy marker read now would carry data written after the split).
   * The stream starts over after them. Entries of a pair fenced by a takeover stay: the swap back
   * reads them.
   */
  async retireIfSuspended(group: string): Promise<void> {
    const journal = this.primaries.get(group);
    const members = this.registry.ofGroup(group).filter((p) => p.record.role === 'primary');
    if (!journal || members.length === 0 || journal.retainedEntries().length === 0) return;
    if (!members.every((p) => p.record.state === 'suspended' && p.record.suspendCause !== 'takeover-by-peer')) return;
    await journal.dropAll();
    this.signals.restarted(group, journal.lastSeq);
    this.log.info({ group }, 'the suspended group\'s undelivered entries are recorded as changed regions; its stream starts over');
  }

  /** Lets a held entry (and the ones queued behind it) be shipped. */
  releaseHeld(journal: PrimaryJournal, seq: number): void {
    journal.release(seq);
    this.signals.wake(journal.group);
  }

  /** A volume's sync copy has every write again (or the operator chose to run without it). */
  releaseHeldOf(volume: string): void {
    const vr = this.volumeRuntimes.peek(volume);
    if (!vr || vr.held.length === 0) return;
    for (const h of vr.held.splice(0)) {
      const journal = this.primaries.get(h.group);
      if (journal) this.releaseHeld(journal, h.seq);
    }
    this.log.info({ volume }, 'sync copy restored: held async entries released');
  }
}
