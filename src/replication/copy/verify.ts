// Online verify (DRBD's `verify`): at the primary of a duplex pair, compare the two copies region
// by region by checksum while hosts keep writing, at a bounded rate; record the regions that differ
// in the pair's differential record, report them as a `pair-verify` event, and let `pair resync`
// copy exactly those. Silent divergence (a bit flipped on one side behind tricopy's back) is found.
//
// Verify is not a state change: it runs while the pair is duplex and stops (aborted, with the
// reason) as soon as the pair leaves duplex, its roles change or it is deleted. What it found stays
// recorded. A duplex primary whose record holds regions is what `pair resync` turns into a copy
// (duplex → duplex-pending → duplex, the state table's `resync` with clean false). How each side
// is read consistently while hosts write is verify-compare.ts.
//
//   Verifier    starts, cancels and reports verifies; resyncs what they found
//   VerifyRun   one verify of one pair: the pass over the volume, progress, the record, the event
//   RatePacer   keeps a verify under its rate
import { type Clock, type TimerHandle, isoTime } from '../../common/clock';
import { TricopyError, errorMessage, invariant } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import type { Logger } from '../../common/log';
import { formatBytes } from '../../common/units';
import type { PairStatus, VerifyState, VerifyStatus } from '../../contracts/pairs';
import type { Journals } from '../async/journals';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';
import type { ByteRange } from '../delta/delta-record';
import type { ReplicationEnv } from '../env';
import {
  defaultVerifyRateMiBPerSecond, diffChunkBytes, maxVerifyRateMiBPerSecond, maxVerifyReportedRanges, minVerifyRateMiBPerSecond, verifyStopWaitMs,
} from '../limits';
import { shortCode } from '../pairs/pair-model';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import type { CopyEngine } from './copy-engine';
import { AsyncComparer, type CompareScope, type RegionComparer, SyncComparer } from './verify-compare';

const MiB = 1024 * 1024;

export interface VerifyParts {
  env: ReplicationEnv;
  localNode: string;
  registry: PairRegistry;
  engine: TransitionEngine;
  journals: Journals;
  volumeRuntimes: VolumeRuntimes;
  copy: CopyEngine;
  events: EventJournal;
  log: Logger;
  status: (p: PairRuntime) => PairStatus;
}

export interface VerifyOptions {
  rateMiBPerSecond?: number | undefined;
}

/** Paces reads to a rate: after `bytes` more, waits until the run is no further ahead than the rate allows. */
export class RatePacer {
  private readonly startedMs: number;
  private bytes = 0;

  constructor(private readonly clock: Clock, private readonly bytesPerSecond: number) {
    invariant(bytesPerSecond > 0, 'a verify rate is positive');
    this.startedMs = clock.now();
  }

  async pace(bytes: number): Promise<void> {
    const dueMs = this.startedMs + (this.bytes / this.bytesPerSecond) * 1000;
    this.bytes += bytes;
    const waitMs = dueMs - this.clock.now();
    if (waitMs >= 1) await this.clock.sleep(Math.ceil(waitMs));
  }
}

/** One verify of one pair, from the start of its volume to the end (or until it stops). */
export class VerifyRun {
  readonly done: Promise<void>;
  private stateValue: VerifyState = 'running';
  private summary: string;
  private endedAt: string | null = null;
  private doneBytes = 0;
  private differingBytes = 0;
  private differingRegions = 0;
  private lastCountedRegion = -1;
  private skippedBytes = 0;
  private readonly ranges: ByteRange[] = [];
  private rangesTotal = 0;
  private lastRangeEnd = -1;
  private cancelReason: string | undefined;
  private stop: { state: 'cancelled' | 'aborted'; why: string } | undefined;
  private readonly startedAt: string;
  private readonly startedMs: number;
  private readonly startGeneration: number;
  private readonly totalBytes: number;
  private readonly pacer: RatePacer;

  constructor(private readonly parts: VerifyParts, private readonly p: PairRuntime, private readonly comparer: RegionComparer,
    private readonly rateMiBPerSecond: number) {
    const { env } = parts;
    this.startedAt = isoTime(env.clock);
    this.startedMs = env.clock.now();
    this.startGeneration = p.record.generation;
    this.totalBytes = env.volumes.get(p.record.volume).sizeBytes;
    this.pacer = new RatePacer(env.clock, rateMiBPerSecond * MiB);
    this.summary = `comparing ${formatBytes(this.totalBytes)} with ${p.record.peer.node} at up to ${rateMiBPerSecond} MiB/s`;
    parts.events.emit('pair-verify', p.record.name, `verify started: ${this.summary}`,
      { outcome: 'started', totalBytes: this.totalBytes, rateMiBPerSecond, mode: p.record.mode, peer: p.record.peer.node });
    this.done = this.run();
  }

