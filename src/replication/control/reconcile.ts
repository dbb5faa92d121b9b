// When a link comes up, both nodes exchange their view of every shared pair (PairsSync) and each
// reconciles its side: a peer that took over fences this side, a dissolved pair goes, a peer that
// lost its data is named, async groups resume shipping from what the secondary holds, and pairs
// suspended by a failure resync by themselves. When a link goes down, sync pairs fail.
import type { TimerHandle } from '../../common/clock';
import { errorMessage } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import type { Logger } from '../../common/log';
import { swapFinishesAt } from '../pairs/interrupted-swap';
import { type Journals, journaling } from '../async/journals';
import type { Shipping } from '../async/shipper';
import { copying, type CopyEngine } from '../copy/copy-engine';
import type { ReplicationEnv } from '../env';
import { formatBytes } from '../../common/units';
import { autoResyncDelayMs, diffChunkBytes } from '../limits';
import type { PairRecord } from '../pairs/pair-model';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import {
  type GroupPosition, type PairSummary, type PairsSync, pairsSyncCodec,
} from '../transport/control-messages';
import { MessageType } from '../transport/messages';
import { fetchPeerBitmap, takePeerBitmap } from './peer-bitmap';
import type { PeerUpdates } from './peer-updates';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';

export interface ReconcileParts {
  env: ReplicationEnv;
  localNode: string;
  autoResync: boolean;
  registry: PairRegistry;
  engine: TransitionEngine;
  journals: Journals;
  shipping: Shipping;
  copy: CopyEngine;
  updates: PeerUpdates;
  volumeRuntimes: VolumeRuntimes;
  events: EventJournal;
  log: Logger;
}

export function summary(r: PairRecord): PairSummary {
  return {
    name: r.name, role: r.role, state: r.state, suspendCause: r.suspendCause, generation: r.generation, mode: r.mode,
    group: r.group, volume: r.volume, peerVolume: r.peerVolume, hostWritesRecorded: r.hostWritesRecorded, fence: r.fence, fenceGroup: r.fenceGroup,
    awaitingNewPrimary: r.awaitingNewPrimary,
  };
}

export class Reconciler {
  private readonly autoResyncTimers = new Map<string, TimerHandle>();
  private stopped = false;

  constructor(private readonly parts: ReconcileParts) {
    parts.env.transport.onPeerUp((node) => this.onPeerUp(node));
    parts.env.transport.onPeerDown((node, reason) => this.onPeerDown(node, reason));
    parts.engine.onAfter((t) => this.scheduleAutoResync(t.pair));
  }

  stop(): void {
    this.stopped = true;
    for (const t of this.autoResyncTimers.values()) this.parts.env.clock.clearTimer(t);
    this.autoResyncTimers.clear();
  }

  /** This side's view of the pairs shared with `node`, as a PairsSync message. */
  view(node: string, absentVolumes: string[] = []): PairsSync {
    const mine = this.parts.registry.ofPeer(node);
    return { node: this.parts.localNode, pairs: mine.map((p) => summary(p.record)), groups: this.groupPositionsFor(node), absentVolumes };
  }

  onPeerUp(node: string): void {
    if (this.stopped) return;
    // The answer is the peer's view when it answered: a pair it asked this node to create meanwhile
    // may be missing from it (the peer records its side after this one). Only the pairs held when
    // the question left are judged by it (sim seed 144).
    const asked = new Set(this.parts.registry.ofPeer(node));
    this.parts.env.transport.request(node, MessageType.PairsSync, pairsSyncCodec.encode(this.view(node)))
      .then((reply) => this.reconcile(node, pairsSyncCodec.decode(reply), true, asked))
      .catch((err: unknown) => this.parts.log.warn({ peer: node, err: errorMessage(err) }, 'pair reconciliation failed'));
  }

  /** Where `node` stands in this node's async streams (its answer to a PairsSync), and shipping from there; no pair is reconciled. */
  resumeShipping(node: string): void {
    if (this.stopped) return;
    this.parts.env.transport.request(node, MessageType.PairsSync, pairsSyncCodec.encode(this.view(node)))
      .then((reply) => this.startShippers(node, pairsSyncCodec.decode(reply).groups))
      .catch((err: unknown) => this.parts.log.warn({ peer: node, err: errorMessage(err) }, 'asking the peer for its stream positions failed'));
  }

  private groupPositionsFor(node: string): GroupPosition[] {
    const out: GroupPosition[] = [];
    for (const journal of this.parts.journals.receivedJournals()) {
      const member = this.parts.registry.ofGroup(journal.group).find((p) => p.record.role === 'secondary');
      if (member && member.record.peer.node === node) out.push({ group: journal.group, receivedSeq: journal.receivedSeq, appliedSeq: journal.appliedSeq });
    }
    return out;
  }

