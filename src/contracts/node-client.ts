// What a storage node answers, as typed calls: one method per operation of the node's control API.
// The CLI, the topology procedures, the benchmarks and the tests talk to nodes only through this
// interface, so a node in another process (HTTP) and one in this process (a simulator) are the same
// to them. Nothing here says how a call travels: no paths, verbs or responses.
//
// Every method either resolves with the node's answer or rejects with a TricopyError whose code
// says what kind of failure it was ('not-found', 'conflict', 'unavailable' when the node cannot be
// reached …), with the node's own message and hint.
import type { AccessRuleRequest, CreateVolumeRequest, NodeEvent, NodeInfo, RelocateVolumeRequest, ResizeVolumeRequest, VolumeView } from './node';
import type { CreatePairRequest, DiscardRequest, GroupStatus, PairState, PairStatus, ProtectionRequest, ResidualHoldView, SplitRequest, VerifyRequest } from './pairs';
import type {
  BitmapView, CreateReplicaRequest, CreateSnapshotRequest, DeleteReplicaOptions, ForceRequest, ReplicaStatus, ReplicaWaitState, RollbackRequest,
  SnapshotView, SplitReplicaRequest,
} from './replicas';
import type { FailoverConfig, FailoverStatus } from './failover';
import type { NetworkAttachment } from './network';
import type { CloneSetView, CreateCloneSetRequest, DeleteCloneSetRequest, DeletedCloneSet } from './clones';
import type { CreateHostGroupRequest, HostGroupChange, HostGroupMembersRequest, HostGroupView, MapVolumeRequest } from './host-groups';
import type { CommandResult, ManagerBinding, MonitorCommand, MonitorStatus, RegisterManagerRequest, ReportAck, ReportBatch } from './monitor';

/** How long the caller waits for an answer before it gives up ('unavailable'). */
export interface CallOptions {
  timeoutMs?: number;
}

export interface DeleteOptions {
  /** Volumes: disconnect attached clients. Pairs: delete here even if the peer is unreachable. */
  force?: boolean;
  /**
   * Pairs, at the secondary: the volume stays read-only to hosts after the pair ends (it holds its
   * primary's image; see DetachedSecondary.readOnly).
   */
  keepReadOnly?: boolean;
}

export interface NodeClient {
  /** Where the node is, for messages (a URL for a node reached over the network). */
  readonly address: string;

  nodeInfo(options?: CallOptions): Promise<NodeInfo>;

  listVolumes(): Promise<VolumeView[]>;
  getVolume(name: string): Promise<VolumeView>;
  createVolume(request: CreateVolumeRequest): Promise<VolumeView>;
  /** Grows a volume; shrinking is refused. */
  resizeVolume(name: string, request: ResizeVolumeRequest): Promise<VolumeView>;
  allow(name: string, rule: AccessRuleRequest): Promise<VolumeView>;
  disallow(name: string, rule: AccessRuleRequest): Promise<VolumeView>;
  deleteVolume(name: string, options?: DeleteOptions): Promise<void>;

  listPairs(): Promise<PairStatus[]>;
  getPair(name: string): Promise<PairStatus>;
  /** At the primary; the peer creates its side (and the secondary volume when missing). */
  createPair(request: CreatePairRequest): Promise<PairStatus>;
  /** Resolves when the pair is in `state`; rejects after `timeoutMs` (the node caps it at 600 s). */
  waitPair(name: string, state: PairState, timeoutMs: number): Promise<PairStatus>;
  /** Async pairs drain their journal first, which can take long: pass a generous deadline. */
  split(name: string, request?: SplitRequest, options?: CallOptions): Promise<PairStatus>;
  resync(name: string, request?: DiscardRequest): Promise<PairStatus>;
  setProtection(name: string, request: ProtectionRequest): Promise<PairStatus>;
  /**
   * At the primary of a duplex pair: starts an online verify and answers at once with the status,
   * whose `verify` shows its progress; regions found different are recorded (resync copies them).
   */
  verify(name: string, request?: VerifyRequest): Promise<PairStatus>;
  /** Stops the running verify; answers once it stopped (what it found stays recorded). */
  cancelVerify(name: string): Promise<PairStatus>;
  /** At the secondary; every pair of the same consistency group is taken over together. */
  takeover(name: string, options?: CallOptions): Promise<PairStatus[]>;
  /** At the node that becomes the primary; answers every pair of the group. */
  swap(name: string, request?: DiscardRequest, options?: CallOptions): Promise<PairStatus[]>;
  deletePair(name: string, options?: DeleteOptions): Promise<void>;

  listGroups(): Promise<GroupStatus[]>;
  getGroup(name: string): Promise<GroupStatus>;

  /** The kept events with an id greater than `after`, oldest first. */
  listEvents(after: number): Promise<NodeEvent[]>;

  // Automatic failover (a node that runs the quorum module; absent from clients that cannot change nodes).
  /** Gives the node its part in a topology's automatic failover (topology apply). */
  configureFailover?(config: FailoverConfig): Promise<FailoverStatus>;
  /** The node stops taking part in a topology's automatic failover. */
  removeFailover?(name: string): Promise<void>;
  /** Where the node stands with the arbiter of each topology it takes part in. */
  failoverStatus?(): Promise<FailoverStatus[]>;
  /** The kept events after `after`, then each new one as it happens, until the caller stops. */
  followEvents(after: number): AsyncIterable<NodeEvent>;
}

