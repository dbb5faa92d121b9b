// Initial copies and resyncs (spec 001 §5.2 COPY): the regions recorded in a pair's differential
// record go to the secondary, sync pairs by copy requests on the link, async pairs as ordered copy
// markers in the group's journal (whose data is read when shipped). A copy starts when a pair
// enters initial-copying or duplex-pending at the primary, and ends with copy-complete.
import { errorMessage } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { Volume } from '../../volume/volume';
import { JournalOp } from '../async/journal-entry';
import type { Journals } from '../async/journals';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';
import type { ReplicationEnv } from '../env';
import { diffChunkBytes, maxCopyRequestBytes, maxDeltaRunBytes } from '../limits';
import type { PairRegistry } from '../pairs/registry';
import { type PairRuntime, endDeltaCopy } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import { regionHashesCodec } from '../transport/control-messages';
import { MessageType, encodeDataHeader } from '../transport/messages';
import { type PeerHashes, rangesToCopy } from './block-compare';

export interface CopyOptions {
  copyConcurrency: number;
  syncWriteTimeoutMs: number;
}

/** A primary copying into its secondary. */
export function copying(p: PairRuntime): boolean {
  return p.record.role === 'primary' && (p.record.state === 'initial-copying' || p.record.state === 'duplex-pending');
}

export class CopyEngine {
  private stopped = false;
  /** Copies running now: a stopping node waits for them before it closes their bitmaps. */
  private readonly runs = new Set<Promise<void>>();

  constructor(
    private readonly env: ReplicationEnv,
    private readonly options: CopyOptions,
    private readonly registry: PairRegistry,
    private readonly engine: TransitionEngine,
    private readonly journals: Journals,
    private readonly volumeRuntimes: VolumeRuntimes,
    private readonly log: Logger,
  ) {
    // Entering a copy state at the primary starts the copy (resync, automatic resync, swap).
    engine.onAfter((t) => {
      if (copying(t.pair) && t.from !== t.pair.record.state) this.start(t.pair);
    });
  }

  stop(): void {
    this.stopped = true;
  }

  /** Resolves once every copy has ended (after stop(), and after the transport closed under them). */
  async settled(): Promise<void> {
    while (this.runs.size > 0) await Promise.all(this.runs);
  }

  /** The checksums of the peer's copy of a range. */
  peerHashes(p: PairRuntime): PeerHashes {
    return (offset, length, grainBytes) => this.env.transport.request(p.record.peer.node, MessageType.RegionHashes,
      regionHashesCodec.encode({ name: p.record.name, offset, length, grainBytes }));
  }

  start(p: PairRuntime): void {
    if (p.copy.running || this.stopped) return;
    p.copy.running = true;
    // Positions of an earlier copy (perhaps in a journal this node no longer has) mean nothing now.
    p.copy.consistentSeq = 0;
    const run = (p.record.mode === 'sync' ? this.copySync(p) : this.copyAsync(p)).catch(async (err: unknown) => {
      this.log.warn({ pair: p.record.name, err: errorMessage(err) }, 'copy stopped');
      // A copy cut short by the node stopping or the pair's removal is no failure of the pair.
      if (this.stopped || this.registry.get(p.record.name) !== p) return;
      await this.engine.apply(p, 'failure', { reason: `copy stopped: ${errorMessage(err)}` });
    }).catch((err: unknown) => {
      this.log.error({ pair: p.record.name, err: errorMessage(err) }, 'the pair could not be failed after its copy stopped');
    }).finally(() => {
      p.copy.running = false;
      this.runs.delete(run);
    });
    this.runs.add(run);
  }

  private async copySync(p: PairRuntime): Promise<void> {
    const volume = this.env.volumes.volume(p.record.volume);
    p.record.copy = { totalChunks: p.bitmap.setBitCount, doneChunks: 0 };
    // Writes may set bits behind the cursor (only when forwarding failed, which fails the pair):
    // passes repeat until a pass finds nothing left.
    while (p.bitmap.setBitCount > 0) {
      await this.copySyncPass(p, volume);
      if (!copying(p) || this.stopped) return;
    }
    await this.env.transport.request(p.record.peer.node, MessageType.Flush, encodeDataHeader({ name: p.record.name, offset: 0, length: 0, flags: 0 }));
    await p.bitmap.sync();
    endDeltaCopy(p);
    await this.engine.apply(p, 'copy-complete', { hostWritesRecorded: false });
  }

