// Group commit for a file's fdatasync: calls made while a sync runs share one more sync after it,
// so a sync never covers less than what was written before it was asked for.

export class GroupSync {
  private running: Promise<void> | null = null;
  private queued: Promise<void> | null = null;

  constructor(private readonly syncNow: () => Promise<void>) {}

  sync(): Promise<void> {
    if (this.queued) return this.queued;
    if (!this.running) {
      this.running = this.syncNow().finally(() => {
        this.running = null;
      });
      return this.running;
    }
    const queued = this.running.catch(() => undefined).then(() => {
      this.queued = null;
      this.running = this.syncNow().finally(() => {
        this.running = null;
      });
      return this.running;
    });
    this.queued = queued;
    return queued;
  }
}
