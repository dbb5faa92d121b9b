// Serialises overlapping operations on a volume: a host write, a copy of a region, a journal read
// at ship time. Overlapping writes in flight together could otherwise land in different orders on
// the two sides of a pair and leave them different while both acknowledged.

interface Held {
  start: number;
  end: number;
  released: Promise<void>;
}

export class RangeLock {
  private readonly held = new Set<Held>();

  get activeCount(): number {
    return this.held.size;
  }

  /** Waits until no held range overlaps [offset, offset+length), takes it, returns its release. */
  async acquire(offset: number, length: number): Promise<() => void> {
    const start = offset;
    const end = offset + Math.max(length, 1);
    for (;;) {
      let blocker: Held | undefined;
      for (const h of this.held) {
        if (h.start < end && start < h.end) {
          blocker = h;
          break;
        }
      }
      if (!blocker) break;
      await blocker.released;
    }
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    const entry: Held = { start, end, released };
    this.held.add(entry);
    return () => {
      this.held.delete(entry);
      release();
    };
  }

  /** Resolves when nothing is held (quiesce before a role swap). */
  async idle(): Promise<void> {
    while (this.held.size > 0) await Promise.all([...this.held].map((h) => h.released));
  }
}
