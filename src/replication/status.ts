// What the API, the CLI, the topology procedures and the metrics read about pairs and groups: each
// pair's status as both its record and this node's runtime state say, each group's positions and
// lag, and waiting for a pair to reach a state.
import { TricopyError } from '../common/errors';
import type { GroupStatus, LagReport, PairState, PairStatus, ResidualHoldView } from '../contracts/pairs';
import type { Journals } from './async/journals';
import type { DeltaRecords } from './delta/delta-record';
import type { ReplicationEnv } from './env';
import { diffChunkBytes } from './limits';
import { shortCode } from './pairs/pair-model';
import type { PairRegistry } from './pairs/registry';
import type { PairRuntime } from './pairs/runtime';
import type { PairRecord } from './pairs/pair-model';
import type { ByteRange } from './delta/delta-record';
import type { VolumeRuntimes } from './datapath/volume-runtimes';

/** Internal state of a pair for the simulator's checker: what the resync and the journals cover. */
export interface PairInternals {
  record: PairRecord;
  /** The differential record: one bit per region of `regionBytes`. */
  bits: Uint8Array;
  regionBytes: number;
  /** Byte ranges of journal entries of this pair not yet applied at the secondary (either side's journal). */
  journalRanges: ByteRange[];
  /** Byte ranges the activity log of the pair's volume marks (writes that may be in flight). */
  activityRanges: ByteRange[];
  copyRunning: boolean;
}

export class StatusReader {
  constructor(private readonly env: ReplicationEnv, private readonly registry: PairRegistry, private readonly journals: Journals,
    private readonly deltaRecords: DeltaRecords, private readonly residualHoldOf: (volume: string) => ResidualHoldView | undefined = () => undefined) {}

  list(): PairStatus[] {
    return [...this.registry.all()].map((p) => this.pair(p)).sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): PairStatus {
    return this.pair(this.registry.require(name));
  }

  groups(): string[] {
    return this.registry.groups();
  }

  group(group: string): GroupStatus {
    const members = this.registry.ofGroup(group);
    if (members.length === 0) {
      throw new TricopyError('not-found', `consistency group ${group} has no pairs on this node`, 'list pairs with: tricopy pair status');
    }
    const role = members[0]!.record.role;
    const peer = members[0]!.record.peer.node;
    const primaryJournal = this.journals.primary(group);
    const received = this.journals.received(group);
    const lag: LagReport = primaryJournal ? primaryJournal.lag() : { entries: received?.backlog ?? 0, bytes: 0, seconds: 0 };
    return {
      group,
      role,
      peer,
      connected: this.env.transport.isUp(peer),
      pairs: members.map((p) => p.record.name).sort(),
      lastSeq: primaryJournal?.lastSeq ?? received?.receivedSeq ?? 0,
      receivedSeq: primaryJournal?.ackedSeq ?? received?.receivedSeq ?? 0,
      appliedSeq: primaryJournal?.appliedSeq ?? received?.appliedSeq ?? 0,
      journal: primaryJournal ? { usedBytes: primaryJournal.usedBytes, capacityBytes: primaryJournal.capacityBytes, fullPolicy: this.journals.fullPolicy } : null,
      lag,
      blockedEntries: primaryJournal?.blockedCount ?? 0,
    };
  }

  /** Resolves when the pair reaches `state` (or rejects after `timeoutMs`). */
  async waitFor(name: string, state: PairState, timeoutMs: number): Promise<PairStatus> {
    const clock = this.env.clock;
    const deadline = clock.now() + timeoutMs;
    for (;;) {
      const p = this.registry.get(name);
      if (state === 'simplex' && !p) return simplexStatus(name);
      if (!p) throw new TricopyError('not-found', `pair ${name} does not exist on this node`);
      if (p.record.state === state) return this.pair(p);
      const left = deadline - clock.now();
      if (left <= 0) {
        throw new TricopyError('unavailable', `pair ${name} did not reach ${state} within ${timeoutMs} ms; it is ${p.record.state} (${shortCode(p.record)})`,
          p.record.reason ? `last transition: ${p.record.reason}` : undefined);
      }
      await new Promise<void>((resolve) => {
        const timer = clock.setTimer(left, done);
        function done(): void {
          clock.clearTimer(timer);
          p!.stateWaiters.delete(done);
          resolve();
        }
        p.stateWaiters.add(done);
      });
    }
  }

