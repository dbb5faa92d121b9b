// The replication service of a node: a facade that builds the parts of remote copy, wires their
// listeners on the transition engine, and offers the node (API, NBD data path, metrics) one object.
//
//   pairs/      records, state table, transition engine, registry       (who a pair is, where it stands)
//   datapath/   write path, fences, range locks, activity logs          (host writes of paired volumes)
//   async/      journals, shipper, applier, split drain                 (consistency groups)
//   copy/       copy engine, block comparison, online verify            (initial copy, resync, delta, verify)
//   delta/      delta records, applied marks                            (3DC delta resync)
//   control/    operator commands, takeover, swap, peer requests, reconcile
//   transport/  frames, messages, links, peers                          (the node-to-node protocol)
//
// Time, disk, network and volumes come in through ReplicationEnv, so the simulator runs this same
// service over virtual ones.
import * as path from 'node:path';
import type { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import type { FenceLevel, GroupStatus, JournalFullPolicy, PairState, PairStatus } from '../contracts/pairs';
import type { DetachedSecondary } from '../contracts/node';
import { TricopyError } from '../common/errors';
import type { WriteOptions, ZeroOptions } from '../volume/block-device';
import type { Volume } from '../volume/volume';
import { Applier } from './async/applier';
import { Journals } from './async/journals';
import { Shipping } from './async/shipper';
import { SplitDrain } from './async/split-drain';
import { type CreatePairInput, Operator } from './control/operator';
import { PairResources } from './control/pair-resources';
import { PeerDemand } from './control/peer-demand';
import { PeerRequests } from './control/peer-requests';
import type { PairExtensionPoint } from './extension';
import { MessageType } from './transport/messages';
import { pairUpdateCodec } from './transport/control-messages';
import { PeerUpdates } from './control/peer-updates';
import { isoTime } from '../common/clock';
import { Reconciler } from './control/reconcile';
import { ResidualHolds } from './control/residual';
import { Swap } from './control/swap';
import { Takeover } from './control/takeover';
import { CopyEngine } from './copy/copy-engine';
import { type VerifyOptions, Verifier } from './copy/verify';
import { Fences } from './datapath/fences';
import type { ReplicationDataPath } from './datapath/replicated-volume';
import { VolumeRuntimes } from './datapath/volume-runtimes';
import { WritePath } from './datapath/write-path';
import { DeltaRecords } from './delta/delta-record';
import { AppliedMarks } from './delta/marks';
import { DetachedSecondaries } from './pairs/detached';
import type { ReplicationEnv } from './env';
import { defaultCopyConcurrency, defaultJournalBytes, defaultJournalStallTimeoutMs, defaultSyncWriteTimeoutMs, diffChunkBytes } from './limits';
import { PairStore } from './pairs/pair-store';
import { PairRegistry } from './pairs/registry';
import type { PairRuntime } from './pairs/runtime';
import { TransitionEngine } from './pairs/transitions';
import { recoverAfterRestart } from './recovery';
import { type PairInternals, StatusReader } from './status';
import type { PairRecord } from './pairs/pair-model';

export type { CreatePairInput };
export type { GroupStatus, PairStatus };

export interface ReplicationOptions {
  localNode: string;
  advertiseHost: string;
  /** Port peers use to reach the replication port (a relay or NAT port); default the real one. */
  advertiseReplPort: number | undefined;
  journalCapacityBytes: number;
  journalFullPolicy: JournalFullPolicy;
  /** With the delay policy: how long writes may wait for journal space before the group suspends. */
  journalStallTimeoutMs: number;
  /** A sync write the secondary has not confirmed within this time fails the pair. */
  syncWriteTimeoutMs: number;
  copyConcurrency: number;
  /** Pairs suspended by a failure resync on their own once the peer is back. */
  autoResync: boolean;
}

export const defaultReplicationOptions = {
  journalCapacityBytes: defaultJournalBytes,
  journalFullPolicy: 'delay' as JournalFullPolicy,
  journalStallTimeoutMs: defaultJournalStallTimeoutMs,
  syncWriteTimeoutMs: defaultSyncWriteTimeoutMs,
  copyConcurrency: defaultCopyConcurrency,
  autoResync: true,
};

/** The parts, built once the pair store is open. */
interface Parts {
  store: PairStore;
  engine: TransitionEngine;
  marks: AppliedMarks;
  detached: DetachedSecondaries;
  journals: Journals;
  shipping: Shipping;
  applier: Applier;
  copy: CopyEngine;
  resources: PairResources;
  writePath: WritePath;
  operator: Operator;
  swap: Swap;
  takeover: Takeover;
  reconciler: Reconciler;
  status: StatusReader;
  verifier: Verifier;
  updates: PeerUpdates;
  requests: PeerRequests;
}

export class ReplicationService implements ReplicationDataPath {
  private readonly registry: PairRegistry;
  private readonly volumeRuntimes: VolumeRuntimes;
  private readonly fences: Fences;
  private readonly deltaRecords = new DeltaRecords(diffChunkBytes);
  private parts!: Parts;
  private replPortValue = 0;
  /** Residual entries of fast failovers through a network, and the host writes they hold (spec 002 E-21). */
  readonly residual: ResidualHolds;
  /** Set by the node so a new secondary can refuse a volume in use. */
  clientsOf: ((volume: string) => number) | undefined;

  constructor(
    private readonly options: ReplicationOptions,
    private readonly env: ReplicationEnv,
    private readonly dataDir: string,
    private readonly events: EventJournal,
    private readonly log: Logger,
  ) {
    this.registry = new PairRegistry(options.localNode);
    this.volumeRuntimes = new VolumeRuntimes(env.disk, path.join(dataDir, 'pairs'), env.volumes, this.registry);
    this.fences = new Fences(this.registry, this.volumeRuntimes);
    this.residual = new ResidualHolds({
      dataDir, disk: env.disk, registry: this.registry, events, log, now: () => isoTime(env.clock),
      apply: async (name, op) => {
        const volume = env.volumes.volume(name);
        if (op.kind === 'flush') return this.parts.writePath.flush(volume);
        if (op.kind === 'zero') await this.parts.writePath.writeZeroesOp(volume, op.offset, op.length, { fua: op.fua, noHole: false, fastOnly: false }, 'replication');
        else await this.parts.writePath.writeOp(volume, op.offset, op.data, { fua: op.fua }, 'replication');
      },
    });
    this.fences.residualWait = (volume) => this.residual.waitFor(volume);
  }

  get replPort(): number {
    return this.replPortValue;
  }

  get hasSecret(): boolean {
    return this.env.transport.hasSecret;
  }

  async start(host: string, port: number): Promise<number> {
    const store = await PairStore.open(this.dataDir, this.env.disk, this.log);
    await this.residual.load();
    this.parts = this.build(store);
    await this.parts.marks.load();
    await this.parts.detached.load();
    for (const record of await store.loadAll()) {
      if (!this.env.volumes.has(record.volume)) {
        this.log.error({ pair: record.name, volume: record.volume }, 'pair refers to a missing volume; ignoring it');
        continue;
      }
      await this.parts.resources.admit(record, await store.bitmap(record.name, this.env.volumes.get(record.volume).sizeBytes));
    }
    await recoverAfterRestart(this.env, this.registry, this.parts.engine, this.parts.journals, this.volumeRuntimes, this.log);
    this.parts.applier.startAll();
    this.replPortValue = await this.env.transport.listen(host, port);
    const demand = new PeerDemand(this.env.transport, this.registry);
    for (const p of this.registry.all()) demand.wantIfSender(p);
    return this.replPortValue;
  }

  async stop(): Promise<void> {
    if (!this.parts) return;
    this.parts.reconciler.stop();
    await this.parts.verifier.stop();
    this.parts.applier.stop();
    this.parts.copy.stop();
    this.parts.shipping.stopAll();
    await this.env.transport.close();
    await this.parts.copy.settled();
    await this.volumeRuntimes.close((volume) => this.durable(volume));
    await this.parts.journals.close();
    for (const p of this.registry.all()) await p.bitmap.close();
  }

  private build(store: PairStore): Parts {
    const { env, registry, volumeRuntimes, fences, deltaRecords, events, log, options } = this;
    let updates: PeerUpdates | undefined;
    const engine = new TransitionEngine({
      localNode: options.localNode, clock: env.clock, store, registry, events, log,
      tellPeer: (p) => updates!.tell(p),
    });
    const marks = new AppliedMarks(store, log);
    const detached = new DetachedSecondaries(store, log);
    fences.leftReadOnly = (volume) => detached.refusal(volume);
    const demand = new PeerDemand(env.transport, registry);
    // A side that stepped down dials only until its new primary acts (the sender keeps the link then).
    engine.onNewPrimaryActed((p) => demand.releaseIfUnneeded(p.record.peer.node));
    const journals = new Journals(env, this.dataDir, {
      capacityBytes: options.journalCapacityBytes, fullPolicy: options.journalFullPolicy, stallTimeoutMs: options.journalStallTimeoutMs,
    }, registry, engine, volumeRuntimes, log);
    updates = new PeerUpdates(env.transport, registry, journals, env.clock, log);
    const resources = new PairResources(registry, engine, journals, volumeRuntimes, fences, marks, detached, demand, (volume) => this.durable(volume));
    this.watchDeltaRecords(engine, updates);
    this.watchSyncFailures(engine);
    let reconciler: Reconciler | undefined;
    let copy: CopyEngine | undefined;
    const shipping = new Shipping(env, journals, registry, engine, volumeRuntimes, {
      progressed: (group) => copy!.groupProgressed(group),
      resume: (peer) => reconciler!.onPeerUp(peer),
      resumeShipping: (peer) => reconciler!.resumeShipping(peer),
    }, log);
    const applier = new Applier(env, journals, registry, log);
    const drain = new SplitDrain(env, journals, engine);
    copy = new CopyEngine(env, { copyConcurrency: options.copyConcurrency, syncWriteTimeoutMs: options.syncWriteTimeoutMs },
      registry, engine, journals, volumeRuntimes, log);
    const writePath = new WritePath(env, options.syncWriteTimeoutMs, registry, engine, fences, volumeRuntimes, journals, deltaRecords, [marks, detached]);
    const status = new StatusReader(env, registry, journals, deltaRecords, (volume) => this.residual.viewOf(volume));
    const statusOf = (p: PairRuntime): PairStatus => status.pair(p);
    const swap = new Swap({ env, localNode: options.localNode, registry, engine, resources, journals, shipping, volumeRuntimes, demand, events, status: statusOf });
    const takeover = new Takeover({ env, registry, engine, journals, marks, demand, swap, status: statusOf });
    const operator = new Operator({
      env, registry, store, detached, engine, resources, journals, volumeRuntimes, shipping, copy, drain, deltaRecords, demand, updates, events, status: statusOf,
      identity: {
        localNode: options.localNode, advertiseHost: options.advertiseHost,
        advertisedReplPort: () => options.advertiseReplPort ?? this.replPortValue,
      },
    });
    reconciler = new Reconciler({ env, localNode: options.localNode, autoResync: options.autoResync, registry, engine, journals, shipping, copy, updates, volumeRuntimes, events, log });
    const requests = new PeerRequests({
      env, localNode: options.localNode, registry, store, engine, resources, journals, writePath, copy, swap, reconciler, deltaRecords, marks, events, log,
      clientsOf: (volume) => this.clientsOf?.(volume) ?? 0,
    });
    env.transport.setRequestHandler((type, payload, peer) => requests.handle(type, payload, peer));
    requests.addHandler(MessageType.ResidualState, (payload, peer) => this.residual.onState(payload, peer));
    requests.addHandler(MessageType.ResidualWrite, (payload, peer) => this.residual.onWrite(payload, peer));
    const verifier = new Verifier({ env, localNode: options.localNode, registry, engine, journals, volumeRuntimes, copy, events, log, status: statusOf });
    return { store, engine, marks, detached, journals, shipping, applier, copy, resources, writePath, operator, swap, takeover, reconciler, status, verifier, updates, requests };
  }

  /**
   * Every completed write of the volume is durable wherever the pairs promise it: its data here and
   * at sync secondaries (a FLUSH forwarded), its entries in the group journals.
   */
  private async durable(volume: string): Promise<void> {
    await this.parts.writePath.flush(this.env.volumes.volume(volume));
  }

  /**
   * A sync secondary that fails may have lost writes it had acknowledged but not made durable (a
   * power loss there). The extents of recent writes (the activity log: every write not yet durable
   * on both sides is in one) join the differential record, so the resync sends them again.
   */
  private watchSyncFailures(engine: TransitionEngine): void {
    engine.onLocal(async (t) => {
      const p = t.pair;
      const r = p.record;
      const wasForwarding = t.from === 'duplex' || t.from === 'initial-copying' || t.from === 'duplex-pending';
      if (r.role !== 'primary' || r.mode !== 'sync' || !wasForwarding || r.state !== 'suspended' || r.suspendCause === 'operator' || t.fromRole !== 'primary') return;
      const activity = this.volumeRuntimes.peek(r.volume)?.activity;
      if (!activity) return;
      const size = this.env.volumes.get(r.volume).sizeBytes;
      for (const range of activity.markedRanges()) p.bitmap.markBytes(range.offset, Math.min(range.length, size - range.offset));
      await p.bitmap.sync();
    });
  }

  /** Delta records follow the copies' state: invalidated when the async site may get ahead, restarted in step. */
  private watchDeltaRecords(engine: TransitionEngine, updates: PeerUpdates): void {
    // A sync secondary's delta record holds only while the async site cannot get ahead of it: the
    // primary holds back async entries after a failure with fence data, but not after a split or
    // without fence data.
    engine.onLocal((t) => {
      const r = t.pair.record;
      if (r.role === 'secondary' && r.mode === 'sync' && r.state === 'suspended' && (r.suspendCause !== 'failure' || r.fence !== 'data')) {
        this.deltaRecords.invalidate(r.volume, `pair ${r.name} was suspended (${r.suspendCause ?? 'unknown cause'}, fence ${r.fence}): the async site may hold writes this node lacks`);
      }
    });
    // An async pair in step again: the volume's sync secondary may start its delta record.
    engine.onAfter(async (t) => {
      const r = t.pair.record;
      if (r.role !== 'primary' || r.mode !== 'async' || r.state !== 'duplex') return;
      for (const s of this.registry.ofVolume(r.volume)) {
        if (s.record.role === 'primary' && s.record.mode === 'sync' && s.record.state === 'duplex') await updates.tell(s);
      }
    });
  }

  /** For modules above the node that add pair behaviour (quorum pairs); valid once started. */
  extensionPoint(): PairExtensionPoint {
    const { env, registry, events, options } = this;
    const parts = this.parts;
    return {
      localNode: options.localNode, clock: env.clock, events, registry, engine: parts.engine, transport: env.transport,
      status: (p) => parts.status.pair(p),
      tellConfirmed: async (p, timeoutMs) => {
        await env.transport.request(p.record.peer.node, MessageType.PairUpdate, pairUpdateCodec.encode(parts.updates.update(p)), timeoutMs);
      },
      handlePeerRequests: (type, handler) => parts.requests.addHandler(type, handler),
    };
  }

  // --- data path (the NBD server's writes to paired volumes) -----------------------------------

  isPaired(volume: string): boolean {
    return this.parts.writePath.isPaired(volume);
  }

  /**
   * Hosts may not write the volume for as long as its role lasts (EPERM: an active secondary, a
   * primary taken over): the export is read-only. A fence (EIO) is temporary and is not: its
   * writes fail until it lifts, for clients attached before and after alike.
   */
  refusesWrites(volume: string): boolean {
    return this.fences.writeRefusal(volume)?.errno === 'EPERM';
  }

  /** Why hosts may not write the volume now (EPERM lasting, EIO a fence), if they may not. */
  writeRefusal(volume: string): { errno: string; reason: string } | undefined {
    const refusal = this.fences.writeRefusal(volume);
    return refusal ? { errno: refusal.errno, reason: refusal.message } : undefined;
  }

  write(volume: Volume, offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    return this.parts.writePath.write(volume, offset, data, options);
  }

  writeZeroes(volume: Volume, offset: number, length: number, options: ZeroOptions): Promise<void> {
    return this.parts.writePath.writeZeroes(volume, offset, length, options);
  }

  /**
   * Host writes of paired volumes are refused while `gate` names a reason (automatic failover: this
   * site does not hold the arbiter now). Checked when a write starts and again before it is
   * acknowledged: a write that began with the arbiter held and ended after the hold ran out is
   * answered EIO, never acknowledged.
   */
  setHostWriteGate(gate: ((volume: string) => string | undefined) | undefined): void {
    this.fences.hostGate = gate;
  }

  flush(volume: Volume): Promise<void> {
    return this.parts.writePath.flush(volume);
  }

  // --- queries ---------------------------------------------------------------------------------

  list(): PairStatus[] {
    return this.parts.status.list().map((s) => this.parts.verifier.decorate(s));
  }

  get(name: string): PairStatus {
    return this.parts.verifier.decorate(this.parts.status.get(name));
  }

  groups(): string[] {
    return this.parts.status.groups();
  }

  groupStatus(group: string): GroupStatus {
    return this.parts.status.group(group);
  }

  /** Every pair's record: internals() without the differential records and ranges (the simulator's checker asks at every write). */
  pairRecords(): PairRecord[] {
    return this.parts.status.records();
  }

  /** Internal state of every pair (the simulator's checker; not part of the API). */
  internals(): PairInternals[] {
    return this.parts.status.internals(this.volumeRuntimes);
  }

  /**
   * Stops the async groups that apply into these volumes at a batch boundary (see
   * ReceivedJournal.holdApply) until the release: a snapshot taken meanwhile is one instant of the
   * primary's write history. Volumes that receive no async copy need nothing.
   */
  async holdApplyOf(volumes: string[]): Promise<() => void> {
    const wanted = new Set(volumes);
    const groups = [...new Set([...this.registry.all()]
      .filter((p) => p.record.role === 'secondary' && p.record.mode === 'async' && p.record.group !== null && wanted.has(p.record.volume))
      .map((p) => p.record.group!))].sort();
    const releases: Array<() => void> = [];
    for (const group of groups) {
      const journal = this.parts.journals.received(group);
      if (journal) releases.push(await journal.holdApply());
    }
    return () => {
      for (const release of releases.reverse()) release();
    };
  }

  waitFor(name: string, state: PairState, timeoutMs: number): Promise<PairStatus> {
    return this.parts.status.waitFor(name, state, timeoutMs);
  }

  // --- operator commands -----------------------------------------------------------------------

  createPair(input: CreatePairInput): Promise<PairStatus> {
    return this.parts.operator.createPair(input);
  }

  split(name: string, options: { secondaryWritable: boolean }): Promise<PairStatus> {
    return this.parts.operator.split(name, options);
  }

  resync(name: string, options: { discard?: string | undefined }): Promise<PairStatus> {
    // A duplex pair with regions recorded by verify: copy exactly those (COPY, then PAIR again).
    if (this.parts.verifier.hasRecordedRegions(name)) {
      return this.parts.verifier.resyncRecorded(name).then((status) => status ?? this.parts.operator.resync(name, options));
    }
    return this.parts.operator.resync(name, options);
  }

  /** Online verify at the primary of a duplex pair: compare both copies, record what differs. */
  verify(name: string, options: VerifyOptions): Promise<PairStatus> {
    return this.parts.verifier.start(name, options);
  }

  cancelVerify(name: string): Promise<PairStatus> {
    return this.parts.verifier.cancel(name);
  }

  takeover(name: string): Promise<PairStatus[]> {
    return this.parts.takeover.takeover(name);
  }

  swap(name: string, options: { discard?: string | undefined }): Promise<PairStatus[]> {
    return this.parts.swap.swap(name, options);
  }

  setProtection(name: string, options: { fence: FenceLevel; fenceGroup: string | null }): Promise<PairStatus> {
    return this.parts.operator.setProtection(name, options);
  }

  deletePair(name: string, options: { force: boolean; keepReadOnly?: boolean }): Promise<void> {
    return this.parts.operator.deletePair(name, options);
  }

  /** Set while the volume holds only the image of the primary of a dissolved pair (see DetachedSecondary). */
  detachedSecondary(volume: string): DetachedSecondary | null {
    return this.parts.detached.get(volume) ?? null;
  }

  /** Lets hosts write a volume a topology procedure left read-only (its detached-secondary mark goes). */
  async makeWritable(volume: string): Promise<void> {
    if (this.registry.ofVolume(volume).length > 0) {
      throw new TricopyError('conflict', `volume ${volume} is paired: its pairs decide who writes it`, 'tricopy pair status');
    }
    if (!this.parts.detached.has(volume)) {
      throw new TricopyError('invalid-argument', `volume ${volume} was not left read-only by a dissolved pair; hosts may write it`);
    }
    await this.parts.detached.drop(volume, 'the operator let hosts write it');
  }

  /** A volume was deleted or resized: its delta record no longer fits (and a deleted one has no mark). */
  async forgetVolume(volume: string, why: 'deleted' | 'resized'): Promise<void> {
    this.deltaRecords.delete(volume);
    if (why === 'deleted') {
      await this.parts.marks.drop(volume, 'volume deleted');
      await this.parts.detached.drop(volume, 'volume deleted');
    }
  }
}
