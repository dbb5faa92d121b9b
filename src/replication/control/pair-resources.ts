// What a pair holds on this node besides its record: its place in the registry, its group's
// journal, its volume's activity log; and what is given back when it goes (the group's journals
// when it was the last member, the applied mark of a detached async secondary, the peer link); a
// new pair of a volume ends its detached-secondary mark.
import type { Journals } from '../async/journals';
import type { Fences } from '../datapath/fences';
import type { VolumeRuntimes } from '../datapath/volume-runtimes';
import type { AppliedMarks } from '../delta/marks';
import type { DetachedSecondaries } from '../pairs/detached';
import type { PersistentBitmap } from '../../volume/bitmap';
import type { PairRecord } from '../pairs/pair-model';
import type { PairRegistry } from '../pairs/registry';
import { type PairRuntime, newRuntime } from '../pairs/runtime';
import type { TransitionEngine } from '../pairs/transitions';
import type { PeerDemand } from './peer-demand';

export class PairResources {
  constructor(
    private readonly registry: PairRegistry,
    engine: TransitionEngine,
    private readonly journals: Journals,
    private readonly volumeRuntimes: VolumeRuntimes,
    private readonly fences: Fences,
    private readonly marks: AppliedMarks,
    private readonly detached: DetachedSecondaries,
    private readonly demand: PeerDemand,
    /** Makes every completed write of a volume durable (for the activity log). */
    private readonly durable: (volume: string) => Promise<void>,
  ) {
    engine.onLocal(async (t) => {
      this.fences.refresh();
      // A secondary in step holds what its primary holds: regions it recorded (while writable, or
      // as the old primary of a swap) were copied over it, so the record starts empty again.
      const p = t.pair;
      if (p.record.role === 'secondary' && p.record.state === 'duplex' && p.bitmap.setBitCount > 0) {
        p.bitmap.clearAll();
        await p.bitmap.sync();
      }
    });
    engine.onProtection(() => this.fences.refresh());
    engine.onAfter(async (t) => {
      const r = t.pair.record;
      if (r.role === 'primary') await this.volumeRuntimes.useActivityLog(r.volume, this.durable);
    });
    engine.onRemoval((p) => this.beforeRemoval(p), (p) => this.afterRemoval(p));
  }

  /** Registers a pair (new, loaded at start, or created by a peer) and opens what it needs. */
  async admit(record: PairRecord, bitmap: PersistentBitmap): Promise<PairRuntime> {
    const p = newRuntime(record, bitmap);
    // Opened before writes can find the pair in the registry: a host write that sees an async
    // primary must find its group's journal, and one that sees a primary its activity log.
    if (record.role === 'primary') await this.volumeRuntimes.openActivityLog(record.volume, this.durable);
    await this.journals.openFor(record);
    this.registry.add(p);
    this.fences.refresh();
    // Only now, with the pair deciding who writes the volume: dropped first, a host write in the
    // pause found neither pair nor mark and wrote a volume about to become a secondary (sim seed 344).
    await this.detached.drop(record.volume, `now the ${record.role} of pair ${record.name}`);
    return p;
  }

  /** Opens the journals and logs a pair's current role needs (after admission or a role swap). */
  async open(p: PairRuntime): Promise<void> {
    await this.volumeRuntimes.useActivityLog(p.record.volume, this.durable);
    await this.journals.openFor(p.record);
    this.fences.refresh();
  }

  /** A secondary leaving an async stream remembers how far it applied it (delta resync later). */
  private async beforeRemoval(p: PairRuntime): Promise<void> {
    const r = p.record;
    const received = r.group ? this.journals.received(r.group) : undefined;
    if (r.role === 'secondary' && r.mode === 'async' && r.group && received && r.state !== 'secondary-writable' && r.state !== 'initial-copying') {
      await this.marks.save(r.volume, { origin: r.peer.node, group: r.group, appliedSeq: received.appliedSeq });
    }
  }

  private async afterRemoval(p: PairRuntime): Promise<void> {
    const r = p.record;
    this.fences.refresh();
    if (r.mode === 'sync') this.journals.releaseHeldOf(r.volume);
    if (r.group && this.registry.ofGroup(r.group).length === 0) await this.journals.removeGroup(r.group);
    this.demand.releaseIfUnneeded(r.peer.node);
  }
}
