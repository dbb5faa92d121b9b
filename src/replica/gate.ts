// Who may change a volume now. Every change (and every read of a replica or snapshot that may fall
// through to the volume) passes the gate; a state change (a split, a snapshot, a resync starting)
// holds it: new changes wait at the gate and those in flight finish, so the state change happens
// between two changes, never during one. That is what makes a split or a snapshot one instant.

export class Gate {
  private inFlight = 0;
  /** Resolves when the holder lets go; null while open. */
  private held: Promise<void> | null = null;
  private drained: (() => void) | null = null;
  /** Holders queue here, one at a time. */
  private holders: Promise<void> = Promise.resolve();

  /** Undefined when the change may go at once (the common case, without an await). */
  enter(): Promise<void> | undefined {
    if (this.held === null) {
      this.inFlight++;
      return undefined;
    }
    return this.enterLater();
  }

  leave(): void {
    this.inFlight--;
    if (this.inFlight === 0 && this.drained) {
      const resolve = this.drained;
      this.drained = null;
      resolve();
    }
  }

  get busy(): number {
    return this.inFlight;
  }

  /** Waits for earlier holders, closes the gate and waits until nothing is in flight; returns the release. */
  async hold(): Promise<() => void> {
    let releaseHolder!: () => void;
    const previous = this.holders;
    this.holders = new Promise<void>((resolve) => (releaseHolder = resolve));
    await previous;
    let open!: () => void;
    this.held = new Promise<void>((resolve) => (open = resolve));
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held = null;
      open();
      releaseHolder();
    };
  }

  /** Runs `fn` with the gate held. */
  async exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const release = await this.hold();
    try {
      return await fn();
    } finally {
      release();
    }
  }

  private async enterLater(): Promise<void> {
    while (this.held !== null) await this.held;
    this.inFlight++;
  }
}

/**
 * Holds several gates at once, in the order given (primaries before the replicas they write into,
 * so a change in flight on a primary can still finish its copy on the replica).
 */
export async function holdAll(gates: Array<{ hold(): Promise<() => void> }>): Promise<() => void> {
  const releases: Array<() => void> = [];
  try {
    for (const gate of gates) releases.push(await gate.hold());
  } catch (err) {
    for (const release of releases.reverse()) release();
    throw err;
  }
  return () => {
    for (const release of releases.reverse()) release();
  };
}
