// The manager client over the manager's HTTP API: the one place on the client side that knows its
// paths. Problem documents become TricopyErrors again; a manager that cannot be reached is an
// 'unavailable' error that says where the CLI looked.
import { TricopyError, isErrorCode } from '../common/errors';
import { readServerSentEvents } from '../common/sse';
import type {
  AddNodeRequest, Alert, AlertList, ArbiterBoard, ManagerEvent, ManagerEventList, ManagerInfo, NodeList, NodeRecord, PerfSample, ProcedureList, ProcedureRun,
  SampleList, StartProcedureRequest, StatusDocument, TopologyList, TopologyRecord,
} from '../contracts/manager';
import type {
  AddBackupPolicyRequest, AddBackupRepoRequest, BackupImageList, BackupImageView, BackupJobList, BackupJobRecord, BackupPolicyList, BackupPolicyView,
  BackupRepoList, BackupRepoRecord, StartRestoreRequest, BackupImageCheck, BackupImageCheckList, VerifyBackupsRequest,
} from '../contracts/backup';
import { verifyAnswerTimeoutMs } from '../backup/limits';
import { type NetworkFailbackResult, type NetworkFailoverResult, type NetworkList, type NetworkSample, type NetworkSampleList, type NetworkRecord, type NetworkStatusDocument, maxNetworkFailoverTimeoutMs } from '../contracts/managed-network';
import type { EventQuery, ManagerClient } from '../contracts/manager-client';

export const defaultManagerUrl = 'http://127.0.0.1:7900';
const defaultTimeoutMs = 60_000;

export class HttpManagerClient implements ManagerClient {
  readonly address: string;

