// What the manager answers, as typed calls: one method per operation of the manager's API. The CLI,
// the tests and (through the same paths) the web console use it; nothing here says how a call
// travels. Every method resolves with the manager's answer or rejects with a TricopyError whose
// code says what kind of failure it was ('unavailable' when no manager answers, 'not-found' …).
import type {
  AddNodeRequest, Alert, ArbiterBoard, ManagerEvent, ManagerInfo, NodeRecord, PerfSample, ProcedureRun, StartProcedureRequest, StatusDocument,
  TopologyRecord,
} from './manager';
import type {
  AddBackupPolicyRequest, AddBackupRepoRequest, BackupImageView, BackupJobRecord, BackupPolicyView, BackupRepoRecord, StartRestoreRequest,
} from './backup';
import type { NetworkFailoverResult, NetworkRecord, NetworkSample, NetworkStatusDocument } from './managed-network';

export interface EventQuery {
  /** Only events at or after this time (ISO 8601 or epoch milliseconds). */
  since?: number;
  /** Only events with a sequence number greater than this. */
  afterSeq?: number;
  limit?: number;
}

export interface ManagerClient {
  readonly address: string;

  info(): Promise<ManagerInfo>;
  status(): Promise<StatusDocument>;

  /** Registers the node at `url`: the node learns its manager and reports to it from then on. */
  addNode(request: AddNodeRequest): Promise<NodeRecord>;
  listNodes(): Promise<NodeRecord[]>;

  /** Keeps a topology definition (the topology file's text) and registers its copies' command paths. */
  addTopology(text: string): Promise<TopologyRecord>;
  listTopologies(): Promise<TopologyRecord[]>;
  /** A topology's automatic failover as the nodes' agents reported it: holder, each site's agent, the last decisions. */
  arbiterBoard(topology: string): Promise<ArbiterBoard>;

  listEvents(query: EventQuery): Promise<ManagerEvent[]>;
  /** The stored events matching `query`, then each new one as it is stored, until the caller stops. */
  followEvents(query: EventQuery): AsyncIterable<ManagerEvent>;

  listAlerts(options?: { all?: boolean }): Promise<Alert[]>;
  ackAlert(id: string, by?: string): Promise<Alert>;

  startProcedure(request: StartProcedureRequest, startedBy?: string): Promise<ProcedureRun>;
  getProcedure(id: string): Promise<ProcedureRun>;
  listProcedures(): Promise<ProcedureRun[]>;
  /** The run's output lines from `fromLine` on as they are printed; ends when the run ends. */
  followProcedure(id: string, fromLine: number): AsyncIterable<string>;

  samples(subject: string | undefined, sinceMs: number): Promise<PerfSample[]>;

  // Managed backup run by the leading manager (contracts/backup.ts).
  listBackupRepos(): Promise<BackupRepoRecord[]>;
  /** Creates the repository's directory on the leading manager's machine. */
  addBackupRepo(request: AddBackupRepoRequest): Promise<BackupRepoRecord>;
  /** Forgets a repository no policy uses (its directory stays). */
  removeBackupRepo(name: string): Promise<void>;
  listBackupPolicies(): Promise<BackupPolicyView[]>;
  addBackupPolicy(request: AddBackupPolicyRequest): Promise<BackupPolicyView>;
  removeBackupPolicy(name: string): Promise<void>;
  /** Starts the policy's backup now; resolves with the job's record as it starts. */
  runBackupPolicy(name: string, startedBy?: string): Promise<BackupJobRecord>;
  startRestore(request: StartRestoreRequest, startedBy?: string): Promise<BackupJobRecord>;
  /** Newest first. */
  listBackupJobs(limit?: number): Promise<BackupJobRecord[]>;
  getBackupJob(id: string): Promise<BackupJobRecord>;
  listBackupImages(filter?: { repo?: string; volume?: string }): Promise<BackupImageView[]>;

  // Remote copy networks kept, applied and collected by the leading manager (contracts/managed-network.ts).
  /** Stores the network file (its name must be `name`) and applies it to the relays and attached nodes. */
  putNetwork(name: string, text: string): Promise<NetworkRecord>;
  listNetworks(): Promise<NetworkRecord[]>;
  getNetwork(name: string): Promise<NetworkRecord>;
  /** Forgets the network (its relays keep running it). */
  removeNetwork(name: string): Promise<void>;
  /** What the leading manager last collected from the network's relays. */
  networkStatus(name: string): Promise<NetworkStatusDocument>;
  /** The collected history of the network's orders at its edges (optionally one order, since a time). */
  networkSamples(name: string, options?: { order?: string; sinceMs?: number }): Promise<NetworkSample[]>;
  /** §6.9 at the target edge of `order` (after the loss of its source site); the outcome is in the history. */
  networkFailover(name: string, order: string, timeoutMs?: number): Promise<NetworkFailoverResult>;
}
