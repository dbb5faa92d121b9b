// Every limit of in-node replicas, snapshots and changed-block bitmaps, with its unit in the name.
import { invariant } from '../common/errors';
import { allocationChunkBytes } from '../volume/volume';

/** Copy, copy-on-write and bitmap granularity: the volume's allocation chunk (spec 003 §8.2: 64 KiB). */
export const regionBytes = allocationChunkBytes;
/** Replica pairs one volume may be the primary of (ShadowImage allows three). */
export const maxReplicasPerVolume = 3;
/** Replica pairs per node. */
export const maxReplicasPerNode = 1024;
/** Snapshots per volume. Each is one sparse file and one bitmap; reads look through the newer ones. */
export const maxSnapshotsPerVolume = 64;
/** Changed-block bitmaps per volume. */
export const maxBitmapsPerVolume = 16;
/**
 * The unit a snapshot preserves: a first write after a snapshot copies the old contents of the
 * blocks it covers, not of whole regions (a 4 KiB write then copies 4 KiB, not 64 KiB: the copy
 * traffic of random small writes is 16 times smaller). Maps stay small: the block grows with the
 * volume so that a map has at most maxSnapshotMapBits bits (512 KiB), up to one region.
 */
export const minSnapshotBlockBytes = 4096;
export const maxSnapshotMapBits = 1 << 22;

/** The block size of a volume's snapshot chain, chosen when its first snapshot is taken. */
export function snapshotBlockBytesFor(volumeBytes: number): number {
  let block = minSnapshotBlockBytes;
  while (block < regionBytes && Math.ceil(volumeBytes / block) > maxSnapshotMapBits) block *= 2;
  return block;
}
/** Regions a background copy takes at once (locks, copies, syncs, records): 4 MiB. */
export const copyBatchRegions = 64;
/**
 * Host writes a volume with snapshots may have answered before their copy-on-write is durable (and
 * so before they reach the volume): past either bound a write waits for its copy as a quick split's
 * does. The bytes are held in memory, per volume.
 */
export const maxDeferredWritesPerVolume = 256;
export const maxDeferredBytesPerVolume = 16 * 1024 * 1024;
/** Snapshot, bitmap and pair names (the export `volume@snapshot` stays short). */
export const objectNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Longest a `replica wait` holds on. */
export const maxReplicaWaitMs = 600_000;

invariant(Number.isInteger(Math.log2(regionBytes)) && regionBytes >= 4096 && regionBytes <= 1024 * 1024,
  'the region is a power of two from 4 KiB to 1 MiB (spec 003 §8.2)');
invariant(copyBatchRegions * regionBytes <= 32 * 1024 * 1024, 'a copy batch fits one device read');
/** Clone sets (a DR drill's writable clones) per node; each holds a snapshot per volume while it lives. */
export const maxCloneSetsPerNode = 8;
/** Clone set names: the snapshot under each clone is NAME.base, which must stay a valid snapshot name. */
export const cloneSetNamePattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,57}$/;
invariant(maxDeferredBytesPerVolume >= 1024 * 1024 && maxDeferredWritesPerVolume >= 32, 'a deferred write of up to 1 MiB fits, and a queue depth of 32 first writes');
invariant(regionBytes % minSnapshotBlockBytes === 0 && Number.isInteger(Math.log2(minSnapshotBlockBytes)), 'snapshot blocks divide a region');
