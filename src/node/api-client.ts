// The node client over the node's HTTP control API: the one place that knows the API's paths.
// Turns problem documents back into TricopyErrors and network failures into errors that say what
// to check, so callers see the same failures an in-process node would give them.
import { TricopyError, isErrorCode } from '../common/errors';
import { readServerSentEvents } from '../common/sse';
import type {
  AccessRuleRequest, CreateVolumeRequest, EventList, NodeEvent, NodeInfo, RelocateVolumeRequest, ResizeVolumeRequest, VolumeList, VolumeView,
} from '../contracts/node';
import type {
  CallOptions, CloneNodeClient, DeleteOptions, HostGroupNodeClient, NodeClient, NodeMonitorClient, RelocationNodeClient, ReplicaNodeClient, ResidualNodeClient,
} from '../contracts/node-client';
import type { CloneSetList, CloneSetView, CreateCloneSetRequest, DeleteCloneSetRequest, DeletedCloneSet } from '../contracts/clones';
import type { CreateHostGroupRequest, HostGroupChange, HostGroupList, HostGroupMembersRequest, HostGroupView, MapVolumeRequest } from '../contracts/host-groups';
import type {
  BitmapList, BitmapView, CreateReplicaRequest, CreateSnapshotRequest, DeleteReplicaOptions, ForceRequest, ReplicaList, ReplicaStatus,
  ReplicaWaitState, RollbackRequest, SnapshotList, SnapshotView, SplitReplicaRequest,
} from '../contracts/replicas';
import type { FailoverConfig, FailoverList, FailoverStatus } from '../contracts/failover';
import type { CommandResult, ManagerBinding, MonitorCommand, MonitorStatus, RegisterManagerRequest, ReportAck, ReportBatch } from '../contracts/monitor';
import type { NetworkAttachment } from '../contracts/network';
import type {
  CreatePairRequest, DiscardRequest, GroupList, GroupStatus, PairList, PairState, PairStatus, ProtectionRequest, ResidualHoldView, SplitRequest, VerifyRequest,
} from '../contracts/pairs';

export const defaultApiTimeoutMs = 30_000;
/** A wait request is answered by the node at its deadline; the connection may take a little longer. */
const waitSlackMs = 10_000;

const volumePath = (name: string): string => `/v1/volumes/${encodeURIComponent(name)}`;
const pairPath = (name: string): string => `/v1/pairs/${encodeURIComponent(name)}`;
const replicaPath = (name: string): string => `/v1/replicas/${encodeURIComponent(name)}`;
const hostGroupPath = (name: string): string => `/v1/host-groups/${encodeURIComponent(name)}`;
const forceQuery = (options?: DeleteOptions): string => (options?.force ? '?force=true' : '');