  private onPeerDown(node: string, reason: string): void {
    if (this.stopped) return;
    for (const p of this.parts.registry.ofPeer(node)) {
      const r = p.record;
      if (r.mode === 'sync' && (r.state === 'duplex' || r.state === 'initial-copying' || r.state === 'duplex-pending')) {
        void this.parts.registry.serialize(r.name, () => this.parts.engine.apply(p, 'failure', { reason: `link to ${node} lost: ${reason}` })).catch(() => undefined);
      }
    }
  }

  /**
   * `answer`: the view came back as the answer to this node's PairsSync, so `absentVolumes` tells a
   * peer that lost its data from one that dissolved a pair. A request from the peer cannot tell
   * that; pairs missing there are left to the answer (both sides send a PairsSync on link up).
   */
  async reconcile(node: string, view: PairsSync, answer: boolean, asked?: ReadonlySet<PairRuntime>): Promise<void> {
    const theirs = new Map(view.pairs.map((s) => [s.name, s]));
    const absent = answer ? new Set(view.absentVolumes) : undefined;
    for (const p of this.parts.registry.ofPeer(node)) {
      if (asked && !asked.has(p)) continue;
      await this.parts.registry.serialize(p.record.name, () => this.reconcilePair(p, theirs.get(p.record.name), absent)).catch((err: unknown) =>
        this.parts.log.warn({ pair: p.record.name, err: errorMessage(err) }, 'reconciling pair failed'));
    }
    this.startShippers(node, view.groups);
  }

  /** Async groups: shipping resumes from what the secondary holds. */
  private startShippers(node: string, groups: GroupPosition[]): void {
    const positions = new Map(groups.map((g) => [g.group, g]));
    for (const [group] of this.parts.journals.primaryEntries()) {
      const member = this.parts.registry.ofGroup(group).find((p) => p.record.role === 'primary');
      if (!member || member.record.peer.node !== node) continue;
      const pos = positions.get(group);
      if (pos) this.parts.shipping.start(group, node, pos.receivedSeq, pos.appliedSeq);
    }
  }

  private async reconcilePair(p: PairRuntime, q: PairSummary | undefined, absentAtPeer: ReadonlySet<string> | undefined): Promise<void> {
    const r = p.record;
    if (!this.parts.registry.has(r.name)) return;
    if (!q && absentAtPeer === undefined) return;
    p.peerLostData = false;
    if (!q && r.role === 'primary' && absentAtPeer!.has(r.peerVolume)) return this.peerLostData(p);
    if (!q) {
      await this.parts.engine.apply(p, 'peer-dissolved', {
        reason: r.role === 'secondary'
          ? `the primary ${r.peer.node} no longer has pair ${r.name}; this volume is independent again`
          : `node ${r.peer.node} no longer has pair ${r.name} (it took over and dissolved the pair, or lost its data); delete this side: tricopy pair delete ${r.name} --force`,
      });
      return;
    }
    if (r.role === 'primary' && q.role === 'primary') {
      if (q.generation > r.generation) await this.peerTookOver(p, q);
      else if (q.generation === r.generation) await this.parts.engine.apply(p, 'failure', { reason: `both ${this.parts.localNode} and ${r.peer.node} claim to be the primary of ${r.name}` });
      return;
    }
    if (r.role === 'primary' && q.role === 'secondary') {
      if (q.state === 'secondary-writable' || q.generation > r.generation) {
        await this.peerTookOver(p, q);
        return;
      }
      if (r.state === 'suspended' && r.suspendCause === 'takeover-by-peer') return;
      if (this.autoResyncWanted(p)) {
        // A group resyncs under all its members' command queues: the timer takes them (this one is held here).
        if (this.groupOf(p).length > 1) this.scheduleAutoResync(p);
        else await this.tryAutoResync([p], q.hostWritesRecorded);
        return;
      }
      if (copying(p)) this.parts.copy.start(p);
      void this.parts.updates.tell(p);
      return;
    }
    if (r.role === 'secondary' && q.role === 'secondary') {
      const local = { node: this.parts.localNode, generation: r.generation, awaitingNewPrimary: r.awaitingNewPrimary };
      const peer = { node: r.peer.node, generation: q.generation, awaitingNewPrimary: q.awaitingNewPrimary === true };
      const at = swapFinishesAt(local, peer);
      const stepped = [local, peer].find((e) => e.awaitingNewPrimary && e !== at);
      this.parts.events.emit('pair-conflict', r.name, `both ${this.parts.localNode} and ${r.peer.node} are secondaries: a swap did not finish; ` +
        (stepped
          ? `run pair swap ${r.name} at ${at.node} to finish it (${stepped.node} stepped down for it and still holds its own image: a swap there instead keeps that image)`
          : `run pair swap ${r.name} at ${at.node} (the newer generation) to make it the primary`));
    }
    // I am the secondary and the peer the primary: the primary pushes its state to me.
  }