  get running(): boolean {
    return this.stateValue === 'running';
  }

  /** Asks the run to stop after the step in progress; resolves when it has. `reason` follows "cancelled" ("by operator"). */
  cancel(reason: string): Promise<void> {
    if (this.running && this.cancelReason === undefined) this.cancelReason = reason;
    return this.done;
  }

  status(): VerifyStatus {
    return {
      state: this.stateValue, startedAt: this.startedAt, endedAt: this.endedAt, rateMiBPerSecond: this.rateMiBPerSecond,
      totalBytes: this.totalBytes, doneBytes: this.doneBytes,
      progressPercent: this.totalBytes === 0 ? 100 : Math.min(100, Math.floor((this.doneBytes / this.totalBytes) * 100)),
      differingBytes: this.differingBytes, differingRegions: this.differingRegions, ranges: this.ranges.map((r) => ({ ...r })),
      skippedBytes: this.skippedBytes, reason: this.summary,
    };
  }

  private async run(): Promise<void> {
    const scope: CompareScope = { stopped: () => this.stopReason() !== undefined, pace: (bytes) => this.pacer.pace(bytes) };
    try {
      while (this.doneBytes < this.totalBytes) {
        const stop = this.stopReason();
        if (stop) return this.end(stop.state, stop.why);
        const length = Math.min(this.comparer.windowBytes, this.totalBytes - this.doneBytes);
        const result = await this.comparer.compare(this.doneBytes, length, scope);
        await this.record(result.differing);
        this.skippedBytes += result.skipped.reduce((n, r) => n + r.length, 0);
        this.doneBytes += result.doneBytes;
        invariant(result.doneBytes === length || this.stopReason() !== undefined, 'a verify window is gone through whole unless the verify stops');
      }
      this.end('finished', 'finished');
    } catch (err) {
      this.parts.log.warn({ pair: this.p.record.name, err: errorMessage(err) }, 'verify stopped');
      this.end('aborted', errorMessage(err));
    }
  }

  /** Why the run must stop, once it must (the first reason is kept: a link that comes back does not undo it). */
  private stopReason(): { state: 'cancelled' | 'aborted'; why: string } | undefined {
    this.stop ??= this.findStopReason();
    return this.stop;
  }

  private findStopReason(): { state: 'cancelled' | 'aborted'; why: string } | undefined {
    if (this.cancelReason !== undefined) return { state: 'cancelled', why: this.cancelReason };
    const { registry, volumeRuntimes, env } = this.parts;
    const r = this.p.record;
    if (registry.get(r.name) !== this.p) return { state: 'aborted', why: 'the pair was deleted' };
    if (r.role !== 'primary' || r.generation !== this.startGeneration) return { state: 'aborted', why: 'the roles of the pair changed' };
    if (r.state !== 'duplex') return { state: 'aborted', why: `the pair left duplex, it is ${r.state} (${shortCode(r)}): ${r.reason}` };
    if (volumeRuntimes.peek(r.volume)?.swapping) return { state: 'aborted', why: 'a role swap is quiescing the volume' };
    if (!env.transport.isUp(r.peer.node)) return { state: 'aborted', why: `the link to ${r.peer.node} is down` };
    return undefined;
  }

  /**
   * Records what differs in the pair's differential record, durably before it is reported, as long
   * as the record is still this primary's (a swap hands the record another meaning).
   */
  private async record(differing: ByteRange[]): Promise<void> {
    if (differing.length === 0) return;
    const r = this.p.record;
    const ours = this.parts.registry.get(r.name) === this.p && r.role === 'primary' && r.generation === this.startGeneration;
    for (const d of differing) {
      this.differingBytes += d.length;
      const first = Math.max(Math.floor(d.offset / diffChunkBytes), this.lastCountedRegion + 1);
      const last = Math.floor((d.offset + d.length - 1) / diffChunkBytes);
      if (last >= first) this.differingRegions += last - first + 1;
      this.lastCountedRegion = Math.max(this.lastCountedRegion, last);
      if (d.offset !== this.lastRangeEnd) {
        this.rangesTotal++;
        if (this.ranges.length < maxVerifyReportedRanges) this.ranges.push({ ...d });
      } else if (this.ranges.length === this.rangesTotal) {
        this.ranges.at(-1)!.length += d.length; // continues the last range reported
      }
      this.lastRangeEnd = d.offset + d.length;
      if (ours) this.p.bitmap.markBytes(d.offset, d.length);
    }
    if (ours) await this.p.bitmap.sync();
  }

