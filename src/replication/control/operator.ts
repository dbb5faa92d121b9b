// Operator commands on a pair, run at the node that holds it (spec 001 §5.2: paircreate,
// pairsplit, pairresync, protection, pairdelete). Each checks what the command may do now, asks
// the state table, and applies the outcome through the transition engine. Takeover and swap, the
// commands that move the primary, have their own modules.
import { TricopyError, errorMessage } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import { formatBytes } from '../../common/units';
import type { CopyMode, CreatePairRequest, FenceLevel, InitialCopy, PairPurpose, PairStatus, PeerAddress } from '../../contracts/pairs';
import type { Journals } from '../async/journals';
import type { SplitDrain } from '../async/split-drain';
import type { Shipping } from '../async/shipper';
import type { CopyEngine } from '../copy/copy-engine';
import type { DeltaRecords } from '../delta/delta-record';
import type { ReplicationEnv } from '../env';
import { connectTimeoutMs, deleteConnectTimeoutMs, diffChunkBytes, maxQuorumVolumeBytes } from '../limits';
import { decodeBitmap } from '../pairs/bitmap-codec';
import { type PairRecord, groupNamePattern, pairNamePattern } from '../pairs/pair-model';
import type { PairStore } from '../pairs/pair-store';
import type { DetachedSecondaries } from '../pairs/detached';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import { type TransitionEngine, newRecord } from '../pairs/transitions';
import type { Outcome } from '../pairs/state-table';
import { type BitmapReply, type PairCreateRequest, bitmapReplyCodec, pairCreateCodec, pairNameCodec } from '../transport/control-messages';
import { MessageType } from '../transport/messages';
import type { PairResources } from './pair-resources';
import { fetchPeerBitmap, takePeerBitmap } from './peer-bitmap';
import type { PeerDemand } from './peer-demand';
import type { PeerUpdates } from './peer-updates';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';

export interface CreatePairInput {
  name: string;
  volume: string;
  peer: PeerAddress;
  peerVolume?: string | undefined;
  mode: CopyMode;
  /** quorum: a spec 004 quorum pair (sync, no group, a small volume). Default data. */
  purpose?: PairPurpose | undefined;
  fence: FenceLevel;
  group?: string | undefined;
  /** full (default): allocated regions; none: declared identical; delta: compare and copy differences. */
  initialCopy?: InitialCopy | undefined;
  fenceGroup?: string | undefined;
  /** How the peer reaches this node, when not at its advertised address (NAT, a relay, a test proxy). */
  returnAddress?: { host: string; replPort: number } | undefined;
}

/**
 * The pair an API request asks for, with the API's defaults (fence data for sync data pairs, a full
 * copy). A quorum pair's P-VOL keeps accepting its owner's writes when the copy fails (fence never):
 * it is not mirrored while suspended anyway (spec 004 E12).
 */
export function createPairInput(b: CreatePairRequest): CreatePairInput {
  const purpose = b.purpose ?? 'data';
  return {
    name: b.name, volume: b.volume, peer: b.peer, peerVolume: b.peerVolume, mode: b.mode, purpose,
    fence: b.fence ?? (b.mode === 'sync' && purpose === 'data' ? 'data' : 'never'), group: b.group, returnAddress: b.returnAddress,
    initialCopy: b.initialCopy ?? (b.noCopy ? 'none' : 'full'), fenceGroup: b.fenceGroup,
  };
}

export interface Identity {
  localNode: string;
  advertiseHost: string;
  /** The replication port peers dial (a relay's or NAT's port, or the real one). */
  advertisedReplPort(): number;
}

export interface OperatorParts {
  env: ReplicationEnv;
  identity: Identity;
  registry: PairRegistry;
  store: PairStore;
  detached: DetachedSecondaries;
  engine: TransitionEngine;
  resources: PairResources;
  journals: Journals;
  volumeRuntimes: VolumeRuntimes;
  shipping: Shipping;
  copy: CopyEngine;
  drain: SplitDrain;
  deltaRecords: DeltaRecords;
  demand: PeerDemand;
  updates: PeerUpdates;
  events: EventJournal;
  status: (p: PairRuntime) => PairStatus;
}

/** A refusal or no-op of the table, as the command's answer. */
export function answer(parts: Pick<OperatorParts, 'status'>, p: PairRuntime, outcome: Outcome): PairStatus {
  if (outcome.kind === 'refuse') throw refusal(p, outcome);
  return parts.status(p);
}

