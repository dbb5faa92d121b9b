// HTTP client of the node control API, used by the CLI and by nodes talking to their peers. Turns
// problem documents back into TricopyErrors and network failures into errors that say what to check.
import { TricopyError, isErrorCode } from '../common/errors';

export const defaultApiTimeoutMs = 30_000;

export class ApiClient {
  readonly baseUrl: string;

  constructor(baseUrl: string, private readonly token?: string | undefined, private readonly timeoutMs = defaultApiTimeoutMs) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new TricopyError('invalid-argument', `"${baseUrl}" is not a node URL`, 'write it like http://127.0.0.1:7801');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      throw new TricopyError('invalid-argument', `node URL ${baseUrl} must start with http:// or https://`);
    }
    this.baseUrl = url.toString().replace(/\/$/, '');
  }

  get<T>(path: string, timeoutMs?: number): Promise<T> {
    return this.request<T>('GET', path, undefined, timeoutMs);
  }

  post<T>(path: string, body?: unknown, timeoutMs?: number): Promise<T> {
    return this.request<T>('POST', path, body ?? {}, timeoutMs);
  }

  delete<T>(path: string): Promise<T> {
    return this.request<T>('DELETE', path);
  }

  /** Server-sent events from `path`: yields each event's JSON data until the stream ends. */
  async *events<T>(path: string): AsyncGenerator<T> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, { headers });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new TricopyError('unavailable', `cannot reach node at ${this.baseUrl} (${cause})`);
    }
    if (!response.ok || !response.body) throw new TricopyError('unavailable', `node at ${this.baseUrl} refused the event stream (${response.status})`);
    const decoder = new TextDecoder();
    let buffered = '';
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      buffered += decoder.decode(chunk, { stream: true });
      let end: number;
      while ((end = buffered.indexOf('\n\n')) >= 0) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        const data = block.split('\n').filter((l) => l.startsWith('data: ')).map((l) => l.slice(6)).join('\n');
        if (data) yield JSON.parse(data) as T;
      }
    }
  }

  async request<T>(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') {
        throw new TricopyError('unavailable', `node at ${this.baseUrl} did not answer ${method} ${path} within ${timeoutMs} ms`);
      }
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new TricopyError('unavailable', `cannot reach node at ${this.baseUrl} (${cause})`,
        'is `tricopy node run` running there? Set the URL with --node or TRICOPY_NODE');
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new TricopyError('internal', `node at ${this.baseUrl} answered ${response.status} with a body that is not JSON`);
    }
    if (!response.ok) {
      const p = (parsed ?? {}) as { code?: unknown; detail?: unknown; hint?: unknown };
      const code = isErrorCode(p.code) ? p.code : 'internal';
      throw new TricopyError(code, typeof p.detail === 'string' ? p.detail : `HTTP ${response.status}`,
        typeof p.hint === 'string' ? p.hint : undefined);
    }
    return parsed as T;
  }
}
