// The leader's single writer: every change of the store (events, alerts, node state, runs) goes
// through one queue, so sequence numbers, alert keys and read-modify-write steps never interleave.
// A change is collected in a transaction (operations, events, alert changes), committed as one
// batch, then published: live event followers and webhooks hear of it only once it is stored.
import type { AlertChange } from './alerts';
import type { AlertBook } from './alerts';
import type { EventHistory, NewEvent } from './history';
import type { ManagerStore } from './store/collections';
import type { KvOp } from './store/kv';
import type { Webhooks } from './webhooks';

export class Tx {
  readonly ops: KvOp[] = [];
  readonly events: NewEvent[] = [];
  readonly alertChanges: AlertChange[] = [];

  event(e: NewEvent): void {
    this.events.push(e);
  }

  alert(change: AlertChange | null): void {
    if (change === null) return;
    this.alertChanges.push(change);
    this.ops.push(...change.ops);
    const a = change.alert;
    this.events.push({
      kind: `alert-${change.change}`, node: a.reportedBy, subject: a.copy ?? a.subject, reason: `alert ${a.id} (${a.kind}): ${a.message}`,
      details: { alert: a.id, key: a.key, state: a.state },
    });
  }
}

export class Writer {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(private readonly store: ManagerStore, private readonly history: EventHistory, private readonly alerts: AlertBook,
    private readonly webhooks: Webhooks, private readonly managerId: () => string, private readonly onFailure: () => Promise<void>) {}

  run<T>(fn: (tx: Tx) => Promise<T>): Promise<T> {
    const next = this.chain.then(async () => {
      const tx = new Tx();
      const result = await fn(tx);
      const { events, ops } = this.history.prepare(tx.events);
      try {
        await this.store.commit([...tx.ops, ...ops]);
      } catch (err) {
        // Memory ran ahead of the store (numbers given out, alerts changed): take it back from the store.
        await this.history.rollback();
        await this.alerts.load();
        await this.onFailure();
        throw err;
      }
      this.history.published(events);
      for (const c of tx.alertChanges) {
        const type = c.change === 'opened' ? 'alert-opened' : c.change === 'updated' ? 'alert-updated' : c.change === 'acknowledged' ? 'alert-acknowledged' : 'alert-closed';
        this.webhooks.notify({ type, manager: this.managerId(), alert: c.alert });
      }
      return result;
    });
    this.chain = next.catch(() => undefined);
    return next;
  }
}
