// Durable per-volume marks, one kind per folder of the pair store, held in memory for the write path.
// Applied marks: how far a volume applied an async stream when it was detached from it (taken over
// or its pair dissolved), so a later pair can send only the writes it lacks (spec 001 Figs. 10 and
// 14, delta resync). A host write makes the mark meaningless: it is dropped then.
import { TricopyError } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { MarkFolder, PairStore } from '../pairs/pair-store';
import type { AppliedMark } from './delta-record';

export class VolumeMarks<T extends object> {
  private marks = new Map<string, T>();

  constructor(
    private readonly store: PairStore,
    private readonly folder: MarkFolder,
    private readonly parse: (value: unknown, file: string) => T,
    private readonly what: string,
    private readonly log: Logger,
  ) {}

  async load(): Promise<void> {
    this.marks = await this.store.loadMarks(this.folder, this.parse);
  }

  has(volume: string): boolean {
    return this.marks.has(volume);
  }

  get(volume: string): T | undefined {
    return this.marks.get(volume);
  }

  async save(volume: string, mark: T): Promise<void> {
    await this.store.saveMark(this.folder, volume, mark);
    this.marks.set(volume, mark);
    this.log.info({ volume, mark: mark as object }, `${this.what} saved`);
  }

  async drop(volume: string, why: string): Promise<void> {
    if (!this.marks.delete(volume)) return;
    await this.store.removeMark(this.folder, volume);
    this.log.info({ volume, why }, `${this.what} dropped`);
  }
}

export class AppliedMarks extends VolumeMarks<AppliedMark> {
  constructor(store: PairStore, log: Logger) {
    super(store, 'marks', parseAppliedMark, 'applied mark (a later delta resync can start from it)', log);
  }
}

function parseAppliedMark(value: unknown, file: string): AppliedMark {
  const m = (value ?? {}) as Partial<AppliedMark>;
  if (typeof m.origin !== 'string' || typeof m.group !== 'string' || !Number.isSafeInteger(m.appliedSeq) || (m.appliedSeq ?? -1) < 0) {
    throw new TricopyError('internal', `applied mark ${file} is malformed; the data directory is damaged`);
  }
  return { origin: m.origin, group: m.group, appliedSeq: m.appliedSeq! };
}
