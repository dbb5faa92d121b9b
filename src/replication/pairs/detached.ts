// Detached secondaries: volumes that were the secondary of a pair until it was dissolved and that no
// host has written since (contracts/node.ts DetachedSecondary). Saved before the pair's record goes,
// dropped by the first host write, a new pair of the volume, or the volume's deletion.
import { TricopyError, invariant } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { DetachedSecondary } from '../../contracts/node';
import { VolumeMarks } from '../delta/marks';
import type { PairStore } from './pair-store';

export class DetachedSecondaries extends VolumeMarks<DetachedSecondary> {
  constructor(store: PairStore, log: Logger) {
    super(store, 'detached', parseDetached, 'detached-secondary mark (the volume holds its former primary\'s image)', log);
  }

  /** Right after the pair of a secondary (not taken over) was removed, which saved the mark. */
  async makeReadOnly(volume: string): Promise<void> {
    const mark = this.get(volume);
    invariant(mark !== undefined, `a secondary's volume ${volume} has a detached-secondary mark once its pair is removed`);
    await this.save(volume, { ...mark, readOnly: true });
  }

  /** Why hosts may not write the volume (left read-only), or undefined. */
  refusal(volume: string): string | undefined {
    const m = this.get(volume);
    if (!m?.readOnly) return undefined;
    return `volume ${volume} was left read-only with the image of ${m.primary} when pair ${m.pair} was dissolved (${m.at}); ` +
      `it accepts writes again once paired, or after: tricopy volume make-writable ${volume}`;
  }
}

function parseDetached(value: unknown, file: string): DetachedSecondary {
  const m = (value ?? {}) as Partial<DetachedSecondary>;
  if (typeof m.pair !== 'string' || typeof m.primary !== 'string' || !Number.isSafeInteger(m.generation) || typeof m.at !== 'string') {
    throw new TricopyError('internal', `detached-secondary mark ${file} is malformed; the data directory is damaged`);
  }
  if (m.readOnly !== undefined && typeof m.readOnly !== 'boolean') throw new TricopyError('internal', `detached-secondary mark ${file} is malformed; the data directory is damaged`);
  return { pair: m.pair, primary: m.primary, generation: m.generation!, at: m.at, readOnly: m.readOnly === true };
}
