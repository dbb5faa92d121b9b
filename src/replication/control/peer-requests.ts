// Requests from peer nodes, routed by message type: replicated writes and copies into secondaries,
// journal batches, group progress, pair creation and updates from primaries, differential records,
// checksums for delta copies, swaps and reconciliation. Every request may only touch pairs shared
// with the node that sent it.
import { TricopyError, errorMessage } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import type { Logger } from '../../common/log';
import { formatBytes } from '../../common/units';
import type { Volume } from '../../volume/volume';
import type { CopyEngine } from '../copy/copy-engine';
import { regionHashes } from '../copy/block-compare';
import { decodeEntriesWithBytes } from '../async/journal-entry';
import type { Journals } from '../async/journals';
import type { WritePath } from '../datapath/write-path';
import type { DeltaRecords } from '../delta/delta-record';
import type { AppliedMarks } from '../delta/marks';
import type { ReplicationEnv } from '../env';
import { encodeBitmap } from '../pairs/bitmap-codec';
import type { PairRecord } from '../pairs/pair-model';
import type { PairStore } from '../pairs/pair-store';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import { type TransitionEngine, newRecord } from '../pairs/transitions';
import {
  type PairCreateRequest, type PairUpdate, bitmapReplyCodec, groupPositionCodec, journalAckCodec, pairCreateCodec, pairNameCodec,
  pairUpdateCodec, pairsSyncCodec, regionHashesCodec, swapPrepareCodec,
} from '../transport/control-messages';
import { type DeltaTag, MessageType, dataFlagFua, decodeDataHeader, encodeDeltaTagReply } from '../transport/messages';
import type { PairResources } from './pair-resources';
import type { Reconciler } from './reconcile';
import type { Swap } from './swap';

export interface PeerRequestParts {
  env: ReplicationEnv;
  localNode: string;
  registry: PairRegistry;
  store: PairStore;
  engine: TransitionEngine;
  resources: PairResources;
  journals: Journals;
  writePath: WritePath;
  copy: CopyEngine;
  swap: Swap;
  reconciler: Reconciler;
  deltaRecords: DeltaRecords;
  marks: AppliedMarks;
  events: EventJournal;
  log: Logger;
  /** Clients attached to a volume (a new secondary must not be in use). */
  clientsOf: (volume: string) => number;
}

/** Answers a request of a message type the replication core does not handle itself (an extension's). */
export type ExtraPeerHandler = (payload: Buffer, peer: string) => Promise<Buffer | void>;

export class PeerRequests {
  private readonly extra = new Map<MessageType, ExtraPeerHandler>();

  constructor(private readonly parts: PeerRequestParts) {}

  /** Routes requests of `type` to `handler` (a module above the node, e.g. quorum pairs). */
  addHandler(type: MessageType, handler: ExtraPeerHandler): void {
    this.extra.set(type, handler);
  }