  constructor(baseUrl: string, private readonly token?: string | undefined) {
    let url: URL;
    try {
      url = new URL(baseUrl);
    } catch {
      throw new TricopyError('invalid-argument', `"${baseUrl}" is not a manager URL`, 'write it like http://127.0.0.1:7900');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TricopyError('invalid-argument', `manager URL ${baseUrl} must start with http:// or https://`);
    this.address = url.toString().replace(/\/$/, '');
  }

  info(): Promise<ManagerInfo> {
    return this.request('GET', '/v1/manager');
  }

  status(): Promise<StatusDocument> {
    return this.request('GET', '/v1/status');
  }

  addNode(request: AddNodeRequest): Promise<NodeRecord> {
    return this.request('POST', '/v1/nodes', request);
  }

  async listNodes(): Promise<NodeRecord[]> {
    return (await this.request<NodeList>('GET', '/v1/nodes')).nodes;
  }

  addTopology(text: string): Promise<TopologyRecord> {
    return this.request('POST', '/v1/topologies', { text });
  }

  async listTopologies(): Promise<TopologyRecord[]> {
    return (await this.request<TopologyList>('GET', '/v1/topologies')).topologies;
  }

  arbiterBoard(topology: string): Promise<ArbiterBoard> {
    return this.request('GET', `/v1/topologies/${encodeURIComponent(topology)}/arbiter`);
  }

  async listEvents(query: EventQuery): Promise<ManagerEvent[]> {
    return (await this.request<ManagerEventList>('GET', `/v1/events?${eventQuery(query)}`)).events;
  }

  followEvents(query: EventQuery): AsyncIterable<ManagerEvent> {
    return this.stream<ManagerEvent>(`/v1/events?${eventQuery(query)}&stream=true`, () => false);
  }

  async listAlerts(options: { all?: boolean } = {}): Promise<Alert[]> {
    return (await this.request<AlertList>('GET', `/v1/alerts${options.all ? '?all=true' : ''}`)).alerts;
  }

  ackAlert(id: string, by?: string): Promise<Alert> {
    return this.request('POST', `/v1/alerts/${encodeURIComponent(id)}/ack`, by ? { by } : {});
  }

  startProcedure(request: StartProcedureRequest, startedBy = 'cli'): Promise<ProcedureRun> {
    return this.request('POST', '/v1/procedures', { ...request, startedBy });
  }

  getProcedure(id: string): Promise<ProcedureRun> {
    return this.request('GET', `/v1/procedures/${encodeURIComponent(id)}`);
  }

  async listProcedures(): Promise<ProcedureRun[]> {
    return (await this.request<ProcedureList>('GET', '/v1/procedures')).runs;
  }

  async *followProcedure(id: string, fromLine: number): AsyncIterable<string> {
    for await (const item of this.stream<string | { state: string }>(`/v1/procedures/${encodeURIComponent(id)}/output?from=${fromLine}`, (kind) => kind === 'end')) {
      if (typeof item === 'string') yield item;
    }
  }

  async samples(subject: string | undefined, sinceMs: number): Promise<PerfSample[]> {
    const q = `since=${Math.max(0, Math.floor(sinceMs))}${subject ? `&subject=${encodeURIComponent(subject)}` : ''}`;
    return (await this.request<SampleList>('GET', `/v1/samples?${q}`)).samples;
  }

  // --- managed backup --------------------------------------------------------------------------
  async listBackupRepos(): Promise<BackupRepoRecord[]> {
    return (await this.request<BackupRepoList>('GET', '/v1/backup/repos')).repos;
  }

  addBackupRepo(request: AddBackupRepoRequest): Promise<BackupRepoRecord> {
    return this.request('POST', '/v1/backup/repos', request);
  }

  async removeBackupRepo(name: string): Promise<void> {
    await this.request('DELETE', `/v1/backup/repos/${encodeURIComponent(name)}`);
  }

  async listBackupPolicies(): Promise<BackupPolicyView[]> {
    return (await this.request<BackupPolicyList>('GET', '/v1/backup/policies')).policies;
  }

  addBackupPolicy(request: AddBackupPolicyRequest): Promise<BackupPolicyView> {
    return this.request('POST', '/v1/backup/policies', request);
  }

  async removeBackupPolicy(name: string): Promise<void> {
    await this.request('DELETE', `/v1/backup/policies/${encodeURIComponent(name)}`);
  }

  runBackupPolicy(name: string, startedBy = 'cli'): Promise<BackupJobRecord> {
    return this.request('POST', `/v1/backup/policies/${encodeURIComponent(name)}/run`, { startedBy });
  }

  startRestore(request: StartRestoreRequest, startedBy = 'cli'): Promise<BackupJobRecord> {
    return this.request('POST', '/v1/backup/restores', { ...request, startedBy });
  }

  async listBackupJobs(limit?: number): Promise<BackupJobRecord[]> {
    return (await this.request<BackupJobList>('GET', `/v1/backup/jobs${limit !== undefined ? `?limit=${limit}` : ''}`)).jobs;
  }

  getBackupJob(id: string): Promise<BackupJobRecord> {
    return this.request('GET', `/v1/backup/jobs/${encodeURIComponent(id)}`);
  }

  async verifyBackups(request: VerifyBackupsRequest): Promise<BackupImageCheck[]> {
    return (await this.request<BackupImageCheckList>('POST', '/v1/backup/verify', request, verifyAnswerTimeoutMs)).images;
  }

  async listBackupImages(filter: { repo?: string; volume?: string } = {}): Promise<BackupImageView[]> {
    const q = new URLSearchParams(Object.entries(filter).filter((e): e is [string, string] => e[1] !== undefined)).toString();
    return (await this.request<BackupImageList>('GET', `/v1/backup/images${q ? `?${q}` : ''}`)).images;
  }

  // --- remote copy networks ------------------------------------------------------------------
  putNetwork(name: string, text: string): Promise<NetworkRecord> {
    return this.request('PUT', `/v1/networks/${encodeURIComponent(name)}`, { text });
  }

  async listNetworks(): Promise<NetworkRecord[]> {
    return (await this.request<NetworkList>('GET', '/v1/networks')).networks;
  }

  getNetwork(name: string): Promise<NetworkRecord> {
    return this.request('GET', `/v1/networks/${encodeURIComponent(name)}`);
  }

  async removeNetwork(name: string): Promise<void> {
    await this.request('DELETE', `/v1/networks/${encodeURIComponent(name)}`);
  }

  networkStatus(name: string): Promise<NetworkStatusDocument> {
    return this.request('GET', `/v1/networks/${encodeURIComponent(name)}/status`);
  }

  async networkSamples(name: string, options: { order?: string; sinceMs?: number } = {}): Promise<NetworkSample[]> {
    const q = new URLSearchParams();
    if (options.order !== undefined) q.set('order', options.order);
    if (options.sinceMs !== undefined) q.set('since', String(Math.floor(options.sinceMs)));
    const query = q.size > 0 ? `?${q.toString()}` : '';
    return (await this.request<NetworkSampleList>('GET', `/v1/networks/${encodeURIComponent(name)}/samples${query}`)).samples;
  }

  /** Waits as long as the target edge may (its timeout, or the order's failoverTimeout), and then some. */
  networkFailover(name: string, order: string, timeoutMs?: number, fast = false): Promise<NetworkFailoverResult> {
    return this.request('POST', `/v1/networks/${encodeURIComponent(name)}/orders/${encodeURIComponent(order)}/failover`,
      { ...(timeoutMs === undefined ? {} : { timeoutMs }), ...(fast ? { fast } : {}) }, (timeoutMs ?? maxNetworkFailoverTimeoutMs) + 90_000);
  }

  networkFailback(name: string, order: string): Promise<NetworkFailbackResult> {
    return this.request('POST', `/v1/networks/${encodeURIComponent(name)}/orders/${encodeURIComponent(order)}/failback`, {});
  }

  private headers(json: boolean, withBody = false): Record<string, string> {
    const h: Record<string, string> = { accept: json ? 'application/json' : 'text/event-stream' };
    // A DELETE or GET carries no body, so no content type (fastify refuses an empty JSON body).
    if (withBody) h['content-type'] = 'application/json';
    if (this.token) h.authorization = `Bearer ${this.token}`;
    return h;
  }

  /** Server-sent events: yields each event's data until the stream ends or `last(kind)` says so. */
  private async *stream<T>(path: string, last: (kind: string) => boolean): AsyncGenerator<T> {
    let response: Response;
    try {
      response = await fetch(`${this.address}${path}`, { headers: this.headers(false) });
    } catch (err) {
      throw this.unreachable(err);
    }
    if (!response.ok || !response.body) throw await this.failure(response);
    for await (const { kind, data } of readServerSentEvents(response.body)) {
      if (data) yield JSON.parse(data) as T;
      if (last(kind)) return;
    }
  }

  private async request<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = defaultTimeoutMs): Promise<T> {
    let response: Response;
    try {
      response = await fetch(`${this.address}${path}`, {
        method, headers: this.headers(true, body !== undefined), body: body === undefined ? null : JSON.stringify(body), signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw this.unreachable(err);
    }
    if (!response.ok) throw await this.failure(response);
    const text = await response.text();
    return (text === '' ? undefined : JSON.parse(text)) as T;
  }

  private unreachable(err: unknown): TricopyError {
    const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
    return new TricopyError('unavailable', `cannot reach the manager at ${this.address} (${cause})`,
      'is `tricopy manager run` running there? Set its URL with --manager URL or TRICOPY_MANAGER');
  }

  private async failure(response: Response): Promise<TricopyError> {
    let p: { code?: unknown; detail?: unknown; hint?: unknown } = {};
    try {
      p = JSON.parse(await response.text()) as typeof p;
    } catch {
      // not a problem document
    }
    return new TricopyError(isErrorCode(p.code) ? p.code : 'internal', typeof p.detail === 'string' ? p.detail : `manager answered HTTP ${response.status}`,
      typeof p.hint === 'string' ? p.hint : undefined);
  }
}

function eventQuery(q: EventQuery): string {
  const parts: string[] = [];
  if (q.since !== undefined) parts.push(`since=${Math.max(0, Math.floor(q.since))}`);
  if (q.afterSeq !== undefined) parts.push(`afterSeq=${q.afterSeq}`);
  if (q.limit !== undefined) parts.push(`limit=${q.limit}`);
  return parts.join('&');
}
