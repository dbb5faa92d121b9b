// How online verify compares one window of a volume with the peer's copy while hosts keep writing,
// so that a difference it reports is one the two sides really have, never a write in flight:
//
// - sync pairs: each step is compared under the volume's range lock. Every host write to the step
//   that was acknowledged is on both sides (its local and remote parts finish before it releases
//   the lock), and no new one starts until the step is compared.
// - async pairs: the secondary lags by design, so a step is compared at a point of the journal.
//   The primary hashes the step under the range lock and notes the journal's last entry; once the
//   secondary applied every entry up to there, its checksums must match unless a later write to the
//   step landed meanwhile. A step that looks different is compared again with host writes to it
//   held until the secondary applied every entry written before them (at most
//   verifyLockedApplyWaitMs); only what still differs then is reported. A step whose point the
//   secondary does not reach in time is skipped, and reported as skipped.
import { invariant } from '../../common/errors';
import type { Volume } from '../../volume/volume';
import type { Journals } from '../async/journals';
import type { PrimaryJournal } from '../async/primary-journal';
import type { RangeLock } from '../../common/range-lock';
import type { ByteRange } from '../delta/delta-record';
import type { ReplicationEnv } from '../env';
import {
  deltaRegionBytes, drainPollIntervalMs, regionHashBytes, verifyApplyWaitMs, verifyAsyncWindowBytes, verifyLockedApplyWaitMs, verifyStepBytes,
} from '../limits';
import { type PeerHashes, differingRanges, regionHashes } from './block-compare';

/** What a comparer needs from the verify that runs it. */
export interface CompareScope {
  /** True once the verify must stop (cancelled, or the pair left duplex): the comparer returns early. */
  stopped(): boolean;
  /** Waits as long as the verify's rate asks before `bytes` more are read. */
  pace(bytes: number): Promise<void>;
}

export interface WindowResult {
  /** Bytes of the window gone through (less than asked only when the verify stopped). */
  doneBytes: number;
  /** Ranges whose contents differ (4 KiB blocks, merged where adjacent). */
  differing: ByteRange[];
  /** Ranges not compared (async: the secondary did not apply the journal in time). */
  skipped: ByteRange[];
}

export interface RegionComparer {
  /** How much one call compares (the caller asks for at most this). */
  readonly windowBytes: number;
  compare(offset: number, length: number, scope: CompareScope): Promise<WindowResult>;
}

/** Sync pairs: every step read on both sides under the range lock. */
export class SyncComparer implements RegionComparer {
  readonly windowBytes = verifyStepBytes;

  constructor(private readonly volume: Volume, private readonly lock: RangeLock, private readonly peer: PeerHashes) {}

  async compare(offset: number, length: number, scope: CompareScope): Promise<WindowResult> {
    invariant(length > 0 && length <= this.windowBytes, `a sync verify step is 1..${this.windowBytes} bytes (${length})`);
    await scope.pace(length);
    const release = await this.lock.acquire(offset, length);
    try {
      if (scope.stopped()) return { doneBytes: 0, differing: [], skipped: [] };
      return { doneBytes: length, differing: await differingRanges(this.volume, this.peer, offset, length), skipped: [] };
    } finally {
      release();
    }
  }
}

interface HashedStep {
  offset: number;
  length: number;
  hashes: Buffer;
}

/** Async pairs: steps hashed at a journal point, compared once the secondary applied through it. */
export class AsyncComparer implements RegionComparer {
  readonly windowBytes = verifyAsyncWindowBytes;

  constructor(
    private readonly env: ReplicationEnv,
    private readonly journals: Journals,
    private readonly group: string,
    private readonly volume: Volume,
    private readonly lock: RangeLock,
    private readonly peer: PeerHashes,
  ) {}

