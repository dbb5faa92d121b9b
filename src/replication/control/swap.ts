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
import { type SwapPrepare, swapPrepareCodec, swapPreparedCodec } from '../transport/control-messages';
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
      for (const p of pending) await this.becomePrimary(p, options.discard !== undefined);
      return members.map((p) => this.parts.status(p));
    });
  }

  /** Steps 1 and 3, at the node that becomes the primary. */
  async becomePrimary(p: PairRuntime, discardPeerChanges: boolean): Promise<void> {
    const r = p.record;
    const generation = r.generation + 1;
    const request: SwapPrepare = {
      name: r.name, newPrimary: this.parts.localNode, generation, senderHasChanges: r.hostWritesRecorded,
      receivedSeqAtTakeover: r.state === 'secondary-writable' ? r.receivedSeqAtTakeover : null,
      discardReceiverChanges: discardPeerChanges,
    };
    const reply = swapPreparedCodec.decode(await this.parts.env.transport.request(r.peer.node, MessageType.SwapPrepare, swapPrepareCodec.encode(request),
      swapPrepareTimeoutMs));
    p.bitmap.mergeFrom(decodeBitmap(reply.bitmap, p.bitmap));
    await p.bitmap.sync();
    // What the old primary drained to this node must be durable here before this node's copy
    // becomes the one hosts rely on (the received journal goes away with the role).
    if (r.group && r.role === 'secondary') await this.parts.journals.received(r.group)?.drain();
    const clean = reply.clean && p.bitmap.setBitCount === 0;
    await this.parts.engine.apply(p, 'swap', {
      clean, generation,
      reason: clean
        ? `roles swapped: ${this.parts.localNode} is now the primary; no data needed copying`
        : `roles swapped: ${this.parts.localNode} is now the primary; copying ${formatBytes(p.bitmap.setBitCount * diffChunkBytes)} of regions that differ`,
    });
  }

  /** Step 2, at the old primary. */
  prepare(req: SwapPrepare, peer: string): Promise<Buffer> {
    return this.parts.registry.serialize(req.name, async (p) => {
      if (p.record.role === 'secondary') {
        if (p.record.generation === req.generation && p.record.peer.node === req.newPrimary) {
          // A repeated request after a lost answer: the swap already happened here, and the
          // regions recorded then are still recorded (they are cleared only once duplex).
          return swapPreparedCodec.encode({ bitmap: encodeBitmap(p.bitmap), clean: p.bitmap.setBitCount === 0 });
        }
        throw new TricopyError('conflict', `pair ${req.name} is a secondary on ${this.parts.localNode} too; the roles are confused`,
          'check pair status on both nodes');
      }
      invariant(peer === p.record.peer.node, 'swap requests come from the pair\'s peer');
      const vr = this.parts.volumeRuntimes.get(p.record.volume);
      vr.swapping = true;
      try {
        await vr.lock.idle();
        const planned = p.record.state === 'duplex';
        await this.drainPlanned(p);
        const changed = this.recordUndelivered(p, req.receivedSeqAtTakeover) || p.record.hostWritesRecorded;
        if (!planned && changed && req.senderHasChanges && !req.discardReceiverChanges) {
          throw new TricopyError('conflict',
            `split brain: both ${this.parts.localNode} and ${req.newPrimary} were written while pair ${req.name} was apart`,
            `to make ${req.newPrimary} the primary and discard ${this.parts.localNode}'s changes, run at ${req.newPrimary}: tricopy pair swap ${req.name} --discard ${this.parts.localNode}`);
        }
        if (!planned && changed && req.discardReceiverChanges) {
          this.parts.events.emit('split-brain-resolved', p.record.name, `operator discarded the changes made on ${this.parts.localNode}`);
        }
        await p.bitmap.sync();
        const bitmap = encodeBitmap(p.bitmap);
        const clean = planned && p.bitmap.setBitCount === 0;
        await this.parts.engine.apply(p, 'swap', {
          clean, generation: req.generation, hostWritesRecorded: false,
          reason: `roles swapped: ${req.newPrimary} is now the primary${clean ? '' : '; receiving the regions that differ'}`,
        });
        return swapPreparedCodec.encode({ bitmap, clean });
      } finally {
        vr.swapping = false;
      }
    });
  }

  /** Planned swap: everything acknowledged must reach the new primary first. */
  private async drainPlanned(p: PairRuntime): Promise<void> {
    const journal = p.record.group ? this.parts.journals.primary(p.record.group) : undefined;
    if (p.record.state !== 'duplex' || !journal) return;
    const target = journal.lastSeq;
    const deadline = this.parts.env.clock.now() + drainTimeoutMs;
    while (journal.appliedSeq < target) {
      if (this.parts.env.clock.now() > deadline) throw new TricopyError('unavailable', `the journal of group ${p.record.group} did not drain in time; retry the swap`);
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
