// The replication service of a node: owns its pairs (records, differential records, state machine),
// the data path of paired volumes (sync forwarding, async journaling, fencing, bitmaps), copies
// (initial copy, resync), the async shipper and applier, takeover and swap, and the reconciliation
// of pair records with each peer when a link comes up.
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import { TricopyError, errorMessage, invariant } from '../common/errors';
import type { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import { formatBytes } from '../common/units';
import { PersistentBitmap } from '../volume/bitmap';
import { BlockDeviceError, type WriteOptions, type ZeroOptions } from '../volume/block-device';
import type { VolumeStore } from '../volume/store';
import { allocationChunkBytes, type Volume } from '../volume/volume';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import { ActivityLog } from './activity-log';
import {
  type BitmapReply, type GroupPosition, type PairCreateRequest, type PairSummary, type PairUpdate, type PairsSync, type SwapPrepare,
  bitmapReplyCodec, groupPositionCodec, journalAckCodec, pairCreateCodec, pairNameCodec, pairUpdateCodec, pairsSyncCodec,
  regionHashesCodec, swapPrepareCodec, swapPreparedCodec,
} from './control-messages';
import { JournalFullError, type JournalFullPolicy, type LagReport, PrimaryJournal, ReceivedJournal, removeJournalDir } from './group-journal';
import { type JournalEntry, JournalOp, decodeEntriesWithBytes, encodeEntries } from './journal-entry';
import type { StoredEntry } from './journal-store';
import type { LinkTimings, PeerLink } from './link';
import { type AppliedMark, type ByteRange, DeltaRecords, mergeRanges } from './delta-record';
import { type DeltaTag, MessageType, dataFlagFua, decodeDataHeader, decodeDeltaTagReply, encodeDataHeader, encodeDeltaTagReply } from './messages';
import {
  type CopyMode, type FenceLevel, type InitialCopy, type PairRecord, type PairState, type PeerAddress,
  groupNamePattern, pairNamePattern, secondaryIsConsistent, shortCode,
} from './pair-model';
import { type PairEvent, decide } from './pair-state-machine';
import { PairStore, diffChunkBytes } from './pair-store';
import { PeerManager } from './peers';
import { RangeLock } from './range-lock';
import type { ReplicationDataPath } from './replicated-volume';

export interface ReplicationOptions {
  localNode: string;
  advertiseHost: string;
  /** Port peers use to reach the replication port (a relay or NAT port); default the real one. */
  advertiseReplPort: number | undefined;
  secret: Buffer | undefined;
  timings: LinkTimings;
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
  journalCapacityBytes: 1024 ** 3,
  journalFullPolicy: 'delay' as JournalFullPolicy,
  journalStallTimeoutMs: 30_000,
  syncWriteTimeoutMs: 15_000,
  copyConcurrency: 8,
  autoResync: true,
};

const maxBatchBytes = 4 * 1024 * 1024;
/** One copy request carries up to this much of a run of changed regions. */
const maxCopyRequestBytes = 1024 * 1024;
/** A delta copy compares this much per checksum request. */
const maxDeltaRunBytes = 16 * 1024 * 1024;
const deltaRegionBytes = 64 * 1024;
const deltaBlockBytes = 4096;
const hashBytes = 16;
const zeroDigests = new Map<number, Buffer>();
function zeroDigest(length: number): Buffer {
  let d = zeroDigests.get(length);
  if (!d) {
    d = createHash('sha256').update(Buffer.alloc(length)).digest();
    zeroDigests.set(length, d);
  }
  return d;
}
const maxBatchEntries = 4096;
const maxBatchesInFlight = 2;
const drainTimeoutMs = 120_000;
const connectTimeoutMs = 10_000;
/** Delay before a pair suspended by a failure tries to resync while its peer is reachable. */
const autoResyncDelayMs = 2000;

export interface CreatePairInput {
  name: string;
  volume: string;
  peer: PeerAddress;
  peerVolume?: string | undefined;
  mode: CopyMode;
  fence: FenceLevel;
  group?: string | undefined;
  /** full (default): allocated regions; none: declared identical; delta: compare and copy differences. */
  initialCopy?: InitialCopy | undefined;
  fenceGroup?: string | undefined;
  /** How the peer reaches this node, when not at its advertised address (NAT, a relay, a test proxy). */
  returnAddress?: { host: string; replPort: number } | undefined;
}

export type { GroupStatus, PairStatus };

interface PairRuntime {
  record: PairRecord;
  bitmap: PersistentBitmap;
  copying: boolean;
  /** The running (or resumed) copy compares checksums and copies only differing blocks. */
  deltaCopy: boolean;
  /** Bytes a delta copy found different (and sent), for status and benchmarks. */
  deltaBytesFound: number;
  /** A delta copy ran (or runs) since this node started: deltaBytes is meaningful even when 0. */
  deltaCopyRan: boolean;
  /** How the delta copy chose the regions to compare: from sequence numbers, or the whole volume. */
  deltaMethod: 'sequence' | 'compare' | null;
  deltaNote: string | null;
  /** A delta from sequence numbers: exact ranges to send, and regions known only coarsely (compared). */
  deltaPlan: { exact: ByteRange[]; coarse: Uint8Array } | null;
  /** Async copy: the secondary is consistent once it applied through this sequence number. */
  copyConsistentSeq: number;
  /** Async split: the pair is suspended once the secondary applied through this sequence number. */
  drainTargetSeq: number | null;
  commandChain: Promise<unknown>;
  stateWaiters: Set<() => void>;
  /** The secondary node answers but has neither the pair nor its volume: no automatic resync. */
  peerLostData: boolean;
}

interface VolumeRuntime {
  lock: RangeLock;
  activity: ActivityLog | undefined;
  /** Async entries of this volume held until its sync copy (fence data) has their writes again. */
  held: Array<{ group: string; seq: number }>;
  /** A role swap is quiescing this volume: new host writes are refused. */
  swapping: boolean;
}

interface Shipper {
  group: string;
  peer: string;
  /** Highest sequence number sent (or known received). */
  sentSeq: number;
  inFlight: number;
  running: boolean;
  wake: (() => void) | null;
  generation: number;
}

export class ReplicationService implements ReplicationDataPath {
  readonly peers: PeerManager;
  private store!: PairStore;
  private readonly pairs = new Map<string, PairRuntime>();
  private readonly volumeRuntimes = new Map<string, VolumeRuntime>();
  private readonly primaryJournals = new Map<string, PrimaryJournal>();
  private readonly receivedJournals = new Map<string, ReceivedJournal>();
  private readonly shippers = new Map<string, Shipper>();
  private readonly groupFallbacks = new Map<string, Promise<void>>();
  private readonly progressTimers = new Map<string, NodeJS.Timeout>();
  private readonly autoResyncTimers = new Map<string, NodeJS.Timeout>();
  /** Fence groups in which a sync pair with fence data cannot update its secondary, with the pair. */
  private readonly fencedGroups = new Map<string, string>();
  /** Per volume: regions of recent writes with their async stream position (delta resync). */
  private readonly deltaRecords = new DeltaRecords(diffChunkBytes);
  /** Per volume detached from an async stream: how far it applied it (persisted). */
  private marks = new Map<string, AppliedMark>();
  private replPortValue = 0;
  private stopped = false;

  constructor(
    private readonly options: ReplicationOptions,
    private readonly volumes: VolumeStore,
    private readonly dataDir: string,
    private readonly events: EventJournal,
    private readonly log: Logger,
  ) {
    this.peers = new PeerManager(options.localNode, options.secret, options.timings, log.child({ component: 'peers' }));
    this.peers.requestHandler = (type, payload, link) => this.handle(type, payload, link);
    this.peers.on('peer-up', (node: string) => this.onPeerUp(node));
    this.peers.on('peer-down', (node: string, reason: string) => this.onPeerDown(node, reason));
  }

  get replPort(): number {
    return this.replPortValue;
  }

  // ----------------------------------------------------------------------------------------------
  // Life cycle

  async start(host: string, port: number): Promise<number> {
    this.store = await PairStore.open(this.dataDir, this.log);
    this.marks = await this.store.loadMarks();
    for (const record of await this.store.loadAll()) {
      if (!this.volumes.has(record.volume)) {
        this.log.error({ pair: record.name, volume: record.volume }, 'pair refers to a missing volume; ignoring it');
        continue;
      }
      const bitmap = await this.store.bitmap(record.name, this.volumes.get(record.volume).sizeBytes);
      this.pairs.set(record.name, this.runtime(record, bitmap));
    }
    for (const p of this.pairs.values()) await this.openJournalsFor(p.record);
    this.refreshFences();
    await this.recoverAfterRestart();
    for (const journal of this.receivedJournals.values()) this.startApplier(journal);
    this.replPortValue = await this.peers.listen(host, port);
    for (const p of this.pairs.values()) this.wantPeerIfPrimary(p);
    return this.replPortValue;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.progressTimers.values()) clearTimeout(t);
    for (const t of this.autoResyncTimers.values()) clearTimeout(t);
    for (const s of this.shippers.values()) {
      s.running = false;
      s.wake?.();
    }
    await this.peers.close();
    for (const j of this.receivedJournals.values()) await j.close();
    for (const j of this.primaryJournals.values()) await j.close();
    for (const v of this.volumeRuntimes.values()) await v.activity?.close();
    for (const p of this.pairs.values()) await p.bitmap.close();
  }

  /** Startup: replay journals onto primaries, record regions a crash may have left different. */
  private async recoverAfterRestart(): Promise<void> {
    for (const [group, journal] of this.primaryJournals) {
      const retained = journal.retainedEntries();
      if (retained.length === 0) continue;
      // Every write was journaled before it was issued locally; replaying the tail in order makes
      // the local volumes hold at least what the journal will deliver to the secondary.
      for (const e of retained) {
        const p = this.pairs.get(e.pair);
        if (!p || p.record.role !== 'primary') continue;
        const volume = this.volumes.volume(p.record.volume);
        if (e.op === JournalOp.Write) await volume.write(e.offset, await journal.dataOf(e), { fua: false });
        else if (e.op === JournalOp.Zero) await volume.writeZeroes(e.offset, e.length, { fua: false, noHole: false, fastOnly: false });
      }
      await Promise.all([...new Set(retained.map((e) => this.pairs.get(e.pair)?.record.volume).filter((v): v is string => !!v))]
        .map((v) => this.volumes.volume(v).flush()));
      this.log.info({ group, entries: retained.length }, 'replayed the journal tail onto the primary volumes');
    }
    for (const [volumeName, vr] of this.volumeRuntimes) {
      if (!vr.activity) continue;
      const ranges = vr.activity.markedRanges();
      if (ranges.length === 0) continue;
      const syncPairs = this.pairsOfVolume(volumeName).filter((p) => p.record.role === 'primary' && p.record.mode === 'sync');
      for (const p of syncPairs) {
        for (const r of ranges) p.bitmap.markBytes(r.offset, Math.min(r.length, this.volumes.volume(volumeName).sizeBytes - r.offset));
        await p.bitmap.sync();
        if (p.record.state === 'duplex' || p.record.state === 'initial-copying' || p.record.state === 'duplex-pending') {
          await this.applyOutcome(p, { kind: 'transition', to: 'suspended', cause: 'crash-recovery',
            note: `node restarted with ${ranges.length} region(s) of writes in flight; they will be resynchronised` }, 'crash-recovery');
        }
      }
      await vr.activity.clearIdle();
    }
    // 3DC protection after a crash: entries whose sync copy is uncertain wait for it.
    for (const [group, journal] of this.primaryJournals) {
      for (const e of journal.retainedEntries()) {
        const p = this.pairs.get(e.pair);
        if (!p) continue;
        const syncLag = this.pairsOfVolume(p.record.volume).some((x) => x.record.role === 'primary' && x.record.mode === 'sync' &&
          x.record.fence === 'data' && x.record.state !== 'duplex');
        if (syncLag) {
          journal.hold(e.seq);
          this.volumeRuntime(p.record.volume).held.push({ group, seq: e.seq });
        }
      }
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Queries

  /** True when writes to the volume go through this service: it is paired or keeps delta state. */
  isPaired(volume: string): boolean {
    for (const p of this.pairs.values()) if (p.record.volume === volume) return true;
    return this.deltaRecords.has(volume) || this.marks.has(volume);
  }

  refusesWrites(volume: string): boolean {
    return this.writeRefusal(volume) !== undefined;
  }

  list(): PairStatus[] {
    return [...this.pairs.values()].map((p) => this.status(p)).sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): PairStatus {
    return this.status(this.pair(name));
  }

  groupStatus(group: string): GroupStatus {
    const members = [...this.pairs.values()].filter((p) => p.record.group === group);
    if (members.length === 0) {
      throw new TricopyError('not-found', `consistency group ${group} has no pairs on this node`, 'list pairs with: tricopy pair status');
    }
    const role = members[0]!.record.role;
    const peer = members[0]!.record.peer.node;
    const primaryJournal = this.primaryJournals.get(group);
    const received = this.receivedJournals.get(group);
    const lag: LagReport = primaryJournal ? primaryJournal.lag() : { entries: received?.backlog ?? 0, bytes: 0, seconds: 0 };
    return {
      group,
      role,
      peer,
      connected: this.peers.isUp(peer),
      pairs: members.map((p) => p.record.name).sort(),
      lastSeq: primaryJournal?.lastSeq ?? received?.receivedSeq ?? 0,
      receivedSeq: primaryJournal?.ackedSeq ?? received?.receivedSeq ?? 0,
      appliedSeq: primaryJournal?.appliedSeq ?? received?.appliedSeq ?? 0,
      journal: primaryJournal ? { usedBytes: primaryJournal.usedBytes, capacityBytes: primaryJournal.capacityBytes, fullPolicy: this.options.journalFullPolicy } : null,
      lag,
    };
  }

  groups(): string[] {
    return [...new Set([...this.pairs.values()].map((p) => p.record.group).filter((g): g is string => g !== null))].sort();
  }

  /** Resolves when the pair reaches `state` (or rejects after `timeoutMs`). */
  async waitFor(name: string, state: PairState, timeoutMs: number): Promise<PairStatus> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const p = this.pairs.get(name);
      if (state === 'simplex' && !p) return { ...this.simplexStatus(name) };
      if (!p) throw new TricopyError('not-found', `pair ${name} does not exist on this node`);
      if (p.record.state === state) return this.status(p);
      const left = deadline - Date.now();
      if (left <= 0) {
        throw new TricopyError('unavailable', `pair ${name} did not reach ${state} within ${timeoutMs} ms; it is ${p.record.state} (${shortCode(p.record)})`,
          p.record.reason ? `last transition: ${p.record.reason}` : undefined);
      }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          p!.stateWaiters.delete(done);
          resolve();
        }
        p.stateWaiters.add(done);
      });
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Operator commands

  async createPair(input: CreatePairInput): Promise<PairStatus> {
    if (!pairNamePattern.test(input.name)) {
      throw new TricopyError('invalid-argument', `"${input.name}" is not a valid pair name`, 'use 1–63 letters, digits, ".", "_" or "-"');
    }
    if (this.pairs.has(input.name)) throw new TricopyError('already-exists', `pair ${input.name} already exists`);
    if (!this.peers.hasSecret) {
      throw new TricopyError('invalid-argument', 'replication needs a cluster secret on every node',
        'start the nodes with --cluster-secret-file FILE (the same file content on all nodes)');
    }
    if (input.peer.node === this.options.localNode) throw new TricopyError('invalid-argument', 'a pair needs two different nodes');
    if (input.mode === 'sync' && input.group !== undefined) {
      throw new TricopyError('invalid-argument', 'consistency groups are for async pairs', 'sync pairs are consistent by construction; drop --group');
    }
    const meta = this.volumes.get(input.volume);
    const existing = this.pairsOfVolume(input.volume);
    const asSecondary = existing.find((p) => p.record.role === 'secondary' && p.record.state !== 'secondary-writable');
    // A cascade: the intermediate volume receives synchronously and forwards asynchronously.
    if (asSecondary && !(asSecondary.record.mode === 'sync' && input.mode === 'async')) {
      throw new TricopyError('conflict', `volume ${input.volume} is the secondary of pair ${asSecondary.record.name}`,
        'only a cascade is possible: a volume that receives synchronously may forward asynchronously');
    }
    if (existing.some((p) => p.record.peer.node === input.peer.node)) {
      throw new TricopyError('conflict', `volume ${input.volume} already has a pair to node ${input.peer.node}`);
    }
    let group: string | null = null;
    if (input.mode === 'async') {
      group = input.group ?? input.name;
      if (!groupNamePattern.test(group)) throw new TricopyError('invalid-argument', `"${group}" is not a valid group name`);
      const other = [...this.pairs.values()].find((p) => p.record.group === group);
      if (other && (other.record.role !== 'primary' || other.record.peer.node !== input.peer.node)) {
        throw new TricopyError('conflict', `group ${group} already replicates ${other.record.role === 'primary' ? `to node ${other.record.peer.node}` : 'as a secondary'}`,
          'every pair of a consistency group goes from this node to the same secondary node');
      }
    }
    const initialCopy: InitialCopy = input.initialCopy ?? 'full';
    const link = await this.peers.connectNow(input.peer, connectTimeoutMs).catch((err: unknown) => {
      this.releasePeerIfUnneeded(input.peer.node); // do not keep redialing a peer no pair needs
      throw err;
    });
    const now = new Date().toISOString();
    const record: PairRecord = {
      name: input.name, role: 'primary', volume: input.volume, peerVolume: input.peerVolume ?? input.volume, peer: input.peer,
      mode: input.mode, fence: input.fence, group, fenceGroup: input.fenceGroup ?? null,
      state: initialCopy === 'none' ? 'duplex' : 'initial-copying', suspendCause: null,
      reason: initialCopy === 'none' ? 'created without initial copy (contents declared identical)'
        : initialCopy === 'delta' ? 'created; comparing both volumes and copying only the blocks that differ'
          : 'created; initial copy of allocated regions',
      secondaryWritable: false, generation: 1, createdAt: now, updatedAt: now, copy: null, hostWritesRecorded: false, receivedSeqAtTakeover: null,
    };
    const request: PairCreateRequest = {
      name: record.name, volume: record.peerVolume, peerVolume: record.volume,
      primary: { node: this.options.localNode, host: input.returnAddress?.host ?? this.options.advertiseHost,
        replPort: input.returnAddress?.replPort ?? this.options.advertiseReplPort ?? this.replPortValue },
      mode: record.mode, fence: record.fence, group, sizeBytes: meta.sizeBytes, generation: record.generation,
      fenceGroup: record.fenceGroup, initialCopy, createVolume: true,
    };
    const reply = bitmapReplyCodec.decode(await link.request(MessageType.PairCreate, pairCreateCodec.encode(request)).catch((err: unknown) => {
      this.releasePeerIfUnneeded(input.peer.node);
      throw err;
    }));
    const bitmap = await this.store.bitmap(record.name, meta.sizeBytes);
    // A delta copy to a peer that applied an async stream this node recorded: only the regions of
    // the writes it had not applied are compared (and the differing blocks sent).
    const candidates = initialCopy === 'delta' ? this.deltaRecords.candidates(input.volume, reply.mark ?? null) : undefined;
    if (candidates?.usable) {
      bitmap.mergeFrom(candidates.bits);
      await bitmap.sync();
      record.reason = `created; delta resync from sequence numbers: ${candidates.text}`;
    } else if (initialCopy !== 'none') {
      // Copy what holds data here, and clear what holds data only there.
      bitmap.mergeFrom(this.volumes.volume(input.volume).allocation);
      bitmap.mergeFrom(decodeBitmap(reply.bitmap, bitmap));
      await bitmap.sync();
      if (candidates) record.reason = `created; comparing both volumes whole (no usable delta record: ${candidates.text})`;
    }
    await this.store.save(record);
    const p = this.runtime(record, bitmap);
    p.deltaCopy = initialCopy === 'delta';
    p.deltaCopyRan = p.deltaCopy;
    if (candidates) {
      p.deltaMethod = candidates.usable ? 'sequence' : 'compare';
      p.deltaNote = candidates.text;
      if (candidates.usable) p.deltaPlan = { exact: candidates.exact, coarse: candidates.coarse };
    }
    this.pairs.set(record.name, p);
    await this.openJournalsFor(record);
    this.refreshFences();
    this.events.emit('pair-created', record.name, record.reason,
      { role: 'primary', volume: record.volume, peer: record.peer.node, mode: record.mode, fence: record.fence, group, fenceGroup: record.fenceGroup, initialCopy });
    await this.notifyState(p);
    // A new group starts shipping at once (the secondary's received journal is empty).
    if (group && !this.shippers.get(group)?.running) this.startShipper(group, record.peer.node, 0);
    if (record.state === 'initial-copying') this.startCopy(p);
    return this.status(p);
  }

  split(name: string, options: { secondaryWritable: boolean }): Promise<PairStatus> {
    return this.command(name, async (p) => {
      if (p.record.role === 'secondary' && this.peers.isUp(p.record.peer.node) && p.record.state !== 'secondary-writable') {
        throw new TricopyError('invalid-argument', `split pair ${name} at its primary node ${p.record.peer.node}`,
          'the primary decides what the secondary holds at the split point');
      }
      const outcome = decide(p.record.role, p.record.state, 'split', p.record.mode, p.record.suspendCause);
      if (outcome.kind !== 'transition') return this.outcomeResult(p, outcome);
      p.record.secondaryWritable = options.secondaryWritable;
      await this.applyOutcome(p, outcome, 'split');
      if (p.record.state === 'suspending') await this.drainForSplit(p);
      return this.status(p);
    });
  }

  resync(name: string, options: { discard?: string | undefined }): Promise<PairStatus> {
    return this.command(name, async (p) => {
      const outcome = decide(p.record.role, p.record.state, 'resync', p.record.mode);
      if (outcome.kind !== 'transition') return this.outcomeResult(p, outcome);
      const link = await this.peers.connectNow(p.record.peer, connectTimeoutMs).catch((err: unknown) => {
        throw new TricopyError('unavailable', `cannot resync pair ${name}: ${errorMessage(err)}`);
      });
      const peerBitmap = bitmapReplyCodec.decode(await link.request(MessageType.PairBitmap, pairNameCodec.encode({ name })));
      if (p.record.hostWritesRecorded && peerBitmap.hostWritesRecorded) {
        if (options.discard === undefined) {
          throw new TricopyError('conflict',
            `split brain: both ${this.options.localNode} (primary) and ${p.record.peer.node} (secondary) were written while pair ${name} was suspended`,
            `name the side whose changes are discarded: --discard ${p.record.peer.node} keeps this primary's data; --discard ${this.options.localNode} makes ${p.record.peer.node} the primary (swap)`);
        }
        if (options.discard === this.options.localNode) {
          throw new TricopyError('invalid-argument', `to keep ${p.record.peer.node}'s data, run at that node: tricopy pair swap ${name} --discard ${this.options.localNode}`);
        }
        if (options.discard !== p.record.peer.node) {
          throw new TricopyError('invalid-argument', `--discard names a node of the pair: ${this.options.localNode} or ${p.record.peer.node}`);
        }
        this.events.emit('split-brain-resolved', name, `operator discarded the changes made on ${options.discard}`);
      }
      p.bitmap.mergeFrom(decodeBitmap(peerBitmap.bitmap, p.bitmap));
      await p.bitmap.sync();
      await link.request(MessageType.PairBitmapClear, pairNameCodec.encode({ name }));
      await this.startResync(p, outcome.note);
      return this.status(p);
    });
  }

  /**
   * At the secondary: with the primary reachable, swap roles (no data copy beyond what differs);
   * without it, make this volume writable after applying everything received (SSWS).
   */
  takeover(name: string): Promise<PairStatus[]> {
    const first = this.pair(name);
    const members = first.record.group
      ? [...this.pairs.values()].filter((p) => p.record.group === first.record.group)
      : [first];
    return this.commandAll(members.map((p) => p.record.name), async () => {
      for (const p of members) {
        const outcome = decide(p.record.role, p.record.state, 'takeover', p.record.mode);
        if (outcome.kind === 'refuse') throw new TricopyError('conflict', `takeover of pair ${p.record.name}: ${outcome.message}`);
      }
      if (members.every((p) => p.record.state === 'secondary-writable')) return members.map((p) => this.status(p));
      if (this.peers.isUp(first.record.peer.node)) {
        for (const p of members) await this.swapInternal(p, false);
        return members.map((p) => this.status(p));
      }
      // The primary is gone: apply everything received, then open the volumes for writes.
      const journal = first.record.group ? this.receivedJournals.get(first.record.group) : undefined;
      if (journal) await journal.drain();
      for (const p of members) {
        p.record.receivedSeqAtTakeover = journal ? journal.receivedSeq : null;
        p.record.generation += 1;
        p.record.hostWritesRecorded = false;
        await this.applyOutcome(p, decide(p.record.role, p.record.state, 'takeover', p.record.mode), 'takeover',
          `takeover: primary ${p.record.peer.node} unreachable${journal ? `; applied all ${journal.appliedSeq} received journal entries` : ''}; volume is writable (SSWS)`);
        // Watch for the old primary: when it returns it must learn it was taken over.
        this.wantPeerIfPrimary(p);
        if (journal && p.record.group) await this.saveMark(p.record.volume, { origin: p.record.peer.node, group: p.record.group, appliedSeq: journal.appliedSeq });
      }
      return members.map((p) => this.status(p));
    });
  }

  /** Reverses the direction: this node becomes the primary; only differing regions are copied. */
  swap(name: string, options: { discard?: string | undefined }): Promise<PairStatus[]> {
    const first = this.pair(name);
    const members = first.record.group
      ? [...this.pairs.values()].filter((p) => p.record.group === first.record.group)
      : [first];
    return this.commandAll(members.map((p) => p.record.name), async () => {
      // A group swap interrupted part-way (e.g. by a split brain on one member) is finished by
      // running it again here: members already swapped to this node are left as they are.
      const pending = members.filter((p) => !(p.record.role === 'primary' && p.record.suspendCause !== 'takeover-by-peer'));
      for (const p of members) {
        if (p.record.role === 'primary' && p.record.suspendCause !== 'takeover-by-peer' && pending.length === 0) {
          throw new TricopyError('invalid-argument', `this node is the primary of pair ${p.record.name}; run swap at ${p.record.peer.node}, the node that becomes the primary`);
        }
        if (!pending.includes(p)) continue;
        if (p.record.role === 'primary') {
          throw new TricopyError('conflict', `${p.record.peer.node} took over pair ${p.record.name}; run swap at ${p.record.peer.node}`);
        }
        const outcome = decide(p.record.role, p.record.state, 'swap', p.record.mode);
        if (outcome.kind === 'refuse') throw new TricopyError('conflict', `swap of pair ${p.record.name}: ${outcome.message}`);
      }
      if (options.discard !== undefined && options.discard !== first.record.peer.node) {
        throw new TricopyError('invalid-argument', `swap makes this node the primary: only ${first.record.peer.node}'s changes can be discarded`);
      }
      await this.peers.connectNow(first.record.peer, connectTimeoutMs).catch((err: unknown) => {
        throw new TricopyError('unavailable', `cannot swap pair ${name}: ${errorMessage(err)}`,
          'the old primary must be reachable to swap; if it is lost for good, keep running here (takeover) and delete the pair later');
      });
      for (const p of pending) await this.swapInternal(p, options.discard !== undefined);
      return members.map((p) => this.status(p));
    });
  }

  /** Changes how a pair is protected (fence level, fence group); at the primary. */
  setProtection(name: string, options: { fence: FenceLevel; fenceGroup: string | null }): Promise<PairStatus> {
    return this.command(name, async (p) => {
      if (p.record.role !== 'primary') throw new TricopyError('invalid-argument', `protection is set at the primary of pair ${name} (${p.record.peer.node})`);
      if (p.record.mode !== 'sync' && options.fence === 'data') throw new TricopyError('invalid-argument', 'fence data is for sync pairs');
      p.record.fence = options.fence;
      p.record.fenceGroup = options.fenceGroup;
      p.record.updatedAt = new Date().toISOString();
      await this.store.save(p.record);
      this.refreshFences();
      this.events.emit('pair-protection', name, `fence ${options.fence}${options.fenceGroup ? `, fence group ${options.fenceGroup}` : ''}`);
      return this.status(p);
    });
  }

  deletePair(name: string, options: { force: boolean }): Promise<void> {
    return this.command(name, async (p) => {
      // Forced: do not wait for a peer that is down (a failover must be fast); it reconciles later.
      const reachable = this.peers.isUp(p.record.peer.node) ||
        (!options.force && await this.peers.connectNow(p.record.peer, 3000).then(() => true, () => false));
      if (reachable) {
        await this.peers.request(p.record.peer.node, MessageType.PairDelete, pairNameCodec.encode({ name })).catch((err: unknown) => {
          if (!options.force) throw err;
        });
      } else if (!options.force) {
        this.releasePeerIfUnneeded(p.record.peer.node);
        throw new TricopyError('unavailable', `node ${p.record.peer.node} is not reachable, so pair ${name} cannot be deleted on both sides`,
          `pass --force to delete it here only; ${p.record.peer.node} drops its side when it reconnects`);
      }
      await this.removePair(p, reachable ? 'deleted by operator' : 'deleted by operator on this node only (peer unreachable)');
    }).then(() => undefined);
  }

  // ----------------------------------------------------------------------------------------------
  // Data path

  /**
   * Why a host (or, for a cascade, the upstream primary: origin 'replication') may not write the
   * volume now; undefined when it may.
   */
  private writeRefusal(volume: string, origin: 'host' | 'replication' = 'host'): BlockDeviceError | undefined {
    const pairs = this.pairsOfVolume(volume);
    if (pairs.length === 0) return undefined;
    if (this.volumeRuntimes.get(volume)?.swapping) {
      return new BlockDeviceError('EPERM', `volume ${volume} is changing roles; it is no longer the primary`);
    }
    for (const p of pairs) {
      const r = p.record;
      if (r.fenceGroup !== null && this.fencedGroups.has(r.fenceGroup) && r.role === 'primary' && origin === 'host') {
        return new BlockDeviceError('EIO', `the sync copy of protected group ${r.fenceGroup} cannot be updated (${this.fencedGroups.get(r.fenceGroup)}): writes to all its volumes are refused`);
      }
      if (r.role === 'secondary' && origin === 'replication') continue;
      if (r.role === 'secondary') {
        const writable = r.state === 'secondary-writable' || r.state === 'simplex' || (r.state === 'suspended' && r.secondaryWritable);
        if (!writable) {
          return new BlockDeviceError('EPERM', `volume ${volume} is the secondary of pair ${r.name} (${r.state}); hosts may only read it`);
        }
      } else if (r.state === 'suspended' && r.suspendCause === 'takeover-by-peer') {
        return new BlockDeviceError('EPERM', `${r.peer.node} took over pair ${r.name}; volume ${volume} is no longer the primary`);
      } else if (r.mode === 'sync' && r.fence === 'data' && r.state === 'suspended' && r.suspendCause !== 'operator') {
        return new BlockDeviceError('EIO', `pair ${r.name} cannot update its secondary on ${r.peer.node} (fence data): writes are refused`);
      }
    }
    return undefined;
  }

  async write(volume: Volume, offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void> {
    await this.writeOp(volume, offset, data, options, 'host');
  }

  async writeZeroes(volume: Volume, offset: number, length: number, options: ZeroOptions): Promise<void> {
    await this.writeZeroesOp(volume, offset, length, options, 'host');
  }

  /** A host write (or, at a cascade intermediate, a forwarded one); returns the journal tag it got, if any. */
  private writeOp(volume: Volume, offset: number, data: Buffer | Buffer[], options: WriteOptions, origin: 'host' | 'replication'): Promise<DeltaTag | undefined> {
    const payload = Buffer.isBuffer(data) ? data : Buffer.concat(data);
    return this.replicatedOp(volume, offset, payload.length, options.fua, origin, {
      local: () => volume.write(offset, payload, options),
      entry: (pair) => ({ op: JournalOp.Write, pair, offset, length: payload.length, data: payload }),
      remote: (peer, pair, tag) => this.peers.request(peer, MessageType.Write,
        [encodeDataHeader({ name: pair, offset, length: payload.length, flags: options.fua ? dataFlagFua : 0, tag }), payload],
        this.options.syncWriteTimeoutMs),
    });
  }

  private async writeZeroesOp(volume: Volume, offset: number, length: number, options: ZeroOptions, origin: 'host' | 'replication'): Promise<DeltaTag | undefined> {
    if (options.fastOnly) {
      // A fast zero is fine when the local part is fast: it never writes data to forward.
      const touched = volume.allocation.chunkRange(offset, length);
      if (volume.allocation.anySet(touched.first, touched.count)) {
        throw new BlockDeviceError('ENOTSUP', 'zeroing allocated regions is no faster than writing them');
      }
    }
    return this.replicatedOp(volume, offset, length, options.fua, origin, {
      local: () => volume.writeZeroes(offset, length, { ...options, fastOnly: false }),
      entry: (pair) => ({ op: JournalOp.Zero, pair, offset, length }),
      remote: (peer, pair, tag) => this.peers.request(peer, MessageType.Zero,
        encodeDataHeader({ name: pair, offset, length, flags: options.fua ? dataFlagFua : 0, tag }), this.options.syncWriteTimeoutMs),
    });
  }

  async flush(volume: Volume): Promise<void> {
    const refusal = this.writeRefusal(volume.name);
    const pairs = this.pairsOfVolume(volume.name);
    const tasks: Promise<unknown>[] = [volume.flush()];
    for (const p of pairs) {
      // Regions recorded instead of sent (suspended, SSWS) must survive a power loss once flushed.
      tasks.push(p.bitmap.sync());
      if (p.record.role !== 'primary') continue;
      if (p.record.mode === 'async' && p.record.group) {
        const journal = this.primaryJournals.get(p.record.group);
        if (journal) tasks.push(journal.sync());
      } else if (p.record.mode === 'sync' && this.forwards(p)) {
        tasks.push(this.peers.request(p.record.peer.node, MessageType.Flush, encodeDataHeader({ name: p.record.name, offset: 0, length: 0, flags: 0 }),
          this.options.syncWriteTimeoutMs).catch(async (err: unknown) => {
          await this.failPair(p, `flush on the secondary failed: ${errorMessage(err)}`);
          if (p.record.fence === 'data') throw new BlockDeviceError('EIO', `pair ${p.record.name} could not flush its secondary (fence data)`);
        }));
      }
    }
    await Promise.all(tasks);
    if (refusal?.errno === 'EIO') throw refusal;
  }

  /**
   * One host modification of a paired volume: fence check, range lock, journal (async) before the
   * local write, local and sync-remote writes in parallel, bitmaps for everything not forwarded.
   */
  private async replicatedOp(volume: Volume, offset: number, length: number, fua: boolean, origin: 'host' | 'replication', op: {
    local: () => Promise<void>;
    entry: (pair: string) => Omit<JournalEntry, 'seq' | 'timeMs'>;
    remote: (peer: string, pair: string, tag: DeltaTag | undefined) => Promise<Buffer>;
  }): Promise<DeltaTag | undefined> {
    const refusal = this.writeRefusal(volume.name, origin);
    if (refusal) throw refusal;
    if (length === 0) {
      await op.local();
      return undefined;
    }
    // A host write makes the volume differ from the stream it was detached from.
    if (origin === 'host' && this.marks.has(volume.name)) await this.dropMark(volume.name, 'written by a host');
    const vr = this.volumeRuntime(volume.name);
    const release = await vr.lock.acquire(offset, length);
    const recheck = this.writeRefusal(volume.name, origin);
    if (recheck) {
      release();
      throw recheck;
    }
    let activityMarked = false;
    const seqs: Array<{ seq: number; journal: PrimaryJournal }> = [];
    try {
      const pairs = this.pairsOfVolume(volume.name);
      const forwarded = pairs.filter((p) => p.record.role === 'primary' && p.record.mode === 'sync' && this.forwards(p));
      const journaled = pairs.filter((p) => p.record.role === 'primary' && p.record.mode === 'async' && this.journals(p));
      // A cascade intermediate forwards what its primary sends; that is no change of its own.
      const recorded = pairs.filter((p) => !forwarded.includes(p) && !journaled.includes(p) && !(origin === 'replication' && p.record.role === 'secondary'));
      if (forwarded.length > 0 && vr.activity) {
        await vr.activity.begin(offset, length);
        activityMarked = true;
      }
      // Regions not sent anywhere now are recorded durably before the volume changes.
      for (const p of recorded) p.bitmap.markBytes(offset, length);
      await Promise.all(recorded.map((p) => p.bitmap.persist()));
      // Async: the entry is in the journal before the volume changes, so a crash can never leave
      // the primary holding data its journal will not deliver. With a fence-data sync copy too
      // (3DC), the entry is held back until the sync copy has the write.
      const holdForSync = forwarded.some((p) => p.record.fence === 'data');
      for (const p of journaled) {
        const appended = await this.appendToJournal(p, op.entry(p.record.name), holdForSync);
        if (appended) seqs.push(appended);
        else recorded.push(p); // the group fell back to bitmaps meanwhile
      }
      // The write's place in the async stream travels with it to the sync copy (multi-target delta
      // resync); the group's one journal gives it. Both copies are in step when both pairs are duplex.
      const first = seqs[0];
      const asyncPair = journaled[0];
      const tagOf = (p: PairRuntime): DeltaTag | undefined => seqs.length === 1 && first && asyncPair
        ? { group: first.journal.group, seq: first.seq, appliedSeq: first.journal.appliedSeq, inStep: p.record.state === 'duplex' && asyncPair.record.state === 'duplex' }
        : undefined;
      const remote = forwarded.map((p) => op.remote(p.record.peer.node, p.record.name, tagOf(p))
        .then((reply) => ({ reply, err: undefined }), (err: unknown) => ({ reply: undefined, err: err as Error })));
      const localResult = await op.local().then(() => undefined, (err: unknown) => err);
      const remoteResults = await Promise.all(remote);
      this.recordDelta(volume, offset, length, forwarded, remoteResults);
      let fenced: BlockDeviceError | undefined;
      for (let i = 0; i < forwarded.length; i++) {
        const err = remoteResults[i]!.err;
        if (!err) continue;
        const p = forwarded[i]!;
        p.bitmap.markBytes(offset, length);
        await p.bitmap.sync();
        await this.failPair(p, `write to the secondary failed: ${errorMessage(err)}`);
        if (p.record.fence === 'data') {
          fenced = new BlockDeviceError('EIO', `pair ${p.record.name} could not update its secondary on ${p.record.peer.node} (fence data): write refused`);
        } else {
          recorded.push(p);
        }
      }
      if (holdForSync) {
        if (fenced) for (const x of seqs) vr.held.push({ group: x.journal.group, seq: x.seq });
        else for (const x of seqs) this.releaseHeld(x.journal, x.seq);
      }
      if (localResult) throw localResult;
      if (fenced) throw fenced;
      // The write is acknowledged: wherever it was only recorded, this side now has changes the
      // other side lacks (what split-brain detection looks at).
      for (const p of recorded) {
        if (!p.record.hostWritesRecorded) {
          p.record.hostWritesRecorded = true;
          await this.store.save(p.record);
        }
      }
      if (fua) for (const s of seqs) await s.journal.sync();
      const receiving = origin === 'replication' ? pairs.find((p) => p.record.role === 'secondary') : undefined;
      return first && asyncPair && seqs.length === 1
        ? { group: first.journal.group, seq: first.seq, appliedSeq: first.journal.appliedSeq, inStep: asyncPair.record.state === 'duplex' && receiving?.record.state === 'duplex' }
        : undefined;
    } finally {
      for (const s of seqs) await s.journal.localDone(s.seq);
      if (activityMarked) vr.activity!.end(offset, length);
      release();
    }
  }

  /**
   * Keeps the volume's delta record: a cascade intermediate answers a forwarded write with the tag
   * it journaled it under; anything else this node writes has no place in a stream it follows.
   */
  private recordDelta(volume: Volume, offset: number, length: number, forwarded: PairRuntime[],
    results: Array<{ reply: Buffer | undefined; err: Error | undefined }>): void {
    let tagged = false;
    for (let i = 0; i < forwarded.length; i++) {
      const reply = results[i]!.reply;
      if (!reply || reply.length === 0) continue;
      this.deltaRecords.tagged(volume.name, volume.sizeBytes, forwarded[i]!.record.peer.node, 'acknowledged', decodeDeltaTagReply(reply)!, offset, length);
      tagged = true;
    }
    if (!tagged) this.deltaRecords.untagged(volume.name, offset, length);
  }

  private releaseHeld(journal: PrimaryJournal, seq: number): void {
    journal.release(seq);
    this.wakeShipper(journal.group);
  }

  /** A volume's sync copy has every write again: its held async entries may go. */
  private releaseHeldOf(volume: string): void {
    const vr = this.volumeRuntimes.get(volume);
    if (!vr || vr.held.length === 0) return;
    for (const h of vr.held.splice(0)) {
      const journal = this.primaryJournals.get(h.group);
      if (journal) this.releaseHeld(journal, h.seq);
    }
    this.log.info({ volume }, 'sync copy restored: held async entries released');
  }

  /** Appends to the pair's group journal, honouring the journal-full policy. */
  private async appendToJournal(p: PairRuntime, entry: Omit<JournalEntry, 'seq' | 'timeMs'>, held = false): Promise<{ seq: number; journal: PrimaryJournal } | undefined> {
    const group = p.record.group!;
    let journal = this.primaryJournals.get(group)!;
    invariant(journal, `async pair ${p.record.name} has the journal of group ${group}`);
    const bytes = entry.op === JournalOp.Write ? entry.length + 64 : 64;
    let waitedSince: number | undefined;
    while (journal.wouldOverflow(bytes)) {
      if (this.options.journalFullPolicy === 'suspend' ||
          (waitedSince !== undefined && Date.now() - waitedSince > this.options.journalStallTimeoutMs)) {
        await this.fallBackToBitmaps(group, new JournalFullError(group, journal.capacityBytes).message);
        p.bitmap.markBytes(entry.offset, entry.length);
        await p.bitmap.persist();
        return undefined;
      }
      waitedSince ??= Date.now();
      await journal.waitForSpace(1000);
      journal = this.primaryJournals.get(group)!;
      if (!this.journals(p)) {
        p.bitmap.markBytes(entry.offset, entry.length);
        await p.bitmap.persist();
        return undefined;
      }
    }
    const { seq, written } = journal.append(entry, { held });
    await written;
    this.wakeShipper(group);
    return { seq, journal };
  }

  /** Sync pair whose writes go to the secondary now. */
  private forwards(p: PairRuntime): boolean {
    const s = p.record.state;
    return s === 'duplex' || s === 'initial-copying' || s === 'duplex-pending';
  }

  /** Async pair whose writes go into the journal now. */
  private journals(p: PairRuntime): boolean {
    const s = p.record.state;
    return s === 'duplex' || s === 'initial-copying' || s === 'duplex-pending';
  }

  // ----------------------------------------------------------------------------------------------
  // State transitions

  private async failPair(p: PairRuntime, reason: string): Promise<void> {
    if (p.record.state === 'suspended') return;
    const outcome = decide(p.record.role, p.record.state, 'failure', p.record.mode);
    if (outcome.kind !== 'transition') return;
    await this.applyOutcome(p, outcome, 'failure', reason);
    // An async primary cannot drain a stream that failed: what the secondary lacks becomes
    // recorded regions and the pair is suspended (resync and auto-resync take it from there).
    if (p.record.role === 'primary' && p.record.state === 'suspending' && p.drainTargetSeq === null) await this.suspendUndelivered(p, reason);
  }

  /** Async primary: entries the secondary has not received become recorded regions; the pair is suspended. */
  private async suspendUndelivered(p: PairRuntime, note: string): Promise<void> {
    const journal = this.primaryJournals.get(p.record.group!);
    if (journal) for (const e of journal.retainedEntries()) if (e.pair === p.record.name && e.seq > journal.ackedSeq) p.bitmap.markBytes(e.offset, e.length);
    await p.bitmap.sync();
    await this.applyOutcome(p, { kind: 'transition', to: 'suspended', cause: 'failure', note: '' }, 'drain-complete', note);
  }

  /** Applies a transition: persist, log the event with its reason, wake waiters, tell the peer. */
  private async applyOutcome(p: PairRuntime, outcome: ReturnType<typeof decide>, event: PairEvent | 'crash-recovery', reason?: string): Promise<void> {
    if (outcome.kind !== 'transition') return;
    const from = p.record.state;
    const fromCode = shortCode(p.record);
    p.record.state = outcome.to;
    if (outcome.to === 'suspended' || outcome.to === 'suspending') {
      if (outcome.cause !== undefined && outcome.cause !== null) p.record.suspendCause = outcome.cause;
    } else {
      p.record.suspendCause = null;
    }
    if (outcome.to !== 'suspended' && outcome.to !== 'suspending') p.record.secondaryWritable = false;
    p.record.reason = reason ?? outcome.note;
    p.record.updatedAt = new Date().toISOString();
    if (outcome.to === 'duplex') p.record.copy = null;
    await this.store.save(p.record);
    this.refreshFences();
    this.events.emit('pair-state', p.record.name, p.record.reason, {
      event, role: p.record.role, from, to: p.record.state, fromCode, code: shortCode(p.record), generation: p.record.generation,
    });
    for (const w of [...p.stateWaiters]) w();
    // A sync secondary's delta record holds only while the async site cannot get ahead of it: the
    // primary holds back async entries after a failure with fence data, but not after a split or
    // without fence data.
    if (p.record.role === 'secondary' && p.record.mode === 'sync' && p.record.state === 'suspended' &&
        (p.record.suspendCause !== 'failure' || p.record.fence !== 'data')) {
      this.deltaRecords.invalidate(p.record.volume, `pair ${p.record.name} was suspended (${p.record.suspendCause ?? 'unknown cause'}, fence ${p.record.fence}): the async site may hold writes this node lacks`);
    }
    // Held async entries go once the sync copy has their writes again, or once the operator chose
    // to run without the sync copy (a split).
    if (p.record.role === 'primary' && p.record.mode === 'sync' &&
        (p.record.state === 'duplex' || (p.record.state === 'suspended' && p.record.suspendCause === 'operator'))) {
      this.releaseHeldOf(p.record.volume);
    }
    // The secondary must know before the primary acts on the new state (e.g. copies into it).
    if (p.record.role === 'primary') await this.notifyState(p);
    // An async pair in step again: the volume's sync secondary may start its delta record.
    if (p.record.role === 'primary' && p.record.mode === 'async' && p.record.state === 'duplex') {
      for (const s of this.pairsOfVolume(p.record.volume)) if (s.record.role === 'primary' && s.record.mode === 'sync' && s.record.state === 'duplex') await this.notifyState(s);
    }
    if (p.record.role === 'primary' && p.record.mode === 'sync') await this.syncActivityLogUse(p.record.volume);
    this.scheduleAutoResync(p);
  }

  /** Recomputes which fence groups refuse writes (after any state change). */
  private refreshFences(): void {
    this.fencedGroups.clear();
    for (const p of this.pairs.values()) {
      const r = p.record;
      if (r.fenceGroup !== null && r.role === 'primary' && r.mode === 'sync' && r.fence === 'data' &&
          r.state === 'suspended' && r.suspendCause !== 'operator' && r.suspendCause !== 'takeover-by-peer') {
        this.fencedGroups.set(r.fenceGroup, `pair ${r.name}: ${r.reason}`);
      }
    }
  }

  /** Where a sync secondary's delta record may start: both copies of the volume in step now. */
  private deltaBaseFor(p: PairRuntime): { group: string; seq: number } | null {
    if (p.record.role !== 'primary' || p.record.mode !== 'sync' || p.record.state !== 'duplex') return null;
    const asyncPairs = this.pairsOfVolume(p.record.volume).filter((x) => x.record.role === 'primary' && x.record.mode === 'async');
    const only = asyncPairs.length === 1 ? asyncPairs[0]! : undefined;
    const journal = only?.record.state === 'duplex' ? this.primaryJournals.get(only.record.group!) : undefined;
    return journal ? { group: journal.group, seq: journal.lastSeq } : null;
  }

  /** Primary → secondary: mirror my view of the pair (best effort; reconciled again on reconnect). */
  private notifyState(p: PairRuntime): Promise<void> {
    if (!this.peers.isUp(p.record.peer.node)) return Promise.resolve();
    const update: PairUpdate = {
      name: p.record.name, role: 'secondary', state: p.record.state, suspendCause: p.record.suspendCause, reason: p.record.reason,
      generation: p.record.generation, secondaryWritable: p.record.secondaryWritable,
      copyTotal: p.record.copy?.totalChunks ?? 0, copyDone: p.record.copy?.doneChunks ?? 0,
      deltaBase: this.deltaBaseFor(p),
    };
    return this.peers.request(p.record.peer.node, MessageType.PairUpdate, pairUpdateCodec.encode(update)).then(() => undefined, (err: unknown) =>
      this.log.debug({ pair: p.record.name, err: errorMessage(err) }, 'could not tell the secondary about a state change'));
  }

  private async startResync(p: PairRuntime, note: string): Promise<void> {
    await this.applyOutcome(p, { kind: 'transition', to: 'duplex-pending', note }, 'resync',
      `resync: ${formatBytes(p.bitmap.setBitCount * diffChunkBytes)} of changed regions to copy`);
    this.startCopy(p);
  }

  // ----------------------------------------------------------------------------------------------
  // Copy engine (initial copy and resync)

  private startCopy(p: PairRuntime): void {
    if (p.copying || this.stopped) return;
    p.copying = true;
    const run = p.record.mode === 'sync' ? this.copySync(p) : this.copyAsync(p);
    void run.catch(async (err: unknown) => {
      this.log.warn({ pair: p.record.name, err: errorMessage(err) }, 'copy stopped');
      await this.failPair(p, `copy stopped: ${errorMessage(err)}`);
    }).finally(() => {
      p.copying = false;
    });
  }

  private copyingState(p: PairRuntime): boolean {
    return p.record.role === 'primary' && (p.record.state === 'initial-copying' || p.record.state === 'duplex-pending');
  }

  private async copySync(p: PairRuntime): Promise<void> {
    const volume = this.volumes.volume(p.record.volume);
    const vr = this.volumeRuntime(p.record.volume);
    const total = p.bitmap.setBitCount;
    p.record.copy = { totalChunks: total, doneChunks: 0 };
    let cursor = 0;
    // The next run of changed regions: one copy request (or, comparing, one checksum request) each.
    const runBytes = p.deltaCopy ? maxDeltaRunBytes : maxCopyRequestBytes;
    const next = (): { first: number; count: number } | undefined => {
      const runs = p.bitmap.runs(cursor, p.bitmap.bitCount - cursor, 2);
      const set = runs.find((r) => r.set);
      if (!set) return undefined;
      const count = Math.min(set.bitCount, runBytes / diffChunkBytes);
      cursor = set.firstBit + count;
      return { first: set.firstBit, count };
    };
    const copyRange = async (offset: number, length: number): Promise<void> => {
      const release = await vr.lock.acquire(offset, length);
      try {
        if (!this.copyingState(p)) return;
        const header = encodeDataHeader({ name: p.record.name, offset, length, flags: 0 });
        const extents = volume.extents(offset, length, 1);
        if (extents[0] && !extents[0].allocated && extents[0].length >= length) {
          await this.peers.request(p.record.peer.node, MessageType.Zero, header, this.options.syncWriteTimeoutMs);
        } else {
          const data = await volume.read(offset, length);
          await this.peers.request(p.record.peer.node, MessageType.Copy, [header, data], this.options.syncWriteTimeoutMs);
        }
      } finally {
        release();
      }
    };
    const worker = async (): Promise<void> => {
      for (;;) {
        if (!this.copyingState(p) || this.stopped) return;
        const run = next();
        if (run === undefined) return;
        const offset = run.first * diffChunkBytes;
        const length = Math.min(run.count * diffChunkBytes, volume.sizeBytes - offset);
        const ranges = await this.rangesToCopy(p, volume, offset, length);
        for (const r of ranges) {
          for (let at = r.offset; at < r.offset + r.length; at += maxCopyRequestBytes) {
            await copyRange(at, Math.min(maxCopyRequestBytes, r.offset + r.length - at));
          }
        }
        if (!this.copyingState(p)) return;
        p.bitmap.clearRange(run.first, run.count);
        p.record.copy!.doneChunks += run.count;
      }
    };
    await Promise.all(Array.from({ length: this.options.copyConcurrency }, () => worker()));
    if (!this.copyingState(p)) return;
    // Writes may have set bits behind the cursor (only when forwarding failed, which fails the pair).
    if (p.bitmap.setBitCount > 0) {
      p.copying = false;
      this.startCopy(p);
      return;
    }
    await this.peers.request(p.record.peer.node, MessageType.Flush, encodeDataHeader({ name: p.record.name, offset: 0, length: 0, flags: 0 }));
    await p.bitmap.sync();
    p.record.hostWritesRecorded = false;
    p.deltaCopy = false;
    p.deltaPlan = null;
    await this.applyOutcome(p, decide('primary', p.record.state, 'copy-complete', 'sync'), 'copy-complete');
  }

  /**
   * What of [offset, offset+length) a copy sends: all of it; for a delta from sequence numbers the
   * exact ranges of the writes the peer lacks (and a comparison inside coarse regions); for any
   * other delta, the blocks whose checksums differ.
   */
  private async rangesToCopy(p: PairRuntime, volume: Volume, offset: number, length: number): Promise<ByteRange[]> {
    if (!p.deltaCopy) return [{ offset, length }];
    const plan = p.deltaPlan;
    if (!plan) return this.differingRanges(p, volume, offset, length);
    const end = offset + length;
    const out: ByteRange[] = [];
    const isCoarse = (c: number): boolean => (plan.coarse[c >> 3]! & (1 << (c & 7))) !== 0;
    const lastChunk = Math.ceil(end / diffChunkBytes);
    for (let c = Math.floor(offset / diffChunkBytes); c < lastChunk;) {
      if (!isCoarse(c)) {
        c++;
        continue;
      }
      let d = c;
      while (d < lastChunk && isCoarse(d)) d++;
      const from = Math.max(offset, c * diffChunkBytes);
      const to = Math.min(end, d * diffChunkBytes);
      out.push(...await this.differingRanges(p, volume, from, to - from));
      c = d;
    }
    // The exact ranges are sorted and disjoint: find the first that ends after `offset`.
    let lo = 0;
    let hi = plan.exact.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (plan.exact[mid]!.offset + plan.exact[mid]!.length <= offset) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo; i < plan.exact.length && plan.exact[i]!.offset < end; i++) {
      const r = plan.exact[i]!;
      const from = Math.max(r.offset, offset);
      const to = Math.min(r.offset + r.length, end);
      out.push({ offset: from, length: to - from });
      p.deltaBytesFound += to - from;
    }
    return mergeRanges(out);
  }

  /**
   * The byte ranges of [offset, offset+length) whose contents differ between this volume and the
   * peer's: checksums of 64 KiB regions first, then of 4 KiB blocks inside the regions that differ,
   * so only differing blocks travel. Writes made meanwhile are forwarded or journaled as usual.
   */
  private async differingRanges(p: PairRuntime, volume: Volume, offset: number, length: number): Promise<Array<{ offset: number; length: number }>> {
    const peer = p.record.peer.node;
    const ask = async (off: number, len: number, grain: number): Promise<Buffer> =>
      this.peers.request(peer, MessageType.RegionHashes, regionHashesCodec.encode({ name: p.record.name, offset: off, length: len, grainBytes: grain }));
    const [theirs, ours] = await Promise.all([ask(offset, length, deltaRegionBytes), this.regionHashes(volume, offset, length, deltaRegionBytes)]);
    const out: Array<{ offset: number; length: number }> = [];
    const push = (off: number, len: number): void => {
      const last = out.at(-1);
      if (last && last.offset + last.length === off) last.length += len;
      else out.push({ offset: off, length: len });
    };
    for (let i = 0; i * hashBytes < ours.length; i++) {
      if (ours.subarray(i * hashBytes, (i + 1) * hashBytes).equals(theirs.subarray(i * hashBytes, (i + 1) * hashBytes))) continue;
      const regionOffset = offset + i * deltaRegionBytes;
      const regionLength = Math.min(deltaRegionBytes, offset + length - regionOffset);
      const [t, o] = await Promise.all([ask(regionOffset, regionLength, deltaBlockBytes), this.regionHashes(volume, regionOffset, regionLength, deltaBlockBytes)]);
      for (let j = 0; j * hashBytes < o.length; j++) {
        if (o.subarray(j * hashBytes, (j + 1) * hashBytes).equals(t.subarray(j * hashBytes, (j + 1) * hashBytes))) continue;
        const blockOffset = regionOffset + j * deltaBlockBytes;
        push(blockOffset, Math.min(deltaBlockBytes, regionOffset + regionLength - blockOffset));
      }
    }
    p.deltaBytesFound += out.reduce((n, r) => n + r.length, 0);
    return out;
  }

  /** 16-byte SHA-256 prefixes of each `grain` of [offset, offset+length); holes hash as zeroes without reads. */
  private async regionHashes(volume: Volume, offset: number, length: number, grain: number): Promise<Buffer> {
    const end = Math.min(offset + length, volume.sizeBytes);
    const pieces = Math.max(0, Math.ceil((end - offset) / grain));
    const out = Buffer.alloc(pieces * hashBytes);
    for (let at = offset, i = 0; at < end; at += grain, i++) {
      const len = Math.min(grain, end - at);
      const extents = volume.extents(at, len, 1);
      let digest: Buffer;
      if (extents[0] && extents[0].zero && extents[0].length >= len) digest = zeroDigest(len);
      else digest = createHash('sha256').update(await volume.read(at, len)).digest();
      digest.copy(out, i * hashBytes, 0, hashBytes);
    }
    return out;
  }

  /** Async copy: regions become ordered copy markers in the journal; their data is read when shipped. */
  private async copyAsync(p: PairRuntime): Promise<void> {
    const group = p.record.group!;
    const total = p.bitmap.setBitCount;
    p.record.copy = { totalChunks: total, doneChunks: 0 };
    const volume = this.volumes.volume(p.record.volume);
    const perStep = (p.deltaCopy ? maxDeltaRunBytes : maxCopyRequestBytes) / diffChunkBytes;
    for (const run of [...p.bitmap.setRuns()]) {
      for (let chunk = run.first; chunk < run.first + run.count; chunk += perStep) {
        if (!this.copyingState(p) || this.stopped) return;
        const count = Math.min(perStep, run.first + run.count - chunk);
        const offset = chunk * diffChunkBytes;
        const length = Math.min(count * diffChunkBytes, volume.sizeBytes - offset);
        const ranges = await this.rangesToCopy(p, volume, offset, length);
        for (const r of ranges) {
          for (let at = r.offset; at < r.offset + r.length; at += maxCopyRequestBytes) {
            const appended = await this.appendToJournal(p, { op: JournalOp.CopyRegion, pair: p.record.name, offset: at, length: Math.min(maxCopyRequestBytes, r.offset + r.length - at) });
            if (!appended) return; // the group fell back to bitmaps
          }
        }
        p.bitmap.clearRange(chunk, count);
        p.record.copy.doneChunks += count;
      }
    }
    await p.bitmap.persist();
    p.copyConsistentSeq = Math.max(p.copyConsistentSeq, this.primaryJournals.get(group)!.lastSeq);
    await this.checkAsyncCopyDone(p);
  }

  private async checkAsyncCopyDone(p: PairRuntime): Promise<void> {
    if (!this.copyingState(p) || p.record.mode !== 'async' || p.copying && p.bitmap.setBitCount > 0) return;
    if (p.bitmap.setBitCount > 0) return;
    const journal = this.primaryJournals.get(p.record.group!);
    if (!journal || journal.appliedSeq < p.copyConsistentSeq) return;
    p.record.hostWritesRecorded = false;
    p.deltaCopy = false;
    p.deltaPlan = null;
    await this.applyOutcome(p, decide('primary', p.record.state, 'copy-complete', 'async'), 'copy-complete',
      `${p.record.state === 'initial-copying' ? 'initial copy' : 'resync'} finished; the secondary holds a consistent image (applied through entry ${journal.appliedSeq})`);
  }

  // ----------------------------------------------------------------------------------------------
  // Async: split drain, journal-full fallback, shipping

  private async drainForSplit(p: PairRuntime): Promise<void> {
    const journal = this.primaryJournals.get(p.record.group!)!;
    const target = journal.lastSeq;
    p.drainTargetSeq = target;
    const deadline = Date.now() + drainTimeoutMs;
    while (journal.appliedSeq < target && Date.now() < deadline && this.peers.isUp(p.record.peer.node) && p.record.state === 'suspending') {
      await new Promise((r) => setTimeout(r, 20));
    }
    p.drainTargetSeq = null;
    if (p.record.state !== 'suspending') return;
    if (journal.appliedSeq >= target) {
      await this.applyOutcome(p, decide('primary', 'suspending', 'drain-complete', 'async'), 'drain-complete',
        `split: the secondary applied every entry through ${target}; it holds this volume's state at the split point`);
      return;
    }
    // The secondary could not take everything: what it lacks becomes recorded regions.
    await this.suspendUndelivered(p,
      `split: the secondary could not be drained (${this.peers.isUp(p.record.peer.node) ? 'timeout' : 'link down'}); undelivered entries were recorded as changed regions`);
  }

  /** The group's journal cannot take more: every pair of the group continues on bitmaps. */
  private fallBackToBitmaps(group: string, reason: string): Promise<void> {
    const running = this.groupFallbacks.get(group);
    if (running) return running;
    const task = (async () => {
      const journal = this.primaryJournals.get(group)!;
      const dropped = await journal.dropAll();
      const members = [...this.pairs.values()].filter((p) => p.record.group === group && p.record.role === 'primary');
      for (const e of dropped) {
        const p = this.pairs.get(e.pair);
        if (p && members.includes(p)) p.bitmap.markBytes(e.offset, e.length);
      }
      for (const p of members) {
        p.record.hostWritesRecorded = p.record.hostWritesRecorded || dropped.some((e) => e.pair === p.record.name && e.op !== JournalOp.CopyRegion);
        await p.bitmap.sync();
        if (this.journals(p) || p.record.state === 'suspending') {
          await this.applyOutcome(p, { kind: 'transition', to: 'suspended', cause: 'journal-full', note: '' }, 'failure',
            `${reason}; ${dropped.length} undelivered entries became recorded regions`);
        }
      }
      const shipper = this.shippers.get(group);
      if (shipper) shipper.sentSeq = journal.lastSeq;
    })().finally(() => this.groupFallbacks.delete(group));
    this.groupFallbacks.set(group, task);
    return task;
  }

  private wakeShipper(group: string): void {
    const s = this.shippers.get(group);
    if (s?.wake) {
      const w = s.wake;
      s.wake = null;
      w();
    }
  }

  /** This node no longer sends the group: its shipper stops and its journal is closed. */
  private async closePrimaryJournal(group: string): Promise<void> {
    const s = this.shippers.get(group);
    if (s) {
      s.running = false;
      s.wake?.();
      this.shippers.delete(group);
    }
    await this.primaryJournals.get(group)?.close();
    this.primaryJournals.delete(group);
  }

  /** Starts (or restarts) shipping a group's journal from what the secondary says it holds. */
  private startShipper(group: string, peer: string, receivedSeq: number): void {
    const journal = this.primaryJournals.get(group);
    if (!journal) return;
    const old = this.shippers.get(group);
    if (old) {
      old.running = false;
      old.wake?.();
    }
    const first = journal.firstRetainedSeq();
    if (receivedSeq > journal.lastSeq || (first !== undefined && receivedSeq >= journal.resetSeq && receivedSeq < first - 1)) {
      void this.journalMismatch(group, receivedSeq, journal);
      return;
    }
    if (receivedSeq >= journal.resetSeq) void journal.acknowledge(Math.max(receivedSeq, journal.ackedSeq), journal.appliedSeq);
    const shipper: Shipper = { group, peer, sentSeq: Math.max(receivedSeq, journal.ackedSeq, journal.resetSeq), inFlight: 0, running: true, wake: null,
      generation: (old?.generation ?? 0) + 1 };
    this.shippers.set(group, shipper);
    void this.shipLoop(shipper, journal).catch((err: unknown) => {
      this.log.warn({ group, err: errorMessage(err) }, 'journal shipping stopped; it restarts when the link is back');
    });
  }

  private async journalMismatch(group: string, receivedSeq: number, journal: PrimaryJournal): Promise<void> {
    const reason = `the secondary holds journal entries through ${receivedSeq} but this journal retains ${journal.firstRetainedSeq() ?? journal.lastSeq + 1}..${journal.lastSeq}: ordering cannot be kept`;
    this.log.error({ group, receivedSeq }, reason);
    const members = [...this.pairs.values()].filter((p) => p.record.group === group && p.record.role === 'primary');
    for (const p of members) {
      // Nothing tells which regions the secondary missed: every allocated region is copied again.
      p.bitmap.mergeFrom(this.volumes.volume(p.record.volume).allocation);
      await p.bitmap.sync();
    }
    await journal.dropAll();
    for (const p of members) await this.failPair(p, reason);
  }

  private async shipLoop(s: Shipper, journal: PrimaryJournal): Promise<void> {
    while (s.running && !this.stopped) {
      if (!this.peers.isUp(s.peer)) return;
      if (s.inFlight >= maxBatchesInFlight) {
        await new Promise<void>((resolve) => (s.wake = resolve));
        continue;
      }
      const entries = journal.entriesAfter(s.sentSeq, maxBatchBytes, maxBatchEntries);
      if (entries.length === 0) {
        await new Promise<void>((resolve) => (s.wake = resolve));
        continue;
      }
      const pieces = await this.loadBatch(entries, journal);
      s.sentSeq = entries.at(-1)!.seq;
      s.inFlight++;
      // The offset field carries where the stream starts, so the secondary can drop abandoned entries.
      const payload = [encodeDataHeader({ name: s.group, offset: journal.resetSeq, length: entries.length, flags: 0 }), ...pieces];
      this.peers.request(s.peer, MessageType.JournalBatch, payload).then(async (reply) => {
        const ack = journalAckCodec.decode(reply);
        await journal.acknowledge(ack.receivedSeq, ack.appliedSeq);
        await this.afterGroupProgress(s.group);
      }, (err: unknown) => {
        if (!s.running) return;
        this.log.debug({ group: s.group, err: errorMessage(err) }, 'journal batch not delivered');
        s.running = false;
        // The link may still be up (a timeout, a refused batch): start over from what the
        // secondary holds. A link that went down restarts the shipper when it comes back.
        const retry = setTimeout(() => {
          if (this.peers.isUp(s.peer) && this.shippers.get(s.group) === s) this.onPeerUp(s.peer);
        }, 1000);
        retry.unref();
      }).finally(() => {
        s.inFlight--;
        if (s.inFlight === 0) journal.recycleShipped();
        if (s.wake) {
          const w = s.wake;
          s.wake = null;
          w();
        }
      });
    }
  }

  /** Encoded entries to ship: Write entries as stored, copy markers with their data read under the range lock. */
  private async loadBatch(entries: StoredEntry[], journal: PrimaryJournal): Promise<Buffer[]> {
    const out: Buffer[] = [];
    for (const e of entries) {
      if (e.op !== JournalOp.CopyRegion) {
        for (const piece of await journal.encodedOf(e)) out.push(piece);
        continue;
      }
      const p = this.pairs.get(e.pair);
      const vr = p ? this.volumeRuntime(p.record.volume) : undefined;
      let data: Buffer;
      if (!p || !vr) {
        data = Buffer.alloc(e.length); // the pair is gone: the secondary skips the entry anyway
      } else {
        const release = await vr.lock.acquire(e.offset, e.length);
        try {
          data = await this.volumes.volume(p.record.volume).read(e.offset, e.length);
          // What was read includes every write numbered so far: the image is consistent from there.
          p.copyConsistentSeq = Math.max(p.copyConsistentSeq, journal.lastSeq);
        } finally {
          release();
        }
      }
      for (const piece of encodeEntries([{ seq: e.seq, timeMs: e.timeMs, op: JournalOp.CopyData, pair: e.pair, offset: e.offset, length: e.length, data }])) {
        out.push(piece);
      }
    }
    return out;
  }

  private async afterGroupProgress(group: string): Promise<void> {
    for (const p of this.pairs.values()) {
      if (p.record.group === group && p.record.role === 'primary' && this.copyingState(p) && !p.copying) await this.checkAsyncCopyDone(p);
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Swap (planned takeover, or failback after a takeover)

  /** At the node that becomes the primary. */
  private async swapInternal(p: PairRuntime, discardPeerChanges: boolean): Promise<void> {
    const peer = p.record.peer.node;
    const generation = p.record.generation + 1;
    const request: SwapPrepare = {
      name: p.record.name, newPrimary: this.options.localNode, generation, senderHasChanges: p.record.hostWritesRecorded,
      receivedSeqAtTakeover: p.record.state === 'secondary-writable' ? p.record.receivedSeqAtTakeover : null,
      discardReceiverChanges: discardPeerChanges,
    };
    const reply = swapPreparedCodec.decode(await this.peers.request(peer, MessageType.SwapPrepare, swapPrepareCodec.encode(request), drainTimeoutMs + 10_000));
    p.bitmap.mergeFrom(decodeBitmap(reply.bitmap, p.bitmap));
    await p.bitmap.sync();
    const group = p.record.group;
    const wasSecondaryJournal = group ? this.receivedJournals.get(group) : undefined;
    if (group && wasSecondaryJournal && [...this.pairs.values()].every((x) => x.record.group !== group || x === p || x.record.role === 'primary')) {
      await wasSecondaryJournal.close();
      this.receivedJournals.delete(group);
      await removeJournalDir(this.journalDir(group, 'secondary'));
    }
    p.record.role = 'primary';
    p.record.generation = generation;
    p.record.receivedSeqAtTakeover = null;
    this.peers.want(p.record.peer);
    const clean = reply.clean && p.bitmap.setBitCount === 0;
    await this.openJournalsFor(p.record);
    if (group) {
      // The peer starts an empty received journal: ship from its beginning.
      this.startShipper(group, peer, this.primaryJournals.get(group)!.lastSeq);
    }
    if (clean) {
      await this.applyOutcome(p, { kind: 'transition', to: 'duplex', note: '' }, 'swap',
        `roles swapped: ${this.options.localNode} is now the primary; no data needed copying`);
    } else {
      await this.startResync(p, 'swap');
      p.record.reason = `roles swapped: ${this.options.localNode} is now the primary; copying ${formatBytes(p.bitmap.setBitCount * diffChunkBytes)} of regions that differ`;
      await this.store.save(p.record);
    }
    await this.notifyState(p);
  }

  /** At the old primary: quiesce, compute what differs, become the secondary. */
  private async onSwapPrepare(req: SwapPrepare, link: PeerLink): Promise<Buffer> {
    const p = this.pair(req.name);
    if (p.record.role === 'secondary') {
      if (p.record.generation === req.generation && p.record.peer.node === req.newPrimary) {
        // A repeated request after a lost answer: the swap already happened here.
        return swapPreparedCodec.encode({ bitmap: encodeBitmap(p.bitmap), clean: p.bitmap.setBitCount === 0 });
      }
      throw new TricopyError('conflict', `pair ${req.name} is a secondary on ${this.options.localNode} too; the roles are confused`,
        'check pair status on both nodes');
    }
    invariant(link.peerNode === p.record.peer.node, 'swap requests come from the pair\'s peer');
    const vr = this.volumeRuntime(p.record.volume);
    vr.swapping = true;
    try {
      await vr.lock.idle();
      const journal = p.record.group ? this.primaryJournals.get(p.record.group) : undefined;
      if (p.record.state === 'duplex' && journal) {
        // Planned swap: everything acknowledged must reach the new primary first.
        const target = journal.lastSeq;
        const deadline = Date.now() + drainTimeoutMs;
        while (journal.appliedSeq < target) {
          if (Date.now() > deadline) throw new TricopyError('unavailable', `the journal of group ${p.record.group} did not drain in time; retry the swap`);
          await new Promise((r) => setTimeout(r, 20));
        }
      }
      const planned = p.record.state === 'duplex';
      let changed = p.record.hostWritesRecorded;
      if (journal && req.receivedSeqAtTakeover !== null) {
        for (const e of journal.retainedEntries()) {
          if (e.pair !== p.record.name || e.seq <= req.receivedSeqAtTakeover) continue;
          p.bitmap.markBytes(e.offset, e.length);
          if (e.op !== JournalOp.CopyRegion) changed = true;
        }
      }
      if (!planned && changed && req.senderHasChanges && !req.discardReceiverChanges) {
        throw new TricopyError('conflict',
          `split brain: both ${this.options.localNode} and ${req.newPrimary} were written while pair ${req.name} was apart`,
          `to make ${req.newPrimary} the primary and discard ${this.options.localNode}'s changes, run at ${req.newPrimary}: tricopy pair swap ${req.name} --discard ${this.options.localNode}`);
      }
      if (!planned && changed && req.discardReceiverChanges) {
        this.events.emit('split-brain-resolved', p.record.name, `operator discarded the changes made on ${this.options.localNode}`);
      }
      await p.bitmap.sync();
      const bitmap = encodeBitmap(p.bitmap);
      const clean = planned && p.bitmap.setBitCount === 0;
      // Become the secondary.
      const group = p.record.group;
      p.record.role = 'secondary';
      this.releasePeerIfUnneeded(p.record.peer.node);
      p.record.generation = req.generation;
      p.record.hostWritesRecorded = false;
      p.record.secondaryWritable = false;
      if (group && [...this.pairs.values()].every((x) => x.record.group !== group || x.record.role === 'secondary')) {
        await this.closePrimaryJournal(group);
        await removeJournalDir(this.journalDir(group, 'primary'));
      }
      await this.openJournalsFor(p.record);
      p.bitmap.clearAll();
      await p.bitmap.sync();
      await this.applyOutcome(p, { kind: 'transition', to: clean ? 'duplex' : 'duplex-pending', note: '' }, 'swap',
        `roles swapped: ${req.newPrimary} is now the primary${clean ? '' : '; receiving the regions that differ'}`);
      return swapPreparedCodec.encode({ bitmap, clean });
    } finally {
      vr.swapping = false;
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Peers: reconciliation on link up, failure on link down

  private onPeerUp(node: string): void {
    if (this.stopped) return;
    const mine = [...this.pairs.values()].filter((p) => p.record.peer.node === node);
    const message: PairsSync = { node: this.options.localNode, pairs: mine.map((p) => summary(p.record)), groups: this.groupPositionsFor(node), absentVolumes: [] };
    this.peers.request(node, MessageType.PairsSync, pairsSyncCodec.encode(message))
      .then((reply) => this.reconcile(node, pairsSyncCodec.decode(reply), true))
      .catch((err: unknown) => this.log.warn({ peer: node, err: errorMessage(err) }, 'pair reconciliation failed'));
  }

  private groupPositionsFor(node: string): GroupPosition[] {
    const out: GroupPosition[] = [];
    for (const [group, journal] of this.receivedJournals) {
      const member = [...this.pairs.values()].find((p) => p.record.group === group && p.record.role === 'secondary');
      if (member && member.record.peer.node === node) out.push({ group, receivedSeq: journal.receivedSeq, appliedSeq: journal.appliedSeq });
    }
    return out;
  }

  private onPeerDown(node: string, reason: string): void {
    if (this.stopped) return;
    for (const p of this.pairs.values()) {
      if (p.record.peer.node !== node) continue;
      const r = p.record;
      if (r.mode === 'sync' && (r.state === 'duplex' || r.state === 'initial-copying' || r.state === 'duplex-pending')) {
        void this.command(r.name, () => this.failPair(p, `link to ${node} lost: ${reason}`)).catch(() => undefined);
      }
    }
  }

  /**
   * `answer`: the view came back as the answer to this node's PairsSync, so `absentVolumes` tells a
   * peer that lost its data from one that dissolved a pair. A request from the peer cannot tell
   * that; pairs missing there are left to the answer (both sides send a PairsSync on link up).
   */
  private async reconcile(node: string, view: PairsSync, answer: boolean): Promise<void> {
    const theirs = new Map(view.pairs.map((s) => [s.name, s]));
    const absent = answer ? new Set(view.absentVolumes) : undefined;
    for (const p of [...this.pairs.values()].filter((x) => x.record.peer.node === node)) {
      await this.command(p.record.name, () => this.reconcilePair(p, theirs.get(p.record.name), absent)).catch((err: unknown) =>
        this.log.warn({ pair: p.record.name, err: errorMessage(err) }, 'reconciling pair failed'));
    }
    // Async groups: resume shipping from what the secondary holds.
    const positions = new Map(view.groups.map((g) => [g.group, g]));
    for (const [group] of this.primaryJournals) {
      const member = [...this.pairs.values()].find((p) => p.record.group === group && p.record.role === 'primary');
      if (!member || member.record.peer.node !== node) continue;
      const pos = positions.get(group);
      if (pos) this.startShipper(group, node, pos.receivedSeq);
    }
  }

  private async reconcilePair(p: PairRuntime, q: PairSummary | undefined, absentAtPeer: ReadonlySet<string> | undefined): Promise<void> {
    const r = p.record;
    if (!this.pairs.has(r.name)) return;
    if (!q && absentAtPeer === undefined) return;
    p.peerLostData = false;
    if (!q && r.role === 'primary' && absentAtPeer!.has(r.peerVolume)) {
      // The secondary came back without its data (a rebuilt node, a new disk). This volume stays
      // the primary; the copy is suspended by a failure (fence data refuses writes, as for any
      // secondary that cannot be updated) until the pair is created again.
      p.peerLostData = true;
      const reason = `node ${r.peer.node} has neither pair ${r.name} nor volume ${r.peerVolume} (it lost its data); ` +
        `copy it again: tricopy pair delete ${r.name} --force, then pair create (topology repair does both)`;
      if (r.state === 'suspended') {
        if (r.reason !== reason) {
          r.reason = reason;
          await this.store.save(r);
          this.events.emit('pair-peer-lost-data', r.name, reason);
        }
      } else {
        await this.failPair(p, reason);
      }
      return;
    }
    if (!q) {
      if (r.role === 'secondary' && r.state !== 'secondary-writable') {
        await this.removePair(p, `the primary ${r.peer.node} no longer has pair ${r.name}; this volume is independent again`);
      } else if (r.role === 'primary' && !(r.state === 'suspended' && r.suspendCause === 'takeover-by-peer')) {
        // The peer took over and dissolved the pair (a site failover), or lost its data: this side
        // must not go on as if it were still the primary of a pair.
        await this.applyOutcome(p, { kind: 'transition', to: 'suspended', cause: 'takeover-by-peer', note: '' }, 'peer-took-over',
          `node ${r.peer.node} no longer has pair ${r.name} (it took over and dissolved the pair, or lost its data); delete this side: tricopy pair delete ${r.name} --force`);
      }
      return;
    }
    if (r.role === 'primary' && q.role === 'primary') {
      if (q.generation > r.generation) await this.peerTookOver(p, q);
      else if (q.generation === r.generation) await this.failPair(p, `both ${this.options.localNode} and ${r.peer.node} claim to be the primary of ${r.name}`);
      return;
    }
    if (r.role === 'primary' && q.role === 'secondary') {
      if (q.state === 'secondary-writable' || q.generation > r.generation) {
        await this.peerTookOver(p, q);
        return;
      }
      if (r.state === 'suspended' && r.suspendCause === 'takeover-by-peer') return;
      if (this.autoResyncWanted(p)) {
        await this.tryAutoResync(p, q.hostWritesRecorded);
        return;
      }
      if (this.copyingState(p)) this.startCopy(p);
      void this.notifyState(p);
      return;
    }
    if (r.role === 'secondary' && q.role === 'secondary') {
      this.events.emit('pair-conflict', r.name, `both ${this.options.localNode} and ${r.peer.node} are secondaries: a swap did not finish; run pair swap again at the node that should be the primary`);
    }
    // I am the secondary and the peer the primary: the primary pushes its state to me.
  }

  /** A pair suspended by a failure (not by the operator, not by a takeover) resyncs by itself. */
  private autoResyncWanted(p: PairRuntime): boolean {
    const r = p.record;
    return this.options.autoResync && !p.peerLostData && r.role === 'primary' && r.state === 'suspended' &&
      (r.suspendCause === 'failure' || r.suspendCause === 'journal-full' || r.suspendCause === 'crash-recovery');
  }

  private scheduleAutoResync(p: PairRuntime): void {
    if (!this.autoResyncWanted(p) || this.autoResyncTimers.has(p.record.name) || this.stopped) return;
    const timer = setTimeout(() => {
      this.autoResyncTimers.delete(p.record.name);
      if (!this.pairs.has(p.record.name) || !this.peers.isUp(p.record.peer.node)) return; // peer-up retries
      void this.command(p.record.name, () => this.tryAutoResync(p)).catch((err: unknown) => {
        this.log.warn({ pair: p.record.name, err: errorMessage(err) }, 'automatic resync failed; will retry');
        this.scheduleAutoResync(p);
      });
    }, autoResyncDelayMs);
    timer.unref();
    this.autoResyncTimers.set(p.record.name, timer);
  }

  private async tryAutoResync(p: PairRuntime, peerHasChanges?: boolean): Promise<void> {
    if (!this.autoResyncWanted(p) || !this.peers.isUp(p.record.peer.node)) return;
    const r = p.record;
    const peerBitmap = bitmapReplyCodec.decode(await this.peers.request(r.peer.node, MessageType.PairBitmap, pairNameCodec.encode({ name: r.name })));
    if ((peerHasChanges ?? peerBitmap.hostWritesRecorded) && r.hostWritesRecorded) {
      this.events.emit('split-brain', r.name, 'both sides were written while apart; resync needs the operator to name the side to discard');
      return;
    }
    p.bitmap.mergeFrom(decodeBitmap(peerBitmap.bitmap, p.bitmap));
    await p.bitmap.sync();
    await this.peers.request(r.peer.node, MessageType.PairBitmapClear, pairNameCodec.encode({ name: r.name }));
    await this.startResync(p, 'automatic resync after the failure cleared');
  }

  private async peerTookOver(p: PairRuntime, q: PairSummary): Promise<void> {
    if (p.record.state === 'suspended' && p.record.suspendCause === 'takeover-by-peer') return;
    const outcome = decide(p.record.role, p.record.state, 'peer-took-over', p.record.mode);
    if (outcome.kind !== 'transition') return;
    // Writes that were in flight here cannot reach the new primary: they are this side's changes.
    await this.applyOutcome(p, outcome, 'peer-took-over',
      `${p.record.peer.node} took over (generation ${q.generation}); this volume no longer accepts writes — run pair swap at ${p.record.peer.node} to make this node its secondary`);
  }

  // ----------------------------------------------------------------------------------------------
  // Requests from peers

  private async handle(type: MessageType, payload: Buffer, link: PeerLink): Promise<Buffer | Buffer[] | void> {
    const peer = link.peerNode!;
    switch (type) {
      case MessageType.Write:
      case MessageType.Copy: {
        const { header, data } = decodeDataHeader(payload);
        const p = this.receivingPair(header.name, peer);
        if (data.length !== header.length) throw new TricopyError('invalid-argument', 'write length disagrees with its data');
        const volume = this.volumes.volume(p.record.volume);
        const options = { fua: (header.flags & dataFlagFua) !== 0 };
        this.noteReceived(p, volume, type === MessageType.Write ? header.tag : undefined, header.offset, header.length, peer);
        // A cascade intermediate journals what it receives and forwards it in order; the primary
        // learns the write's place in that stream from the answer.
        if (this.forwardsOnward(p.record.volume)) return encodeDeltaTagReply(await this.writeOp(volume, header.offset, data, options, 'replication'));
        await volume.write(header.offset, data, options);
        return;
      }
      case MessageType.Zero: {
        const { header } = decodeDataHeader(payload);
        const p = this.receivingPair(header.name, peer);
        const volume = this.volumes.volume(p.record.volume);
        const options = { fua: (header.flags & dataFlagFua) !== 0, noHole: false, fastOnly: false };
        this.noteReceived(p, volume, header.tag, header.offset, header.length, peer);
        if (this.forwardsOnward(p.record.volume)) return encodeDeltaTagReply(await this.writeZeroesOp(volume, header.offset, header.length, options, 'replication'));
        await volume.writeZeroes(header.offset, header.length, options);
        return;
      }
      case MessageType.RegionHashes: {
        const req = regionHashesCodec.decode(payload);
        const p = this.pairOfPeer(req.name, peer);
        return this.regionHashes(this.volumes.volume(p.record.volume), req.offset, req.length, req.grainBytes);
      }
      case MessageType.Flush: {
        const { header } = decodeDataHeader(payload);
        const p = this.receivingPair(header.name, peer);
        await this.volumes.volume(p.record.volume).flush();
        return;
      }
      case MessageType.JournalBatch:
        return this.onJournalBatch(payload, peer);
      case MessageType.GroupProgress: {
        const pos = groupPositionCodec.decode(payload);
        const journal = this.primaryJournals.get(pos.group);
        if (journal) {
          await journal.acknowledge(Math.min(pos.receivedSeq, journal.lastSeq), Math.min(pos.appliedSeq, journal.lastSeq));
          await this.afterGroupProgress(pos.group);
        }
        return;
      }
      case MessageType.PairsSync: {
        const view = pairsSyncCodec.decode(payload);
        // Reconcile in the background; answer with this side's view right away.
        setImmediate(() => void this.reconcile(peer, view, false).catch((err: unknown) => this.log.warn({ peer, err: errorMessage(err) }, 'reconciling with the peer failed')));
        const mine = [...this.pairs.values()].filter((p) => p.record.peer.node === peer);
        const absentVolumes = view.pairs.filter((q) => !this.pairs.has(q.name) && !this.volumes.has(q.peerVolume)).map((q) => q.peerVolume);
        return pairsSyncCodec.encode({ node: this.options.localNode, pairs: mine.map((p) => summary(p.record)), groups: this.groupPositionsFor(peer), absentVolumes });
      }
      case MessageType.PairCreate:
        return this.onPairCreate(pairCreateCodec.decode(payload), peer);
      case MessageType.PairUpdate:
        return this.onPairUpdate(pairUpdateCodec.decode(payload), peer);
      case MessageType.PairDelete: {
        const { name } = pairNameCodec.decode(payload);
        const p = this.pairs.get(name);
        if (p && p.record.peer.node === peer) await this.command(name, () => this.removePair(p, `deleted by ${peer}`));
        return;
      }
      case MessageType.PairBitmap: {
        const { name } = pairNameCodec.decode(payload);
        const p = this.pairOfPeer(name, peer);
        const reply: BitmapReply = { bitmap: encodeBitmap(p.bitmap), hostWritesRecorded: p.record.hostWritesRecorded };
        return bitmapReplyCodec.encode(reply);
      }
      case MessageType.PairBitmapClear: {
        const { name } = pairNameCodec.decode(payload);
        const p = this.pairOfPeer(name, peer);
        p.bitmap.clearAll();
        p.record.hostWritesRecorded = false;
        await p.bitmap.sync();
        await this.store.save(p.record);
        return;
      }
      case MessageType.SwapPrepare:
        return this.command(swapPrepareCodec.decode(payload).name, () => this.onSwapPrepare(swapPrepareCodec.decode(payload), link));
      default:
        throw new TricopyError('invalid-argument', `unknown message type ${type}`);
    }
  }

  /**
   * The side that sends (a primary, or a secondary that took over) keeps the link up; the other
   * side only answers. So the link always runs to the address the sender was given for its peer
   * (which may be a relay or NAT address), never around it.
   */
  private wantPeerIfPrimary(p: PairRuntime): void {
    if (p.record.role === 'primary' || p.record.state === 'secondary-writable') this.peers.want(p.record.peer);
  }

  /** Stops dialing a peer no sending pair needs any more. */
  private releasePeerIfUnneeded(node: string): void {
    const needed = [...this.pairs.values()].some((x) => x.record.peer.node === node && (x.record.role === 'primary' || x.record.state === 'secondary-writable'));
    if (!needed) this.peers.release(node);
  }

  /** A sync secondary keeps the delta record of what its primary also sends to the async site. */
  private noteReceived(p: PairRuntime, volume: Volume, tag: DeltaTag | undefined, offset: number, length: number, peer: string): void {
    if (tag && p.record.mode === 'sync') this.deltaRecords.tagged(volume.name, volume.sizeBytes, peer, 'forwarded', tag, offset, length);
    else this.deltaRecords.untagged(volume.name, offset, length);
  }

  /** The volume is also the primary of a pair (a cascade intermediate). */
  private forwardsOnward(volume: string): boolean {
    return this.pairsOfVolume(volume).some((p) => p.record.role === 'primary');
  }

  /** The pair a write from `peer` is for; only an active secondary accepts replication writes. */
  private receivingPair(name: string, peer: string): PairRuntime {
    const p = this.pairOfPeer(name, peer);
    const s = p.record.state;
    if (p.record.role !== 'secondary' || !(s === 'duplex' || s === 'initial-copying' || s === 'duplex-pending' || s === 'suspended')) {
      throw new TricopyError('conflict', `pair ${name} on ${this.options.localNode} is ${p.record.role} in state ${s}: it does not accept replication writes`);
    }
    if (s === 'suspended') {
      // The primary is forwarding again (it resumed before telling us): follow it.
      void this.command(name, () => this.applyOutcome(p, { kind: 'transition', to: 'duplex-pending', note: 'primary resumed forwarding' }, 'resync'));
    }
    return p;
  }

  private pairOfPeer(name: string, peer: string): PairRuntime {
    const p = this.pairs.get(name);
    if (!p) throw new TricopyError('not-found', `pair ${name} does not exist on ${this.options.localNode}`);
    if (p.record.peer.node !== peer) throw new TricopyError('forbidden', `pair ${name} is not shared with ${peer}`);
    return p;
  }

  private async onPairCreate(req: PairCreateRequest, peer: string): Promise<Buffer> {
    if (req.primary.node !== peer) throw new TricopyError('forbidden', 'a pair is created by its primary node');
    if (this.pairs.has(req.name)) throw new TricopyError('already-exists', `pair ${req.name} already exists on ${this.options.localNode}`);
    if (req.group !== null) {
      const other = [...this.pairs.values()].find((p) => p.record.group === req.group);
      if (other && (other.record.role !== 'secondary' || other.record.peer.node !== peer)) {
        throw new TricopyError('conflict', `group ${req.group} exists on ${this.options.localNode} with another direction`);
      }
    }
    if (!this.volumes.has(req.volume)) {
      if (!req.createVolume) throw new TricopyError('not-found', `volume ${req.volume} does not exist on ${this.options.localNode}`);
      await this.volumes.create({ name: req.volume, sizeBytes: req.sizeBytes, description: `secondary of pair ${req.name} (primary ${peer})` });
      this.events.emit('volume-created', req.volume, `created as the secondary of pair ${req.name} from ${peer}`, { sizeBytes: req.sizeBytes });
    }
    const meta = this.volumes.get(req.volume);
    if (meta.sizeBytes < req.sizeBytes) {
      throw new TricopyError('invalid-argument', `volume ${req.volume} on ${this.options.localNode} is ${formatBytes(meta.sizeBytes)}, smaller than the primary's ${formatBytes(req.sizeBytes)}`,
        'grow it first: tricopy volume resize');
    }
    const clash = this.pairsOfVolume(req.volume).find((p) => p.record.role === 'secondary' || req.mode === 'sync' || p.record.mode === 'async');
    if (clash) {
      throw new TricopyError('conflict', `volume ${req.volume} on ${this.options.localNode} is already in pair ${clash.record.name}`,
        clash.record.role === 'secondary' ? 'a volume receives from one primary at a time' : 'only a cascade is possible: sync in, async out');
    }
    if (this.clientsOf?.(req.volume)) {
      throw new TricopyError('busy', `volume ${req.volume} on ${this.options.localNode} has attached clients; a secondary must not be in use`,
        'detach them first');
    }
    const now = new Date().toISOString();
    const record: PairRecord = {
      name: req.name, role: 'secondary', volume: req.volume, peerVolume: req.peerVolume, peer: req.primary, mode: req.mode,
      fence: req.fence, group: req.group, fenceGroup: req.fenceGroup, state: req.initialCopy === 'none' ? 'duplex' : 'initial-copying', suspendCause: null,
      reason: `created by ${peer}`, secondaryWritable: false, generation: req.generation, createdAt: now, updatedAt: now, copy: null,
      hostWritesRecorded: false, receivedSeqAtTakeover: null,
    };
    const bitmap = await this.store.bitmap(record.name, meta.sizeBytes);
    await this.store.save(record);
    const p = this.runtime(record, bitmap);
    this.pairs.set(record.name, p);
    await this.openJournalsFor(record);
    this.events.emit('pair-created', record.name, record.reason, { role: 'secondary', volume: record.volume, peer, mode: record.mode });
    // The volume now follows a new primary: its place in an earlier async stream goes to that
    // primary once (for a delta resync) and is dropped here.
    const mark = this.marks.get(req.volume) ?? null;
    if (mark) await this.dropMark(req.volume, `now the secondary of pair ${req.name}`);
    this.deltaRecords.delete(req.volume);
    // The primary copies what holds data on either side: report what holds data here.
    return bitmapReplyCodec.encode({ bitmap: encodeBitmap(this.volumes.volume(req.volume).allocation), hostWritesRecorded: false, mark });
  }

  private async onPairUpdate(u: PairUpdate, peer: string): Promise<void> {
    const p = this.pairOfPeer(u.name, peer);
    await this.command(u.name, async () => {
      const r = p.record;
      if (r.role !== 'secondary' || u.generation < r.generation) return; // stale news
      if (r.state === 'secondary-writable' && u.generation <= r.generation) return; // I took over: the old primary is stale
      const changed = r.state !== u.state || r.suspendCause !== u.suspendCause || r.secondaryWritable !== u.secondaryWritable;
      if (u.deltaBase && u.state === 'duplex' && r.mode === 'sync') {
        const volume = this.volumes.volume(r.volume);
        this.deltaRecords.establish(r.volume, volume.sizeBytes, peer, 'forwarded', u.deltaBase.group, u.deltaBase.seq);
      }
      r.generation = u.generation;
      r.copy = u.copyTotal > 0 ? { totalChunks: u.copyTotal, doneChunks: u.copyDone } : null;
      if (!changed) return;
      r.secondaryWritable = u.secondaryWritable;
      await this.applyOutcome(p, { kind: 'transition', to: u.state, cause: u.suspendCause, note: '' }, 'split', `primary ${peer}: ${u.reason}`);
      r.secondaryWritable = u.secondaryWritable;
      await this.store.save(r);
    });
  }

  private async onJournalBatch(payload: Buffer, peer: string): Promise<Buffer> {
    const { header, data } = decodeDataHeader(payload);
    const group = header.name;
    const journal = this.receivedJournals.get(group);
    const member = [...this.pairs.values()].find((p) => p.record.group === group);
    if (!journal || !member || member.record.role !== 'secondary' || member.record.peer.node !== peer) {
      throw new TricopyError('conflict', `group ${group} on ${this.options.localNode} does not receive from ${peer}`);
    }
    if (member.record.state === 'secondary-writable') {
      throw new TricopyError('conflict', `group ${group} on ${this.options.localNode} took over; it accepts no more journal entries`);
    }
    // The frame checksum covered these bytes; they are stored as received.
    const entries = decodeEntriesWithBytes(data, false);
    if (entries.length !== header.length) throw new TricopyError('invalid-argument', 'journal batch count disagrees with its entries');
    await journal.receive(entries, header.offset);
    return journalAckCodec.encode({ receivedSeq: journal.receivedSeq, appliedSeq: journal.appliedSeq });
  }

  // ----------------------------------------------------------------------------------------------
  // Helpers

  /** Set by the node so a new secondary can refuse a volume in use. */
  clientsOf: ((volume: string) => number) | undefined;

  private runtime(record: PairRecord, bitmap: PersistentBitmap): PairRuntime {
    return { record, bitmap, copying: false, deltaCopy: false, deltaBytesFound: 0, deltaCopyRan: false, deltaMethod: null, deltaNote: null, deltaPlan: null, copyConsistentSeq: 0, drainTargetSeq: null, commandChain: Promise.resolve(), stateWaiters: new Set(), peerLostData: false };
  }

  private pair(name: string): PairRuntime {
    const p = this.pairs.get(name);
    if (!p) throw new TricopyError('not-found', `pair ${name} does not exist on this node`, 'list pairs with: tricopy pair status');
    return p;
  }

  private pairsOfVolume(volume: string): PairRuntime[] {
    const out: PairRuntime[] = [];
    for (const p of this.pairs.values()) if (p.record.volume === volume) out.push(p);
    return out;
  }

  private volumeRuntime(volume: string): VolumeRuntime {
    let vr = this.volumeRuntimes.get(volume);
    if (!vr) {
      vr = { lock: new RangeLock(), activity: undefined, swapping: false, held: [] };
      this.volumeRuntimes.set(volume, vr);
    }
    return vr;
  }

  /** Opens (or closes) the activity log of a volume as sync primary pairs come and go. */
  private async syncActivityLogUse(volume: string): Promise<void> {
    const vr = this.volumeRuntime(volume);
    const needs = this.pairsOfVolume(volume).some((p) => p.record.role === 'primary' && p.record.mode === 'sync');
    if (needs && !vr.activity) {
      vr.activity = await ActivityLog.open(path.join(this.dataDir, 'pairs', `${volume}.activity`), this.volumes.get(volume).sizeBytes);
    }
  }

  private journalDir(group: string, side: 'primary' | 'secondary'): string {
    return path.join(this.dataDir, 'groups', group, side);
  }

  private async openJournalsFor(record: PairRecord): Promise<void> {
    await this.syncActivityLogUse(record.volume);
    if (!record.group) return;
    if (record.role === 'primary' && !this.primaryJournals.has(record.group)) {
      this.primaryJournals.set(record.group, await PrimaryJournal.open(this.journalDir(record.group, 'primary'), record.group,
        this.options.journalCapacityBytes, this.log.child({ group: record.group })));
    }
    if (record.role === 'secondary' && !this.receivedJournals.has(record.group)) {
      const journal = await ReceivedJournal.open(this.journalDir(record.group, 'secondary'), record.group, this.log.child({ group: record.group }));
      this.receivedJournals.set(record.group, journal);
      if (this.replPortValue !== 0) this.startApplier(journal);
    }
  }

  private startApplier(journal: ReceivedJournal): void {
    const group = journal.group;
    journal.start(async (entry) => {
      const p = this.pairs.get(entry.pair);
      if (!p || p.record.role !== 'secondary' || p.record.group !== group) {
        this.log.debug({ group, pair: entry.pair, seq: entry.seq }, 'journal entry for a pair this node does not hold; skipped');
        return;
      }
      const volume = this.volumes.volume(p.record.volume);
      if (entry.op === JournalOp.Write || entry.op === JournalOp.CopyData) await volume.write(entry.offset, entry.data!, { fua: false });
      else if (entry.op === JournalOp.Zero) await volume.writeZeroes(entry.offset, entry.length, { fua: false, noHole: false, fastOnly: false });
      this.scheduleProgressReport(group);
    }, async () => {
      const volumes = [...this.pairs.values()].filter((p) => p.record.group === group).map((p) => this.volumes.volume(p.record.volume));
      await Promise.all(volumes.map((v) => v.flush()));
    });
  }

  /** Secondary → primary: apply progress, so lag is current even when no batch is in flight. */
  private scheduleProgressReport(group: string): void {
    if (this.progressTimers.has(group)) return;
    const timer = setTimeout(() => {
      this.progressTimers.delete(group);
      const journal = this.receivedJournals.get(group);
      const member = [...this.pairs.values()].find((p) => p.record.group === group && p.record.role === 'secondary');
      if (!journal || !member || !this.peers.isUp(member.record.peer.node)) return;
      this.peers.link(member.record.peer.node).send(MessageType.GroupProgress,
        groupPositionCodec.encode({ group, receivedSeq: journal.receivedSeq, appliedSeq: journal.appliedSeq }));
    }, 100);
    timer.unref();
    this.progressTimers.set(group, timer);
  }

  /** A volume was deleted or resized: its delta record no longer fits (and a deleted one has no mark). */
  async forgetVolume(volume: string, why: 'deleted' | 'resized'): Promise<void> {
    this.deltaRecords.delete(volume);
    if (why === 'deleted') await this.dropMark(volume, 'volume deleted');
  }

  private async saveMark(volume: string, mark: AppliedMark): Promise<void> {
    await this.store.saveMark(volume, mark);
    this.marks.set(volume, mark);
    this.log.info({ volume, ...mark }, 'applied mark saved: a later delta resync can start from it');
  }

  private async dropMark(volume: string, why: string): Promise<void> {
    if (!this.marks.delete(volume)) return;
    await this.store.removeMark(volume);
    this.log.info({ volume, why }, 'applied mark dropped');
  }

  private async removePair(p: PairRuntime, reason: string): Promise<void> {
    const r = p.record;
    // A secondary leaving an async stream remembers how far it applied it (delta resync later).
    const received = r.group ? this.receivedJournals.get(r.group) : undefined;
    if (r.role === 'secondary' && r.mode === 'async' && r.group && received && r.state !== 'secondary-writable' && r.state !== 'initial-copying') {
      await this.saveMark(r.volume, { origin: r.peer.node, group: r.group, appliedSeq: received.appliedSeq });
    }
    this.pairs.delete(r.name);
    this.refreshFences();
    if (r.mode === 'sync') this.releaseHeldOf(r.volume);
    await p.bitmap.close();
    await this.store.remove(r.name);
    const group = r.group;
    if (group && ![...this.pairs.values()].some((x) => x.record.group === group)) {
      await this.closePrimaryJournal(group);
      await this.receivedJournals.get(group)?.close();
      this.receivedJournals.delete(group);
      await removeJournalDir(path.join(this.dataDir, 'groups', group));
    }
    this.releasePeerIfUnneeded(r.peer.node);
    this.events.emit('pair-deleted', r.name, reason, { role: r.role, volume: r.volume });
    this.events.emit('pair-state', r.name, reason, { event: 'delete', role: r.role, from: r.state, to: 'simplex', code: 'SMPL' });
    for (const w of [...p.stateWaiters]) w();
  }

  private command<T>(name: string, op: (p: PairRuntime) => Promise<T>): Promise<T> {
    // A pair removed meanwhile is a rejected promise, never a synchronous throw (callers chain .catch).
    let p: PairRuntime;
    try {
      p = this.pair(name);
    } catch (err) {
      return Promise.reject(err);
    }
    const result = p.commandChain.then(() => op(p), () => op(p));
    p.commandChain = result.catch(() => undefined);
    return result;
  }

  private async commandAll<T>(names: string[], op: () => Promise<T>): Promise<T> {
    const [first, ...rest] = names;
    if (first === undefined) return op();
    return this.command(first, () => (rest.length > 0 ? this.commandAll(rest, op) : op()));
  }

  private outcomeResult(p: PairRuntime, outcome: ReturnType<typeof decide>): PairStatus {
    if (outcome.kind === 'refuse') throw new TricopyError('conflict', `pair ${p.record.name}: ${outcome.message}`);
    return this.status(p);
  }

  private status(p: PairRuntime): PairStatus {
    const r = p.record;
    const journal = r.group && r.role === 'primary' ? this.primaryJournals.get(r.group) : undefined;
    const received = r.group && r.role === 'secondary' ? this.receivedJournals.get(r.group) : undefined;
    const copy = r.copy;
    return {
      name: r.name, role: r.role, code: shortCode(r), state: r.state, volume: r.volume,
      peer: { node: r.peer.node, volume: r.peerVolume, host: r.peer.host, replPort: r.peer.replPort, connected: this.peers.isUp(r.peer.node) },
      mode: r.mode, fence: r.fence, group: r.group, suspendCause: r.suspendCause, reason: r.reason, generation: r.generation,
      progressPercent: (r.state === 'initial-copying' || r.state === 'duplex-pending') && copy
        ? (copy.totalChunks === 0 ? 100 : Math.floor((copy.doneChunks / copy.totalChunks) * 100)) : null,
      differentialBytes: p.bitmap.setBitCount * diffChunkBytes,
      hostWritesRecorded: r.hostWritesRecorded,
      secondaryWritable: r.secondaryWritable,
      deltaBytes: p.deltaCopyRan ? p.deltaBytesFound : null,
      deltaMethod: p.deltaMethod,
      deltaNote: p.deltaNote,
      deltaRecord: this.deltaRecords.status(r.volume),
      heldEntries: journal?.heldCount ?? 0,
      fenceGroup: r.fenceGroup,
      journal: journal ? { usedBytes: journal.usedBytes, capacityBytes: journal.capacityBytes } : null,
      lag: journal ? journal.lag() : received ? { entries: received.backlog, bytes: 0, seconds: 0 } : null,
      createdAt: r.createdAt, updatedAt: r.updatedAt,
    };
  }

  private simplexStatus(name: string): PairStatus {
    return {
      name, role: 'primary', code: 'SMPL', state: 'simplex', volume: '', peer: { node: '', volume: '', host: '', replPort: 0, connected: false },
      mode: 'sync', fence: 'never', group: null, suspendCause: null, reason: 'no such pair', generation: 0, progressPercent: null,
      differentialBytes: 0, hostWritesRecorded: false, secondaryWritable: false, deltaBytes: null, deltaMethod: null, deltaNote: null, deltaRecord: null, heldEntries: 0, fenceGroup: null,
      journal: null, lag: null, createdAt: '', updatedAt: '',
    };
  }
}

function summary(r: PairRecord): PairSummary {
  return {
    name: r.name, role: r.role, state: r.state, suspendCause: r.suspendCause, generation: r.generation, mode: r.mode,
    group: r.group, volume: r.volume, peerVolume: r.peerVolume, hostWritesRecorded: r.hostWritesRecorded,
  };
}

function encodeBitmap(b: PersistentBitmap): string {
  return Buffer.from(b.snapshot()).toString('base64');
}

function decodeBitmap(text: string, like: PersistentBitmap): Uint8Array {
  const bytes = Buffer.from(text, 'base64');
  const expected = like.snapshot().length;
  if (bytes.length !== expected) {
    throw new TricopyError('conflict', `the peer's differential record has ${bytes.length} bytes, this one ${expected}: the volumes differ in size`);
  }
  return new Uint8Array(bytes);
}

export { allocationChunkBytes, secondaryIsConsistent };
