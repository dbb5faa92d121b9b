// Ships each group's journal to its secondary, in order, in batches, with a bounded number of
// batches in flight; restarts from what the secondary says it holds whenever the link comes back.
// Copy markers (async initial copy and resync) get their region's data read here, under the range
// lock, so what is shipped is consistent with the entries numbered before it.
import { errorMessage } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { ReplicationEnv } from '../env';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';
import { maxBatchBytes, maxBatchEntries, maxBatchesInFlight, shipRetryDelayMs } from '../limits';
import type { PairRegistry } from '../pairs/registry';
import type { TransitionEngine } from '../pairs/transitions';
import { journalAckCodec } from '../transport/control-messages';
import { MessageType, encodeDataHeader } from '../transport/messages';
import { JournalOp, encodeEntries } from './journal-entry';
import { JournalEntryGone, type StoredEntry } from './journal-store';
import type { Journals } from './journals';
import type { PrimaryJournal } from './primary-journal';

interface Shipper {
  group: string;
  peer: string;
  /** Highest sequence number sent (or known received). */
  sentSeq: number;
  inFlight: number;
  running: boolean;
  wake: (() => void) | null;
}

export interface ShipperHooks {
  /** The secondary acknowledged entries: copies waiting for it may finish. */
  progressed(group: string): Promise<void>;
  /** A batch failed while the link stayed up: reconcile with the peer again (it restarts shipping). */
  resume(peer: string): void;
  /** Ask the peer where it stands in this node's streams and ship from there, reconciling no pair. */
  resumeShipping(peer: string): void;
}

export class Shipping {
  private readonly shippers = new Map<string, Shipper>();
  private stopped = false;

  constructor(
    private readonly env: ReplicationEnv,
    private readonly journals: Journals,
    private readonly registry: PairRegistry,
    private readonly engine: TransitionEngine,
    private readonly volumeRuntimes: VolumeRuntimes,
    private readonly hooks: ShipperHooks,
    private readonly log: Logger,
  ) {
    journals.signals = {
      wake: (group) => this.wake(group),
      closing: (group) => this.stop(group),
      restarted: (group, lastSeq) => {
        const s = this.shippers.get(group);
        if (s) s.sentSeq = lastSeq;
      },
    };
  }

  isRunning(group: string): boolean {
    return this.shippers.get(group)?.running ?? false;
  }

  /**
   * A command waits for the group's journal to drain (a planned swap) while no shipper runs, say
   * right after a restart: the reconciliation that starts it may wait behind that very command in
   * the pair's queue (sim seed 223). Ask the peer's position and ship.
   */
  ensureRunning(group: string, peer: string): void {
    if (!this.isRunning(group) && this.env.transport.isUp(peer)) this.hooks.resumeShipping(peer);
  }

  wake(group: string): void {
    const s = this.shippers.get(group);
    if (s?.wake) {
      const w = s.wake;
      s.wake = null;
      w();
    }
  }

  stop(group: string): void {
    const s = this.shippers.get(group);
    if (!s) return;
    s.running = false;
    s.wake?.();
    this.shippers.delete(group);
  }

  stopAll(): void {
    this.stopped = true;
    for (const group of [...this.shippers.keys()]) this.stop(group);
  }

  /** Starts (or restarts) shipping a group's journal from what the secondary says it holds. */
  /**
   * Ships the group's journal to `peer` from after `receivedSeq`. `appliedSeq`: what the secondary
   * reported applied with it (0: not known); its own reports after applying are not repeated, so
   * one sent while the link was down would otherwise leave the apply position behind for good.
   */
  start(group: string, peer: string, receivedSeq: number, appliedSeq = 0): void {
    const journal = this.journals.primary(group);
    if (!journal || this.stopped) return;
    const old = this.shippers.get(group);
    if (old) {
      old.running = false;
      old.wake?.();
    }
    const first = journal.firstRetainedSeq();
    if (receivedSeq > journal.lastSeq || (first !== undefined && receivedSeq >= journal.resetSeq && receivedSeq < first - 1)) {
      // The stream starts again after what the secondary holds; shipping resumes from there.
      void this.mismatch(group, receivedSeq, journal).then(() => {
        if (this.journals.primary(group) === journal && this.env.transport.isUp(peer)) this.start(group, peer, receivedSeq);
      }, (err: unknown) => this.log.error({ group, err: errorMessage(err) }, 'could not restart the journal stream'));
      return;
    }
    if (receivedSeq >= journal.resetSeq) {
      void journal.acknowledge(Math.max(receivedSeq, journal.ackedSeq), Math.max(journal.appliedSeq, Math.min(appliedSeq, receivedSeq)));
    }
    const shipper: Shipper = { group, peer, sentSeq: Math.max(receivedSeq, journal.ackedSeq, journal.resetSeq), inFlight: 0, running: true, wake: null };
    this.shippers.set(group, shipper);
    void this.loop(shipper, journal).catch((err: unknown) => {
      this.log.warn({ group, err: errorMessage(err) }, 'journal shipping stopped; it restarts when the link is back');
    });
  }

