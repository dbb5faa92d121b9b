// The pair-volume control software of spec 004 (84, 85): what sits on a host between the cluster
// software and its local storage. A RESERVE goes through Fig. 5 (steps 110–117); every other
// command passes through unchanged (Fig. 6). Works against any QuorumStorage: a node's HTTP API
// (the CLI's `tricopy quorum arbitrate`), or an in-memory model in tests.
//
//   111  RESERVE the local quorum volume          not GOOD → 116
//   113  attribute query                          P-VOL → 114, S-VOL → 115, Simplex → 116
//   114  PAIR_RESYNC                              NORMAL_END → 117, else 116
//   115  PAIR_SWAP_RESYNC                         NORMAL_END → 117, else 116
//   116  RESERVATION CONFLICT (the local reservation taken at 111 is released first: E10, B7)
//   117  GOOD
//
// No status reaches the caller before the pair command's result is known, and GOOD only after a
// NORMAL_END (claim 6). The attribute only chooses the command: the storage decides (B11).
import { errorMessage } from '../common/errors';
import type { AttributeView, CommandAnswer, QuorumCommand, ReservationAnswer, ReserveStatus } from '../contracts/quorum';
import type { QuorumStorage } from './client';

export interface ArbitrationStep {
  /** The step of Fig. 5 (110–117), or 0 for what the caller asked around it (reset, split). */
  step: number;
  what: string;
}

export interface ArbitrationResult {
  host: string;
  volume: string;
  status: ReserveStatus;
  /** The attribute found at step 113 (null when the procedure stopped before it). */
  attribute: AttributeView | null;
  /** The pair command sent at step 114 or 115 (null when none was sent). */
  command: QuorumCommand | null;
  answer: CommandAnswer | null;
  reason: string;
  steps: ArbitrationStep[];
}

export class PairVolumeControl {
  constructor(private readonly storage: QuorumStorage, readonly host: string, readonly volume: string) {}

  /** Fig. 5: the cluster software's RESERVE (110). */
  async reserve(): Promise<ArbitrationResult> {
    const steps: ArbitrationStep[] = [{ step: 110, what: `RESERVE from the cluster software of ${this.host}` }];
    const done = (status: ReserveStatus, reason: string, attribute: AttributeView | null = null, command: QuorumCommand | null = null,
      answer: CommandAnswer | null = null): ArbitrationResult => {
      steps.push(status === 'GOOD' ? { step: 117, what: `GOOD: ${reason}` } : { step: 116, what: `RESERVATION CONFLICT: ${reason}` });
      return { host: this.host, volume: this.volume, status, attribute, command, answer, reason, steps };
    };

    // 111–112: the local reservation.
    let local: ReservationAnswer;
    try {
      local = await this.storage.reserve(this.volume, this.host);
    } catch (err) {
      steps.push({ step: 111, what: `RESERVE ${this.volume} at ${this.storage.address} failed: ${errorMessage(err)}` });
      return done('RESERVATION_CONFLICT', `the local volume could not be reserved (${errorMessage(err)})`);
    }
    steps.push({ step: 111, what: `RESERVE ${this.volume} at ${this.storage.address}: ${local.status}${local.status === 'GOOD' ? '' : ` (held by ${local.holder})`}` });
    if (local.status !== 'GOOD') return done('RESERVATION_CONFLICT', `the local volume is reserved by ${local.holder}`);

    // From here on a failure releases the local reservation before answering (E10).
    const lose = async (reason: string, attribute: AttributeView | null, command: QuorumCommand | null = null, answer: CommandAnswer | null = null): Promise<ArbitrationResult> => {
      try {
        await this.storage.release(this.volume, this.host);
        steps.push({ step: 116, what: `RELEASE ${this.volume}: the local reservation taken at 111 is given back` });
      } catch (err) {
        steps.push({ step: 116, what: `RELEASE ${this.volume} failed (${errorMessage(err)}): a reset or a restart of the node clears it` });
      }
      return done('RESERVATION_CONFLICT', reason, attribute, command, answer);
    };

    // 113: which volume is this?
    let attribute: AttributeView;
    try {
      attribute = await this.storage.attribute(this.volume);
    } catch (err) {
      steps.push({ step: 113, what: `attribute query failed: ${errorMessage(err)}` });
      return lose(`the attribute query failed (${errorMessage(err)})`, null);
    }
    steps.push({ step: 113, what: `attribute of ${this.volume}: ${attribute.label}` });
    if (attribute.attribute.role === 'simplex') return lose(`${this.volume} is in no pair (Simplex): no command is sent`, attribute);

    // 114 / 115: the one command that can win, decided by the storage.
    const command: QuorumCommand = attribute.attribute.role === 'pvol' ? 'resync' : 'swap-resync';
    const step = command === 'resync' ? 114 : 115;
    let answer: CommandAnswer;
    try {
      answer = command === 'resync' ? await this.storage.pairResync(this.volume) : await this.storage.pairSwapResync(this.volume);
    } catch (err) {
      steps.push({ step, what: `${command === 'resync' ? 'PAIR_RESYNC' : 'PAIR_SWAP_RESYNC'} failed: ${errorMessage(err)}` });
      return lose(`the pair command failed (${errorMessage(err)})`, attribute, command);
    }
    steps.push({ step, what: `${command === 'resync' ? 'PAIR_RESYNC' : 'PAIR_SWAP_RESYNC'}: ${answer.result} (Fig. 4 row ${answer.row}; ${answer.reason})` });
    if (answer.result !== 'NORMAL_END') return lose(`the pair command ended abnormally: ${answer.reason}`, attribute, command, answer);
    return done('GOOD', command === 'resync'
      ? `pair resync ended normally: ${this.volume} stays the P-VOL; ${this.host} holds the exclusive right`
      : `pair swap resync ended normally: ${this.volume} is now the P-VOL; ${this.host} holds the exclusive right`, attribute, command, answer);
  }