  /** Async, so a refusal thrown while routing is an error answer, never a broken link. */
  async handle(type: MessageType, payload: Buffer, peer: string): Promise<Buffer | Buffer[] | void> {
    switch (type) {
      case MessageType.Write:
      case MessageType.Copy:
        return this.onWrite(type, payload, peer);
      case MessageType.Zero:
        return this.onZero(payload, peer);
      case MessageType.RegionHashes: {
        const req = regionHashesCodec.decode(payload);
        const p = this.parts.registry.requireOfPeer(req.name, peer);
        return regionHashes(this.volume(p), req.offset, req.length, req.grainBytes);
      }
      case MessageType.Flush: {
        const { header } = decodeDataHeader(payload);
        return this.volume(this.receivingPair(header.name, peer)).flush();
      }
      case MessageType.JournalBatch:
        return this.onJournalBatch(payload, peer);
      case MessageType.GroupProgress:
        return this.onGroupProgress(payload);
      case MessageType.PairsSync: {
        const view = pairsSyncCodec.decode(payload);
        // Reconcile in the background; answer with this side's view right away.
        this.parts.env.clock.defer(() => void this.parts.reconciler.reconcile(peer, view, false).catch((err: unknown) =>
          this.parts.log.warn({ peer, err: errorMessage(err) }, 'reconciling with the peer failed')));
        const absentVolumes = view.pairs.filter((q) => !this.parts.registry.has(q.name) && !this.parts.env.volumes.has(q.peerVolume)).map((q) => q.peerVolume);
        return Promise.resolve(pairsSyncCodec.encode(this.parts.reconciler.view(peer, absentVolumes)));
      }
      case MessageType.PairCreate:
        return this.onPairCreate(pairCreateCodec.decode(payload), peer);
      case MessageType.PairUpdate:
        return this.onPairUpdate(pairUpdateCodec.decode(payload), peer);
      case MessageType.PairDelete: {
        const { name } = pairNameCodec.decode(payload);
        const p = this.parts.registry.get(name);
        if (!p || p.record.peer.node !== peer) return Promise.resolve();
        return this.parts.registry.serialize(name, async () => {
          await this.parts.engine.apply(p, 'delete', { reason: `deleted by ${peer}` });
        });
      }
      case MessageType.PairBitmap: {
        const { name } = pairNameCodec.decode(payload);
        const p = this.parts.registry.requireOfPeer(name, peer);
        return Promise.resolve(bitmapReplyCodec.encode({ bitmap: encodeBitmap(p.bitmap), hostWritesRecorded: p.record.hostWritesRecorded }));
      }
      case MessageType.PairBitmapClear:
        return this.onBitmapClear(payload, peer);
      case MessageType.SwapPrepare:
        return this.parts.swap.prepare(swapPrepareCodec.decode(payload), peer);
      default: {
        const handler = this.extra.get(type);
        if (handler) return handler(payload, peer);
        return Promise.reject(new TricopyError('invalid-argument', `unknown message type ${type}`));
      }
    }
  }

  private volume(p: PairRuntime): Volume {
    return this.parts.env.volumes.volume(p.record.volume);
  }

  private async onWrite(type: MessageType, payload: Buffer, peer: string): Promise<Buffer | void> {
    const { header, data } = decodeDataHeader(payload);
    const p = this.receivingPair(header.name, peer);
    if (data.length !== header.length) throw new TricopyError('invalid-argument', 'write length disagrees with its data');
    if (p.record.awaitingNewPrimary) await this.parts.engine.noteNewPrimaryActed(p);
    const volume = this.volume(p);
    const options = { fua: (header.flags & dataFlagFua) !== 0 };
    this.noteReceived(p, volume, type === MessageType.Write ? header.tag : undefined, header.offset, header.length, peer);
    // A cascade intermediate journals what it receives and forwards it in order; the primary
    // learns the write's place in that stream from the answer.
    if (this.forwardsOnward(p.record.volume)) return encodeDeltaTagReply(await this.parts.writePath.writeOp(volume, header.offset, data, options, 'replication'));
    await volume.write(header.offset, data, options);
  }

  private async onZero(payload: Buffer, peer: string): Promise<Buffer | void> {
    const { header } = decodeDataHeader(payload);
    const p = this.receivingPair(header.name, peer);
    if (p.record.awaitingNewPrimary) await this.parts.engine.noteNewPrimaryActed(p);
    const volume = this.volume(p);
    const options = { fua: (header.flags & dataFlagFua) !== 0, noHole: false, fastOnly: false };
    this.noteReceived(p, volume, header.tag, header.offset, header.length, peer);
    if (this.forwardsOnward(p.record.volume)) return encodeDeltaTagReply(await this.parts.writePath.writeZeroesOp(volume, header.offset, header.length, options, 'replication'));
    await volume.writeZeroes(header.offset, header.length, options);
  }

  private async onGroupProgress(payload: Buffer): Promise<void> {
    const pos = groupPositionCodec.decode(payload);
    const journal = this.parts.journals.primary(pos.group);
    if (!journal) return;
    await journal.acknowledge(Math.min(pos.receivedSeq, journal.lastSeq), Math.min(pos.appliedSeq, journal.lastSeq));
    await this.parts.copy.groupProgressed(pos.group);
  }

  private async onBitmapClear(payload: Buffer, peer: string): Promise<void> {
    const { name } = pairNameCodec.decode(payload);
    const p = this.parts.registry.requireOfPeer(name, peer);
    p.bitmap.clearAll();
    await p.bitmap.sync();
    p.record.hostWritesRecorded = false;
    await this.parts.store.save(p.record);
  }