/** A refusal of the table as an error: a command run at the wrong node of the pair is a usage mistake. */
export function refusal(p: PairRuntime, outcome: Extract<Outcome, { kind: 'refuse' }>, what = `pair ${p.record.name}`): TricopyError {
  if (outcome.wrongSide) {
    return new TricopyError('invalid-argument', `${what}: ${outcome.message} (${p.record.peer.node})`,
      `run the command at ${p.record.peer.node}`);
  }
  return new TricopyError('conflict', `${what}: ${outcome.message}`);
}

export class Operator {
  constructor(private readonly parts: OperatorParts) {}

  async createPair(input: CreatePairInput): Promise<PairStatus> {
    const { env, identity } = this.parts;
    const group = this.checkCreate(input);
    const initialCopy: InitialCopy = input.initialCopy ?? 'full';
    await env.transport.connectNow(input.peer, connectTimeoutMs).catch((err: unknown) => {
      this.parts.demand.releaseIfUnneeded(input.peer.node); // do not keep redialing a peer no pair needs
      throw err;
    });
    const record = newRecord({
      name: input.name, role: 'primary', volume: input.volume, peerVolume: input.peerVolume ?? input.volume, peer: input.peer,
      mode: input.mode, purpose: input.purpose ?? 'data', fence: input.fence, group, fenceGroup: input.fenceGroup ?? null,
      state: initialCopy === 'none' ? 'duplex' : 'initial-copying',
      reason: initialCopy === 'none' ? 'created without initial copy (contents declared identical)'
        : initialCopy === 'delta' ? 'created; comparing both volumes and copying only the blocks that differ'
          : 'created; initial copy of allocated regions',
      generation: 1,
    }, env.clock);
    const meta = env.volumes.get(input.volume);
    const request: PairCreateRequest = {
      name: record.name, volume: record.peerVolume, peerVolume: record.volume,
      primary: { node: identity.localNode, host: input.returnAddress?.host ?? identity.advertiseHost,
        replPort: input.returnAddress?.replPort ?? identity.advertisedReplPort() },
      mode: record.mode, fence: record.fence, group, sizeBytes: meta.sizeBytes, generation: record.generation,
      fenceGroup: record.fenceGroup, initialCopy, createVolume: true, ...(record.purpose === 'quorum' ? { purpose: record.purpose } : {}),
    };
    // From here until the pair is admitted every write of the volume goes through the write path,
    // so the hold below can stop them while this fixes what to copy (sim seed 124: a write between
    // the delta plan and admission was in neither the plan nor the journal, and never reached the peer).
    const vr = this.parts.volumeRuntimes.get(input.volume);
    vr.joining++;
    try {
      const reply = bitmapReplyCodec.decode(await env.transport.request(input.peer.node, MessageType.PairCreate, pairCreateCodec.encode(request)).catch((err: unknown) => {
        this.parts.demand.releaseIfUnneeded(input.peer.node);
        throw err;
      }));
      const { p, receivedSeq } = await this.parts.volumeRuntimes.whileHeld([input.volume], () => this.admitCreated(record, reply, initialCopy, group));
      await this.parts.updates.tell(p);
      // A new group starts shipping at once (the secondary's received journal is empty).
      if (group && !this.parts.shipping.isRunning(group)) this.parts.shipping.start(group, p.record.peer.node, receivedSeq);
      if (p.record.state === 'initial-copying') this.parts.copy.start(p);
      return this.parts.status(p);
    } finally {
      vr.joining--;
    }
  }