  // --- Fig. 6: everything else passes through unchanged ------------------------------------------

  release(): Promise<ReservationAnswer> {
    return this.storage.release(this.volume, this.host);
  }

  /** The bus device reset the cluster software sends before arbitrating after a failure (Fig. 12). */
  reset(): Promise<ReservationAnswer> {
    return this.storage.reset(this.volume, this.host);
  }

  attribute(): Promise<AttributeView> {
    return this.storage.attribute(this.volume);
  }

  /**
   * Fig. 10, as the owner does it after a win (B10, E13): waits until the pair is in Pair with this
   * host's volume as the P-VOL, then splits it to Suspend(normal) so the next failure can be
   * arbitrated again. Resolves with the attribute after the split.
   */
  async splitWhenPaired(timeoutMs: number, pollMs = 100): Promise<AttributeView> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const a = await this.storage.attribute(this.volume);
      if (a.attribute.role === 'pvol' && a.attribute.state === 'pair') return this.storage.pairSplit(this.volume);
      if (a.attribute.role !== 'pvol' || a.attribute.state !== 'copy') {
        throw new Error(`${this.volume} is ${a.label}, not copying towards Pair: it cannot be split back to Suspend(normal)`);
      }
      if (Date.now() > deadline) throw new Error(`${this.volume} did not reach Pair within ${timeoutMs} ms (it is ${a.label})`);
      await new Promise((r) => setTimeout(r, pollMs));
    }
  }
}

/**
 * What the cluster software does when it arbitrates (Figs. 8 and 12): after a failure a bus device
 * reset first, then RESERVE; the winner then splits the pair back to Suspend(normal) once it is in
 * Pair (B10), unless told to leave it.
 */
export async function arbitrate(control: PairVolumeControl, options: { reset?: boolean; split?: boolean; splitTimeoutMs?: number } = {}): Promise<ArbitrationResult & { split: AttributeView | null }> {
  const before: ArbitrationStep[] = [];
  if (options.reset) {
    try {
      const r = await control.reset();
      before.push({ step: 0, what: `bus device reset on ${control.volume}: ${r.reason}` });
    } catch (err) {
      before.push({ step: 0, what: `bus device reset on ${control.volume} failed: ${errorMessage(err)}` });
    }
  }
  const result = await control.reserve();
  result.steps.unshift(...before);
  let split: AttributeView | null = null;
  if (result.status === 'GOOD' && options.split !== false) {
    try {
      split = await control.splitWhenPaired(options.splitTimeoutMs ?? 60_000);
      result.steps.push({ step: 0, what: `split ${control.volume} back to ${split.label} (Fig. 10), ready for the next arbitration` });
    } catch (err) {
      result.steps.push({ step: 0, what: `split after the win failed: ${errorMessage(err)}; split it with: tricopy quorum split --volume ${control.volume}` });
    }
  }
  return { ...result, split };
}
