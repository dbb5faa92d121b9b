// What a node keeps so that, after a primary is lost, the async site can be brought up to date by
// sending only the writes it had not applied (spec 001 Fig. 10 steps 1005–1007 and Fig. 14 step
// 1404; the "delta resync" of the big arrays). Per volume: the regions of recent writes with their
// position in the async stream of the consistency group, trimmed as the async site applies them and
// bounded (beyond the bound the oldest regions fold into a bitmap of 64 KiB regions, which still
// covers them but is coarser). Held in memory: after a restart of this node a delta resync compares
// checksums of the whole volume instead.
import { Deque } from '../../common/deque';
import { invariant } from '../../common/errors';
import type { DeltaRecordSource, DeltaRecordStatus } from '../../contracts/pairs';
import type { DeltaTag } from '../transport/messages';
import { maxDeltaRecordEntries } from '../limits';

/** How the tags reach the record. */
export type RecordSource = DeltaRecordSource;

/** How far an async secondary applied a stream before it was detached from it (kept at that site). */
export interface AppliedMark {
  origin: string;
  group: string;
  appliedSeq: number;
}

export type { DeltaRecordStatus };

export interface ByteRange {
  offset: number;
  length: number;
}

export type Candidates =
  | {
    usable: true;
    /** Every 64 KiB region the peer may lack (for the pair's differential record). */
    bits: Uint8Array;
    /** Regions known only coarsely (folded entries, writes without a position): compare inside them. */
    coarse: Uint8Array;
    /** The exact bytes of the later writes outside coarse regions: send them as they are. */
    exact: ByteRange[];
    regions: number;
    entries: number;
    text: string;
  }
  | { usable: false; text: string };

export { maxDeltaRecordEntries };

interface Entry {
  seq: number;
  offset: number;
  length: number;
}

class VolumeRecord {
  origin: string;
  group: string;
  source: RecordSource;
  /** null: not usable (why in `unusableReason`). */
  baseSeq: number | null = null;
  unusableReason = 'no write has arrived while both copies were in step';
  readonly entries = new Deque<Entry>();
  readonly overflow: Uint8Array;
  overflowRegions = 0;
  /** Newest entry folded into the overflow; it may be cleared once the async site applied it. */
  overflowNewestSeq = 0;
  /** Writes without a position are in the overflow: it stays until the record restarts. */
  overflowUntagged = false;
  /** Newest position seen at or below the base: after a new journal, the newest of the new stream. */
  newestAtOrBelowBase = 0;

  constructor(origin: string, group: string, source: RecordSource, readonly chunkBytes: number, readonly chunkCount: number) {
    this.origin = origin;
    this.group = group;
    this.source = source;
    this.overflow = new Uint8Array(Math.ceil(chunkCount / 8));
  }

  chunks(offset: number, length: number): { first: number; count: number } {
    const first = Math.floor(offset / this.chunkBytes);
    const last = Math.min(this.chunkCount, Math.ceil((offset + Math.max(length, 1)) / this.chunkBytes));
    return { first, count: Math.max(0, last - first) };
  }

  /** Starts covering the writes after `baseSeq`; later entries that already arrived stay. */
  restart(baseSeq: number): void {
    this.baseSeq = baseSeq;
    const later = this.entries.clear().filter((e) => e.seq > baseSeq);
    for (const e of later) this.entries.push(e);
    this.overflow.fill(0);
    this.overflowRegions = 0;
    this.overflowNewestSeq = 0;
    this.overflowUntagged = false;
  }

  fold(first: number, count: number): void {
    for (let c = first; c < first + count; c++) {
      const bit = 1 << (c & 7);
      if ((this.overflow[c >> 3]! & bit) === 0) {
        this.overflow[c >> 3]! |= bit;
        this.overflowRegions++;
      }
    }
  }

  trim(appliedSeq: number): void {
    // Entries arrive nearly in order; one out of order stays until those before it go (harmless).
    while (this.entries.length > 0 && this.entries.first()!.seq <= appliedSeq) this.entries.shift();
    if (this.baseSeq !== null && appliedSeq > this.baseSeq) this.baseSeq = appliedSeq;
    if (this.overflowRegions > 0 && !this.overflowUntagged && this.overflowNewestSeq <= appliedSeq) {
      this.overflow.fill(0);
      this.overflowRegions = 0;
    }
  }
}