  /** Fixes the regions to copy, persists and admits the pair. Writes of the volume are held meanwhile. */
  private async admitCreated(record: PairRecord, reply: BitmapReply, initialCopy: InitialCopy, group: string | null): Promise<{ p: PairRuntime; receivedSeq: number }> {
    const { env } = this.parts;
    const meta = env.volumes.get(record.volume);
    const bitmap = await this.parts.store.bitmap(record.name, meta.sizeBytes);
    // A delta copy to a peer that applied an async stream this node recorded: only the regions of
    // the writes it had not applied are compared (and the differing blocks sent).
    const candidates = initialCopy === 'delta' ? this.parts.deltaRecords.candidates(record.volume, reply.mark ?? null) : undefined;
    let reason = record.reason;
    if (candidates?.usable) {
      bitmap.mergeFrom(candidates.bits);
      await bitmap.sync();
      reason = `created; delta resync from sequence numbers: ${candidates.text}`;
    } else if (initialCopy !== 'none') {
      // Copy what holds data here, and clear what holds data only there.
      bitmap.mergeFrom(env.volumes.volume(record.volume).allocation);
      bitmap.mergeFrom(decodeBitmap(reply.bitmap, bitmap));
      await bitmap.sync();
      if (candidates) reason = `created; comparing both volumes whole (no usable delta record: ${candidates.text})`;
    }
    const created = { ...record, reason };
    await this.parts.store.save(created);
    const receivedSeq = group ? await this.continueStreamAfter(group, reply.receivedSeq ?? 0) : 0;
    const p = await this.parts.resources.admit(created, bitmap);
    p.copy.delta = initialCopy === 'delta';
    p.copy.deltaRan = p.copy.delta;
    if (candidates) {
      p.copy.deltaMethod = candidates.usable ? 'sequence' : 'compare';
      p.copy.deltaNote = candidates.text;
      if (candidates.usable) p.copy.deltaPlan = { exact: candidates.exact, coarse: candidates.coarse };
    }
    this.parts.events.emit('pair-created', created.name, created.reason,
      { role: 'primary', volume: created.volume, peer: created.peer.node, mode: created.mode, purpose: created.purpose, fence: created.fence, group, fenceGroup: created.fenceGroup, initialCopy });
    return { p, receivedSeq };
  }

  /**
   * A group new at this node starts its stream after the highest entry the secondary's group holds
   * (from an earlier stream whose members are still leaving it there): numbers it holds would be
   * skipped as duplicates. Before the pair is admitted, so no write is journaled yet. Returns the
   * secondary's position to ship from.
   *
   * Entries the journal still holds belong to a stream whose pairs are gone from this node (the
   * journal's removal with the group's last pair is not durable until a directory sync, and a power
   * loss may bring its files back, in part without the progress that said they were delivered).
   * They must never be shipped: the new pair's copy makes the secondary equal, and those old writes
   * applied after it would overwrite newer data there (sim seed 1244: tokyo's dissolved stream came
   * back after a power loss and sapporo applied 1529 old entries over osaka's writes while the pair
   * reported duplex). The stream starts over after them, as after a journal full.
   */
  private async continueStreamAfter(group: string, secondaryReceivedSeq: number): Promise<number> {
    const members = this.parts.registry.ofGroup(group).filter((x) => x.record.role === 'primary');
    if (members.length > 0) return 0; // the stream exists; the shipper already knows where the secondary is
    await this.parts.journals.openFor({ role: 'primary', group });
    const journal = this.parts.journals.primary(group)!;
    if (secondaryReceivedSeq > journal.lastSeq || journal.retainedEntries().length > 0) await journal.dropAll(secondaryReceivedSeq);
    return secondaryReceivedSeq;
  }

  /** Validates a create request against this node's pairs; returns the pair's group. */
  private checkCreate(input: CreatePairInput): string | null {
    const { env, identity, registry } = this.parts;
    if (!pairNamePattern.test(input.name)) {
      throw new TricopyError('invalid-argument', `"${input.name}" is not a valid pair name`, 'use 1–63 letters, digits, ".", "_" or "-"');
    }
    if (registry.has(input.name)) throw new TricopyError('already-exists', `pair ${input.name} already exists`);
    if (!env.transport.hasSecret) {
      throw new TricopyError('invalid-argument', 'replication needs a cluster secret on every node',
        'start the nodes with --cluster-secret-file FILE (the same file content on all nodes)');
    }
    if (input.peer.node === identity.localNode) throw new TricopyError('invalid-argument', 'a pair needs two different nodes');
    if (input.mode === 'sync' && input.group !== undefined) {
      throw new TricopyError('invalid-argument', 'consistency groups are for async pairs', 'sync pairs are consistent by construction; drop --group');
    }
    env.volumes.get(input.volume); // not-found first
    const existing = registry.ofVolume(input.volume);
    if (input.purpose === 'quorum') this.checkQuorum(input, existing);
    const quorum = existing.find((p) => p.record.purpose === 'quorum');
    if (quorum) throw new TricopyError('conflict', `volume ${input.volume} is the quorum volume of pair ${quorum.record.name}; a quorum volume is in no other pair`);
    const asSecondary = existing.find((p) => p.record.role === 'secondary' && p.record.state !== 'secondary-writable');
    // A cascade: the intermediate volume receives synchronously and forwards asynchronously.
    if (asSecondary && !(asSecondary.record.mode === 'sync' && input.mode === 'async')) {
      throw new TricopyError('conflict', `volume ${input.volume} is the secondary of pair ${asSecondary.record.name}`,
        'only a cascade is possible: a volume that receives synchronously may forward asynchronously');
    }
    if (existing.some((p) => p.record.peer.node === input.peer.node)) {
      throw new TricopyError('conflict', `volume ${input.volume} already has a pair to node ${input.peer.node}`);
    }
    if (input.mode !== 'async') return null;
    const group = input.group ?? input.name;
    if (!groupNamePattern.test(group)) throw new TricopyError('invalid-argument', `"${group}" is not a valid group name`);
    const other = registry.ofGroup(group)[0];
    if (other && (other.record.role !== 'primary' || other.record.peer.node !== input.peer.node)) {
      throw new TricopyError('conflict', `group ${group} already replicates ${other.record.role === 'primary' ? `to node ${other.record.peer.node}` : 'as a secondary'}`,
        'every pair of a consistency group goes from this node to the same secondary node');
    }
    return group;
  }

