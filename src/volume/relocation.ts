// One online move of a volume's data file to another data area (spec 003 Fig. 15): install a
// RelocatingFile under the volume (changes held for a moment), copy chunk by chunk at a bounded
// rate while hosts go on, then hold changes once more to make the target durable, commit the move
// in the metadata and put the target file in place. The Volume object, its NBD sessions, its
// remote pairs and replicas stay as they are: only the file beneath changes.
//
// Crash safety: until the commit the metadata names the old tier (with the move recorded), so a
// restart uses the old file and removes the partial target; after it, the new one.
import type { Clock } from '../common/clock';
import type { DiskFile } from '../common/disk';
import { errorMessage, invariant } from '../common/errors';
import type { Logger } from '../common/log';
import { RelocatingFile } from './relocating-file';
import { type RelocationEvent, type RelocationState, nextRelocationState } from './relocation-states';
import { type Volume, allocationChunkBytes } from './volume';

/** Bytes the background copy moves per step (and per range lock it takes). */
export const relocationChunkBytes = 1024 * 1024;
/** Units in which copy and host writes lock each other out (the allocation map's granularity). */
export const relocationLockUnitBytes = allocationChunkBytes;
/** The slowest copy rate that may be configured (0 means unthrottled). */
export const minRelocationRateBytesPerSecond = 1024 * 1024;

/** The durable steps of a move, done by the volume store. */
export interface RelocationSteps {
  /** The commit point: the target tier's file is the volume from now on. */
  commit(): Promise<void>;
  /** Forgets the move and removes the target (before the commit only). */
  abort(): Promise<void>;
  /** Removes the file the volume left (after the commit). */
  removeSource(): Promise<void>;
}

export interface RelocationOptions {
  chunkBytes: number;
  /** Bytes of data per second the copy may move; 0 = unthrottled. */
  rateBytesPerSecond: number;
  clock: Clock;
  log: Logger;
}

class Stopped extends Error {}

export class VolumeRelocation {
  private stateValue: RelocationState = 'copying';
  private file: RelocatingFile | null = null;
  private stopRequested = false;
  private dataBytesCopied = 0;
  private copyMs = 0;
  readonly startedAtMs: number;
  finishedAtMs: number | null = null;
  /** How long changes were held at the switch. */
  holdMs: number | null = null;
  error: string | null = null;
  /** Settles when the move is over, whatever its outcome (never rejects). */
  readonly finished: Promise<void>;

  constructor(
    readonly volume: Volume,
    readonly from: string,
    readonly to: string,
    private readonly target: DiskFile,
    private readonly steps: RelocationSteps,
    private readonly options: RelocationOptions,
  ) {
    invariant(options.chunkBytes > 0 && options.chunkBytes % relocationLockUnitBytes === 0, 'relocation chunks are whole lock units');
    this.startedAtMs = options.clock.now();
    this.finished = this.run();
  }

  get state(): RelocationState {
    return this.stateValue;
  }

  /** Bytes of the volume the copy has passed (holes are passed without copying). */
  get passedBytes(): number {
    if (this.stateValue === 'done') return this.volume.sizeBytes;
    return this.file?.copiedBytes ?? 0;
  }

  /** Data actually copied per second of copying (holes excluded). */
  get bytesPerSecond(): number {
    return this.copyMs > 0 ? Math.round((this.dataBytesCopied * 1000) / this.copyMs) : 0;
  }

  /** The node stops: the copy ends at its next step, the volume stays in its tier (the record remains; see store recovery). */
  stop(): Promise<void> {
    this.stopRequested = true;
    return this.finished;
  }

  private transition(event: RelocationEvent): void {
    const next = nextRelocationState(this.stateValue, event);
    invariant(next !== undefined, `relocation of ${this.volume.name}: no transition from ${this.stateValue} on ${event}`);
    this.stateValue = next;
  }

  private async run(): Promise<void> {
    const { log } = this.options;
    try {
      await this.install();
      await this.copy();
      this.transition('copied');
      await this.switchOver();
      this.transition('switched');
    } catch (err) {
      const stopped = err instanceof Stopped;
      this.error = stopped ? 'the node stopped during the move' : errorMessage(err);
      await this.undo(stopped).catch((undoErr: unknown) => log.error({ err: errorMessage(undoErr), volume: this.volume.name }, 'could not undo a relocation'));
      this.transition(stopped ? 'stopped' : 'error');
    } finally {
      this.finishedAtMs = this.options.clock.now();
    }
    if (this.stateValue === 'done') {
      await this.release().catch((err: unknown) => log.warn({ err: errorMessage(err), volume: this.volume.name, tier: this.from },
        'the old data file could not be removed now; it is removed at the next start'));
    }
  }

  /** With changes held, the volume starts writing through a RelocatingFile (nothing is in flight on the bare file). */
  private async install(): Promise<void> {
    const release = await this.volume.holdChanges();
    try {
      this.file = this.volume.replaceFile((source) => new RelocatingFile(source, this.target, this.volume.sizeBytes, relocationLockUnitBytes));
    } finally {
      release();
    }
  }

  private async copy(): Promise<void> {
    const file = this.file!;
    const { clock, chunkBytes, rateBytesPerSecond } = this.options;
    const buffer = Buffer.allocUnsafe(chunkBytes);
    const allocation = this.volume.allocation;
    let hole = false;
    const isHole = (offset: number, length: number): boolean => {
      const { first, count } = allocation.chunkRange(offset, length);
      hole = !allocation.anySet(first, count); // a clear bit reads as zeroes (volume.ts), as does the sparse target
      return hole;
    };
    const began = clock.now();
    while (!file.done) {
      if (this.stopRequested) throw new Stopped();
      const bytes = await file.copyNext(chunkBytes, isHole, buffer);
      if (!hole) this.dataBytesCopied += bytes;
      this.copyMs = Math.max(1, clock.now() - began);
      if (rateBytesPerSecond > 0) {
        const dueMs = began + (this.dataBytesCopied * 1000) / rateBytesPerSecond - clock.now();
        if (dueMs > 0) await clock.sleep(dueMs);
      }
      // Small I/O may complete inline (node-file.ts): let host requests in between chunks.
      await new Promise<void>((resolve) => clock.defer(resolve));
    }
    if (file.targetError !== null) throw file.targetError;
    // Most of the data reaches the disk before the hold, so the sync inside it is short.
    await this.target.datasync();
  }

  private async switchOver(): Promise<void> {
    const file = this.file!;
    const { clock } = this.options;
    const release = await this.volume.holdChanges();
    const heldAt = clock.now();
    try {
      // Nothing is in flight and the copy reached the end: the target equals the source.
      if (file.targetError !== null) throw file.targetError;
      await this.target.datasync();
      await this.steps.commit();
      this.volume.replaceFile(() => this.target);
    } finally {
      release();
      this.holdMs = clock.now() - heldAt;
    }
  }

  /** After the commit: the old file closes once the reads that went to it finished, and is removed. */
  private async release(): Promise<void> {
    const file = this.file!;
    await file.drained();
    await file.source.close();
    await this.steps.removeSource();
  }

  /** Before the commit: the volume goes back to the bare source file; the target goes. */
  private async undo(stopped: boolean): Promise<void> {
    const file = this.file;
    if (file) {
      const release = await this.volume.holdChanges();
      try {
        this.volume.replaceFile(() => file.source);
      } finally {
        release();
      }
      await file.drained();
    }
    await this.target.close().catch(() => undefined);
    // A stop leaves the record: the next start reports the move as interrupted and removes the target.
    if (!stopped) await this.steps.abort();
  }
}
