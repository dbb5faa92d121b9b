// Alerts: opened by failure reports (and by a node the manager cannot reach), at most one not
// closed per key (a repeated report updates it, never opens a second), acknowledged by an operator,
// closed when the copy is healthy again. The lifecycle is an explicit table; each change is
// stored with the event that records it and handed to the notifier (webhooks).
import type { Clock } from '../common/clock';
import { TricopyError } from '../common/errors';
import type { Alert, AlertKind, AlertSeverity, AlertState } from '../contracts/manager';
import type { CopyReport } from '../contracts/monitor';
import type { KvOp } from './store/kv';
import type { ManagerStore } from './store/collections';

export type AlertAction = 'raise' | 'ack' | 'clear';

/** The lifecycle: what each action does in each state (absent: refused or nothing to do). */
export const alertTransitions: Record<AlertState, Partial<Record<AlertAction, AlertState>>> = {
  open: { raise: 'open', ack: 'acknowledged', clear: 'closed' },
  acknowledged: { raise: 'acknowledged', clear: 'closed' },
  closed: {},
};

export interface AlertInput {
  key: string;
  kind: AlertKind;
  severity: AlertSeverity;
  subject: string;
  message: string;
  copy: string | null;
  reportedBy: string | null;
  topology: string | null;
  report: CopyReport | null;
}

export interface AlertChange {
  alert: Alert;
  change: 'opened' | 'updated' | 'acknowledged' | 'closed';
  ops: KvOp[];
}

export class AlertBook {
  /** Alerts not closed, by key (the leader's working set; the store holds them all). */
  private readonly active = new Map<string, Alert>();
  private nextId = 1;

  constructor(private readonly store: ManagerStore, private readonly clock: Clock) {}

  async load(): Promise<void> {
    this.active.clear();
    this.nextId = 1;
    for (const a of await this.store.listAlerts()) {
      this.nextId = Math.max(this.nextId, Number(a.id) + 1);
      if (a.state !== 'closed') this.active.set(a.key, a);
    }
  }

  openCount(): number {
    return [...this.active.values()].filter((a) => a.state === 'open').length;
  }

  activeAlerts(): Alert[] {
    return [...this.active.values()];
  }

  /** A failure: opens an alert for the key, or updates the one not yet closed. */
  raise(input: AlertInput): AlertChange {
    const now = this.now();
    const existing = this.active.get(input.key);
    if (existing) {
      const updated: Alert = {
        ...existing, state: alertTransitions[existing.state].raise!, message: input.message, updatedAt: now, reports: existing.reports + (input.report ? 1 : 0),
        lastReport: input.report ?? existing.lastReport, reportedBy: input.reportedBy ?? existing.reportedBy,
      };
      this.active.set(input.key, updated);
      return { alert: updated, change: 'updated', ops: [this.store.putAlert(updated)] };
    }
    const alert: Alert = {
      id: String(this.nextId++), key: input.key, kind: input.kind, severity: input.severity, state: 'open', subject: input.subject, message: input.message,
      copy: input.copy, reportedBy: input.reportedBy, topology: input.topology, openedAt: now, updatedAt: now, acknowledgedAt: null,
      acknowledgedBy: null, closedAt: null, reports: input.report ? 1 : 0, lastReport: input.report,
    };
    this.active.set(input.key, alert);
    return { alert, change: 'opened', ops: [this.store.putAlert(alert)] };
  }

  /** Healthy again: closes the key's alert, if one is open or acknowledged. */
  clear(key: string, why: string): AlertChange | null {
    const existing = this.active.get(key);
    if (!existing) return null;
    const now = this.now();
    const closed: Alert = { ...existing, state: alertTransitions[existing.state].clear!, closedAt: now, updatedAt: now, message: `${existing.message} — cleared: ${why}` };
    this.active.delete(key);
    return { alert: closed, change: 'closed', ops: [this.store.putAlert(closed)] };
  }

  /** An operator saw it; an alert already acknowledged stays as it is. */
  async ack(id: string, by: string): Promise<AlertChange> {
    const alert = [...this.active.values()].find((a) => a.id === id) ?? (await this.store.getAlert(id));
    if (!alert) throw new TricopyError('not-found', `no alert ${id}`, 'list them with: tricopy manager alerts');
    if (alert.state === 'acknowledged') return { alert, change: 'acknowledged', ops: [] };
    const next = alertTransitions[alert.state].ack;
    if (next === undefined) throw new TricopyError('conflict', `alert ${id} is already closed (${alert.closedAt ?? ''})`, 'closed alerts need no acknowledgement');
    const now = this.now();
    const acked: Alert = { ...alert, state: next, acknowledgedAt: now, acknowledgedBy: by, updatedAt: now };
    this.active.set(acked.key, acked);
    return { alert: acked, change: 'acknowledged', ops: [this.store.putAlert(acked)] };
  }

  private now(): string {
    return new Date(this.clock.now()).toISOString();
  }
}