  /** A quorum pair (spec 004): sync, alone on a small volume. */
  private checkQuorum(input: CreatePairInput, existing: readonly PairRuntime[]): void {
    if (input.mode !== 'sync' || input.group !== undefined || input.fenceGroup !== undefined) {
      throw new TricopyError('invalid-argument', 'a quorum pair is a sync pair of its own: no consistency group, no fence group');
    }
    const size = this.parts.env.volumes.get(input.volume).sizeBytes;
    if (size > maxQuorumVolumeBytes) {
      throw new TricopyError('invalid-argument', `volume ${input.volume} is ${formatBytes(size)}; a quorum volume holds at most ${formatBytes(maxQuorumVolumeBytes)}`,
        'create a small volume for the quorum, e.g. tricopy volume create qd --size 64MiB');
    }
    const other = existing[0];
    if (other) throw new TricopyError('conflict', `volume ${input.volume} is already in pair ${other.record.name}; a quorum volume is in no other pair`);
  }

  /** Splits the pair; an async pair splits with every pair of its consistency group, at one instant. */
  split(name: string, options: { secondaryWritable: boolean }): Promise<PairStatus> {
    const { registry, engine } = this.parts;
    const first = registry.require(name);
    const members = first.record.mode === 'async' && first.record.group
      ? registry.ofGroup(first.record.group).filter((x) => x.record.role === first.record.role) : [first];
    return registry.serializeAll(members.map((x) => x.record.name), async () => {
      const p = first;
      if (p.record.role === 'secondary' && this.parts.env.transport.isUp(p.record.peer.node) && p.record.state !== 'secondary-writable') {
        throw new TricopyError('invalid-argument', `split pair ${name} at its primary node ${p.record.peer.node}`,
          'the primary decides what the secondary holds at the split point');
      }
      const outcome = engine.decide(p, 'split', { secondaryWritable: options.secondaryWritable });
      if (outcome.kind !== 'transition') return answer(this.parts, p, outcome);
      // The group stops journaling at one instant: no write lands between two members' splits.
      await this.parts.volumeRuntimes.whileHeld(members.map((x) => x.record.volume), async () => {
        for (const x of members) await engine.apply(x, 'split', { secondaryWritable: options.secondaryWritable });
      });
      const draining = members.filter((x) => x.record.state === 'suspending');
      if (draining.length > 0) await this.parts.drain.drain(draining);
      return this.parts.status(p);
    });
  }

  /** Resyncs the pair; an async pair resyncs with every suspended pair of its consistency group. */
  resync(name: string, options: { discard?: string | undefined }): Promise<PairStatus> {
    const { registry, engine } = this.parts;
    const first = registry.require(name);
    const members = first.record.mode === 'async' && first.record.group
      ? registry.ofGroup(first.record.group).filter((x) => x.record.role === first.record.role) : [first];
    return registry.serializeAll(members.map((x) => x.record.name), async () => {
      const outcome = engine.decide(first, 'resync');
      if (outcome.kind !== 'transition') return answer(this.parts, first, outcome);
      for (const p of members) if (p === first || engine.decide(p, 'resync').kind === 'transition') await this.resyncOne(p, options);
      return this.parts.status(first);
    });
  }