export class HttpNodeClient implements NodeClient, ResidualNodeClient, NodeMonitorClient, ReplicaNodeClient, HostGroupNodeClient, CloneNodeClient, RelocationNodeClient {
  readonly address: string;

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
    this.address = url.toString().replace(/\/$/, '');
  }

  nodeInfo(options?: CallOptions): Promise<NodeInfo> {
    return this.request('GET', '/v1/node', undefined, options?.timeoutMs);
  }

  /** Host writes held for residual entries of fast failovers (spec 002 E-21). */
  async residualHolds(): Promise<ResidualHoldView[]> {
    return (await this.request<{ holds: ResidualHoldView[] }>('GET', '/v1/residual-holds')).holds;
  }

  /** Lets host writes go on, discarding the residual entries of `order` not applied yet. */
  async releaseResidual(order: string): Promise<ResidualHoldView[]> {
    return (await this.request<{ holds: ResidualHoldView[] }>('POST', `/v1/residual-holds/${encodeURIComponent(order)}/release`, {})).holds;
  }

  async listVolumes(): Promise<VolumeView[]> {
    return (await this.request<VolumeList>('GET', '/v1/volumes')).volumes;
  }

  getVolume(name: string): Promise<VolumeView> {
    return this.request('GET', volumePath(name));
  }

  createVolume(request: CreateVolumeRequest): Promise<VolumeView> {
    return this.request('POST', '/v1/volumes', request);
  }

  resizeVolume(name: string, request: ResizeVolumeRequest): Promise<VolumeView> {
    return this.request('POST', `${volumePath(name)}/resize`, request);
  }

  relocateVolume(name: string, request: RelocateVolumeRequest): Promise<VolumeView> {
    return this.request('POST', `${volumePath(name)}/relocate`, request);
  }

  allow(name: string, rule: AccessRuleRequest): Promise<VolumeView> {
    return this.request('POST', `${volumePath(name)}/allow`, rule);
  }

  disallow(name: string, rule: AccessRuleRequest): Promise<VolumeView> {
    return this.request('POST', `${volumePath(name)}/disallow`, rule);
  }

  deleteVolume(name: string, options?: DeleteOptions): Promise<void> {
    return this.request('DELETE', `${volumePath(name)}${forceQuery(options)}`);
  }

  async listPairs(): Promise<PairStatus[]> {
    return (await this.request<PairList>('GET', '/v1/pairs')).pairs;
  }

  getPair(name: string): Promise<PairStatus> {
    return this.request('GET', pairPath(name));
  }

  createPair(request: CreatePairRequest): Promise<PairStatus> {
    return this.request('POST', '/v1/pairs', request);
  }

  waitPair(name: string, state: PairState, timeoutMs: number): Promise<PairStatus> {
    return this.request('GET', `${pairPath(name)}/wait?state=${state}&timeoutMs=${timeoutMs}`, undefined, timeoutMs + waitSlackMs);
  }

  split(name: string, request: SplitRequest = {}, options?: CallOptions): Promise<PairStatus> {
    return this.request('POST', `${pairPath(name)}/split`, request, options?.timeoutMs);
  }

  resync(name: string, request: DiscardRequest = {}): Promise<PairStatus> {
    return this.request('POST', `${pairPath(name)}/resync`, request);
  }

  setProtection(name: string, request: ProtectionRequest): Promise<PairStatus> {
    return this.request('POST', `${pairPath(name)}/protection`, request);
  }

  verify(name: string, request: VerifyRequest = {}): Promise<PairStatus> {
    return this.request('POST', `${pairPath(name)}/verify`, request);
  }

  cancelVerify(name: string): Promise<PairStatus> {
    return this.request('DELETE', `${pairPath(name)}/verify`);
  }

  async takeover(name: string, options?: CallOptions): Promise<PairStatus[]> {
    return (await this.request<PairList>('POST', `${pairPath(name)}/takeover`, {}, options?.timeoutMs)).pairs;
  }

  async swap(name: string, request: DiscardRequest = {}, options?: CallOptions): Promise<PairStatus[]> {
    return (await this.request<PairList>('POST', `${pairPath(name)}/swap`, request, options?.timeoutMs)).pairs;
  }

  deletePair(name: string, options?: DeleteOptions): Promise<void> {
    const query = [options?.force ? 'force=true' : '', options?.keepReadOnly ? 'keepReadOnly=true' : ''].filter(Boolean).join('&');
    return this.request('DELETE', `${pairPath(name)}${query ? `?${query}` : ''}`);
  }

  /** Lets hosts write a volume a topology procedure left read-only (a former secondary). */
  makeWritable(volume: string): Promise<VolumeView> {
    return this.request('POST', `${volumePath(volume)}/make-writable`, {});
  }

  async listGroups(): Promise<GroupStatus[]> {
    return (await this.request<GroupList>('GET', '/v1/groups')).groups;
  }

  getGroup(name: string): Promise<GroupStatus> {
    return this.request('GET', `/v1/groups/${encodeURIComponent(name)}`);
  }

  async listEvents(after: number): Promise<NodeEvent[]> {
    return (await this.request<EventList>('GET', `/v1/events?after=${after}`)).events;
  }

  followEvents(after: number): AsyncIterable<NodeEvent> {
    return this.serverSentEvents<NodeEvent>(`/v1/events?after=${after}&stream=true`);
  }

  async listReplicas(): Promise<ReplicaStatus[]> {
    return (await this.request<ReplicaList>('GET', '/v1/replicas')).replicas;
  }

  getReplica(name: string): Promise<ReplicaStatus> {
    return this.request('GET', replicaPath(name));
  }

  createReplica(request: CreateReplicaRequest): Promise<ReplicaStatus> {
    return this.request('POST', '/v1/replicas', request);
  }

  splitReplica(name: string, request: SplitReplicaRequest = {}): Promise<ReplicaStatus> {
    return this.request('POST', `${replicaPath(name)}/split`, request);
  }

  resyncReplica(name: string, request: ForceRequest = {}): Promise<ReplicaStatus> {
    return this.request('POST', `${replicaPath(name)}/resync`, request);
  }

  restoreReplica(name: string, request: ForceRequest = {}): Promise<ReplicaStatus> {
    return this.request('POST', `${replicaPath(name)}/restore`, request);
  }

  deleteReplica(name: string, options: DeleteReplicaOptions = {}): Promise<void> {
    const query = [options.deleteVolume ? 'deleteVolume=true' : '', options.force ? 'force=true' : ''].filter(Boolean).join('&');
    return this.request('DELETE', `${replicaPath(name)}${query ? `?${query}` : ''}`);
  }

  waitReplica(name: string, state: ReplicaWaitState, timeoutMs: number): Promise<ReplicaStatus> {
    return this.request('GET', `${replicaPath(name)}/wait?state=${state}&timeoutMs=${timeoutMs}`, undefined, timeoutMs + waitSlackMs);
  }

  async listSnapshots(volume?: string): Promise<SnapshotView[]> {
    return (await this.request<SnapshotList>('GET', volume === undefined ? '/v1/snapshots' : `${volumePath(volume)}/snapshots`)).snapshots;
  }

  async createSnapshot(request: CreateSnapshotRequest): Promise<SnapshotView[]> {
    return (await this.request<SnapshotList>('POST', '/v1/snapshots', request)).snapshots;
  }

  deleteSnapshot(volume: string, name: string): Promise<void> {
    return this.request('DELETE', `${volumePath(volume)}/snapshots/${encodeURIComponent(name)}`);
  }

  async listCloneSets(): Promise<CloneSetView[]> {
    return (await this.request<CloneSetList>('GET', '/v1/clones')).cloneSets;
  }

  createCloneSet(request: CreateCloneSetRequest): Promise<CloneSetView> {
    return this.request('POST', '/v1/clones', request);
  }

  endCloneSet(name: string, request: DeleteCloneSetRequest = {}): Promise<DeletedCloneSet> {
    return this.request('POST', `/v1/clones/${encodeURIComponent(name)}/end`, request);
  }

  rollback(volume: string, request: RollbackRequest): Promise<SnapshotView> {
    return this.request('POST', `${volumePath(volume)}/rollback`, request);
  }

  async listBitmaps(volume: string): Promise<BitmapView[]> {
    return (await this.request<BitmapList>('GET', `${volumePath(volume)}/bitmaps`)).bitmaps;
  }

  addBitmap(volume: string, name: string): Promise<BitmapView> {
    return this.request('POST', `${volumePath(volume)}/bitmaps`, { name });
  }

  clearBitmap(volume: string, name: string): Promise<BitmapView> {
    return this.request('POST', `${volumePath(volume)}/bitmaps/${encodeURIComponent(name)}/clear`, {});
  }

  deleteBitmap(volume: string, name: string): Promise<void> {
    return this.request('DELETE', `${volumePath(volume)}/bitmaps/${encodeURIComponent(name)}`);
  }

  async listHostGroups(): Promise<HostGroupView[]> {
    return (await this.request<HostGroupList>('GET', '/v1/host-groups')).hostGroups;
  }

  getHostGroup(name: string): Promise<HostGroupView> {
    return this.request('GET', hostGroupPath(name));
  }

  createHostGroup(request: CreateHostGroupRequest): Promise<HostGroupView> {
    return this.request('POST', '/v1/host-groups', request);
  }

  addHostGroupMembers(name: string, request: HostGroupMembersRequest): Promise<HostGroupView> {
    return this.request('POST', `${hostGroupPath(name)}/add`, request);
  }

  removeHostGroupMembers(name: string, request: HostGroupMembersRequest): Promise<HostGroupChange> {
    return this.request('POST', `${hostGroupPath(name)}/remove`, request);
  }

  deleteHostGroup(name: string): Promise<void> {
    return this.request('DELETE', hostGroupPath(name));
  }

  mapVolume(volume: string, request: MapVolumeRequest): Promise<HostGroupChange> {
    return this.request('POST', `${volumePath(volume)}/map`, request);
  }

  unmapVolume(volume: string, hostGroup: string): Promise<HostGroupChange> {
    return this.request('POST', `${volumePath(volume)}/unmap`, { hostGroup });
  }

  configureFailover(config: FailoverConfig): Promise<FailoverStatus> {
    return this.request('PUT', `/v1/failover/${encodeURIComponent(config.name)}`, config);
  }

  removeFailover(name: string): Promise<void> {
    return this.request('DELETE', `/v1/failover/${encodeURIComponent(name)}`);
  }

  async failoverStatus(): Promise<FailoverStatus[]> {
    return (await this.request<FailoverList>('GET', '/v1/failover')).topologies;
  }

  /** The remote copy networks the node is attached to (spec 002). */
  async listNetworks(): Promise<NetworkAttachment[]> {
    return (await this.request<{ networks: NetworkAttachment[] }>('GET', '/v1/networks')).networks;
  }

  getNetwork(name: string): Promise<NetworkAttachment> {
    return this.request('GET', `/v1/networks/${encodeURIComponent(name)}`);
  }

  putNetwork(attachment: NetworkAttachment): Promise<NetworkAttachment> {
    return this.request('PUT', `/v1/networks/${encodeURIComponent(attachment.network)}`, attachment);
  }

  deleteNetwork(name: string): Promise<void> {
    return this.request('DELETE', `/v1/networks/${encodeURIComponent(name)}`);
  }

  registerManager(request: RegisterManagerRequest): Promise<ManagerBinding> {
    return this.request('POST', '/v1/monitor/manager', request);
  }

  sendCommand(command: MonitorCommand, options?: CallOptions): Promise<CommandResult> {
    return this.request('POST', '/v1/monitor/commands', command, options?.timeoutMs);
  }

  sendReports(batch: ReportBatch, options?: CallOptions): Promise<ReportAck> {
    return this.request('POST', '/v1/monitor/reports', batch, options?.timeoutMs);
  }

  monitorStatus(): Promise<MonitorStatus> {
    return this.request('GET', '/v1/monitor');
  }

  async metricsText(options?: CallOptions): Promise<string> {
    const headers: Record<string, string> = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    try {
      const response = await fetch(`${this.address}/metrics`, { headers, signal: AbortSignal.timeout(options?.timeoutMs ?? this.timeoutMs) });
      if (!response.ok) throw new TricopyError('unavailable', `node at ${this.address} answered /metrics with HTTP ${response.status}`);
      return await response.text();
    } catch (err) {
      if (err instanceof TricopyError) throw err;
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new TricopyError('unavailable', `cannot reach node at ${this.address} (${cause})`);
    }
  }

  /** Server-sent events from `path`: yields each event's JSON data until the stream ends. */
  private async *serverSentEvents<T>(path: string): AsyncGenerator<T> {
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.address}${path}`, { headers });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new TricopyError('unavailable', `cannot reach node at ${this.address} (${cause})`);
    }
    if (!response.ok || !response.body) throw new TricopyError('unavailable', `node at ${this.address} refused the event stream (${response.status})`);
    for await (const { data } of readServerSentEvents(response.body)) {
      if (data) yield JSON.parse(data) as T;
    }
  }

  protected async request<T>(method: 'GET' | 'POST' | 'PUT' | 'DELETE', path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<T> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    let response: Response;
    try {
      response = await fetch(`${this.address}${path}`, {
        method,
        headers,
        body: body === undefined ? null : JSON.stringify(body),
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      if ((err as Error).name === 'TimeoutError') {
        throw new TricopyError('unavailable', `node at ${this.address} did not answer ${method} ${path} within ${timeoutMs} ms`);
      }
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new TricopyError('unavailable', `cannot reach node at ${this.address} (${cause})`,
        'is `tricopy node run` running there? Set the URL with --node or TRICOPY_NODE');
    }
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    let parsed: unknown;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      throw new TricopyError('internal', `node at ${this.address} answered ${response.status} with a body that is not JSON`);
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