  /** A sync secondary keeps the delta record of what its primary also sends to the async site. */
  private noteReceived(p: PairRuntime, volume: Volume, tag: DeltaTag | undefined, offset: number, length: number, peer: string): void {
    if (tag && p.record.mode === 'sync') this.parts.deltaRecords.tagged(volume.name, volume.sizeBytes, peer, 'forwarded', tag, offset, length);
    else this.parts.deltaRecords.untagged(volume.name, offset, length);
  }

  /** The volume is also the primary of a pair (a cascade intermediate). */
  private forwardsOnward(volume: string): boolean {
    return this.parts.registry.ofVolume(volume).some((p) => p.record.role === 'primary');
  }

  /** The pair a write from `peer` is for; only an active secondary accepts replication writes. */
  private receivingPair(name: string, peer: string): PairRuntime {
    const p = this.parts.registry.requireOfPeer(name, peer);
    const s = p.record.state;
    if (p.record.role !== 'secondary' || !(s === 'duplex' || s === 'initial-copying' || s === 'duplex-pending' || s === 'suspended')) {
      throw new TricopyError('conflict', `pair ${name} on ${this.parts.localNode} is ${p.record.role} in state ${s}: it does not accept replication writes`);
    }
    if (s === 'suspended') {
      // The primary is forwarding again (it resumed before telling us): follow it.
      void this.parts.registry.serialize(name, () => this.parts.engine.apply(p, 'peer-resumed')).catch(() => undefined);
    }
    return p;
  }

  private async onPairCreate(req: PairCreateRequest, peer: string): Promise<Buffer> {
    const { registry, env, localNode } = this.parts;
    if (req.primary.node !== peer) throw new TricopyError('forbidden', 'a pair is created by its primary node');
    if (registry.has(req.name)) throw new TricopyError('already-exists', `pair ${req.name} already exists on ${localNode}`);
    if (req.group !== null) {
      const other = registry.ofGroup(req.group)[0];
      if (other && (other.record.role !== 'secondary' || other.record.peer.node !== peer)) {
        throw new TricopyError('conflict', `group ${req.group} exists on ${localNode} with another direction`);
      }
    }
    if (!env.volumes.has(req.volume)) {
      if (!req.createVolume) throw new TricopyError('not-found', `volume ${req.volume} does not exist on ${localNode}`);
      await env.volumes.create({ name: req.volume, sizeBytes: req.sizeBytes, description: `secondary of pair ${req.name} (primary ${peer})` });
      this.parts.events.emit('volume-created', req.volume, `created as the secondary of pair ${req.name} from ${peer}`, { sizeBytes: req.sizeBytes });
    }
    const meta = env.volumes.get(req.volume);
    if (meta.sizeBytes < req.sizeBytes) {
      throw new TricopyError('invalid-argument', `volume ${req.volume} on ${localNode} is ${formatBytes(meta.sizeBytes)}, smaller than the primary's ${formatBytes(req.sizeBytes)}`,
        'grow it first: tricopy volume resize');
    }
    const quorum = req.purpose === 'quorum';
    const clash = registry.ofVolume(req.volume).find((p) => quorum || p.record.purpose === 'quorum' || p.record.role === 'secondary' || req.mode === 'sync' || p.record.mode === 'async');
    if (clash) {
      throw new TricopyError('conflict', `volume ${req.volume} on ${localNode} is already in pair ${clash.record.name}`,
        quorum || clash.record.purpose === 'quorum' ? 'a quorum volume is in no other pair'
          : clash.record.role === 'secondary' ? 'a volume receives from one primary at a time' : 'only a cascade is possible: sync in, async out');
    }
    if (this.parts.clientsOf(req.volume)) {
      throw new TricopyError('busy', `volume ${req.volume} on ${localNode} has attached clients; a secondary must not be in use`, 'detach them first');
    }
    const record = newRecord({
      name: req.name, role: 'secondary', volume: req.volume, peerVolume: req.peerVolume, peer: req.primary, mode: req.mode,
      purpose: quorum ? 'quorum' : 'data', fence: req.fence, group: req.group, fenceGroup: req.fenceGroup, state: req.initialCopy === 'none' ? 'duplex' : 'initial-copying',
      reason: `created by ${peer}`, generation: req.generation,
    }, env.clock);
    const bitmap = await this.parts.store.bitmap(record.name, meta.sizeBytes);
    await this.parts.store.save(record);
    await this.parts.resources.admit(record, bitmap);
    this.parts.events.emit('pair-created', record.name, record.reason, { role: 'secondary', volume: record.volume, peer, mode: record.mode, purpose: record.purpose });
    // The volume now follows a new primary: its place in an earlier async stream goes to that
    // primary once (for a delta resync) and is dropped here.
    const mark = this.parts.marks.get(req.volume) ?? null;
    if (mark) await this.parts.marks.drop(req.volume, `now the secondary of pair ${req.name}`);
    this.parts.deltaRecords.delete(req.volume);
    // The primary copies what holds data on either side: report what holds data here.
    const receivedSeq = req.group ? this.parts.journals.received(req.group)?.receivedSeq ?? 0 : 0;
    return bitmapReplyCodec.encode({ bitmap: encodeBitmap(env.volumes.volume(req.volume).allocation.snapshot()), hostWritesRecorded: false, mark, receivedSeq });
  }