/** The delta records of one node's volumes. */
export class DeltaRecords {
  private readonly records = new Map<string, VolumeRecord>();
  /** Newest tag seen per stream ("origin/group"), across volumes: the group's sequence is shared. */
  private readonly newestSeq = new Map<string, number>();

  constructor(private readonly chunkBytes: number, private readonly maxEntries = maxDeltaRecordEntries) {
    invariant(maxEntries > 0, 'a delta record keeps at least one entry');
  }

  has(volume: string): boolean {
    return this.records.has(volume);
  }

  /** A write with its position in the async stream of `origin`'s group `tag.group`. */
  tagged(volume: string, volumeBytes: number, origin: string, source: RecordSource, tag: DeltaTag, offset: number, length: number): void {
    let r = this.records.get(volume);
    if (!r || r.origin !== origin || r.group !== tag.group || r.source !== source) {
      r = new VolumeRecord(origin, tag.group, source, this.chunkBytes, Math.ceil(volumeBytes / this.chunkBytes));
      this.records.set(volume, r);
    }
    const key = `${origin}/${tag.group}`;
    this.newestSeq.set(key, Math.max(this.newestSeq.get(key) ?? 0, tag.seq));
    // While both copies are in step, everything before this write is on this node and reaches the
    // async site once it applies through tag.seq - 1: the record may start there.
    if (r.baseSeq === null && tag.inStep) r.restart(tag.seq - 1);
    // Kept even at or below the base: in one stream such an entry is never a candidate (a usable
    // mark is at or above the base) and trimming removes it; after the origin started a new journal
    // it may be a new write that arrived before the new base did, and must not be lost.
    r.entries.push({ seq: tag.seq, offset, length });
    if (r.baseSeq !== null && tag.seq <= r.baseSeq) r.newestAtOrBelowBase = Math.max(r.newestAtOrBelowBase, tag.seq);
    r.trim(tag.appliedSeq);
    while (r.entries.length > this.maxEntries) {
      const e = r.entries.shift()!;
      const { first, count } = r.chunks(e.offset, e.length);
      r.fold(first, count);
      r.overflowNewestSeq = Math.max(r.overflowNewestSeq, e.seq);
    }
  }

  /**
   * The copies are in step at entry `baseSeq` of `origin`'s group (the primary says so when both of
   * its pairs of the volume are duplex): the record covers every write after it from now on.
   */
  establish(volume: string, volumeBytes: number, origin: string, source: RecordSource, group: string, baseSeq: number): void {
    let r = this.records.get(volume);
    if (!r || r.origin !== origin || r.group !== group || r.source !== source) {
      r = new VolumeRecord(origin, group, source, this.chunkBytes, Math.ceil(volumeBytes / this.chunkBytes));
      this.records.set(volume, r);
    }
    const key = `${origin}/${group}`;
    if (r.baseSeq !== null && baseSeq < r.baseSeq) {
      // Positions went back: the origin started a new journal for the group (after a swap, or its
      // async pairs were created again), so numbers of the old stream mean nothing now. Restarting
      // keeps old entries above the base: they name regions that were written, so sending them is
      // harmless, while dropping the new stream's writes (numbered below the old base) would not be.
      this.newestSeq.set(key, Math.max(baseSeq, r.newestAtOrBelowBase));
      r.restart(baseSeq);
      r.newestAtOrBelowBase = 0;
      return;
    }
    this.newestSeq.set(key, Math.max(this.newestSeq.get(key) ?? 0, baseSeq));
    if (r.baseSeq === null || r.overflowUntagged) r.restart(baseSeq);
  }

  /** A change of the volume with no position in the stream: a local write, a copy, an untagged write. */
  untagged(volume: string, offset: number, length: number): void {
    const r = this.records.get(volume);
    if (!r) return;
    const { first, count } = r.chunks(offset, length);
    r.fold(first, count);
    r.overflowUntagged = true;
  }

  /** The record can no longer tell what the async site lacks (until the copies are in step again). */
  invalidate(volume: string, reason: string): void {
    const r = this.records.get(volume);
    if (!r || r.baseSeq === null) return;
    r.baseSeq = null;
    r.unusableReason = reason;
  }

  delete(volume: string): void {
    this.records.delete(volume);
  }

