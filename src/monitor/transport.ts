// How the monitor's messages leave the node: commands and reports to a neighbouring node's control
// API, and reports and pushed events to the manager (the first of its addresses that answers).
// The interface is what the monitor needs; the HTTP implementation is the only place on the node
// side that knows these paths of the node and manager APIs.
import { TricopyError, isErrorCode } from '../common/errors';
import type { CommandResult, IngestBatch, MonitorCommand, ReportBatch } from '../contracts/monitor';

export interface MonitorTransport {
  /** Relays a command to the next node of its path; resolves with that node's answer. */
  sendCommand(url: string, command: MonitorCommand): Promise<CommandResult>;
  /** Relays reports to a neighbouring node (the receiver takes the sender from each report's lastHop). */
  sendReportsToNode(url: string, batch: ReportBatch): Promise<void>;
  /** Delivers reports to the manager; resolves with the address that took them. */
  sendReportsToManager(urls: string[], token: string | undefined, batch: ReportBatch): Promise<string>;
  /** Pushes a snapshot and events to the manager; resolves with the address that took them. */
  ingest(urls: string[], token: string | undefined, batch: IngestBatch): Promise<string>;
}

/** A relay hop or a push that takes longer than this counts as failed (and is retried). */
export const monitorRequestTimeoutMs = 10_000;

export class HttpMonitorTransport implements MonitorTransport {
  /** The manager address that answered last: tried first next time. */
  private preferred = '';

  /** `nodeToken`: the bearer token this node presents to its neighbours (nodes of one cluster share it). */
  constructor(private readonly nodeToken: string | undefined) {}

  sendCommand(url: string, command: MonitorCommand): Promise<CommandResult> {
    return post<CommandResult>(url, '/v1/monitor/commands', command, this.nodeToken);
  }

  async sendReportsToNode(url: string, batch: ReportBatch): Promise<void> {
    await post(url, '/v1/monitor/reports', batch, this.nodeToken);
  }

  sendReportsToManager(urls: string[], token: string | undefined, batch: ReportBatch): Promise<string> {
    return this.toManager(urls, '/v1/reports', batch, token);
  }

  ingest(urls: string[], token: string | undefined, batch: IngestBatch): Promise<string> {
    return this.toManager(urls, '/v1/ingest', batch, token);
  }

  private async toManager(urls: string[], path: string, body: unknown, token: string | undefined): Promise<string> {
    if (urls.length === 0) throw new TricopyError('unavailable', 'no manager is registered on this node', 'run: tricopy manager node add <this node\'s URL>');
    const ordered = urls.includes(this.preferred) ? [this.preferred, ...urls.filter((u) => u !== this.preferred)] : urls;
    let last: unknown;
    for (const url of ordered) {
      try {
        await post(url, path, body, token);
        this.preferred = url;
        return url;
      } catch (err) {
        last = err;
      }
    }
    throw last;
  }
}

async function post<T>(base: string, path: string, body: unknown, token: string | undefined): Promise<T> {
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  let response: Response;
  try {
    response = await fetch(`${base.replace(/\/$/, '')}${path}`, {
      method: 'POST', headers, body: JSON.stringify(body), signal: AbortSignal.timeout(monitorRequestTimeoutMs),
    });
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    throw new TricopyError('unavailable', `cannot reach ${base} (${cause})`);
  }
  const text = await response.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!response.ok) {
    const p = (parsed ?? {}) as { code?: unknown; detail?: unknown; hint?: unknown };
    throw new TricopyError(isErrorCode(p.code) ? p.code : 'unavailable', typeof p.detail === 'string' ? `${base}: ${p.detail}` : `${base} answered HTTP ${response.status}`,
      typeof p.hint === 'string' ? p.hint : undefined);
  }
  return parsed as T;
}
