// Every limit of remote copy in one place, with its unit in its name, and the invariants that relate
// them, checked when the module loads: a frame must carry the largest host write, a journal batch
// must fit a frame, a journal must hold two of the largest entries, copies move whole regions.
import { invariant } from '../common/errors';
import { maxIoBytes } from '../volume/block-device';
import { allocationChunkBytes } from '../volume/volume';

const KiB = 1024;
const MiB = 1024 * KiB;

// --- the node-to-node frame ---------------------------------------------------------------------
/** Largest frame payload: the largest host write plus its addressing, or a journal batch. */
export const maxFramePayloadBytes = 34 * MiB;
/**
 * Largest payload before the peer has authenticated: a handshake message is a small JSON object
 * (a node name of up to 63 characters, a nonce and a proof of up to 128), under 2 KiB even with
 * every character escaped. Checked on the header, so an unauthenticated peer never makes the node
 * buffer more than this.
 */
export const maxHandshakePayloadBytes = 4 * KiB;
/** Addressing ahead of the data of a Write/Copy frame (name, offset, length, flags, tag). */
export const maxDataHeaderBytes = 1 * KiB;

// --- the node-to-node link -----------------------------------------------------------------------
export const defaultHeartbeatIntervalMs = 1000;
/** Silence after which a peer is declared dead. */
export const defaultPeerTimeoutMs = 4000;
/** A connection that has not authenticated within this time is dropped. */
export const defaultHandshakeTimeoutMs = 5000;
/** Longest handshake deadline a node accepts. */
export const maxHandshakeTimeoutMs = 60_000;
/** A request without an answer fails after this (sync writes have their own, shorter timeout). */
export const defaultRequestTimeoutMs = 30_000;
/** Redialing a wanted peer backs off from this to the maximum. */
export const reconnectInitialDelayMs = 200;
export const reconnectMaxDelayMs = 5000;
/** Authenticated links (one per peer node); an inbound connection beyond it is refused. */
export const maxAuthenticatedLinks = 256;
/** Inbound connections still in their handshake; each may hold one handshake frame at most. */
export const maxUnauthenticatedLinks = 64;
/** What all unauthenticated connections together may make the node hold in frames. */
export const maxUnauthenticatedBufferedBytes = 1024 * 1024;

// --- regions ------------------------------------------------------------------------------------
/** Differential records (bitmaps of changed regions): one bit per region, the allocation grain. */
export const diffChunkBytes = allocationChunkBytes;
/** A sync primary marks these extents durably before a write (DRBD's activity log). */
export const activityExtentBytes = 4 * MiB;
/** Extents kept marked after their last write, so hot regions cost no log write each time. */
export const maxColdMarkedExtents = 64;

// --- quorum pairs (spec 004) ---------------------------------------------------------------------
/** A quorum pair's volume holds a cluster's configuration: small, so a resync after a win is quick. */
export const maxQuorumVolumeBytes = 1024 * MiB;

// --- copies (initial copy, resync, delta resync, verify) ----------------------------------------
/** One copy request carries up to this much of a run of changed regions. */
export const maxCopyRequestBytes = 1 * MiB;
/** A delta copy compares this much per checksum request. */
export const maxDeltaRunBytes = 16 * MiB;
/** A delta copy compares regions of this size first, then blocks inside the regions that differ. */
export const deltaRegionBytes = 64 * KiB;
export const deltaBlockBytes = 4 * KiB;
/** Bytes of each region checksum on the wire (a SHA-256 prefix). */
export const regionHashBytes = 16;
/** Copy requests in flight per pair. */
export const defaultCopyConcurrency = 8;

// --- online verify ------------------------------------------------------------------------------
/** Verify compares this much per step: one checksum request to the peer, under one range lock. */
export const verifyStepBytes = 1 * MiB;
/** Verify reads each side at most this fast unless the command says otherwise (DRBD's c-max-rate default). */
export const defaultVerifyRateMiBPerSecond = 100;
export const minVerifyRateMiBPerSecond = 1;
export const maxVerifyRateMiBPerSecond = 10_240;
/**
 * Async verify hashes this much of the primary, then waits once for the secondary to apply the
 * journal up to that point and compares; one wait serves many steps.
 */
export const verifyAsyncWindowBytes = 64 * MiB;
/** Async verify waits this long (holding no lock) for the secondary to apply up to a window's point. */
export const verifyApplyWaitMs = 60_000;
/**
 * Async verify compares a region that looked different again with host writes to it held until the
 * secondary applied every entry written before: at most this long, else the region is skipped.
 */
export const verifyLockedApplyWaitMs = 5_000;
/** A stopping node waits this long for running verifies to end their step (and release their range locks). */
export const verifyStopWaitMs = 2_000;
/** Byte ranges of differences named in the pair-verify event and the status (the rest are counted). */
export const maxVerifyReportedRanges = 8;

