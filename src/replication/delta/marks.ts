// Applied marks: how far a volume applied an async stream when it was detached from it (taken over
// or its pair dissolved), kept durably so a later pair can send only the writes it lacks (spec 001
// Figs. 10 and 14, delta resync). A host write makes the mark meaningless: it is dropped then.
import type { Logger } from '../../common/log';
import type { PairStore } from '../pairs/pair-store';
import type { AppliedMark } from './delta-record';

export class AppliedMarks {
  private marks = new Map<string, AppliedMark>();

  constructor(private readonly store: PairStore, private readonly log: Logger) {}

  async load(): Promise<void> {
    this.marks = await this.store.loadMarks();
  }

  has(volume: string): boolean {
    return this.marks.has(volume);
  }

  get(volume: string): AppliedMark | undefined {
    return this.marks.get(volume);
  }

  async save(volume: string, mark: AppliedMark): Promise<void> {
    await this.store.saveMark(volume, mark);
    this.marks.set(volume, mark);
    this.log.info({ volume, ...mark }, 'applied mark saved: a later delta resync can start from it');
  }

  async drop(volume: string, why: string): Promise<void> {
    if (!this.marks.delete(volume)) return;
    await this.store.removeMark(volume);
    this.log.info({ volume, why }, 'applied mark dropped');
  }
}
