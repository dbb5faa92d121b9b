// Detached secondaries: volumes a dissolved pair left read-only with their former primary's image
// (contracts/node.ts DetachedSecondary). Saved right after the pair's record goes, with the volume's
// writes held; dropped by a new pair of the volume, `volume make-writable`, or the volume's deletion.
import { type Clock, isoTime } from '../../common/clock';
import { TricopyError } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { DetachedSecondary } from '../../contracts/node';
import { VolumeMarks } from '../delta/marks';
import type { PairStore } from './pair-store';

export class DetachedSecondaries extends VolumeMarks<DetachedSecondary> {
  constructor(store: PairStore, log: Logger) {
    super(store, 'detached', parseDetached, 'detached-secondary mark (the volume holds its former primary\'s image)', log);
  }

  /** Right after the pair of a secondary (not taken over) was removed: the volume keeps its image, read-only. */
  async leaveReadOnly(volume: string, former: { name: string; peer: { node: string }; generation: number }, clock: Clock): Promise<void> {
    await this.save(volume, { pair: former.name, primary: former.peer.node, generation: former.generation, at: isoTime(clock) });
  }

  /** Why hosts may not write the volume (left read-only), or undefined. */
  refusal(volume: string): string | undefined {
    const m = this.get(volume);
    if (!m) return undefined;
    return `volume ${volume} was left read-only with the image of ${m.primary} when pair ${m.pair} was dissolved (${m.at}); ` +
      `it accepts writes again once paired, or after: tricopy volume make-writable ${volume}`;
  }
}

function parseDetached(value: unknown, file: string): DetachedSecondary {
  const m = (value ?? {}) as Partial<DetachedSecondary>;
  if (typeof m.pair !== 'string' || typeof m.primary !== 'string' || !Number.isSafeInteger(m.generation) || typeof m.at !== 'string') {
    throw new TricopyError('internal', `detached-secondary mark ${file} is malformed; the data directory is damaged`);
  }
  return { pair: m.pair, primary: m.primary, generation: m.generation!, at: m.at };
}