/** A node's attachment to a remote copy network (what `network apply` told it). */
export interface NetworkNodeClient {
  getNetwork(name: string): Promise<NetworkAttachment>;
}

/**
 * Online relocation of volumes between a node's data areas (spec 003 Fig. 15). Separate from
 * NodeClient: the topology procedures (and the simulator's in-process nodes) do not use it.
 */
export interface RelocationNodeClient {
  readonly address: string;
  /** Starts the move and answers at once; the volume's `relocation` shows its progress and outcome. */
  relocateVolume(name: string, request: RelocateVolumeRequest): Promise<VolumeView>;
  getVolume(name: string): Promise<VolumeView>;
}

/**
 * In-node replicas, snapshots and changed-block bitmaps of a node (spec 003 §5.1). Separate from
 * NodeClient: the topology procedures (and the simulator's in-process nodes) do not use them.
 */
/** Host writes a node holds for residual entries of fast failovers through a network (spec 002 E-21). */
export interface ResidualNodeClient {
  readonly address: string;
  residualHolds(): Promise<ResidualHoldView[]>;
  /** Lets host writes go on, discarding the residual entries of `order` not applied yet. */
  releaseResidual(order: string): Promise<ResidualHoldView[]>;
}

export interface ReplicaNodeClient {
  readonly address: string;

  listReplicas(): Promise<ReplicaStatus[]>;
  getReplica(name: string): Promise<ReplicaStatus>;
  /** Creates the replica volume (unless `existing`) and starts the initial copy (COPY, then PAIR). */
  createReplica(request: CreateReplicaRequest): Promise<ReplicaStatus>;
  splitReplica(name: string, request?: SplitReplicaRequest): Promise<ReplicaStatus>;
  resyncReplica(name: string, request?: ForceRequest): Promise<ReplicaStatus>;
  restoreReplica(name: string, request?: ForceRequest): Promise<ReplicaStatus>;
  deleteReplica(name: string, options?: DeleteReplicaOptions): Promise<void>;
  /** Resolves when the pair is in `state` (simplex: deleted); rejects after `timeoutMs` (the node caps it at 600 s). */
  waitReplica(name: string, state: ReplicaWaitState, timeoutMs: number): Promise<ReplicaStatus>;

  listSnapshots(volume?: string): Promise<SnapshotView[]>;
  createSnapshot(request: CreateSnapshotRequest): Promise<SnapshotView[]>;
  deleteSnapshot(volume: string, name: string): Promise<void>;
  rollback(volume: string, request: RollbackRequest): Promise<SnapshotView>;

  listBitmaps(volume: string): Promise<BitmapView[]>;
  addBitmap(volume: string, name: string): Promise<BitmapView>;
  clearBitmap(volume: string, name: string): Promise<BitmapView>;
  deleteBitmap(volume: string, name: string): Promise<void>;
}

/**
 * Clone sets of a node: writable throwaway clones of volumes at one instant (a DR drill). Separate
 * from NodeClient: only the drill procedure and the operator's CLI use them.
 */
export interface CloneNodeClient {
  readonly address: string;

  listCloneSets(): Promise<CloneSetView[]>;
  /** Snapshots the volumes at one instant and exports a writable clone of each as `VOLUME@NAME`. */
  createCloneSet(request: CreateCloneSetRequest): Promise<CloneSetView>;
  /** Discards the clones' overlays and snapshots; refused while clients are attached unless `force`. */
  endCloneSet(name: string, request?: DeleteCloneSetRequest): Promise<DeletedCloneSet>;
}

/**
 * Host groups and LUN mappings of a node (spec 003 §5.6). Separate from NodeClient: only the
 * operator's CLI changes who may see a volume. Calls that can narrow access answer which NBD
 * sessions they closed.
 */
export interface HostGroupNodeClient {
  readonly address: string;

  listHostGroups(): Promise<HostGroupView[]>;
  getHostGroup(name: string): Promise<HostGroupView>;
  createHostGroup(request: CreateHostGroupRequest): Promise<HostGroupView>;
  addHostGroupMembers(name: string, request: HostGroupMembersRequest): Promise<HostGroupView>;
  removeHostGroupMembers(name: string, request: HostGroupMembersRequest): Promise<HostGroupChange>;
  /** Refused while volumes are mapped to the group. */
  deleteHostGroup(name: string): Promise<void>;
  mapVolume(volume: string, request: MapVolumeRequest): Promise<HostGroupChange>;
  unmapVolume(volume: string, hostGroup: string): Promise<HostGroupChange>;
}

/** Makes the client of the node at `address` (in a topology file: the site's node URL). */
export type NodeClientFactory = (address: string) => NodeClient;

/**
 * The node's monitor API (spec 000): what a manager and neighbouring nodes ask of a node's monitor.
 * Separate from NodeClient because only the manager and the monitor relay use it; the topology
 * procedures never do.
 */
export interface NodeMonitorClient {
  readonly address: string;
  /** Tells the node its manager: it persists it and pushes its state, events and reports there. */
  registerManager(request: RegisterManagerRequest): Promise<ManagerBinding>;
  /** A construct or release command; the node records it, then executes or relays it. */
  sendCommand(command: MonitorCommand, options?: CallOptions): Promise<CommandResult>;
  /** Reports from a neighbour, relayed towards the manager (spec 000 §6.3). */
  sendReports(batch: ReportBatch, options?: CallOptions): Promise<ReportAck>;
  monitorStatus(): Promise<MonitorStatus>;
  /** The node's Prometheus metrics, as text. */
  metricsText(options?: CallOptions): Promise<string>;
}
