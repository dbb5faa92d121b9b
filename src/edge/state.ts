// What a relay keeps across restarts, in one small JSON file replaced atomically: the network it
// runs (its replica of the master tables), the pairs whose copy goes through it (411) with their
// differential bitmaps (727, as sorted region numbers), and the counters of its order-guarantee ids
// (412). The log area (413) lives beside it, one journal directory per order (log-area.ts).
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { CoalescingSaver, atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { OrderState, RelayNetworkConfig } from '../contracts/network';
import type { EdgePairState } from './states';

export interface PairRow {
  order: string;
  side: 'source' | 'target';
  /** The storage node holding the primary volume, and the one holding the secondary. */
  source: string;
  target: string;
  /** 725 as the edge sees it (states.ts): the node's state as relayed, or the edge's own. */
  state: EdgePairState;
  /** 727: 64 KiB regions the copy lost inside the network (source edge), as sorted disjoint runs. */
  diff: RegionRun[];
  /**
   * The part of 727 that host writes of the duplex pair make (Write, Zero; not copies): data the
   * primary acknowledged that its secondary never received. Reversing the pair over it without
   * discarding is a split brain.
   */
  written?: RegionRun[];
}

export interface SourceCounters {
  /** 732 when the log area last lost all its entries (a Failure Suspend); the log holds the rest. */
  lastAssigned: number;
  /** 734 (every number up to here is acknowledged and deleted). */
  acked: number;
  state: OrderState;
  /** The next request entry is a resynchronisation point. */
  realignNext: boolean;
  reason: string;
}

export interface TargetCounters {
  /** 733 as far as it is durable at the target storage (flushed there). */
  reflected: number;
  state: OrderState;
  reason: string;
  /**
   * A failover stopped the order (§6.9): the target storage's links that answer as the source
   * storage stay down, so it sees its primary gone, until a resynchronisation point resumes the order.
   */
  failedOver?: boolean;
}

export interface RelayStateData {
  config: RelayNetworkConfig | null;
  /** Pairs assigned to an order-guarantee id by an operator (method B) before they exist. */
  bindings: Record<string, string>;
  pairs: Record<string, PairRow>;
  sources: Record<string, SourceCounters>;
  targets: Record<string, TargetCounters>;
}

export class RelayState {
  private readonly saver: CoalescingSaver;

  private constructor(readonly file: string, private readonly disk: Disk, readonly data: RelayStateData) {
    this.saver = new CoalescingSaver(() => atomicWriteJson(this.file, this.data, this.disk));
  }

  static async load(dataDir: string, disk: Disk): Promise<RelayState> {
    await disk.mkdirp(dataDir);
    const file = path.join(dataDir, 'relay-state.json');
    const raw = (await readJsonIfExists(file, disk)) as Partial<RelayStateData> | undefined;
    return new RelayState(file, disk, {
      config: raw?.config ?? null, bindings: raw?.bindings ?? {}, pairs: raw?.pairs ?? {}, sources: raw?.sources ?? {}, targets: raw?.targets ?? {},
    });
  }

  /** Resolves once a write holding every change made so far is durable. */
  save(): Promise<void> {
    return this.saver.save();
  }

  source(order: string): SourceCounters {
    return (this.data.sources[order] ??= { lastAssigned: 0, acked: 0, state: 'active', realignNext: false, reason: 'new' });
  }

  target(order: string): TargetCounters {
    return (this.data.targets[order] ??= { reflected: 0, state: 'active', reason: 'new' });
  }
}

/** Regions [first, end) of 64 KiB. */
export type RegionRun = [number, number];

/** The union of region runs, sorted and merged. */
export function addRegions(list: RegionRun[], more: Iterable<RegionRun>): RegionRun[] {
  const all = [...list, ...more].filter(([a, b]) => b > a).sort((x, y) => x[0] - y[0]);
  const out: RegionRun[] = [];
  for (const [a, b] of all) {
    const last = out.at(-1);
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

export function regionCount(list: RegionRun[]): number {
  return list.reduce((n, [a, b]) => n + (b - a), 0);
}
