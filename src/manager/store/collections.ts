// The manager's collections over the key-value store: registered nodes and the state they pushed,
// topologies, the event history, alerts, the ids of reports already taken (duplicates are
// dropped), procedure runs, performance samples, and the backup repositories, policies and jobs
// the manager runs. Writes are built as operations so that one
// report's event, alert and dedupe mark land in one atomic batch.
import type { BackupJobRecord, BackupPolicyRecord, BackupRepoRecord } from '../../contracts/backup';
import type { Alert, ManagerEvent, NodeRecord, PerfSample, ProcedureRun, TopologyRecord } from '../../contracts/manager';
import type { NetworkRecord, NetworkSample, NetworkStatusDocument } from '../../contracts/managed-network';
import type { ManagementTableEntry } from '../../contracts/monitor';
import type { NodeInfo, VolumeView } from '../../contracts/node';
import type { GroupStatus, PairStatus } from '../../contracts/pairs';
import { type KvOp, type KvStore, padNumber } from './kv';

/** A registered node, with what the manager needs to reach it. */
export interface StoredNode extends NodeRecord {
  token?: string;
}

/** What a node last pushed: its snapshot with every change applied since. */
export interface NodeState {
  name: string;
  incarnation: string;
  /** Highest event id taken from this incarnation (a retried batch is not taken twice). */
  lastEventId: number;
  updatedAt: string;
  info: NodeInfo | null;
  volumes: VolumeView[];
  pairs: PairStatus[];
  groups: GroupStatus[];
  table: ManagementTableEntry[];
}

/** Where the manager's reading of a relay's event ring stands (ids restart with each relay process). */
export interface RelayEventCursor {
  /** The relay process (its startedAt) the ids belong to. */
  incarnation: string;
  lastEventId: number;
}

const json = (value: unknown): string => JSON.stringify(value);
const put = (key: string, value: unknown): KvOp => ({ type: 'put', key, value: json(value) });

export class ManagerStore {
  constructor(readonly kv: KvStore) {}

  commit(ops: KvOp[]): Promise<void> {
    return this.kv.batch(ops);
  }

  async getJson<T>(key: string): Promise<T | undefined> {
    const v = await this.kv.get(key);
    return v === undefined ? undefined : (JSON.parse(v) as T);
  }

  private async listJson<T>(prefix: string, options: Parameters<KvStore['list']>[1] = {}): Promise<T[]> {
    return (await this.kv.list(prefix, options)).map((r) => JSON.parse(r.value) as T);
  }

  // --- meta --------------------------------------------------------------------------------------
  managerId(): Promise<string | undefined> {
    return this.getJson<string>('meta/managerId');
  }

  putManagerId(id: string): KvOp {
    return put('meta/managerId', id);
  }

  // --- nodes -------------------------------------------------------------------------------------
  putNode(node: StoredNode): KvOp {
    return put(`node/${node.name}`, node);
  }

  getNode(name: string): Promise<StoredNode | undefined> {
    return this.getJson(`node/${name}`);
  }

  listNodes(): Promise<StoredNode[]> {
    return this.listJson('node/');
  }

  putNodeState(state: NodeState): KvOp {
    return put(`nodestate/${state.name}`, state);
  }

  listNodeStates(): Promise<NodeState[]> {
    return this.listJson('nodestate/');
  }

  // --- topologies --------------------------------------------------------------------------------
  putTopology(t: TopologyRecord): KvOp {
    return put(`topology/${t.name}`, t);
  }

  getTopology(name: string): Promise<TopologyRecord | undefined> {
    return this.getJson(`topology/${name}`);
  }

  listTopologies(): Promise<TopologyRecord[]> {
    return this.listJson('topology/');
  }

  // --- events (keys in sequence order; only the leader appends) ----------------------------------
  putEvent(e: ManagerEvent): KvOp {
    return put(`event/${padNumber(e.seq)}`, e);
  }

  deleteEvent(seq: number): KvOp {
    return { type: 'del', key: `event/${padNumber(seq)}` };
  }

  async lastEventSeq(): Promise<number> {
    const [last] = await this.kv.list('event/', { reverse: true, limit: 1 });
    return last ? Number(last.key.slice('event/'.length)) : 0;
  }

  async firstEventSeq(): Promise<number> {
    const [first] = await this.kv.list('event/', { limit: 1 });
    return first ? Number(first.key.slice('event/'.length)) : 0;
  }

  eventsAfter(seq: number, limit: number): Promise<ManagerEvent[]> {
    return this.listJson('event/', { gte: `event/${padNumber(seq + 1)}`, limit });
  }

  eventAt(seq: number): Promise<ManagerEvent | undefined> {
    return this.getJson(`event/${padNumber(seq)}`);
  }

  // --- alerts ------------------------------------------------------------------------------------
  putAlert(a: Alert): KvOp {
    return put(`alert/${padNumber(Number(a.id))}`, a);
  }

  getAlert(id: string): Promise<Alert | undefined> {
    return /^\d{1,12}$/.test(id) ? this.getJson(`alert/${padNumber(Number(id))}`) : Promise.resolve(undefined);
  }