  private end(state: Exclude<VerifyState, 'running'>, why: string): void {
    const { env, events } = this.parts;
    const r = this.p.record;
    const found = this.differingRegions === 0 ? 'no differences'
      : `${this.differingRegions} region${this.differingRegions === 1 ? '' : 's'} of ${formatBytes(diffChunkBytes)} ${this.differingRegions === 1 ? 'differs' : 'differ'} ` +
        `(${formatBytes(this.differingBytes)} in ${this.rangesTotal} range${this.rangesTotal === 1 ? '' : 's'}: ${this.ranges.map(describe).join(', ')}` +
        `${this.rangesTotal > this.ranges.length ? ', …' : ''})`;
    const skipped = this.skippedBytes > 0 ? `; ${formatBytes(this.skippedBytes)} skipped: the secondary did not apply the journal in time` : '';
    const advice = this.differingRegions > 0 ? `; they are recorded: copy them with tricopy pair resync ${r.name}` : '';
    const done = `${formatBytes(this.doneBytes)} of ${formatBytes(this.totalBytes)}`;
    const how = state === 'finished' ? `finished, ${formatBytes(this.doneBytes)} compared`
      : state === 'cancelled' ? `cancelled ${why} after ${done}` : `stopped after ${done} (${why})`;
    this.stateValue = state;
    this.endedAt = isoTime(env.clock);
    this.summary = `verify ${how}: ${found}${skipped}${advice}`;
    events.emit('pair-verify', r.name, this.summary, {
      outcome: state, totalBytes: this.totalBytes, doneBytes: this.doneBytes, differingBytes: this.differingBytes,
      differingRegions: this.differingRegions, ranges: this.ranges.map((x) => ({ ...x })), rangeCount: this.rangesTotal,
      skippedBytes: this.skippedBytes, recordedBytes: this.p.bitmap.setBitCount * diffChunkBytes,
      durationMs: env.clock.now() - this.startedMs, rateMiBPerSecond: this.rateMiBPerSecond,
    });
  }
}

function describe(r: ByteRange): string {
  return `${formatBytes(r.length)} at byte ${r.offset}`;
}

/** The verifies of this node's pairs: one at a time per pair; the last one's status is kept. */
export class Verifier {
  private readonly runs = new Map<string, VerifyRun>();

  constructor(private readonly parts: VerifyParts) {
    // A new pair of the same name starts with no verify behind it.
    parts.engine.onRemoval(null, (p) => {
      this.runs.delete(p.record.name);
    });
  }

  /** Starts a verify of a duplex pair at its primary; answers the pair's status with the verify running. */
  start(name: string, options: VerifyOptions): Promise<PairStatus> {
    const rate = options.rateMiBPerSecond ?? defaultVerifyRateMiBPerSecond;
    if (!Number.isInteger(rate) || rate < minVerifyRateMiBPerSecond || rate > maxVerifyRateMiBPerSecond) {
      return Promise.reject(new TricopyError('invalid-argument', `a verify rate is a whole number of MiB/s from ${minVerifyRateMiBPerSecond} to ${maxVerifyRateMiBPerSecond} (got ${rate})`));
    }
    // After the commands queued on the pair, so it is verified in the state they leave it in.
    return this.parts.registry.serialize(name, async (p) => {
      const running = this.runs.get(name);
      if (running?.running) {
        throw new TricopyError('conflict', `a verify of pair ${name} is already running (${running.status().progressPercent}%)`,
          `follow it with: tricopy pair status ${name}; stop it with: tricopy pair verify ${name} --cancel`);
      }
      this.checkStartable(p);
      const volume = this.parts.env.volumes.volume(p.record.volume);
      const lock = this.parts.volumeRuntimes.get(p.record.volume).lock;
      const peer = this.parts.copy.peerHashes(p);
      const comparer = p.record.mode === 'sync' ? new SyncComparer(volume, lock, peer)
        : new AsyncComparer(this.parts.env, this.parts.journals, p.record.group!, volume, lock, peer);
      this.runs.set(name, new VerifyRun(this.parts, p, comparer, rate));
      return this.withVerify(p);
    });
  }

  /** Stops the running verify of the pair (what it found stays recorded); answers once it stopped. */
  async cancel(name: string): Promise<PairStatus> {
    const p = this.parts.registry.require(name);
    const run = this.runs.get(name);
    if (!run?.running) {
      throw new TricopyError('conflict', `no verify of pair ${name} is running on ${this.parts.localNode}`,
        run ? `the last one ${run.status().state}: see tricopy pair status ${name}` : `start one with: tricopy pair verify ${name}`);
    }
    await run.cancel('by operator');
    return this.withVerify(p);
  }