  /** The secondary holds entries this journal cannot continue from: copy everything again. */
  private async mismatch(group: string, receivedSeq: number, journal: PrimaryJournal): Promise<void> {
    const reason = `the secondary holds journal entries through ${receivedSeq} but this journal retains ${journal.firstRetainedSeq() ?? journal.lastSeq + 1}..${journal.lastSeq}: ordering cannot be kept`;
    this.log.error({ group, receivedSeq }, reason);
    const members = this.registry.ofGroup(group).filter((p) => p.record.role === 'primary');
    for (const p of members) {
      // Nothing tells which regions the secondary missed: every allocated region is copied again.
      p.bitmap.mergeFrom(this.env.volumes.volume(p.record.volume).allocation);
      await p.bitmap.sync();
    }
    // Numbers the secondary already used must never be used again (it would skip them as duplicates).
    // The whole group leaves the stream at one instant (writes wait meanwhile).
    await this.volumeRuntimes.whileHeld(members.map((p) => p.record.volume), async () => {
      await journal.dropAll(receivedSeq);
      for (const p of members) await this.engine.apply(p, 'failure', { reason });
    });
  }

  private async loop(s: Shipper, journal: PrimaryJournal): Promise<void> {
    while (s.running && !this.stopped) {
      if (!this.env.transport.isUp(s.peer)) return;
      if (s.inFlight >= maxBatchesInFlight) {
        await new Promise<void>((resolve) => (s.wake = resolve));
        continue;
      }
      const entries = journal.entriesAfter(s.sentSeq, maxBatchBytes, maxBatchEntries);
      if (entries.length === 0 && s.sentSeq < journal.resetSeq && journal.ackedSeq >= s.sentSeq) {
        // The stream restarted (after a crash's break) with nothing in it yet: an empty batch
        // moves the secondary to its start, so positions compare again.
        s.sentSeq = journal.resetSeq;
        s.inFlight++;
        this.send(s, journal, 0, [], journal.resetSeq);
        continue;
      }
      if (entries.length === 0) {
        await new Promise<void>((resolve) => (s.wake = resolve));
        continue;
      }
      let pieces: Buffer[];
      try {
        pieces = await this.loadBatch(entries, journal);
      } catch (err) {
        if (err instanceof JournalEntryGone) continue; // the journal moved on meanwhile: look again
        throw err;
      }
      if (!s.running) return;
      s.sentSeq = entries.at(-1)!.seq;
      s.inFlight++;
      this.send(s, journal, entries.length, pieces, journal.streamStartOf(entries[0]!.seq));
    }
  }

  private send(s: Shipper, journal: PrimaryJournal, count: number, pieces: Buffer[], streamStart: number): void {
    // The offset field carries where the stream starts, so the secondary can drop abandoned entries.
    const payload = [encodeDataHeader({ name: s.group, offset: streamStart, length: count, flags: 0 }), ...pieces];
    this.env.transport.request(s.peer, MessageType.JournalBatch, payload).then(async (reply) => {
      const ack = journalAckCodec.decode(reply);
      await journal.acknowledge(ack.receivedSeq, ack.appliedSeq);
      await this.hooks.progressed(s.group);
    }, (err: unknown) => {
      if (!s.running) return;
      this.log.debug({ group: s.group, err: errorMessage(err) }, 'journal batch not delivered');
      s.running = false;
      // The link may still be up (a timeout, a refused batch): start over from what the
      // secondary holds. A link that went down restarts the shipper when it comes back.
      const retry = this.env.clock.setTimer(shipRetryDelayMs, () => {
        if (this.env.transport.isUp(s.peer) && this.shippers.get(s.group) === s) this.hooks.resume(s.peer);
      });
      retry.unref();
    }).finally(() => {
      s.inFlight--;
      if (s.inFlight === 0) journal.recycleShipped();
      if (s.wake) {
        const w = s.wake;
        s.wake = null;
        w();
      }
    });
  }

  /** Encoded entries to ship: Write entries as stored, copy markers with their data read under the range lock. */
  private async loadBatch(entries: StoredEntry[], journal: PrimaryJournal): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (const e of entries) {
      if (e.op !== JournalOp.CopyRegion) {
        for (const piece of await journal.encodedOf(e)) out.push(piece);
        continue;
      }
      const p = this.registry.get(e.pair);
      let data: Buffer;
      if (!p) {
        data = Buffer.alloc(e.length); // the pair is gone: the secondary skips the entry anyway
      } else {
        const vr = this.volumeRuntimes.get(p.record.volume);
        const release = await vr.lock.acquire(e.offset, e.length);
        try {
          data = await this.env.volumes.volume(p.record.volume).read(e.offset, e.length);
          // What was read includes every write numbered so far: the image is consistent from there.
          p.copy.consistentSeq = Math.max(p.copy.consistentSeq, journal.lastSeq);
        } finally {
          release();
        }
      }
      for (const piece of encodeEntries([{ seq: e.seq, timeMs: e.timeMs, op: JournalOp.CopyData, pair: e.pair, offset: e.offset, length: e.length, data }])) {
        out.push(piece);
      }
    }
    return out;
  }
}