  listAlerts(): Promise<Alert[]> {
    return this.listJson('alert/');
  }

  // --- reports already taken ---------------------------------------------------------------------
  async hasReport(id: string): Promise<boolean> {
    return (await this.kv.get(`report/${id}`)) !== undefined;
  }

  markReport(id: string, time: string): KvOp {
    return put(`report/${id}`, time);
  }

  // --- procedure runs ----------------------------------------------------------------------------
  putRun(run: ProcedureRun): KvOp {
    return put(`run/${run.id}`, run);
  }

  getRun(id: string): Promise<ProcedureRun | undefined> {
    return this.getJson(`run/${id}`);
  }

  listRuns(): Promise<ProcedureRun[]> {
    return this.listJson('run/');
  }

  // --- performance samples -----------------------------------------------------------------------
  putSample(s: PerfSample): KvOp {
    return put(`sample/${s.node}/${s.subject}/${padNumber(Date.parse(s.time), 14)}`, s);
  }

  async listSamples(prefix: string): Promise<Array<{ key: string; sample: PerfSample }>> {
    return (await this.kv.list(`sample/${prefix}`)).map((r) => ({ key: r.key, sample: JSON.parse(r.value) as PerfSample }));
  }

  // --- backup: repositories, policies, jobs (keys sort by start time), last scheduled time fired ----
  putBackupRepo(r: BackupRepoRecord): KvOp {
    return put(`backup/repo/${r.name}`, r);
  }

  deleteBackupRepo(name: string): KvOp {
    return { type: 'del', key: `backup/repo/${name}` };
  }

  listBackupRepos(): Promise<BackupRepoRecord[]> {
    return this.listJson('backup/repo/');
  }

  putBackupPolicy(p: BackupPolicyRecord): KvOp {
    return put(`backup/policy/${p.name}`, p);
  }

  deleteBackupPolicy(name: string): KvOp {
    return { type: 'del', key: `backup/policy/${name}` };
  }

  listBackupPolicies(): Promise<BackupPolicyRecord[]> {
    return this.listJson('backup/policy/');
  }

  putBackupJob(j: BackupJobRecord): KvOp {
    return put(`backup/job/${j.id}`, j);
  }

  deleteBackupJob(id: string): KvOp {
    return { type: 'del', key: `backup/job/${id}` };
  }

  getBackupJob(id: string): Promise<BackupJobRecord | undefined> {
    return this.getJson(`backup/job/${id}`);
  }

  /** Newest first. */
  listBackupJobs(limit?: number): Promise<BackupJobRecord[]> {
    return this.listJson('backup/job/', { reverse: true, ...(limit !== undefined ? { limit } : {}) });
  }

  /** The last scheduled time (ISO) a policy's job was started for: a time is fired once, by one leader. */
  async backupFiredAt(policy: string): Promise<string | undefined> {
    return this.getJson<string>(`backup/fired/${policy}`);
  }

  putBackupFiredAt(policy: string, at: string): KvOp {
    return put(`backup/fired/${policy}`, at);
  }

  // --- remote copy networks: the master copy, the collected status, the relay event cursors -------
  putNetwork(n: NetworkRecord): KvOp {
    return put(`network/${n.name}`, n);
  }

  getNetwork(name: string): Promise<NetworkRecord | undefined> {
    return this.getJson(`network/${name}`);
  }

  listNetworks(): Promise<NetworkRecord[]> {
    return this.listJson('network/');
  }

  /** The network, its collected status and its cursors go together. */
  async deleteNetwork(name: string): Promise<KvOp[]> {
    const rows = [...await this.kv.list(`netcursor/${name}/`), ...await this.kv.list(`netsample/${name}/`)];
    return [{ type: 'del', key: `network/${name}` }, { type: 'del', key: `netstatus/${name}` }, ...rows.map((c) => ({ type: 'del' as const, key: c.key }))];
  }

  /** Keys sort by order, edge, side and time. */
  putNetworkSample(s: NetworkSample): KvOp {
    return put(`netsample/${s.network}/${s.order}/${s.edge}/${s.side}/${padNumber(Date.parse(s.time), 14)}`, s);
  }

  async listNetworkSamples(network: string): Promise<Array<{ key: string; sample: NetworkSample }>> {
    return (await this.kv.list(`netsample/${network}/`)).map((r) => ({ key: r.key, sample: JSON.parse(r.value) as NetworkSample }));
  }

  putNetworkStatus(doc: NetworkStatusDocument): KvOp {
    return put(`netstatus/${doc.network}`, doc);
  }

  getNetworkStatus(name: string): Promise<NetworkStatusDocument | undefined> {
    return this.getJson(`netstatus/${name}`);
  }

  putRelayCursor(network: string, relay: string, c: RelayEventCursor): KvOp {
    return put(`netcursor/${network}/${relay}`, c);
  }

  getRelayCursor(network: string, relay: string): Promise<RelayEventCursor | undefined> {
    return this.getJson(`netcursor/${network}/${relay}`);
  }
}