  private onPairUpdate(u: PairUpdate, peer: string): Promise<void> {
    const p = this.parts.registry.requireOfPeer(u.name, peer);
    // News older than this side's generation is answered at once, without waiting for the pair's
    // command queue: the old primary sends it while holding its own queue (a transition tells the
    // secondary before it ends), and a command here may hold this queue while it waits for that
    // primary (a forced delete after a takeover sends PairDelete, which waits for the primary's
    // queue): each side would wait for the other until a request timed out (sim seed 1054: the
    // delete of a failover hung 30 s, and the old primary kept taking writes on the other volumes
    // of the group meanwhile). Generations only grow, so news stale now stays stale.
    if (staleUpdate(p.record, u)) return Promise.resolve();
    return this.parts.registry.serialize(u.name, async () => {
      const r = p.record;
      const { engine } = this.parts;
      if (r.role !== 'secondary' || staleUpdate(r, u)) return;
      await engine.noteNewPrimaryActed(p);
      if (u.deltaBase && u.state === 'duplex' && r.mode === 'sync') {
        const volume = this.volume(p);
        this.parts.deltaRecords.establish(r.volume, volume.sizeBytes, peer, 'forwarded', u.deltaBase.group, u.deltaBase.seq);
      }
      if (u.fence !== undefined) await engine.followProtection(p, u.fence, u.fenceGroup ?? null, peer);
      r.copy = u.copyTotal > 0 ? { totalChunks: u.copyTotal, doneChunks: u.copyDone } : null;
      const changed = r.state !== u.state || r.suspendCause !== u.suspendCause || r.secondaryWritable !== u.secondaryWritable;
      if (!changed) {
        await engine.adoptGeneration(p, u.generation);
        return;
      }
      await engine.adoptGeneration(p, u.generation);
      await engine.apply(p, 'peer-state', { peerState: u.state, peerCause: u.suspendCause, secondaryWritable: u.secondaryWritable, reason: `primary ${peer}: ${u.reason}` });
    });
  }

  private async onJournalBatch(payload: Buffer, peer: string): Promise<Buffer> {
    const { header, data } = decodeDataHeader(payload);
    const group = header.name;
    const journal = this.parts.journals.received(group);
    // A group swapping roles member by member has both roles for a moment: its secondaries receive.
    const member = this.parts.registry.ofGroup(group).find((p) => p.record.role === 'secondary');
    if (!journal || !member || member.record.peer.node !== peer) {
      throw new TricopyError('conflict', `group ${group} on ${this.parts.localNode} does not receive from ${peer}`);
    }
    if (member.record.state === 'secondary-writable') {
      throw new TricopyError('conflict', `group ${group} on ${this.parts.localNode} took over; it accepts no more journal entries`);
    }
    // The frame checksum covered these bytes; they are stored as received.
    const entries = decodeEntriesWithBytes(data, false);
    if (entries.length !== header.length) throw new TricopyError('invalid-argument', 'journal batch count disagrees with its entries');
    for (const m of this.parts.registry.ofGroup(group)) if (m.record.awaitingNewPrimary) await this.parts.engine.noteNewPrimaryActed(m);
    await journal.receive(entries, header.offset);
    return journalAckCodec.encode({ receivedSeq: journal.receivedSeq, appliedSeq: journal.appliedSeq });
  }
}

/** News from a primary this side has moved past: an older generation, or the one this side took over from. */
function staleUpdate(r: PairRecord, u: PairUpdate): boolean {
  return u.generation < r.generation || (r.state === 'secondary-writable' && u.generation <= r.generation);
}
