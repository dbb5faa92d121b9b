// The typed HTTP client of a relay's control API, for the CLI and the tests.
import { TricopyError, isErrorCode } from '../common/errors';
import type { NodeEvent } from '../contracts/node';
import type { RelayInfo, RelayNetworkConfig, RelayStatus, SuspendResult, FailbackResult, VirtualStorage, VirtualStoragesAnswer } from '../contracts/network';

export class HttpRelayClient {
  constructor(readonly address: string, private readonly timeoutMs = 30_000) {
    this.address = address.replace(/\/+$/, '');
  }

  info(): Promise<RelayInfo> {
    return this.request('GET', '/v1/relay');
  }

  status(): Promise<RelayStatus> {
    return this.request('GET', '/v1/status');
  }

  /** The virtual storages this edge presents (§9.50). */
  virtualStorages(): Promise<VirtualStoragesAnswer> {
    return this.request('GET', '/v1/virtual-storages');
  }

  /** A configuration query to one virtual storage (§9.55). */
  virtualStorage(wwn: string): Promise<VirtualStorage> {
    return this.request('GET', `/v1/virtual-storages/${encodeURIComponent(wwn)}`);
  }

  network(): Promise<RelayNetworkConfig> {
    return this.request('GET', '/v1/network');
  }

  apply(config: RelayNetworkConfig): Promise<RelayInfo> {
    return this.request('PUT', '/v1/network', config);
  }

  bind(pair: string, order: string): Promise<{ name: string; order: string }> {
    return this.request('POST', '/v1/pairs', { name: pair, order });
  }

  failover(order: string, timeoutMs?: number, fast = false): Promise<SuspendResult> {
    return this.request('POST', `/v1/orders/${encodeURIComponent(order)}/failover`, { ...(timeoutMs === undefined ? {} : { timeoutMs }), ...(fast ? { fast } : {}) },
      (timeoutMs ?? 30_000) + 30_000);
  }

  /** Discards what a fast failover of `order` has not applied yet (§6.9, E-21). */
  discardResidual(order: string): Promise<SuspendResult> {
    return this.request('POST', `/v1/orders/${encodeURIComponent(order)}/residual/discard`, {}, 120_000);
  }

  failback(order: string): Promise<FailbackResult> {
    return this.request('POST', `/v1/orders/${encodeURIComponent(order)}/failback`, {});
  }

  async events(after = 0): Promise<NodeEvent[]> {
    return (await this.request<{ events: NodeEvent[] }>('GET', `/v1/events?after=${after}`)).events;
  }

  async metricsText(): Promise<string> {
    const response = await fetch(`${this.address}/metrics`, { signal: AbortSignal.timeout(this.timeoutMs) }).catch(() => {
      throw new TricopyError('unavailable', `cannot reach relay at ${this.address}`);
    });
    return response.text();
  }

  private async request<T>(method: 'GET' | 'PUT' | 'POST', path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.address}${path}`, {
        method, headers: { accept: 'application/json', ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        body: body === undefined ? null : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new TricopyError('unavailable', `cannot reach relay at ${this.address} (${cause})`, 'is `tricopy edge run` running there? Check the api URL in the network file');
    }
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new TricopyError('internal', `relay at ${this.address} answered ${response.status} with a body that is not JSON`);
    }
    if (!response.ok) {
      const p = (parsed ?? {}) as { code?: unknown; detail?: unknown; hint?: unknown };
      throw new TricopyError(isErrorCode(p.code) ? p.code : 'internal', typeof p.detail === 'string' ? p.detail : `HTTP ${response.status}`, typeof p.hint === 'string' ? p.hint : undefined);
    }
    return parsed as T;
  }
}