  async compare(offset: number, length: number, scope: CompareScope): Promise<WindowResult> {
    invariant(length > 0 && length <= this.windowBytes, `an async verify window is 1..${this.windowBytes} bytes (${length})`);
    const journal = this.journal();
    const steps: HashedStep[] = [];
    let point = 0;
    for (let at = offset; at < offset + length; at += verifyStepBytes) {
      if (scope.stopped()) break;
      const stepLength = Math.min(verifyStepBytes, offset + length - at);
      await scope.pace(stepLength);
      // Under the lock every write to the step so far has its entry in the journal (entries are
      // appended before the volume changes, under the same lock).
      const release = await this.lock.acquire(at, stepLength);
      try {
        point = Math.max(point, journal.lastSeq);
        steps.push({ offset: at, length: stepLength, hashes: await regionHashes(this.volume, at, stepLength, deltaRegionBytes) });
      } finally {
        release();
      }
    }
    const result: WindowResult = { doneBytes: 0, differing: [], skipped: [] };
    if (steps.length === 0) return result;
    const hashedBytes = steps.reduce((n, s) => n + s.length, 0);
    if (!await this.applied(point, verifyApplyWaitMs, scope)) {
      if (!scope.stopped()) result.skipped.push({ offset, length: hashedBytes });
      result.doneBytes = scope.stopped() ? 0 : hashedBytes;
      return result;
    }
    for (const step of steps) {
      if (scope.stopped()) return result;
      const theirs = await this.peer(step.offset, step.length, deltaRegionBytes);
      const suspects = differentRegions(step, theirs);
      if (suspects.length > 0) await this.recheck(step, suspects, scope, result);
      if (scope.stopped()) return result;
      result.doneBytes += step.length;
    }
    return result;
  }

  /**
   * Compares the regions that looked different again, with host writes to them held until the
   * secondary applied every entry written before (so neither side changes them meanwhile).
   */
  private async recheck(step: HashedStep, suspects: number[], scope: CompareScope, result: WindowResult): Promise<void> {
    const from = step.offset + suspects[0]! * deltaRegionBytes;
    const to = Math.min(step.offset + step.length, step.offset + (suspects.at(-1)! + 1) * deltaRegionBytes);
    const release = await this.lock.acquire(from, to - from);
    try {
      const point = this.journals.primary(this.group)?.lastSeq ?? Number.MAX_SAFE_INTEGER; // gone: the verify stops
      if (!await this.applied(point, verifyLockedApplyWaitMs, scope)) {
        if (!scope.stopped()) for (const i of suspects) result.skipped.push(regionOf(step, i));
        return;
      }
      for (const i of suspects) {
        const region = regionOf(step, i);
        result.differing.push(...await differingRanges(this.volume, this.peer, region.offset, region.length));
      }
    } finally {
      release();
    }
  }

  /** Waits until the secondary applied through `seq` (false after `timeoutMs`, or when the verify stops). */
  private async applied(seq: number, timeoutMs: number, scope: CompareScope): Promise<boolean> {
    const deadline = this.env.clock.now() + timeoutMs;
    for (;;) {
      const journal = this.journals.primary(this.group);
      if (!journal || scope.stopped()) return false;
      if (journal.appliedSeq >= seq) return true;
      if (this.env.clock.now() >= deadline) return false;
      await this.env.clock.sleep(drainPollIntervalMs);
    }
  }

  private journal(): PrimaryJournal {
    const journal = this.journals.primary(this.group);
    invariant(journal, `an async primary in duplex has its group's journal (${this.group})`);
    return journal;
  }
}

/** Indexes of the step's regions whose checksums differ from the peer's. */
function differentRegions(step: HashedStep, theirs: Buffer): number[] {
  const out: number[] = [];
  for (let i = 0; i * regionHashBytes < step.hashes.length; i++) {
    const at = i * regionHashBytes;
    if (!step.hashes.subarray(at, at + regionHashBytes).equals(theirs.subarray(at, at + regionHashBytes))) out.push(i);
  }
  return out;
}

function regionOf(step: HashedStep, i: number): ByteRange {
  const offset = step.offset + i * deltaRegionBytes;
  return { offset, length: Math.min(deltaRegionBytes, step.offset + step.length - offset) };
}
