// How a quorum pair's state machine differs from a data pair's: the overlay the quorum module sets
// on the transition engine for pairs of purpose 'quorum'. The data table (replication/pairs/
// state-table.ts) still decides every transition; this overlay lets through only what spec 004
// allows and says which Fig. 4 row refused the rest.
//
//   resync  at the P-VOL        Fig. 4 rows 2–5: only Suspend(normal) (row 4) goes on to Copy
//   resync  at the S-VOL        rows 6–9: refused, whatever the state (B1)
//   swap    at the S-VOL        rows 15–18: only Suspend(normal) (row 17) goes on to Copy, roles swapped
//   swap    at the P-VOL        the authority's half of row 17 (the S-VOL node forwarded the command):
//                               the pair must still be in Suspend(normal) here, where it is decided
//   takeover                    refused: an S-VOL becomes the P-VOL only by a swap resync
//   split   at the S-VOL        refused here: the S-VOL's node forwards a split to the P-VOL node
//   split   in Copy             refused: split once the pair is in Pair (§6.4)
//   split   -rw                 refused: an S-VOL never accepts host writes (E14)
//   failure in Suspend(normal)  Suspend(error), at either node (E5: the link or the peer was lost)
import type { DecisionOverlay, Outcome } from '../replication/pairs/state-table';
import { attributeLabel, attributeOf, fig4 } from './fig4';

const refuse = (message: string, wrongSide = false): Outcome => ({ kind: 'refuse', message, ...(wrongSide ? { wrongSide: true as const } : {}) });

export const quorumOverlay: DecisionOverlay = (d, base) => {
  const attribute = attributeOf({ role: d.role, state: d.state, suspendCause: d.cause });
  const suspendNormal = attribute.state === 'suspend-normal';
  switch (d.event) {
    case 'resync': {
      const row = fig4('resync', attribute);
      if (row.result === 'NORMAL_END' && base.kind === 'transition') return base;
      return refuse(`Fig. 4 row ${row.row}: pair resync on a ${attributeLabel(attribute)} ends abnormally: ${row.reason}`);
    }
    case 'swap': {
      if (d.role === 'secondary') {
        const row = fig4('swap-resync', attribute);
        if (row.result === 'NORMAL_END' && base.kind === 'transition') return base;
        return refuse(`Fig. 4 row ${row.row}: pair swap resync on a ${attributeLabel(attribute)} ends abnormally: ${row.reason}`);
      }
      // At the P-VOL node, the authority: a swap resync the S-VOL's node forwarded.
      const row = fig4('swap-resync', { role: 'svol', ...(attribute.state ? { state: attribute.state } : {}) });
      if (row.result === 'NORMAL_END' && base.kind === 'transition') return base;
      return refuse(`Fig. 4 row ${row.row}: the P-VOL node finds the pair in ${attributeLabel(attribute).replace('P-VOL, ', '')}, so the swap resync ends abnormally: ${row.reason}`);
    }
    case 'takeover':
      return refuse('a quorum pair is never taken over: its S-VOL becomes the P-VOL only by a pair swap resync (tricopy quorum arbitrate)');
    case 'split':
      if (d.extra.secondaryWritable) return refuse('the S-VOL of a quorum pair never accepts host writes (spec 004 E14): split without --rw');
      if (d.role === 'secondary') return refuse('a quorum pair is split at its P-VOL node: tricopy quorum split forwards it there from either node', true);
      if (attribute.state === 'copy') return refuse('the quorum pair is copying: split it once it is in Pair (spec 004 §6.4)');
      return base;
    case 'failure':
      if (suspendNormal) {
        return { kind: 'transition', to: 'suspended', cause: 'failure', note: 'the peer could not be reached: Suspend(normal) becomes Suspend(error) (spec 004 E5); an operator recovers it with tricopy quorum split' };
      }
      return base;
    default:
      return base;
  }
};
