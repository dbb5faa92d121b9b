// Where a report goes (spec 000 §6.3): at the detecting node, to every distinct receivedFrom of the
// rows whose sentTo is itself; at a relay, to every distinct receivedFrom of the rows whose sentTo
// is the neighbour it came from (A1, A3). Duplicates (by reportId) and reports past the hop limit
// are dropped (§6.3 step 8); a report that matches no row is not routable (E1) and becomes a local
// alert. Pure routing: sending is the caller's.
import type { CopyReport, ManagementTableEntry, NeighbourId } from '../contracts/monitor';

export const maxReportHops = 16;
/** Report ids a relay remembers to suppress duplicates: far more than one failure wave produces. */
export const dedupeCapacity = 10_000;

export interface Destination {
  neighbour: NeighbourId;
  /** The neighbour node's control API; null for a manager (its address is the node's binding). */
  url: string | null;
}

export type RouteDecision =
  | { kind: 'send'; report: CopyReport; destinations: Destination[] }
  | { kind: 'drop'; why: 'duplicate' | 'hop-limit' }
  | { kind: 'unroutable'; why: string };

export interface RowSource {
  matching(sentTo: NeighbourId, copyId: string): ManagementTableEntry[];
}

export class ReportRouter {
  private readonly seen = new Set<string>();
  private readonly seenOrder: string[] = [];

  constructor(private readonly self: string, private readonly table: RowSource) {}

  /** §6.3 steps 2–5: a report this node's monitor made. */
  originate(report: CopyReport): RouteDecision {
    this.remember(report.reportId);
    return this.route(report, this.self, report);
  }

  /** §6.3 steps 7–8: a report that arrived from neighbour `from`. */
  relay(report: CopyReport, from: NeighbourId): RouteDecision {
    if (this.seen.has(report.reportId)) return { kind: 'drop', why: 'duplicate' };
    if (report.hops + 1 > maxReportHops) return { kind: 'drop', why: 'hop-limit' };
    this.remember(report.reportId);
    return this.route(report, from, { ...report, lastHop: this.self, hops: report.hops + 1 });
  }

  private route(report: CopyReport, sentTo: NeighbourId, outgoing: CopyReport): RouteDecision {
    const rows = this.table.matching(sentTo, report.copy.copyId);
    if (rows.length === 0) {
      return { kind: 'unroutable', why: sentTo === this.self
        ? `no management table row for copy ${report.copy.copyId} executed here`
        : `no management table row for copy ${report.copy.copyId} sent to ${sentTo}` };
    }
    // §9.13: one message per distinct receivedFrom, however many rows match.
    const destinations = new Map<NeighbourId, Destination>();
    for (const r of rows) if (!destinations.has(r.receivedFrom)) destinations.set(r.receivedFrom, { neighbour: r.receivedFrom, url: r.receivedFromUrl });
    return { kind: 'send', report: outgoing, destinations: [...destinations.values()] };
  }

  private remember(id: string): void {
    if (this.seen.has(id)) return;
    this.seen.add(id);
    this.seenOrder.push(id);
    if (this.seenOrder.length > dedupeCapacity) this.seen.delete(this.seenOrder.shift()!);
  }
}
