// The node's management table (spec 000 §4.3, §5.2, §6.2): one row per construction command
// received (receivedFrom, sentTo, copy, commandId), added on construct and removed on release,
// and what the node's monitor last reported for each copy it executed. Durable: every change is
// written atomically to one file before the command is answered, so a node that restarts routes
// reports as before and does not repeat a report it already sent.
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { CoalescingSaver, atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { ManagementTableEntry, MonitoredSet, NeighbourId, ReportCondition } from '../contracts/monitor';

/** The monitor's memory of one copy it executed: the condition last reported (null: healthy). */
export interface WatchState {
  condition: ReportCondition | null;
  since: string;
}

interface TableFile {
  version: 1;
  rows: ManagementTableEntry[];
  watch: Record<string, WatchState>;
}

export type RegisterOutcome = 'registered' | 'already-registered';

export class ManagementTable {
  private rows: ManagementTableEntry[] = [];
  private watch = new Map<string, WatchState>();
  private readonly saver = new CoalescingSaver(async () => {
    const file: TableFile = { version: 1, rows: this.rows, watch: Object.fromEntries(this.watch) };
    await atomicWriteJson(this.file, file, this.disk);
  });

  private constructor(private readonly file: string, private readonly disk: Disk) {}

  static async open(dir: string, disk: Disk): Promise<ManagementTable> {
    await disk.mkdirp(dir);
    const table = new ManagementTable(path.join(dir, 'table.json'), disk);
    const raw = (await readJsonIfExists(table.file, disk)) as TableFile | undefined;
    if (raw !== undefined) {
      table.rows = raw.rows;
      table.watch = new Map(Object.entries(raw.watch));
    }
    return table;
  }

  all(): ManagementTableEntry[] {
    return this.rows.map((r) => ({ ...r }));
  }

  /**
   * Registration (§6.2): one row per command. The same commandId again changes nothing (§9.3); a
   * new command for a copy replaces the row the same neighbour registered for it before, so a
   * copy that moved (a failover) is routed along its new path only.
   */
  async register(row: ManagementTableEntry): Promise<RegisterOutcome> {
    if (this.rows.some((r) => r.commandId === row.commandId)) return 'already-registered';
    this.rows = this.rows.filter((r) => !(r.copy.copyId === row.copy.copyId && r.receivedFrom === row.receivedFrom));
    this.rows.push(row);
    await this.save();
    return 'registered';
  }

  /** Deletion (§6.2): the row for `copyId` received from `from`; the rows removed. */
  async release(copyId: string, from: NeighbourId): Promise<ManagementTableEntry[]> {
    const removed = this.rows.filter((r) => r.copy.copyId === copyId && r.receivedFrom === from);
    if (removed.length === 0) return [];
    this.rows = this.rows.filter((r) => !removed.includes(r));
    if (!this.rows.some((r) => r.copy.copyId === copyId)) this.watch.delete(copyId);
    await this.save();
    return removed;
  }

  /** Rows whose sentTo and copy match (§6.3 steps 3 and 7): the origin passes itself, a relay the last hop. */
  matching(sentTo: NeighbourId, copyId: string): ManagementTableEntry[] {
    return this.rows.filter((r) => r.sentTo === sentTo && r.copy.copyId === copyId);
  }

  /** Copies this node executed (sentTo = itself), with the monitored set of their newest row. */
  executed(self: string): Map<string, { row: ManagementTableEntry; monitored: MonitoredSet }> {
    const out = new Map<string, { row: ManagementTableEntry; monitored: MonitoredSet }>();
    for (const r of this.rows) if (r.sentTo === self) out.set(r.copy.copyId, { row: r, monitored: r.monitored });
    return out;
  }

  watchState(copyId: string): WatchState | undefined {
    return this.watch.get(copyId);
  }

  async setWatchState(copyId: string, state: WatchState): Promise<void> {
    this.watch.set(copyId, state);
    await this.save();
  }

  /** The whole table, written after every change (changes made together share one write). */
  private save(): Promise<void> {
    return this.saver.save();
  }
}
