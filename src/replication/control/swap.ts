// Reversing a pair's direction (spec 001 §5.2, swap / Hitachi horctakeover with the primary
// reachable, and failback after a takeover). One request, two sides:
//   1. at the node that becomes the primary (the secondary): check the table, ask the old primary
//      to prepare (SwapPrepare) with the generation it will have;
//   2. at the old primary: quiesce the volume, drain a planned swap's journal, record the regions
//      that differ, refuse a split brain the operator did not resolve, become the secondary;
//   3. back at the new primary: merge the old primary's regions, become the primary, copy what
//      differs (nothing when clean).
// A swap interrupted anywhere is finished by running it again at the new primary.
import { TricopyError, errorMessage, invariant } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import { formatBytes } from '../../common/units';
import type { PairStatus } from '../../contracts/pairs';
import type { Journals } from '../async/journals';
import type { Shipping } from '../async/shipper';
import { JournalOp } from '../async/journal-entry';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';
import type { ReplicationEnv } from '../env';
import { connectTimeoutMs, diffChunkBytes, drainPollIntervalMs, drainTimeoutMs, swapPrepareTimeoutMs } from '../limits';
import { decodeBitmap, encodeBitmap } from '../pairs/bitmap-codec';
import type { PairRegistry } from '../pairs/registry';
import type { PairRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import { type SwapMember, type SwapPrepare, swapPrepareCodec, swapPreparedCodec } from '../transport/control-messages';
import { MessageType } from '../transport/messages';
import type { PairResources } from './pair-resources';
import type { PeerDemand } from './peer-demand';

export interface SwapParts {
  env: ReplicationEnv;
  localNode: string;
  registry: PairRegistry;
  engine: TransitionEngine;
  resources: PairResources;
  journals: Journals;
  shipping: Shipping;
  volumeRuntimes: VolumeRuntimes;
  demand: PeerDemand;
  events: EventJournal;
  status: (p: PairRuntime) => PairStatus;
}

export class Swap {
  constructor(private readonly parts: SwapParts) {
    // A role reversal changes which journals and logs the pair needs on this node.
    parts.engine.onLocal(async (t) => {
      if (t.fromRole === t.pair.record.role) return;
      const r = t.pair.record;
      if (r.role === 'secondary') {
        this.parts.demand.releaseIfUnneeded(r.peer.node);
        if (r.group && this.parts.registry.ofGroup(r.group).every((x) => x.record.role === 'secondary')) await this.parts.journals.closePrimary(r.group, true);
      } else {
        this.parts.env.transport.want(r.peer);
        const stillReceives = r.group && this.parts.registry.ofGroup(r.group).some((x) => x.record.role === 'secondary');
        if (r.group && !stillReceives) await this.parts.journals.closeReceived(r.group, true);
      }
      await this.parts.resources.open(t.pair);
      // The first member of a group to swap starts the new stream; the peer's received journal for it
      // is new, so everything in this (new) journal goes.
      if (r.role === 'primary' && r.group && !this.parts.shipping.isRunning(r.group)) this.parts.shipping.start(r.group, r.peer.node, 0);
    });
  }

  /** At the node that becomes the primary: this pair (or all of its group) swaps roles. */
  swap(name: string, options: { discard?: string | undefined }): Promise<PairStatus[]> {
    const { registry, engine, env } = this.parts;
    const first = registry.require(name);
    const members = first.record.group ? [...registry.ofGroup(first.record.group)] : [first];
    return registry.serializeAll(members.map((p) => p.record.name), async () => {
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
        const outcome = engine.decide(p, 'swap');
        if (outcome.kind === 'refuse') throw new TricopyError('conflict', `swap of pair ${p.record.name}: ${outcome.message}`);
      }
      if (options.discard !== undefined && options.discard !== first.record.peer.node) {
        throw new TricopyError('invalid-argument', `swap makes this node the primary: only ${first.record.peer.node}'s changes can be discarded`);
      }
      await env.transport.connectNow(first.record.peer, connectTimeoutMs).catch((err: unknown) => {
        throw new TricopyError('unavailable', `cannot swap pair ${name}: ${errorMessage(err)}`,
          'the old primary must be reachable to swap; if it is lost for good, keep running here (takeover) and delete the pair later');
      });
      await this.becomePrimary(pending, options.discard !== undefined);
      return members.map((p) => this.parts.status(p));
    });
  }

  /** Steps 1 and 3, at the node that becomes the primary: the pairs (one, or a group's) swap together. */
  async becomePrimary(pairs: PairRuntime[], discardPeerChanges: boolean): Promise<void> {
    const first = pairs[0];
    if (!first) return;
    const members: SwapMember[] = pairs.map((p) => ({
      // A side that stepped down and takes the primary back imposes its own image: its writes count.
      name: p.record.name, generation: p.record.generation + 1, senderHasChanges: p.record.hostWritesRecorded || p.record.awaitingNewPrimary,
      receivedSeqAtTakeover: p.record.state === 'secondary-writable' ? p.record.receivedSeqAtTakeover : null,
    }));
    const request: SwapPrepare = { ...members[0]!, newPrimary: this.parts.localNode, discardReceiverChanges: discardPeerChanges, ...(pairs.length > 1 ? { members } : {}) };
    const reply = swapPreparedCodec.decode(await this.parts.env.transport.request(first.record.peer.node, MessageType.SwapPrepare, swapPrepareCodec.encode(request),
      swapPrepareTimeoutMs));
    const answers = reply.members ?? [{ name: first.record.name, bitmap: reply.bitmap, clean: reply.clean }];
    for (const p of pairs) {
      const answer = answers.find((a) => a.name === p.record.name);
      invariant(answer, `the old primary answered for pair ${p.record.name}`);
      p.bitmap.mergeFrom(decodeBitmap(answer.bitmap, p.bitmap));
      await p.bitmap.sync();
    }
    // What the old primary drained to this node must be durable here before this node's copy
    // becomes the one hosts rely on (the received journal goes away with the role).
    if (first.record.group && first.record.role === 'secondary') await this.parts.journals.received(first.record.group)?.drain();
    // Hosts may have flushed at the old primary after it stepped down: this copy, which they rely
    // on from now, is made durable first.
    await Promise.all(pairs.map((p) => this.parts.env.volumes.volume(p.record.volume).flush()));
    // The group's journal is open before any member is seen as a primary: a host write to it is
    // journaled from the moment the role changes.
    if (first.record.group) await this.openJournal(first.record.group);
    // Host writes wait while the roles change: one that began while this copy was writable alone
    // was only recorded, and must not be acknowledged as if it had been forwarded (sim seed 48).
    await this.parts.volumeRuntimes.whileHeld(pairs.map((p) => p.record.volume), async () => {
      for (const p of pairs) {
        const clean = answers.find((a) => a.name === p.record.name)!.clean && p.bitmap.setBitCount === 0;
        const swapped = await this.parts.engine.apply(p, 'swap', {
          clean, generation: p.record.generation + 1,
          reason: clean
            ? `roles swapped: ${this.parts.localNode} is now the primary; no data needed copying`
            : `roles swapped: ${this.parts.localNode} is now the primary; copying ${formatBytes(p.bitmap.setBitCount * diffChunkBytes)} of regions that differ`,
        });
        // The old primary has already stepped down for this pair: refused here, it would have no
        // primary at all (both ends secondaries, sim seed 1543). Callers check the swap's row first.
        invariant(swapped.kind !== 'refuse', `the new primary of a swap takes pair ${p.record.name} once the old one stepped down (${swapped.kind === 'refuse' ? swapped.message : ''})`);
      }
    });
  }

  /**
   * Opens the group's journal at the new primary. With no member of the group a primary here, its
   * stream starts now (the peer's received journal for it is new): entries the journal still holds
   * belong to a stream of this node whose pairs are gone (the journal's removal with them is not
   * durable until a directory sync, and a power loss may bring its files back, in part without the
   * progress that said they were delivered). They must never be shipped: applied after the swap
   * they would overwrite newer data at the new secondary (sim seed 1204: tokyo's stream dissolved
   * at a failover came back after a power loss, and failback's swap shipped its 226 writes of 1.5 s
   * over sapporo's of 44 s). The stream starts over after them, as for a created pair (seed 1244).
   */
  private async openJournal(group: string): Promise<void> {
    const { journals, registry } = this.parts;
    const streamExists = registry.ofGroup(group).some((x) => x.record.role === 'primary');
    await journals.openFor({ role: 'primary', group });
    const journal = journals.primary(group)!;
    if (!streamExists && journal.retainedEntries().length > 0) await journal.dropAll();
  }

  /**
   * Step 2, at the old primary, for one pair or a whole group at once. It does not wait for a
   * command running here: that command may be waiting for the new primary, which waits for this.
   */
  prepare(req: SwapPrepare, peer: string): Promise<Buffer> {
    const members: SwapMember[] = req.members ?? [req];
    const { registry, engine } = this.parts;
    return registry.trySerializeAll(members.map((m) => m.name), async () => {
      const pairs = members.map((m) => registry.requireOfPeer(m.name, peer));
      const already = pairs.filter((p, i) => p.record.role === 'secondary' && p.record.generation === members[i]!.generation);
      if (already.length === pairs.length) {
        // A repeated request after a lost answer: the swap already happened here, and the regions
        // recorded then are still recorded (they are cleared only once duplex).
        return this.answer(pairs.map((p) => ({ name: p.record.name, bitmap: encodeBitmap(p.bitmap), clean: p.bitmap.setBitCount === 0 })));
      }
      pairs.forEach((p, i) => this.checkSwappable(p, members[i]!));
      const runtimes = pairs.map((p) => this.parts.volumeRuntimes.get(p.record.volume));
      for (const vr of runtimes) vr.swapping = true;
      try {
        for (const vr of runtimes) await vr.lock.idle();
        const planned = pairs.map((p) => p.record.state === 'duplex');
        await this.drainPlanned(pairs.filter((p) => p.record.state === 'duplex'));
        pairs.forEach((p, i) => this.checkChanges(p, members[i]!, req));
        await this.restartReceivedStream(pairs);
        const answers = [];
        for (let i = 0; i < pairs.length; i++) {
          const p = pairs[i]!;
          await p.bitmap.sync();
          const bitmap = encodeBitmap(p.bitmap);
          const clean = planned[i]! && p.bitmap.setBitCount === 0;
          // A secondary here (both ends secondaries after an interrupted swap) stays one.
          const swapped = await engine.apply(p, p.record.role === 'secondary' ? 'peer-swap' : 'swap', {
            clean, generation: members[i]!.generation, hostWritesRecorded: false,
            reason: `roles swapped: ${req.newPrimary} is now the primary${clean ? '' : '; receiving the regions that differ'}`,
          });
          if (swapped.kind !== 'transition') throw new TricopyError('conflict', `swap of pair ${p.record.name} at ${this.parts.localNode}: ${swapped.kind === 'refuse' ? swapped.message : swapped.note}`);
          answers.push({ name: p.record.name, bitmap, clean });
        }
        return this.answer(answers);
      } finally {
        for (const vr of runtimes) vr.swapping = false;
      }
    });
  }

  /**
   * This side may step down for the requester. Both ends secondaries (a swap was interrupted after
   * the old primary stepped down, perhaps followed by a takeover): the end with the newer
   * generation decides, and the other stays the secondary.
   */
  private checkSwappable(p: PairRuntime, member: SwapMember): void {
    if (p.record.role === 'secondary') {
      if (p.record.generation < member.generation) return;
      throw new TricopyError('conflict', `pair ${p.record.name} is a secondary on ${this.parts.localNode} too, with the newer generation (${p.record.generation}): a swap did not finish`,
        `run it at ${this.parts.localNode}: tricopy pair swap ${p.record.name}`);
    }
    const allowed = this.parts.engine.decide(p, 'swap');
    if (allowed.kind === 'refuse') throw new TricopyError('conflict', `swap of pair ${p.record.name} at ${this.parts.localNode}: ${allowed.message}`);
    this.checkForwarding(p);
  }

  /**
   * Stepping down makes this volume a secondary; if it also sends to a third node, only the cascade
   * (receive synchronously, forward asynchronously) keeps that copy in step: what an async
   * secondary applies, and a second sync hop, would never reach it.
   */
  private checkForwarding(p: PairRuntime): void {
    const other = this.parts.registry.ofVolume(p.record.volume).find((x) => x !== p && x.record.role === 'primary' &&
      !(p.record.mode === 'sync' && x.record.mode === 'async'));
    if (!other) return;
    throw new TricopyError('conflict',
      `swap of pair ${p.record.name}: volume ${p.record.volume} on ${this.parts.localNode} is also the primary of pair ${other.record.name} (${other.record.mode} to ${other.record.peer.node}), ` +
      `and as the ${p.record.mode} secondary it could not forward to it (only a cascade is possible: sync in, async out)`,
      `delete pair ${other.record.name} at ${this.parts.localNode} first (tricopy pair delete ${other.record.name}), then swap again`);
  }

  /**
   * Both ends secondaries: this side stays one, but the requester starts a new stream (its journal
   * begins again at entry 1), so the stream received from the old primary ends here. What arrived
   * of it is applied first; the regions that differ are copied by the new primary after.
   */
  private async restartReceivedStream(pairs: PairRuntime[]): Promise<void> {
    const group = pairs[0]?.record.group;
    if (!group || !pairs.every((p) => p.record.role === 'secondary')) return;
    const { journals } = this.parts;
    await journals.received(group)?.drain();
    await journals.closeReceived(group, true);
    await journals.openFor(pairs[0]!.record);
  }

  private answer(members: Array<{ name: string; bitmap: string; clean: boolean }>): Buffer {
    const first = members[0]!;
    return swapPreparedCodec.encode({ bitmap: first.bitmap, clean: first.clean, ...(members.length > 1 ? { members } : {}) });
  }

  /** Records what the new primary lacks, and refuses a split brain the operator did not resolve. */
  private checkChanges(p: PairRuntime, member: SwapMember, req: SwapPrepare): void {
    const planned = p.record.state === 'duplex';
    const changed = this.recordUndelivered(p, member.receivedSeqAtTakeover) || p.record.hostWritesRecorded;
    if (!planned && changed && member.senderHasChanges && !req.discardReceiverChanges) {
      throw new TricopyError('conflict',
        `split brain: both ${this.parts.localNode} and ${req.newPrimary} were written while pair ${p.record.name} was apart`,
        `to make ${req.newPrimary} the primary and discard ${this.parts.localNode}'s changes, run at ${req.newPrimary}: tricopy pair swap ${p.record.name} --discard ${this.parts.localNode}`);
    }
    if (!planned && changed && req.discardReceiverChanges) {
      this.parts.events.emit('split-brain-resolved', p.record.name, `operator discarded the changes made on ${this.parts.localNode}`);
    }
  }

  /** Planned swap: everything acknowledged must reach the new primary first (one drain per group). */
  private async drainPlanned(pairs: PairRuntime[]): Promise<void> {
    const p = pairs.find((x) => x.record.group !== null);
    const journal = p ? this.parts.journals.primary(p.record.group!) : undefined;
    if (!p || !journal) return;
    const target = journal.lastSeq;
    const deadline = this.parts.env.clock.now() + drainTimeoutMs;
    let asked = false;
    while (journal.appliedSeq < target) {
      if (this.parts.env.clock.now() > deadline) throw new TricopyError('unavailable', `the journal of group ${p.record.group} did not drain in time; retry the swap`);
      if (!asked && !this.parts.shipping.isRunning(p.record.group!)) {
        asked = true;
        this.parts.shipping.ensureRunning(p.record.group!, p.record.peer.node);
      }
      await this.parts.env.clock.sleep(drainPollIntervalMs);
    }
  }

  /** After a takeover: entries the taken-over secondary never received differ too. Returns whether host writes were among them. */
  private recordUndelivered(p: PairRuntime, receivedSeqAtTakeover: number | null): boolean {
    const journal = p.record.group ? this.parts.journals.primary(p.record.group) : undefined;
    if (!journal || receivedSeqAtTakeover === null) return false;
    let changed = false;
    for (const e of journal.retainedEntries()) {
      if (e.pair !== p.record.name || e.seq <= receivedSeqAtTakeover) continue;
      p.bitmap.markBytes(e.offset, e.length);
      if (e.op !== JournalOp.CopyRegion) changed = true;
    }
    return changed;
  }
}
