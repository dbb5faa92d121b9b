// The volume relocations of a node (spec 003 Fig. 15): starts a move when asked (one at a time per
// volume), keeps each volume's current or last move for `volume show`, reports moves a crash or
// stop interrupted, emits events, and stops the running moves before the store closes.
import type { Clock } from '../common/clock';
import { TricopyError } from '../common/errors';
import type { Logger } from '../common/log';
import type { RelocationView } from '../contracts/node';
import { relocationOver } from '../volume/relocation-states';
import { VolumeRelocation, relocationChunkBytes } from '../volume/relocation';
import type { VolumeStore } from '../volume/store';

type Emit = (kind: string, subject: string, reason: string, details?: Record<string, unknown>) => void;

export interface RelocationLimits {
  /** Bytes of data per second each move may copy; 0 = unthrottled. */
  rateBytesPerSecond: number;
  chunkBytes: number;
}

export const defaultRelocationLimits: RelocationLimits = { rateBytesPerSecond: 0, chunkBytes: relocationChunkBytes };

const MiB = 1024 * 1024;

export class NodeRelocations {
  private readonly moves = new Map<string, VolumeRelocation>();
  private readonly interrupted = new Map<string, { from: string; to: string }>();

  constructor(private readonly store: VolumeStore, private readonly limits: RelocationLimits, private readonly clock: Clock,
    private readonly log: Logger, private readonly emit: Emit) {
    for (const r of store.interruptedRelocations()) {
      this.interrupted.set(r.volume, { from: r.from, to: r.to });
      emit('volume-relocation-interrupted', r.volume, `the move to tier ${r.to} did not finish before the node stopped; the volume stayed in tier ${r.from}`,
        { from: r.from, to: r.to, hint: `run it again: tricopy volume relocate ${r.volume} --tier ${r.to}` });
    }
  }

  /** Starts moving the volume to `tier`; resolves once the move runs (not when it is done). */
  async start(name: string, tier: string): Promise<RelocationView> {
    const meta = this.store.get(name); // not-found first
    const current = this.moves.get(name);
    if (current && !relocationOver(current.state)) {
      throw new TricopyError('busy', `volume ${name} is moving to tier ${current.to} already (${current.state})`, `follow it with: tricopy volume show ${name}`);
    }
    const target = await this.store.beginRelocation(name, tier);
    const move = new VolumeRelocation(this.store.volume(name), meta.tier, tier, target, {
      commit: async () => {
        await this.store.commitRelocation(name);
      },
      abort: () => this.store.abortRelocation(name),
      removeSource: () => this.store.removeImage(name, meta.tier),
    }, { ...this.limits, clock: this.clock, log: this.log });
    this.moves.set(name, move);
    this.interrupted.delete(name);
    this.emit('volume-relocation-started', name, `moving from tier ${meta.tier} to tier ${tier}; host I/O goes on`,
      { from: meta.tier, to: tier, sizeBytes: meta.sizeBytes, allocatedBytes: this.store.volume(name).allocatedBytes });
    void move.finished.then(() => this.report(name, move));
    return view(move);
  }

  /** The volume's current or last move (or the one a crash interrupted); null: none since the node started. */
  view(name: string): RelocationView | null {
    const move = this.moves.get(name);
    if (move) return view(move);
    const lost = this.interrupted.get(name);
    if (!lost) return null;
    return {
      state: 'interrupted', from: lost.from, to: lost.to, passedBytes: 0, totalBytes: this.store.get(name).sizeBytes, progressPercent: 0,
      bytesPerSecond: 0, startedAt: null, finishedAt: null, holdMs: null, error: 'the node stopped or crashed during the move',
    };
  }

  /** Refuses a change of the volume while it moves (its data file is in two places). */
  refuseWhileMoving(name: string, what: string): void {
    const move = this.moves.get(name);
    if (move && !relocationOver(move.state)) {
      throw new TricopyError('busy', `volume ${name} is moving to tier ${move.to}; it cannot be ${what} now`, `wait for the move: tricopy volume show ${name}`);
    }
  }

  forget(name: string): void {
    this.moves.delete(name);
    this.interrupted.delete(name);
  }

  /** Stops every running move (the node stops); each volume stays in its tier. */
  async stop(): Promise<void> {
    await Promise.all([...this.moves.values()].map((m) => m.stop()));
  }

  private report(name: string, move: VolumeRelocation): void {
    const v = view(move);
    if (move.state === 'done') {
      this.emit('volume-relocated', name, `moved from tier ${move.from} to tier ${move.to}; host changes were held ${v.holdMs} ms at the switch`,
        { from: move.from, to: move.to, mibPerSecond: Math.round((v.bytesPerSecond / MiB) * 10) / 10, holdMs: v.holdMs });
    } else {
      this.emit(move.state === 'interrupted' ? 'volume-relocation-interrupted' : 'volume-relocation-failed', name,
        `the move to tier ${move.to} stopped: ${move.error ?? 'unknown'}; the volume stays in tier ${move.from}`, { from: move.from, to: move.to });
    }
  }
}

function view(move: VolumeRelocation): RelocationView {
  const total = move.volume.sizeBytes;
  return {
    state: move.state, from: move.from, to: move.to, passedBytes: move.passedBytes, totalBytes: total,
    progressPercent: Math.floor((move.passedBytes / Math.max(1, total)) * 100), bytesPerSecond: move.bytesPerSecond,
    startedAt: new Date(move.startedAtMs).toISOString(), finishedAt: move.finishedAtMs === null ? null : new Date(move.finishedAtMs).toISOString(),
    holdMs: move.holdMs, error: move.error,
  };
}
