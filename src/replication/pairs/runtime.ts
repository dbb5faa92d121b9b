// What a node holds for each of its pairs while it runs: the durable record and differential
// record (bitmap), and the volatile state of the copy, the split drain and the command queue.
import type { PersistentBitmap } from '../../volume/bitmap';
import type { ByteRange } from '../delta/delta-record';
import type { DeltaMethod, PairRecord } from './pair-model';

/** A delta from sequence numbers: exact ranges to send, and regions known only coarsely (compared). */
export interface DeltaPlan {
  exact: ByteRange[];
  coarse: Uint8Array;
}

export interface CopyRuntime {
  /** A copy task runs now (initial copy or resync). */
  running: boolean;
  /** The running (or resumed) copy compares checksums and copies only differing blocks. */
  delta: boolean;
  /** Bytes a delta copy found different (and sent), for status and benchmarks. */
  deltaBytesFound: number;
  /** A delta copy ran (or runs) since this node started: deltaBytesFound is meaningful even when 0. */
  deltaRan: boolean;
  /** How the delta copy chose the regions to compare: from sequence numbers, or the whole volume. */
  deltaMethod: DeltaMethod | null;
  deltaNote: string | null;
  deltaPlan: DeltaPlan | null;
  /** Async copy: the secondary is consistent once it applied through this sequence number. */
  consistentSeq: number;
}

export interface PairRuntime {
  readonly record: PairRecord;
  readonly bitmap: PersistentBitmap;
  readonly copy: CopyRuntime;
  /** Async split: the pair is suspended once the secondary applied through this sequence number. */
  drainTargetSeq: number | null;
  /** The secondary node answers but has neither the pair nor its volume: no automatic resync. */
  peerLostData: boolean;
  /** Commands on this pair run one after another. */
  commandChain: Promise<unknown>;
  /** Commands queued or running on this pair. */
  commandsPending: number;
  /** Transition steps (decide, persist, record) run one at a time (transitions.ts). */
  transitionChain: Promise<unknown>;
  /** Woken at every transition (wait-for-state requests). */
  readonly stateWaiters: Set<() => void>;
}

export function newRuntime(record: PairRecord, bitmap: PersistentBitmap): PairRuntime {
  return {
    record, bitmap, drainTargetSeq: null, peerLostData: false, commandChain: Promise.resolve(), commandsPending: 0, transitionChain: Promise.resolve(), stateWaiters: new Set(),
    copy: { running: false, delta: false, deltaBytesFound: 0, deltaRan: false, deltaMethod: null, deltaNote: null, deltaPlan: null, consistentSeq: 0 },
  };
}

/** The copy switches back to a plain copy once a delta copy finished. */
export function endDeltaCopy(p: PairRuntime): void {
  p.copy.delta = false;
  p.copy.deltaPlan = null;
}
