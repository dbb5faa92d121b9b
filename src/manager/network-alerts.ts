// Alerts from a remote copy network's collection (spec 002 §3.6, §5.8): a relay the manager cannot
// reach, and an order-guarantee id in Failure Suspend at an edge (retransmission exhausted: every
// pair of the id stopped copying and records its writes in bitmaps until a resync). Pure: one
// collection's readings in, the alerts to raise and the keys to clear out; the caller stores them.
import type { RelayOrderStatus, RelayRole, RelayStatus } from '../contracts/network';
import type { AlertInput } from './alerts';

/** What the collection learnt of one relay (its status, or why it did not answer). */
export type RelayOutcome =
  | { name: string; role: RelayRole; ok: true; status: RelayStatus }
  | { name: string; role: RelayRole; ok: false; error: string };

export interface NetworkAlertDecisions {
  raise: AlertInput[];
  clear: Array<{ key: string; why: string }>;
}

export const relayAlertKey = (network: string, relay: string): string => `relay:${network}:${relay}`;
export const orderAlertKey = (network: string, order: string): string => `order:${network}:${order}`;
/** Whether an alert key is one of this network's (relay names and order ids hold no ':'). */
export const isNetworkAlertOf = (network: string, key: string): boolean => key.startsWith(`relay:${network}:`) || key.startsWith(`order:${network}:`);

/**
 * An order's alert is raised while an edge that answered reports it in Failure Suspend, and is
 * cleared only when both its edges (source and target) answered and neither does: an edge that
 * does not answer says nothing about its orders (its own alert tells of it).
 */
export function networkAlerts(network: string, relays: RelayOutcome[]): NetworkAlertDecisions {
  const out: NetworkAlertDecisions = { raise: [], clear: [] };
  for (const r of relays) {
    const key = relayAlertKey(network, r.name);
    if (r.ok) {
      out.clear.push({ key, why: `${r.name} answers again` });
    } else {
      out.raise.push({
        key, kind: 'relay-unreachable', severity: 'critical', subject: r.name,
        message: `${r.role} ${r.name} of network ${network} does not answer the manager: ${r.error}; ` +
          'copies routed through it may have stopped (check its process and its link to the manager)',
        copy: null, reportedBy: null, topology: null, report: null,
      });
    }
  }
  const answered = new Set(relays.filter((r) => r.ok).map((r) => r.name));
  const suspended = new Map<string, Array<{ edge: string; order: RelayOrderStatus }>>();
  const edgesOf = new Map<string, string[]>();
  for (const r of relays) {
    if (!r.ok) continue;
    for (const o of r.status.orders) {
      edgesOf.set(o.id, [o.from, o.to]);
      if (o.state !== 'failure-suspend') continue;
      suspended.set(o.id, [...(suspended.get(o.id) ?? []), { edge: r.name, order: o }]);
    }
  }
  for (const [id, edges] of [...edgesOf].sort(([a], [b]) => a.localeCompare(b))) {
    const key = orderAlertKey(network, id);
    const at = suspended.get(id);
    if (at === undefined) {
      if (edges.every((e) => answered.has(e))) out.clear.push({ key, why: `neither edge of order ${id} (${edges.join(', ')}) reports Failure Suspend` });
      continue;
    }
    const where = at.map((x) => `${x.edge} (${x.order.side}${x.order.reason ? `: ${x.order.reason}` : ''})`).join(', ');
    const source = at.find((x) => x.order.side === 'source')?.order;
    const kept = source ? `; ${source.inFlight} entries not reflected, ${source.generated} numbered` : '';
    out.raise.push({
      key, kind: 'order-failure-suspend', severity: 'critical', subject: id,
      message: `order ${id} of network ${network} is in Failure Suspend at ${where}${kept}: its pairs record writes in bitmaps; ` +
        'their primaries resync by themselves once the network carries the order again (or: tricopy pair resync NAME)',
      copy: null, reportedBy: at[0]!.edge, topology: null, report: null,
    });
  }
  return out;
}
