// Alert notifications to webhooks: each change of an alert is POSTed as JSON to every configured
// URL, retried with back-off (1 s doubling, five tries) while the receiver fails, in the order
// the changes happened. Delivery is best effort: pending notifications live in memory only, and
// the alert itself is always in the store.
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { Alert } from '../contracts/manager';

export const webhookTries = 5;
export const webhookFirstRetryMs = 1000;
export const webhookTimeoutMs = 5000;

export interface AlertNotification {
  type: 'alert-opened' | 'alert-updated' | 'alert-acknowledged' | 'alert-closed';
  manager: string;
  alert: Alert;
}

export class Webhooks {
  private chain: Promise<void> = Promise.resolve();
  delivered = 0;
  failed = 0;

  constructor(private readonly urls: string[], private readonly log: Logger) {}

  notify(n: AlertNotification): void {
    if (this.urls.length === 0) return;
    this.chain = this.chain.then(() => Promise.all(this.urls.map((u) => this.deliver(u, n)))).then(() => undefined);
  }

  private async deliver(url: string, n: AlertNotification): Promise<void> {
    let delay = webhookFirstRetryMs;
    for (let attempt = 1; attempt <= webhookTries; attempt++) {
      try {
        const response = await fetch(url, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(n), signal: AbortSignal.timeout(webhookTimeoutMs),
        });
        if (response.ok) {
          this.delivered++;
          return;
        }
        throw new Error(`HTTP ${response.status}`);
      } catch (err) {
        if (attempt === webhookTries) {
          this.failed++;
          this.log.warn({ url, alert: n.alert.id, err: errorMessage(err) }, 'webhook gave up');
          return;
        }
        await new Promise((r) => setTimeout(r, delay).unref());
        delay *= 2;
      }
    }
  }
}