  /** The last verify of the pair on this node, if any. */
  status(name: string): VerifyStatus | undefined {
    return this.runs.get(name)?.status();
  }

  /**
   * The node stops: running verifies end after their step in progress. Waits (a bounded while) for
   * them, so no range lock is held when the node decides whether its stop was clean.
   */
  async stop(): Promise<void> {
    const ending = [...this.runs.values()].filter((r) => r.running).map((r) => r.cancel('as the node stops'));
    if (ending.length === 0) return;
    const clock = this.parts.env.clock;
    let timer: TimerHandle | undefined;
    const waited = new Promise<void>((resolve) => {
      timer = clock.setTimer(verifyStopWaitMs, resolve);
      timer.unref();
    });
    await Promise.race([Promise.all(ending), waited]);
    clock.clearTimer(timer);
  }

  /**
   * True for a duplex primary whose differential record holds regions: a resync copies them (they
   * were found different by a verify; nothing else records regions while a primary is duplex).
   */
  hasRecordedRegions(name: string): boolean {
    const p = this.parts.registry.get(name);
    return p !== undefined && p.record.role === 'primary' && p.record.state === 'duplex' && p.bitmap.setBitCount > 0;
  }

  /**
   * `pair resync` of a duplex pair with recorded regions: copies exactly those and returns to
   * duplex. Undefined when the pair no longer is such a pair (the caller resyncs it as usual).
   */
  resyncRecorded(name: string): Promise<PairStatus | undefined> {
    const { registry, engine, env } = this.parts;
    return registry.serialize(name, async (p) => {
      if (!this.hasRecordedRegions(name)) return undefined;
      if (!env.transport.isUp(p.record.peer.node)) {
        throw new TricopyError('unavailable', `cannot resync pair ${name}: the link to ${p.record.peer.node} is down`, `check it with: tricopy pair status ${name}`);
      }
      await this.runs.get(name)?.cancel('by a resync (verify again once the pair is duplex)');
      const outcome = await engine.apply(p, 'resync', {
        clean: false, reason: `resync: copying ${formatBytes(p.bitmap.setBitCount * diffChunkBytes)} of regions online verify found different`,
      });
      if (outcome.kind === 'refuse') throw new TricopyError('conflict', `pair ${name}: ${outcome.message}`);
      return this.withVerify(p);
    });
  }

  /** The pair's status with its last verify (the API, the CLI and the tests read it there). */
  decorate(status: PairStatus): PairStatus {
    const verify = this.status(status.name);
    return verify ? { ...status, verify } : status;
  }

  private withVerify(p: PairRuntime): PairStatus {
    return this.decorate(this.parts.status(p));
  }

  /** Refuses a pair that is not a connected duplex primary, with the command to run instead. */
  private checkStartable(p: PairRuntime): void {
    const r = p.record;
    const { env, localNode } = this.parts;
    const what = `pair ${r.name} is ${r.state} (${shortCode(r)}) on ${localNode}`;
    if (r.role !== 'primary') {
      throw new TricopyError('invalid-argument', `pair ${r.name}: verify is run at the primary node (${r.peer.node})`,
        `run the command at ${r.peer.node}`);
    }
    switch (r.state) {
      case 'duplex':
        break;
      case 'initial-copying':
      case 'duplex-pending':
        throw new TricopyError('conflict', `${what}: a copy is running, so the secondary is not a complete image yet`,
          `wait for it, then verify: tricopy pair wait ${r.name} --state duplex`);
      case 'suspending':
        throw new TricopyError('conflict', `${what}: the split is draining the journal; verify compares a pair in duplex`,
          `once it is suspended, resync it, then verify: tricopy pair resync ${r.name} --wait`);
      default:
        throw new TricopyError('conflict', `${what}: verify compares a pair in duplex`,
          `resync it first (it copies the regions recorded on either side), then verify: tricopy pair resync ${r.name} --wait`);
    }
    if (!env.transport.isUp(r.peer.node)) {
      throw new TricopyError('unavailable', `pair ${r.name}: the link to ${r.peer.node} is down; verify needs the secondary`,
        `check the link with: tricopy pair status ${r.name}`);
    }
    if (this.parts.volumeRuntimes.peek(r.volume)?.swapping) {
      throw new TricopyError('busy', `pair ${r.name}: a role swap is quiescing volume ${r.volume}`, 'run the verify again once the swap is done');
    }
  }
}
