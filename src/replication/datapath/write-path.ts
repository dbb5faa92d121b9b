// The host write path of a paired volume (spec 001 §4): fence check, range lock, async journal
// before the local write, local and sync-remote writes in parallel, bitmaps for everything not
// forwarded; FLUSH/FUA made durable on every node the mode waits for. A cascade intermediate runs
// the writes it receives through the same path (origin 'replication').
import { errorMessage } from '../../common/errors';
import { BlockDeviceError, type WriteOptions, type ZeroOptions } from '../../volume/block-device';
import type { Volume } from '../../volume/volume';
import type { Appended, Journals } from '../async/journals';
import { journaling } from '../async/journals';
import type { JournalEntry } from '../async/journal-entry';
import { JournalOp } from '../async/journal-entry';
import type { DeltaRecords } from '../delta/delta-record';
import type { VolumeMarks } from '../delta/marks';
import type { ReplicationEnv } from '../env';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import { type DeltaTag, MessageType, dataFlagFua, decodeDeltaTagReply, encodeDataHeader } from '../transport/messages';
import type { Fences, WriteOrigin } from './fences';
import type { ReplicationDataPath } from './replicated-volume';
import type { VolumeRuntime, VolumeRuntimes } from './volume-runtimes';

/** A sync pair whose writes go to the secondary now. */
export function forwarding(p: PairRuntime): boolean {
  const s = p.record.state;
  return p.record.role === 'primary' && p.record.mode === 'sync' && (s === 'duplex' || s === 'initial-copying' || s === 'duplex-pending');
}

interface Modification {
  local: () => Promise<void>;
  entry: (pair: string) => Omit<JournalEntry, 'seq' | 'timeMs'>;
  remote: (peer: string, pair: string, tag: DeltaTag | undefined) => Promise<Buffer>;
}

type RemoteResult = { reply: Buffer | undefined; err: Error | undefined };

export class WritePath implements ReplicationDataPath {
  constructor(
    private readonly env: ReplicationEnv,
    private readonly syncWriteTimeoutMs: number,
    private readonly registry: PairRegistry,
    private readonly engine: TransitionEngine,
    private readonly fences: Fences,
    private readonly volumeRuntimes: VolumeRuntimes,
    private readonly journals: Journals,
    private readonly deltaRecords: DeltaRecords,
    /** Marks that say a volume holds an image no host has changed since (applied, detached secondary). */
    private readonly marks: VolumeMarks<object>[],
  ) {}

  /** True when writes to the volume go through replication: it is paired or keeps delta state. */
  isPaired(volume: string): boolean {
    return this.registry.ofVolume(volume).length > 0 || this.deltaRecords.has(volume) || this.marks.some((m) => m.has(volume))
      || (this.volumeRuntimes.peek(volume)?.joining ?? 0) > 0;
  }

  refusesWrites(volume: string): boolean {
    return this.fences.writeRefusal(volume)?.errno === 'EPERM';
  }

  async write(volume: Volume, offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    await this.writeOp(volume, offset, data, options, 'host');
  }

  async writeZeroes(volume: Volume, offset: number, length: number, options: ZeroOptions): Promise<void> {
    await this.writeZeroesOp(volume, offset, length, options, 'host');
  }

  /** A host write (or, at a cascade intermediate, a forwarded one); returns the journal tag it got, if any. */
  writeOp(volume: Volume, offset: number, data: Buffer | Buffer[], options: WriteOptions, origin: WriteOrigin): Promise<DeltaTag | undefined> {
    const payload = Buffer.isBuffer(data) ? data : Buffer.concat(data);
    return this.modify(volume, offset, payload.length, options.fua, origin, {
      local: () => volume.write(offset, payload, options),
      entry: (pair) => ({ op: JournalOp.Write, pair, offset, length: payload.length, data: payload }),
      remote: (peer, pair, tag) => this.env.transport.request(peer, MessageType.Write,
        [encodeDataHeader({ name: pair, offset, length: payload.length, flags: options.fua ? dataFlagFua : 0, tag }), payload],
        this.syncWriteTimeoutMs),
    });
  }

  async writeZeroesOp(volume: Volume, offset: number, length: number, options: ZeroOptions, origin: WriteOrigin): Promise<DeltaTag | undefined> {
    if (options.fastOnly) {
      // A fast zero is fine when the local part is fast: it never writes data to forward.
      const touched = volume.allocation.chunkRange(offset, length);
      if (volume.allocation.anySet(touched.first, touched.count)) {
        throw new BlockDeviceError('ENOTSUP', 'zeroing allocated regions is no faster than writing them');
      }
    }
    return this.modify(volume, offset, length, options.fua, origin, {
      local: () => volume.writeZeroes(offset, length, { ...options, fastOnly: false }),
      entry: (pair) => ({ op: JournalOp.Zero, pair, offset, length }),
      remote: (peer, pair, tag) => this.env.transport.request(peer, MessageType.Zero,
        encodeDataHeader({ name: pair, offset, length, flags: options.fua ? dataFlagFua : 0, tag }), this.syncWriteTimeoutMs),
    });
  }