  /** A copy of every pair's record, in the order of internals(). */
  records(): PairRecord[] {
    return [...this.registry.all()].map((p) => ({ ...p.record }));
  }

  internals(volumeRuntimes: VolumeRuntimes): PairInternals[] {
    return [...this.registry.all()].map((p) => {
      const r = p.record;
      const journalRanges: ByteRange[] = [];
      const primary = r.group && r.role === 'primary' ? this.journals.primary(r.group) : undefined;
      for (const e of primary?.retainedEntries() ?? []) if (e.pair === r.name) journalRanges.push({ offset: e.offset, length: e.length });
      const received = r.group && r.role === 'secondary' ? this.journals.received(r.group) : undefined;
      for (const e of received?.pendingEntries() ?? []) if (e.pair === r.name) journalRanges.push({ offset: e.offset, length: e.length });
      return {
        record: { ...r }, bits: p.bitmap.snapshot(), regionBytes: diffChunkBytes, journalRanges,
        activityRanges: volumeRuntimes.peek(r.volume)?.activity?.markedRanges() ?? [], copyRunning: p.copy.running,
      };
    });
  }

  pair(p: PairRuntime): PairStatus {
    const r = p.record;
    const journal = r.group && r.role === 'primary' ? this.journals.primary(r.group) : undefined;
    const received = r.group && r.role === 'secondary' ? this.journals.received(r.group) : undefined;
    const copy = r.copy;
    const residualHold = this.residualHoldOf(r.volume);
    return {
      ...(residualHold ? { residualHold } : {}),
      name: r.name, role: r.role, code: shortCode(r), state: r.state, volume: r.volume,
      peer: { node: r.peer.node, volume: r.peerVolume, host: r.peer.host, replPort: r.peer.replPort, connected: this.env.transport.isUp(r.peer.node) },
      mode: r.mode, purpose: r.purpose, fence: r.fence, group: r.group, suspendCause: r.suspendCause, reason: r.reason, generation: r.generation,
      progressPercent: (r.state === 'initial-copying' || r.state === 'duplex-pending') && copy
        ? (copy.totalChunks === 0 ? 100 : Math.min(100, Math.floor((copy.doneChunks / copy.totalChunks) * 100))) : null,
      // The record keeps a copy's progress until the pair is duplex: suspended with one, the copy stopped midway.
      interruptedCopyPercent: (r.state === 'suspended' || r.state === 'suspending') && copy && copy.doneChunks < copy.totalChunks
        ? Math.floor((copy.doneChunks / copy.totalChunks) * 100) : null,
      differentialBytes: p.bitmap.setBitCount * diffChunkBytes,
      hostWritesRecorded: r.hostWritesRecorded,
      awaitingNewPrimary: r.awaitingNewPrimary,
      secondaryWritable: r.secondaryWritable,
      deltaBytes: p.copy.deltaRan ? p.copy.deltaBytesFound : null,
      deltaMethod: p.copy.deltaMethod,
      deltaNote: p.copy.deltaNote,
      deltaRecord: this.deltaRecords.status(r.volume),
      heldEntries: journal?.heldCount ?? 0,
      fenceGroup: r.fenceGroup,
      journal: journal ? { usedBytes: journal.usedBytes, capacityBytes: journal.capacityBytes } : null,
      lag: journal ? journal.lag() : received ? { entries: received.backlog, bytes: 0, seconds: 0 } : null,
      createdAt: r.createdAt, updatedAt: r.updatedAt,
    };
  }
}

function simplexStatus(name: string): PairStatus {
  return {
    name, role: 'primary', code: 'SMPL', state: 'simplex', volume: '', peer: { node: '', volume: '', host: '', replPort: 0, connected: false },
    mode: 'sync', purpose: 'data', fence: 'never', group: null, suspendCause: null, reason: 'no such pair', generation: 0, progressPercent: null, interruptedCopyPercent: null,
    differentialBytes: 0, hostWritesRecorded: false, awaitingNewPrimary: false, secondaryWritable: false, deltaBytes: null, deltaMethod: null, deltaNote: null, deltaRecord: null,
    heldEntries: 0, fenceGroup: null, journal: null, lag: null, createdAt: '', updatedAt: '',
  };
}
