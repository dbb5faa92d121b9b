// A lock over ranges of fixed-size units (first-come, first-served per unit): while a volume is
// relocated, the background copy of a chunk and the host writes that touch it take turns, so a
// chunk is never copied with a write half landed, and two overlapping writes reach both files in
// the same order.
export class RangeLock {
  /** Per unit: the release of its last holder (absent: free). */
  private readonly tails = new Map<number, Promise<void>>();

  constructor(readonly unitBytes: number) {}

  /** Units [first, first + count) of the byte range. */
  unitsOf(offset: number, length: number): { first: number; count: number } {
    const first = Math.floor(offset / this.unitBytes);
    const last = Math.floor((offset + Math.max(1, length) - 1) / this.unitBytes);
    return { first, count: last - first + 1 };
  }

  /** Resolves with the release once every earlier holder of an overlapping unit released it. */
  acquire(offset: number, length: number): Promise<() => void> {
    const { first, count } = this.unitsOf(offset, length);
    const before: Promise<void>[] = [];
    let release!: () => void;
    const mine = new Promise<void>((resolve) => (release = resolve));
    // All units are taken in one synchronous step: no two holders can each wait on the other.
    for (let u = first; u < first + count; u++) {
      const tail = this.tails.get(u);
      if (tail) before.push(tail);
      this.tails.set(u, mine);
    }
    const done = (): void => {
      for (let u = first; u < first + count; u++) if (this.tails.get(u) === mine) this.tails.delete(u);
      release();
    };
    if (before.length === 0) return Promise.resolve(done);
    return Promise.all(before).then(() => done);
  }

  /** Units held or waited for now (tests and invariants). */
  get busyUnits(): number {
    return this.tails.size;
  }
}