  async flush(volume: Volume): Promise<void> {
    const refusal = this.fences.writeRefusal(volume.name);
    const tasks: Promise<unknown>[] = [volume.flush()];
    for (const p of this.registry.ofVolume(volume.name)) {
      // Regions recorded instead of sent (suspended, SSWS) must survive a power loss once flushed.
      tasks.push(p.bitmap.sync());
      if (p.record.role !== 'primary') continue;
      if (p.record.mode === 'async' && p.record.group) {
        const journal = this.journals.primary(p.record.group);
        if (journal) tasks.push(journal.sync());
      } else if (forwarding(p)) {
        tasks.push(this.env.transport.request(p.record.peer.node, MessageType.Flush, encodeDataHeader({ name: p.record.name, offset: 0, length: 0, flags: 0 }),
          this.syncWriteTimeoutMs).catch(async (err: unknown) => {
          await this.engine.apply(p, 'failure', { reason: `flush on the secondary failed: ${errorMessage(err)}` });
          if (p.record.fence === 'data') throw new BlockDeviceError('EIO', `pair ${p.record.name} could not flush its secondary (fence data)`);
        }));
      }
    }
    await Promise.all(tasks);
    if (refusal?.errno === 'EIO') throw refusal;
  }

  /**
   * One modification of a paired volume: fence check, range lock, journal (async) before the
   * local write, local and sync-remote writes in parallel, bitmaps for everything not forwarded.
   */
  private async modify(volume: Volume, offset: number, length: number, fua: boolean, origin: WriteOrigin, op: Modification): Promise<DeltaTag | undefined> {
    // Residual entries of a fast failover are older than anything a host writes now: they land first.
    const residual = origin === 'host' ? this.fences.residualWait?.(volume.name) : undefined;
    if (residual) await residual;
    const refusal = this.fences.writeRefusal(volume.name, origin);
    if (refusal) throw refusal;
    if (length === 0) {
      await op.local();
      return undefined;
    }
    const vr = this.volumeRuntimes.get(volume.name);
    const release = await vr.lock.acquire(offset, length);
    const recheck = this.fences.writeRefusal(volume.name, origin);
    if (recheck) {
      release();
      throw recheck;
    }
    let activityMarked = false;
    const seqs: Appended[] = [];
    try {
      // A host write makes the volume differ from the image it was detached with. Dropped under the
      // range lock, after the recheck: a volume left read-only while the write waited is refused.
      if (origin === 'host') for (const m of this.marks) if (m.has(volume.name)) await m.drop(volume.name, 'written by a host');
      const pairs = this.registry.ofVolume(volume.name);
      const forwarded = pairs.filter(forwarding);
      const journaled = pairs.filter((p) => p.record.role === 'primary' && p.record.mode === 'async' && journaling(p));
      // A cascade intermediate forwards what its primary sends; that is no change of its own.
      const recorded = pairs.filter((p) => !forwarded.includes(p) && !journaled.includes(p) && !(origin === 'replication' && p.record.role === 'secondary'));
      if ((forwarded.length > 0 || journaled.length > 0) && vr.activity) {
        await vr.activity.begin(offset, length);
        activityMarked = true;
      }
      // Regions not sent anywhere now are recorded durably before the volume changes.
      await recordRegions(recorded, offset, length);
      // Async: the entry is in the journal before the volume changes, so a crash can never leave
      // the primary holding data its journal will not deliver. With a fence-data sync copy too
      // (3DC), the entry is held back until the sync copy has the write.
      const holdForSync = forwarded.some((p) => p.record.fence === 'data');
      for (const p of journaled) {
        const appended = await this.journals.append(p, op.entry(p.record.name), holdForSync);
        if (appended) seqs.push(appended);
        else recorded.push(p); // the group fell back to bitmaps meanwhile
      }
      const tag = this.tagFor(seqs, journaled[0]);
      const remote = forwarded.map((p) => op.remote(p.record.peer.node, p.record.name, tag && { ...tag, inStep: tag.inStep && p.record.state === 'duplex' })
        .then((reply): RemoteResult => ({ reply, err: undefined }), (err: unknown): RemoteResult => ({ reply: undefined, err: err as Error })));
      const localResult = await op.local().then(() => undefined, (err: unknown) => err);
      const remoteResults = await Promise.all(remote);
      this.recordDelta(volume, offset, length, forwarded, remoteResults);
      let fenced: BlockDeviceError | undefined;
      let settled = false;
      try {
        fenced = await this.settleRemote(forwarded, remoteResults, recorded, offset, length);
        settled = true;
      } finally {
        // Entries appended held wait for the sync copy (released when it is duplex again, split or
        // deleted) or go now; never neither, or the group's stream stops behind them (sim seed 294).
        if (holdForSync) this.settleHeld(vr, seqs, forwarded, fenced !== undefined || !settled);
      }
      if (localResult) throw localResult;
      if (fenced) throw fenced;
      // The write is acknowledged: wherever it was only recorded, this side now has changes the
      // other side lacks (what split-brain detection looks at).
      for (const p of recorded) await this.engine.noteHostWrites(p, true);
      if (fua) for (const s of seqs) await s.journal.sync();
      // A gate (automatic failover: this site's hold of the arbiter) that closed while the write
      // ran: it is answered EIO, never acknowledged. Checked without a pause, still under the lock.
      const gated = origin === 'host' ? this.fences.hostGate?.(volume.name) : undefined;
      if (gated !== undefined) throw new BlockDeviceError('EIO', gated);
      const receiving = origin === 'replication' ? pairs.find((p) => p.record.role === 'secondary') : undefined;
      return tag && { ...tag, inStep: journaled[0]!.record.state === 'duplex' && receiving?.record.state === 'duplex' };
    } finally {
      for (const s of seqs) await s.journal.localDone(s.seq);
      if (activityMarked) vr.activity!.end(offset, length);
      release();
    }
  }