  /** Takes the peer's changed regions too (refusing a split brain nobody resolved), then copies. */
  private async resyncOne(p: PairRuntime, options: { discard?: string | undefined }): Promise<void> {
    const { env, identity, engine } = this.parts;
    const name = p.record.name;
    await env.transport.connectNow(p.record.peer, connectTimeoutMs).catch((err: unknown) => {
      throw new TricopyError('unavailable', `cannot resync pair ${name}: ${errorMessage(err)}`);
    });
    const peerBitmap = await fetchPeerBitmap(env.transport, p);
    if (p.record.hostWritesRecorded && peerBitmap.hostWritesRecorded) {
      if (options.discard === undefined) {
        throw new TricopyError('conflict',
          `split brain: both ${identity.localNode} (primary) and ${p.record.peer.node} (secondary) were written while pair ${name} was suspended`,
          `name the side whose changes are discarded: --discard ${p.record.peer.node} keeps this primary's data; --discard ${identity.localNode} makes ${p.record.peer.node} the primary (swap)`);
      }
      if (options.discard === identity.localNode) {
        throw new TricopyError('invalid-argument', `to keep ${p.record.peer.node}'s data, run at that node: tricopy pair swap ${name} --discard ${identity.localNode}`);
      }
      if (options.discard !== p.record.peer.node) {
        throw new TricopyError('invalid-argument', `--discard names a node of the pair: ${identity.localNode} or ${p.record.peer.node}`);
      }
      this.parts.events.emit('split-brain-resolved', name, `operator discarded the changes made on ${options.discard}`);
    }
    await takePeerBitmap(env.transport, p, peerBitmap);
    const started = await this.parts.volumeRuntimes.whileHeld([p.record.volume], () =>
      engine.apply(p, 'resync', { reason: `resync: ${formatBytes(p.bitmap.setBitCount * diffChunkBytes)} of changed regions to copy` }));
    answer(this.parts, p, started);
  }

  /** Changes how a pair is protected (fence level, fence group); at the primary. */
  setProtection(name: string, options: { fence: FenceLevel; fenceGroup: string | null }): Promise<PairStatus> {
    return this.parts.registry.serialize(name, async (p) => {
      if (p.record.role !== 'primary') throw new TricopyError('invalid-argument', `protection is set at the primary of pair ${name} (${p.record.peer.node})`);
      if (p.record.mode !== 'sync' && options.fence === 'data') throw new TricopyError('invalid-argument', 'fence data is for sync pairs');
      await this.parts.engine.setProtection(p, options.fence, options.fenceGroup,
        `fence ${options.fence}${options.fenceGroup ? `, fence group ${options.fenceGroup}` : ''}`);
      return this.parts.status(p);
    });
  }

  /**
   * Ends the pair on both sides (here only, forced, when the peer is down). `keepReadOnly`, at a
   * secondary not taken over: its volume stays read-only to hosts afterwards (a topology procedure
   * leaving this site behind with its primary's image), with no host write between.
   */
  deletePair(name: string, options: { force: boolean; keepReadOnly?: boolean }): Promise<void> {
    return this.parts.registry.serialize(name, async (p) => {
      if (!options.keepReadOnly) return this.dissolve(p, options.force);
      const r = p.record;
      if (r.role !== 'secondary' || r.state === 'secondary-writable') {
        throw new TricopyError('conflict', `--keep-read-only is for the secondary of a pair: this node is the ${r.role === 'primary' ? 'primary' : 'secondary, taken over (SSWS),'} of pair ${name}`,
          'run it at the node that holds the secondary copy, or delete without --keep-read-only');
      }
      await this.parts.volumeRuntimes.whileHeld([r.volume], async () => {
        await this.dissolve(p, options.force);
        await this.parts.detached.leaveReadOnly(r.volume, r, this.parts.env.clock);
      });
    }).then(() => undefined);
  }

  private async dissolve(p: PairRuntime, force: boolean): Promise<void> {
    const { env } = this.parts;
    const { name, peer } = p.record;
    // Forced: do not wait for a peer that is down (a failover must be fast); it reconciles later.
    const reachable = env.transport.isUp(peer.node) ||
      (!force && await env.transport.connectNow(peer, deleteConnectTimeoutMs).then(() => true, () => false));
    if (reachable) {
      await env.transport.request(peer.node, MessageType.PairDelete, pairNameCodec.encode({ name })).catch((err: unknown) => {
        if (!force) throw err;
      });
    } else if (!force) {
      this.parts.demand.releaseIfUnneeded(peer.node);
      throw new TricopyError('unavailable', `node ${peer.node} is not reachable, so pair ${name} cannot be deleted on both sides`,
        `pass --force to delete it here only; ${peer.node} drops its side when it reconnects`);
    }
    await this.parts.engine.apply(p, 'delete', { reason: reachable ? 'deleted by operator' : 'deleted by operator on this node only (peer unreachable)' });
  }
}