  /**
   * The 64 KiB regions a peer that applied the stream through `mark` may lack, or why the record
   * cannot tell. The regions are candidates: the copy still compares checksums inside them.
   */
  candidates(volume: string, mark: AppliedMark | null): Candidates {
    const r = this.records.get(volume);
    if (!mark) return { usable: false, text: 'the peer has no position in an async stream of this volume' };
    if (!r) return { usable: false, text: 'this node keeps no delta record for the volume (it restarted, or never received the stream)' };
    if (r.origin !== mark.origin || r.group !== mark.group) {
      return { usable: false, text: `this node's record follows ${r.origin}'s group ${r.group}; the peer applied ${mark.origin}'s group ${mark.group}` };
    }
    if (r.baseSeq === null) return { usable: false, text: r.unusableReason };
    if (mark.appliedSeq < r.baseSeq) {
      return { usable: false, text: `the peer applied through entry ${mark.appliedSeq}; the record covers only writes after entry ${r.baseSeq}` };
    }
    const newest = this.newestSeq.get(`${r.origin}/${r.group}`) ?? 0;
    if (r.source === 'forwarded' && mark.appliedSeq > newest) {
      return { usable: false, text: `the peer applied entry ${mark.appliedSeq}, beyond the newest this node received (${newest}): it holds writes this node lacks` };
    }
    const coarse = r.overflow.slice();
    const bits = r.overflow.slice();
    const later: ByteRange[] = [];
    let entries = 0;
    for (const e of r.entries.toArray()) {
      if (e.seq <= mark.appliedSeq) continue;
      entries++;
      const { first, count } = r.chunks(e.offset, e.length);
      for (let c = first; c < first + count; c++) bits[c >> 3]! |= 1 << (c & 7);
      later.push({ offset: e.offset, length: e.length });
    }
    const isCoarse = (offset: number): boolean => {
      const c = Math.floor(offset / this.chunkBytes);
      return (coarse[c >> 3]! & (1 << (c & 7))) !== 0;
    };
    const exact = mergeRanges(later).flatMap((x) => splitAt(x, this.chunkBytes)).filter((x) => !isCoarse(x.offset));
    let regions = 0;
    for (const byte of bits) for (let b = byte; b; b &= b - 1) regions++;
    const folded = r.overflowRegions > 0 ? ` and ${r.overflowRegions} regions kept as a bitmap` : '';
    return {
      usable: true, bits, coarse, exact: mergeRanges(exact), regions, entries,
      text: `the peer applied ${r.origin}'s group ${r.group} through entry ${mark.appliedSeq}: ${entries} later writes${folded}, ${regions} regions of ${this.chunkBytes / 1024} KiB to compare`,
    };
  }

  status(volume: string): DeltaRecordStatus | null {
    const r = this.records.get(volume);
    if (!r) return null;
    const newestSeq = this.newestSeq.get(`${r.origin}/${r.group}`) ?? 0;
    const overflow = r.overflowRegions > 0
      ? `; ${r.overflowRegions} regions kept as a bitmap (${r.overflowUntagged ? 'writes without a position' : `more than ${this.maxEntries} entries`}): a delta resync compares those whole regions`
      : '';
    return {
      origin: r.origin, group: r.group, source: r.source, usable: r.baseSeq !== null, baseSeq: r.baseSeq, newestSeq, entries: r.entries.length,
      overflowRegions: r.overflowRegions,
      text: r.baseSeq === null ? `not usable: ${r.unusableReason}` : `covers ${r.origin}'s group ${r.group} after entry ${r.baseSeq} (${r.entries.length} entries${overflow})`,
    };
  }
}

/** Sorted, with overlapping and touching ranges joined. */
export function mergeRanges(ranges: ByteRange[]): ByteRange[] {
  const sorted = [...ranges].sort((a, b) => a.offset - b.offset);
  const out: ByteRange[] = [];
  for (const r of sorted) {
    const last = out.at(-1);
    if (last && r.offset <= last.offset + last.length) last.length = Math.max(last.length, r.offset + r.length - last.offset);
    else out.push({ ...r });
  }
  return out;
}

/** Cuts a range at multiples of `grain` (so each piece lies in one region). */
function splitAt(r: ByteRange, grain: number): ByteRange[] {
  const out: ByteRange[] = [];
  for (let at = r.offset; at < r.offset + r.length;) {
    const end = Math.min(r.offset + r.length, (Math.floor(at / grain) + 1) * grain);
    out.push({ offset: at, length: end - at });
    at = end;
  }
  return out;
}
