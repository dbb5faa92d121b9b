// Spec 004's Fig. 4 as an explicit table: how the storage answers pair resync and pair swap resync,
// by the attribute of the volume the command is sent to ("own volume"). 2 commands × 9 attributes
// = 18 rows; only rows 4 and 17 end normally, both in Suspend(normal), a state the pair shares and a
// normal end leaves at once: of any set of racing commands at most one succeeds (§5.3). Also the
// mapping from a pair record to its attribute (§4.2). Pure: no I/O, no tricopy state.
import type { CommandEnd, QuorumCommand, QuorumPairState, VolumeAttribute } from '../contracts/quorum';
import type { PairRole, PairState, SuspendCause } from '../contracts/pairs';

export interface Fig4Row {
  row: number;
  command: QuorumCommand;
  attribute: VolumeAttribute;
  result: CommandEnd;
  /** Why, in the words an operator reads. */
  reason: string;
}

const pvol = (state: QuorumPairState): VolumeAttribute => ({ role: 'pvol', state });
const svol = (state: QuorumPairState): VolumeAttribute => ({ role: 'svol', state });
const simplex: VolumeAttribute = { role: 'simplex' };

/** The 18 rows in the order of spec 004 §5.2. */
export const fig4Rows: readonly Fig4Row[] = Object.freeze([
  { row: 1, command: 'resync', attribute: simplex, result: 'ABNORMAL_END', reason: 'the volume is in no pair' },
  { row: 2, command: 'resync', attribute: pvol('copy'), result: 'ABNORMAL_END', reason: 'the pair is copying: an earlier command already won' },
  { row: 3, command: 'resync', attribute: pvol('pair'), result: 'ABNORMAL_END', reason: 'the pair is in Pair: it must be split to Suspend(normal) before an arbitration (E1)' },
  { row: 4, command: 'resync', attribute: pvol('suspend-normal'), result: 'NORMAL_END', reason: 'pair resync at the P-VOL in Suspend(normal): the roles stay, the pair copies to Pair (130)' },
  { row: 5, command: 'resync', attribute: pvol('suspend-error'), result: 'ABNORMAL_END', reason: 'the pair is in Suspend(error): an operator must recover it (E3)' },
  { row: 6, command: 'resync', attribute: svol('copy'), result: 'ABNORMAL_END', reason: 'the pair is copying: an earlier command already won' },
  { row: 7, command: 'resync', attribute: svol('pair'), result: 'ABNORMAL_END', reason: 'the pair is in Pair: it must be split to Suspend(normal) before an arbitration (E1)' },
  { row: 8, command: 'resync', attribute: svol('suspend-normal'), result: 'ABNORMAL_END', reason: 'pair resync is accepted only at the P-VOL; at the S-VOL, pair swap resync (B1)' },
  { row: 9, command: 'resync', attribute: svol('suspend-error'), result: 'ABNORMAL_END', reason: 'the pair is in Suspend(error): an operator must recover it (E3)' },
  { row: 10, command: 'swap-resync', attribute: simplex, result: 'ABNORMAL_END', reason: 'the volume is in no pair' },
  { row: 11, command: 'swap-resync', attribute: pvol('copy'), result: 'ABNORMAL_END', reason: 'the pair is copying: an earlier command already won' },
  { row: 12, command: 'swap-resync', attribute: pvol('pair'), result: 'ABNORMAL_END', reason: 'the pair is in Pair: it must be split to Suspend(normal) before an arbitration (E1)' },
  { row: 13, command: 'swap-resync', attribute: pvol('suspend-normal'), result: 'ABNORMAL_END', reason: 'pair swap resync is accepted only at the S-VOL; at the P-VOL, pair resync' },
  { row: 14, command: 'swap-resync', attribute: pvol('suspend-error'), result: 'ABNORMAL_END', reason: 'the pair is in Suspend(error): an operator must recover it (E3)' },
  { row: 15, command: 'swap-resync', attribute: svol('copy'), result: 'ABNORMAL_END', reason: 'the pair is copying: an earlier command already won' },
  { row: 16, command: 'swap-resync', attribute: svol('pair'), result: 'ABNORMAL_END', reason: 'the pair is in Pair: it must be split to Suspend(normal) before an arbitration (E1)' },
  { row: 17, command: 'swap-resync', attribute: svol('suspend-normal'), result: 'NORMAL_END', reason: 'pair swap resync at the S-VOL in Suspend(normal): the roles swap, the pair copies to Pair (131)' },
  { row: 18, command: 'swap-resync', attribute: svol('suspend-error'), result: 'ABNORMAL_END', reason: 'the pair is in Suspend(error): an operator must recover it (E3)' },
].map((r) => Object.freeze(r as Fig4Row)));

/** The 9 attributes of §4.2, in table order. */
export const volumeAttributes: readonly VolumeAttribute[] = fig4Rows.filter((r) => r.command === 'resync').map((r) => r.attribute);

export function sameAttribute(a: VolumeAttribute, b: VolumeAttribute): boolean {
  return a.role === b.role && (a.role === 'simplex' || a.state === b.state);
}

/** The row of Fig. 4 for `command` sent to a volume with `attribute`. */
export function fig4(command: QuorumCommand, attribute: VolumeAttribute): Fig4Row {
  const row = fig4Rows.find((r) => r.command === command && sameAttribute(r.attribute, attribute));
  if (!row) throw new Error(`no Fig. 4 row for ${command} on ${attributeLabel(attribute)}`);
  return row;
}

const stateLabels: Record<QuorumPairState, string> = {
  copy: 'Copy', pair: 'Pair', 'suspend-normal': 'Suspend(normal)', 'suspend-error': 'Suspend(error)',
};

/** "P-VOL, Suspend(normal)", "S-VOL, Copy", "Simplex". */
export function attributeLabel(a: VolumeAttribute): string {
  if (a.role === 'simplex' || a.state === undefined) return 'Simplex';
  return `${a.role === 'pvol' ? 'P-VOL' : 'S-VOL'}, ${stateLabels[a.state]}`;
}

/** A pair state of spec 001 as spec 004 names it. */
export function quorumState(state: PairState, cause: SuspendCause | null): QuorumPairState | undefined {
  switch (state) {
    case 'simplex':
      return undefined;
    case 'initial-copying':
    case 'duplex-pending':
      return 'copy';
    case 'duplex':
      return 'pair';
    case 'suspending':
    case 'suspended':
      return cause === 'operator' ? 'suspend-normal' : 'suspend-error';
    case 'secondary-writable':
      // A quorum pair is never taken over; should one be, it is no state an arbitration may use.
      return 'suspend-error';
  }
}

/** The attribute of a volume from its quorum pair's record (Simplex when it has none). */
export function attributeOf(r: { role: PairRole; state: PairState; suspendCause: SuspendCause | null } | undefined): VolumeAttribute {
  const state = r ? quorumState(r.state, r.suspendCause) : undefined;
  if (!r || state === undefined) return { role: 'simplex' };
  return { role: r.role === 'primary' ? 'pvol' : 'svol', state };
}