  /**
   * The secondary came back without its data (a rebuilt node, a new disk). This volume stays the
   * primary; the copy is suspended by a failure (fence data refuses writes, as for any secondary
   * that cannot be updated) until the pair is created again.
   */
  private async peerLostData(p: PairRuntime): Promise<void> {
    const r = p.record;
    p.peerLostData = true;
    const reason = `node ${r.peer.node} has neither pair ${r.name} nor volume ${r.peerVolume} (it lost its data); ` +
      `copy it again: tricopy pair delete ${r.name} --force, then pair create (topology repair does both)`;
    if (r.state === 'suspended') await this.parts.engine.annotate(p, reason, 'pair-peer-lost-data');
    else await this.parts.engine.apply(p, 'failure', { reason });
  }

  private async peerTookOver(p: PairRuntime, q: PairSummary): Promise<void> {
    if (p.record.state === 'suspended' && p.record.suspendCause === 'takeover-by-peer') return;
    // Writes that were in flight here cannot reach the new primary: they are this side's changes.
    await this.parts.engine.apply(p, 'peer-took-over', {
      reason: `${p.record.peer.node} took over (generation ${q.generation}); this volume no longer accepts writes — run pair swap at ${p.record.peer.node} to make this node its secondary`,
    });
  }

  /**
   * A pair suspended by a failure (not by the operator, not by a takeover) resyncs by itself. A
   * quorum pair never does: its Suspend(error) waits for the operator (spec 004 E3), and a resync
   * would leave it in Pair, where no arbitration can be won (E1).
   */
  private autoResyncWanted(p: PairRuntime): boolean {
    const r = p.record;
    return this.parts.autoResync && !p.peerLostData && r.role === 'primary' && r.purpose === 'data' && r.state === 'suspended' &&
      (r.suspendCause === 'failure' || r.suspendCause === 'journal-full' || r.suspendCause === 'crash-recovery');
  }

  private scheduleAutoResync(p: PairRuntime): void {
    const name = p.record.name;
    if (!this.autoResyncWanted(p) || this.autoResyncTimers.has(name) || this.stopped) return;
    const timer = this.parts.env.clock.setTimer(autoResyncDelayMs, () => {
      this.autoResyncTimers.delete(name);
      // A pair deleted and created again under the same name is another pair: this timer was for the old one.
      if (this.parts.registry.get(name) !== p || !this.parts.env.transport.isUp(p.record.peer.node)) return; // peer-up retries
      const members = this.groupOf(p);
      void this.parts.registry.serializeAll(members.map((m) => m.record.name), () => this.tryAutoResync(members)).catch((err: unknown) => {
        this.parts.log.warn({ pair: name, err: errorMessage(err) }, 'automatic resync failed; will retry');
        this.scheduleAutoResync(p);
      });
    });
    timer.unref();
    this.autoResyncTimers.set(name, timer);
  }

  /** The primaries of `p`'s consistency group (just `p` without one). */
  private groupOf(p: PairRuntime): PairRuntime[] {
    const group = p.record.group;
    return group ? this.parts.registry.ofGroup(group).filter((x) => x.record.role === 'primary') : [p];
  }

  /**
   * Resyncs the suspended members of a consistency group together, or none of them: a member
   * resynced alone would let its secondary run ahead of a member still suspended, and the group's
   * image at the secondary would no longer be one instant (sim seed 139).
   */
  private async tryAutoResync(members: PairRuntime[], peerHasChanges?: boolean): Promise<void> {
    const { env, engine, registry } = this.parts;
    const current = members.filter((m) => registry.get(m.record.name) === m);
    const suspended = current.filter((m) => !journaling(m));
    if (suspended.length === 0 || !suspended.every((m) => this.autoResyncWanted(m) && env.transport.isUp(m.record.peer.node))) return;
    for (const m of suspended) {
      const r = m.record;
      const peerBitmap = await fetchPeerBitmap(env.transport, m);
      if ((peerHasChanges ?? peerBitmap.hostWritesRecorded) && r.hostWritesRecorded) {
        this.parts.events.emit('split-brain', r.name, 'both sides were written while apart; resync needs the operator to name the side to discard');
        return;
      }
      await takePeerBitmap(env.transport, m, peerBitmap);
    }
    await this.parts.volumeRuntimes.whileHeld(suspended.map((m) => m.record.volume), async () => {
      for (const m of suspended) {
        await engine.apply(m, 'resync', { reason: `resync: ${formatBytes(m.bitmap.setBitCount * diffChunkBytes)} of changed regions to copy (automatic, after the failure cleared)` });
      }
    });
  }
}
