// Comparing a volume with its peer's copy by checksums, so only differing blocks travel: 16-byte
// SHA-256 prefixes of 64 KiB regions first, then of 4 KiB blocks inside the regions that differ.
// Used by delta copies (pair create --initial-copy delta, delta resync) and by online verify.
import { createHash } from 'node:crypto';
import type { Volume } from '../../volume/volume';
import type { ByteRange } from '../delta/delta-record';
import { mergeRanges } from '../delta/delta-record';
import { deltaBlockBytes, deltaRegionBytes, diffChunkBytes, regionHashBytes } from '../limits';
import type { PairRuntime } from '../pairs/runtime';

const zeroDigests = new Map<number, Buffer>();
function zeroDigest(length: number): Buffer {
  let d = zeroDigests.get(length);
  if (!d) {
    d = createHash('sha256').update(Buffer.alloc(length)).digest();
    zeroDigests.set(length, d);
  }
  return d;
}

/** 16-byte SHA-256 prefixes of each `grain` of [offset, offset+length); holes hash as zeroes without reads. */
export async function regionHashes(volume: Volume, offset: number, length: number, grain: number): Promise<Buffer> {
  const end = Math.min(offset + length, volume.sizeBytes);
  const pieces = Math.max(0, Math.ceil((end - offset) / grain));
  const out = Buffer.alloc(pieces * regionHashBytes);
  for (let at = offset, i = 0; at < end; at += grain, i++) {
    const len = Math.min(grain, end - at);
    const extents = volume.extents(at, len, 1);
    let digest: Buffer;
    if (extents[0] && extents[0].zero && extents[0].length >= len) digest = zeroDigest(len);
    else digest = createHash('sha256').update(await volume.read(at, len)).digest();
    digest.copy(out, i * regionHashBytes, 0, regionHashBytes);
  }
  return out;
}

/** Asks the peer for the checksums of its copy of a range (a RegionHashes request). */
export type PeerHashes = (offset: number, length: number, grainBytes: number) => Promise<Buffer>;

function sameHash(a: Buffer, b: Buffer, i: number): boolean {
  return a.subarray(i * regionHashBytes, (i + 1) * regionHashBytes).equals(b.subarray(i * regionHashBytes, (i + 1) * regionHashBytes));
}

/** The byte ranges of [offset, offset+length) whose contents differ between this volume and the peer's. */
export async function differingRanges(volume: Volume, peer: PeerHashes, offset: number, length: number): Promise<ByteRange[]> {
  const [theirs, ours] = await Promise.all([peer(offset, length, deltaRegionBytes), regionHashes(volume, offset, length, deltaRegionBytes)]);
  const out: ByteRange[] = [];
  const push = (off: number, len: number): void => {
    const last = out.at(-1);
    if (last && last.offset + last.length === off) last.length += len;
    else out.push({ offset: off, length: len });
  };
  for (let i = 0; i * regionHashBytes < ours.length; i++) {
    if (sameHash(ours, theirs, i)) continue;
    const regionOffset = offset + i * deltaRegionBytes;
    const regionLength = Math.min(deltaRegionBytes, offset + length - regionOffset);
    const [t, o] = await Promise.all([peer(regionOffset, regionLength, deltaBlockBytes), regionHashes(volume, regionOffset, regionLength, deltaBlockBytes)]);
    for (let j = 0; j * regionHashBytes < o.length; j++) {
      if (sameHash(o, t, j)) continue;
      const blockOffset = regionOffset + j * deltaBlockBytes;
      push(blockOffset, Math.min(deltaBlockBytes, regionOffset + regionLength - blockOffset));
    }
  }
  return out;
}

/**
 * What of [offset, offset+length) a copy sends: all of it; for a delta from sequence numbers the
 * exact ranges of the writes the peer lacks (and a comparison inside coarse regions); for any
 * other delta, the blocks whose checksums differ.
 */
export async function rangesToCopy(p: PairRuntime, volume: Volume, peer: PeerHashes, offset: number, length: number): Promise<ByteRange[]> {
  if (!p.copy.delta) return [{ offset, length }];
  const plan = p.copy.deltaPlan;
  if (!plan) {
    const found = await differingRanges(volume, peer, offset, length);
    p.copy.deltaBytesFound += found.reduce((n, r) => n + r.length, 0);
    return found;
  }
  const end = offset + length;
  const out: ByteRange[] = [];
  const isCoarse = (c: number): boolean => (plan.coarse[c >> 3]! & (1 << (c & 7))) !== 0;
  const lastChunk = Math.ceil(end / diffChunkBytes);
  for (let c = Math.floor(offset / diffChunkBytes); c < lastChunk;) {
    if (!isCoarse(c)) {
      c++;
      continue;
    }
    let d = c;
    while (d < lastChunk && isCoarse(d)) d++;
    const from = Math.max(offset, c * diffChunkBytes);
    const to = Math.min(end, d * diffChunkBytes);
    const found = await differingRanges(volume, peer, from, to - from);
    p.copy.deltaBytesFound += found.reduce((n, r) => n + r.length, 0);
    out.push(...found);
    c = d;
  }
  // The exact ranges are sorted and disjoint: find the first that ends after `offset`.
  let lo = 0;
  let hi = plan.exact.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (plan.exact[mid]!.offset + plan.exact[mid]!.length <= offset) lo = mid + 1;
    else hi = mid;
  }
  for (let i = lo; i < plan.exact.length && plan.exact[i]!.offset < end; i++) {
    const r = plan.exact[i]!;
    const from = Math.max(r.offset, offset);
    const to = Math.min(r.offset + r.length, end);
    out.push({ offset: from, length: to - from });
    p.copy.deltaBytesFound += to - from;
  }
  return mergeRanges(out);
}