  /** One pass over the differential record, `copyConcurrency` runs of regions at a time. */
  private async copySyncPass(p: PairRuntime, volume: Volume): Promise<void> {
    let cursor = 0;
    // The next run of changed regions: one copy request (or, comparing, one checksum request) each.
    const runBytes = p.copy.delta ? maxDeltaRunBytes : maxCopyRequestBytes;
    const next = (): { first: number; count: number } | undefined => {
      const set = p.bitmap.runs(cursor, p.bitmap.bitCount - cursor, 2).find((r) => r.set);
      if (!set) return undefined;
      const count = Math.min(set.bitCount, runBytes / diffChunkBytes);
      cursor = set.firstBit + count;
      return { first: set.firstBit, count };
    };
    const worker = async (): Promise<void> => {
      for (;;) {
        if (!copying(p) || this.stopped) return;
        const run = next();
        if (run === undefined) return;
        const offset = run.first * diffChunkBytes;
        const length = Math.min(run.count * diffChunkBytes, volume.sizeBytes - offset);
        for (const r of await rangesToCopy(p, volume, this.peerHashes(p), offset, length)) {
          for (let at = r.offset; at < r.offset + r.length; at += maxCopyRequestBytes) {
            await this.copyRange(p, volume, at, Math.min(maxCopyRequestBytes, r.offset + r.length - at));
          }
        }
        if (!copying(p)) return;
        p.bitmap.clearRange(run.first, run.count);
        p.record.copy!.doneChunks += run.count;
      }
    };
    await Promise.all(Array.from({ length: this.options.copyConcurrency }, () => worker()));
  }

  /** One copy request, under the range lock so no host write to the range overtakes it. */
  private async copyRange(p: PairRuntime, volume: Volume, offset: number, length: number): Promise<void> {
    const release = await this.volumeRuntimes.get(p.record.volume).lock.acquire(offset, length);
    try {
      if (!copying(p)) return;
      const header = encodeDataHeader({ name: p.record.name, offset, length, flags: 0 });
      const extents = volume.extents(offset, length, 1);
      if (extents[0] && !extents[0].allocated && extents[0].length >= length) {
        await this.env.transport.request(p.record.peer.node, MessageType.Zero, header, this.options.syncWriteTimeoutMs);
      } else {
        const data = await volume.read(offset, length);
        await this.env.transport.request(p.record.peer.node, MessageType.Copy, [header, data], this.options.syncWriteTimeoutMs);
      }
    } finally {
      release();
    }
  }

  /** Async copy: regions become ordered copy markers in the journal; their data is read when shipped. */
  private async copyAsync(p: PairRuntime): Promise<void> {
    const group = p.record.group!;
    p.record.copy = { totalChunks: p.bitmap.setBitCount, doneChunks: 0 };
    const volume = this.env.volumes.volume(p.record.volume);
    const perStep = (p.copy.delta ? maxDeltaRunBytes : maxCopyRequestBytes) / diffChunkBytes;
    for (const run of [...p.bitmap.setRuns()]) {
      for (let chunk = run.first; chunk < run.first + run.count; chunk += perStep) {
        if (!copying(p) || this.stopped) return;
        const count = Math.min(perStep, run.first + run.count - chunk);
        const offset = chunk * diffChunkBytes;
        const length = Math.min(count * diffChunkBytes, volume.sizeBytes - offset);
        for (const r of await rangesToCopy(p, volume, this.peerHashes(p), offset, length)) {
          for (let at = r.offset; at < r.offset + r.length; at += maxCopyRequestBytes) {
            const appended = await this.journals.append(p, { op: JournalOp.CopyRegion, pair: p.record.name, offset: at,
              length: Math.min(maxCopyRequestBytes, r.offset + r.length - at) });
            if (!appended) return; // the group fell back to bitmaps
          }
        }
        p.bitmap.clearRange(chunk, count);
        p.record.copy.doneChunks += count;
      }
    }
    await p.bitmap.persist();
    p.copy.consistentSeq = Math.max(p.copy.consistentSeq, this.journals.primary(group)!.lastSeq);
    await this.checkAsyncDone(p);
  }

  /** An async copy is done once its markers are shipped and the secondary applied through them. */
  async checkAsyncDone(p: PairRuntime): Promise<void> {
    if (!copying(p) || p.record.mode !== 'async' || p.bitmap.setBitCount > 0) return;
    const journal = this.journals.primary(p.record.group!);
    if (!journal || journal.appliedSeq < p.copy.consistentSeq) return;
    endDeltaCopy(p);
    await this.engine.apply(p, 'copy-complete', {
      hostWritesRecorded: false,
      reason: `${p.record.state === 'initial-copying' ? 'initial copy' : 'resync'} finished; the secondary holds a consistent image (applied through entry ${journal.appliedSeq})`,
    });
  }

  /** The secondary acknowledged entries of the group: async copies waiting for it may finish. */
  async groupProgressed(group: string): Promise<void> {
    for (const p of this.registry.ofGroup(group)) {
      if (p.record.role === 'primary' && copying(p) && !p.copy.running) await this.checkAsyncDone(p);
    }
  }
}
