// The secondary side of async groups: applies received journal entries to the volumes of their
// pairs (in order, through the received journal) and reports the apply position back to the
// primary soon after it moves, so lag is current even when no batch is in flight.
import type { TimerHandle } from '../../common/clock';
import type { Logger } from '../../common/log';
import type { ReplicationEnv } from '../env';
import { progressReportDelayMs } from '../limits';
import type { PairRegistry } from '../pairs/registry';
import { groupPositionCodec } from '../transport/control-messages';
import { MessageType } from '../transport/messages';
import { JournalOp } from './journal-entry';
import type { Journals } from './journals';
import type { ReceivedJournal } from './received-journal';

export class Applier {
  private readonly reportTimers = new Map<string, TimerHandle>();
  private listening = false;

  constructor(
    private readonly env: ReplicationEnv,
    private readonly journals: Journals,
    private readonly registry: PairRegistry,
    private readonly log: Logger,
  ) {
    journals.startApplying = (journal) => {
      if (this.listening) this.start(journal);
    };
  }

  /** The node listens: every received journal starts applying (after crash recovery). */
  startAll(): void {
    this.listening = true;
    for (const journal of this.journals.receivedJournals()) this.start(journal);
  }

  stop(): void {
    this.listening = false;
    for (const t of this.reportTimers.values()) this.env.clock.clearTimer(t);
    this.reportTimers.clear();
  }

  private start(journal: ReceivedJournal): void {
    const group = journal.group;
    journal.start(async (entry) => {
      const p = this.registry.get(entry.pair);
      if (!p || p.record.role !== 'secondary' || p.record.group !== group) {
        this.log.debug({ group, pair: entry.pair, seq: entry.seq }, 'journal entry for a pair this node does not hold; skipped');
        return;
      }
      const volume = this.env.volumes.volume(p.record.volume);
      if (entry.op === JournalOp.Write || entry.op === JournalOp.CopyData) await volume.write(entry.offset, entry.data!, { fua: false });
      else if (entry.op === JournalOp.Zero) await volume.writeZeroes(entry.offset, entry.length, { fua: false, noHole: false, fastOnly: false });
      this.scheduleReport(group);
    }, async () => {
      const volumes = this.registry.ofGroup(group).map((p) => this.env.volumes.volume(p.record.volume));
      await Promise.all(volumes.map((v) => v.flush()));
    });
  }

  /** Secondary → primary: apply progress. */
  private scheduleReport(group: string): void {
    if (this.reportTimers.has(group) || !this.listening) return;
    const timer = this.env.clock.setTimer(progressReportDelayMs, () => {
      this.reportTimers.delete(group);
      const journal = this.journals.received(group);
      const member = this.registry.ofGroup(group).find((p) => p.record.role === 'secondary');
      if (!journal || !member || !this.env.transport.isUp(member.record.peer.node)) return;
      this.env.transport.send(member.record.peer.node, MessageType.GroupProgress,
        groupPositionCodec.encode({ group, receivedSeq: journal.receivedSeq, appliedSeq: journal.appliedSeq }));
    });
    timer.unref();
    this.reportTimers.set(group, timer);
  }
}
