// Writes a volume has acknowledged but not yet issued to its data file. A hook (a snapshot's
// copy-on-write) may answer a host write before the write may reach the file, and issue it once it
// may; until then the write's bytes live here and every read of the volume sees them. Who defers a
// write keeps the range locked against other changes until it is issued, so entries never overlap.
import { invariant } from '../common/errors';

export interface OverlayEntry {
  readonly offset: number;
  readonly data: Buffer;
}

export class WriteOverlay {
  private readonly entries = new Set<OverlayEntry>();
  private bytesHeld = 0;
  private drainedWaiters: Array<() => void> = [];
  /**
   * Set when an answered write can never reach the file: it stays here (reads still return it), and
   * the volume refuses every change and flush from then on, whoever makes it (with or without hooks),
   * so that nothing written later is shadowed by it.
   */
  failure: Error | null = null;

  get size(): number {
    return this.entries.size;
  }

  get bytes(): number {
    return this.bytesHeld;
  }

  /** Keeps a copy of the write's bytes (the caller's buffers are reused once it is answered). */
  add(offset: number, pieces: Buffer[], length: number): OverlayEntry {
    const entry: OverlayEntry = { offset, data: Buffer.concat(pieces, length) };
    for (const e of this.entries) {
      invariant(e.offset + e.data.length <= offset || offset + length <= e.offset, 'deferred writes never overlap (their ranges are locked)');
    }
    this.entries.add(entry);
    this.bytesHeld += length;
    return entry;
  }

  /** The write can never reach the data file: it stays, and the volume fails (see `failure`). */
  fail(error: Error): void {
    this.failure ??= error;
  }

  /** The write reached the data file. */
  remove(entry: OverlayEntry): void {
    invariant(this.entries.delete(entry), 'an overlay entry is removed once');
    this.bytesHeld -= entry.data.length;
    if (this.entries.size === 0) for (const resolve of this.drainedWaiters.splice(0)) resolve();
  }

  /**
   * The entries a read of [offset, offset+length) must see, taken before the read starts: an entry
   * issued and removed while the file is read is still laid over what the read returns.
   */
  overlapping(offset: number, length: number): OverlayEntry[] {
    const out: OverlayEntry[] = [];
    for (const e of this.entries) if (e.offset < offset + length && offset < e.offset + e.data.length) out.push(e);
    return out;
  }

  /** Lays `entries` over `target`, which holds the volume's bytes from `offset`. */
  static lay(entries: OverlayEntry[], target: Buffer, offset: number): void {
    for (const e of entries) {
      const from = Math.max(offset, e.offset);
      const to = Math.min(offset + target.length, e.offset + e.data.length);
      if (from < to) e.data.copy(target, from - offset, from - e.offset, to - e.offset);
    }
  }

  /** Resolves once nothing is held. */
  drained(): Promise<void> {
    if (this.entries.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.drainedWaiters.push(resolve));
  }
}