// --- async journals -----------------------------------------------------------------------------
/** Bytes of a journal entry ahead of its data (fixed header and the pair name, at most). */
export const maxJournalEntryHeaderBytes = 256;
/** One shipped batch of journal entries. */
export const maxBatchBytes = 4 * MiB;
export const maxBatchEntries = 4096;
export const maxBatchesInFlight = 2;
/** Journal segment files; the journal recycles whole segments. */
export const journalSegmentBytes = 64 * MiB;
/** Retired segment files kept for reuse. */
export const maxFreeJournalSegments = 4;
/** The journal must hold two of the largest host writes, or it could not keep one in flight. */
export const minJournalBytes = 2 * maxIoBytes;
export const defaultJournalBytes = 1024 * MiB;
/** Data of recent entries kept in memory at the primary so shipping rarely reads the journal back. */
export const maxCachedJournalBytes = 128 * MiB;
/** Data of received entries kept in memory at the secondary until applied. */
export const maxReceivedCacheBytes = 256 * MiB;
/** Received entries applied concurrently when they do not overlap. */
export const maxParallelApplies = 16;
/** How often journal positions are written to their files when they moved. */
export const progressPersistIntervalMs = 250;
/** A secondary reports its apply position this soon after applying something. */
export const progressReportDelayMs = 100;
/** With the delay policy: writes may wait this long for journal space before the group suspends. */
export const defaultJournalStallTimeoutMs = 30_000;
/** Waiting for journal space wakes at least this often to re-check the policy. */
export const journalSpaceWaitMs = 1000;
/** A batch that failed on a live link is shipped again after this pause. */
export const shipRetryDelayMs = 1000;
/** A pair update the secondary did not take while the link stayed up is sent again (its current state) after this pause. */
export const pairUpdateRetryDelayMs = 1000;
/** How many times a pair update is sent again on a live link; a reconnect reconciles after that. */
export const pairUpdateRetries = 5;

// --- delta resync -------------------------------------------------------------------------------
/** Regions per volume kept as individual entries; older ones fold into the overflow bitmap. */
export const maxDeltaRecordEntries = 131_072;

// --- commands and failures ----------------------------------------------------------------------
/** A split or a planned swap waits this long for the journal to drain. */
export const drainTimeoutMs = 120_000;
/** Draining is checked this often. */
export const drainPollIntervalMs = 20;
/** Commands that need the peer wait this long for the link. */
export const connectTimeoutMs = 10_000;
/** Deleting a pair waits this long for an absent peer before it needs --force. */
export const deleteConnectTimeoutMs = 3000;
/** A sync write the secondary has not confirmed within this time fails the pair. */
export const defaultSyncWriteTimeoutMs = 15_000;
/** Delay before a pair suspended by a failure tries to resync while its peer is reachable. */
export const autoResyncDelayMs = 2000;
/** The old primary answers a swap after draining; the new primary waits this much longer. */
export const swapPrepareTimeoutMs = drainTimeoutMs + 10_000;

// --- invariants ---------------------------------------------------------------------------------
invariant(maxHandshakePayloadBytes < maxFramePayloadBytes, 'a handshake frame is smaller than a data frame');
invariant(maxUnauthenticatedLinks * (/* frame header, transport/frame.ts */ 32 + maxHandshakePayloadBytes) <= maxUnauthenticatedBufferedBytes,
  'every unauthenticated connection may hold one handshake frame within the bound');
invariant(defaultHeartbeatIntervalMs * 2 <= defaultPeerTimeoutMs, 'a peer misses at least two heartbeats before it is declared dead');
invariant(defaultHandshakeTimeoutMs <= maxHandshakeTimeoutMs && reconnectInitialDelayMs < reconnectMaxDelayMs, 'link timings are ordered');
invariant(defaultSyncWriteTimeoutMs < defaultRequestTimeoutMs, 'a sync write fails its pair before a request times out');
invariant(maxFramePayloadBytes >= maxIoBytes + maxDataHeaderBytes, 'a frame carries the largest host write with its header');
invariant(maxFramePayloadBytes >= Math.max(maxBatchBytes, maxIoBytes + maxJournalEntryHeaderBytes) + maxDataHeaderBytes,
  'a journal batch (entries up to the batch size, or one largest entry alone) fits a frame');
invariant(journalSegmentBytes >= maxIoBytes + maxJournalEntryHeaderBytes, 'a journal segment holds the largest entry');
invariant(defaultJournalBytes >= minJournalBytes, 'the default journal is at least the minimum');
invariant(maxCopyRequestBytes % diffChunkBytes === 0 && maxDeltaRunBytes % maxCopyRequestBytes === 0,
  'copies move whole regions, and a delta run is whole copy requests');
invariant(maxCopyRequestBytes + maxDataHeaderBytes <= maxFramePayloadBytes, 'a copy request fits a frame');
invariant(deltaRegionBytes === diffChunkBytes && deltaRegionBytes % deltaBlockBytes === 0,
  'delta regions are the differential record\'s regions, made of whole blocks');
invariant(verifyStepBytes % diffChunkBytes === 0 && verifyAsyncWindowBytes % verifyStepBytes === 0,
  'verify steps are whole regions, and an async window is whole steps');
invariant((verifyStepBytes / deltaBlockBytes) * regionHashBytes + maxDataHeaderBytes <= maxFramePayloadBytes, 'the checksums of a verify step fit a frame');
invariant(minVerifyRateMiBPerSecond <= defaultVerifyRateMiBPerSecond && defaultVerifyRateMiBPerSecond <= maxVerifyRateMiBPerSecond, 'the default verify rate is allowed');
invariant(drainPollIntervalMs < verifyLockedApplyWaitMs && verifyLockedApplyWaitMs < verifyApplyWaitMs, 'verify polls more often than it waits, and waits less with writes held');
invariant(activityExtentBytes % diffChunkBytes === 0, 'activity extents are whole regions');
invariant(maxCachedJournalBytes >= maxIoBytes && maxReceivedCacheBytes >= maxIoBytes, 'journal caches hold the largest write');
invariant(drainPollIntervalMs < drainTimeoutMs && autoResyncDelayMs < defaultSyncWriteTimeoutMs, 'pauses are shorter than the timeouts they serve');