  /**
   * The write's place in the async stream travels with it to the sync copy (multi-target delta
   * resync); the group's one journal gives it. `inStep` while the async pair is duplex (the caller
   * narrows it to the receiving pair).
   */
  private tagFor(seqs: Appended[], asyncPair: PairRuntime | undefined): DeltaTag | undefined {
    const first = seqs[0];
    if (seqs.length !== 1 || !first || !asyncPair) return undefined;
    return { group: first.journal.group, seq: first.seq, appliedSeq: first.journal.appliedSeq, inStep: asyncPair.record.state === 'duplex' };
  }

  /** Sync copies that failed: record the region, fail the pair; fence data refuses the write. */
  /**
   * A write that could not reach a fence-data sync copy keeps its async entries held until that
   * copy has it again. A sync pair removed while the write was in flight released the volume's
   * held entries already: with none left registered, they go now.
   */
  private settleHeld(vr: VolumeRuntime, seqs: Appended[], forwarded: PairRuntime[], notForwarded: boolean): void {
    const stillFenced = notForwarded && forwarded.some((p) => p.record.fence === 'data' && this.registry.get(p.record.name) === p);
    if (stillFenced) for (const x of seqs) vr.held.push({ group: x.journal.group, seq: x.seq });
    else for (const x of seqs) this.journals.releaseHeld(x.journal, x.seq);
  }

  private async settleRemote(forwarded: PairRuntime[], results: RemoteResult[], recorded: PairRuntime[], offset: number, length: number): Promise<BlockDeviceError | undefined> {
    let fenced: BlockDeviceError | undefined;
    for (let i = 0; i < forwarded.length; i++) {
      const err = results[i]!.err;
      if (!err) continue;
      const p = forwarded[i]!;
      p.bitmap.markBytes(offset, length);
      await p.bitmap.sync();
      await this.engine.apply(p, 'failure', { reason: `write to the secondary failed: ${errorMessage(err)}` });
      if (p.record.fence === 'data') {
        fenced = new BlockDeviceError('EIO', `pair ${p.record.name} could not update its secondary on ${p.record.peer.node} (fence data): write refused`);
      } else {
        recorded.push(p);
      }
    }
    return fenced;
  }

  /**
   * Keeps the volume's delta record: a cascade intermediate answers a forwarded write with the tag
   * it journaled it under; anything else this node writes has no place in a stream it follows.
   */
  private recordDelta(volume: Volume, offset: number, length: number, forwarded: PairRuntime[], results: RemoteResult[]): void {
    let tagged = false;
    for (let i = 0; i < forwarded.length; i++) {
      const reply = results[i]!.reply;
      if (!reply || reply.length === 0) continue;
      this.deltaRecords.tagged(volume.name, volume.sizeBytes, forwarded[i]!.record.peer.node, 'acknowledged', decodeDeltaTagReply(reply)!, offset, length);
      tagged = true;
    }
    if (!tagged) this.deltaRecords.untagged(volume.name, offset, length);
  }
}

/**
 * Marks the regions of a write in the differential records of pairs that do not send it now. A
 * newly set bit is synced before the data write is issued: after a power loss the record must
 * cover every write that reached the disk, even one that was never flushed.
 */
async function recordRegions(pairs: PairRuntime[], offset: number, length: number): Promise<void> {
  const changed = pairs.filter((p) => p.bitmap.markBytes(offset, length) || p.bitmap.hasUnpersistedChanges);
  await Promise.all(changed.map((p) => p.bitmap.sync()));
}
