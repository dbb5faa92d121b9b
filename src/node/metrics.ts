// Prometheus metrics of a storage node. Takes the NBD observer's traffic calls, caching labelled
// children so the per-request cost is a few additions, and counts refusals on the node's listeners
// under a fixed set of reasons (label values are never taken from the network).
import * as client from 'prom-client';
import { nbdRefusalReasons, type NbdClientInfo, type NbdCommandName, type NbdRefusalReason } from '../nbd/types';
import { linkRefusalReasons, type LinkRefusalReason } from '../replication/transport/link';
import type { GroupStatus, PairStatus } from '../contracts/pairs';

export interface ReplicationSource {
  pairs(): PairStatus[];
  groups(): GroupStatus[];
}

interface OpChildren {
  ok: client.Counter.Internal;
  failed: client.Counter.Internal;
  bytes: client.Counter.Internal;
  latency: client.Histogram.Internal<string>;
}

export class NodeMetrics {
  readonly registry = new client.Registry();
  private readonly requests: client.Counter;
  private readonly bytes: client.Counter;
  private readonly latency: client.Histogram;
  private readonly clients: client.Gauge;
  private readonly protocolErrors: client.Counter;
  private readonly nbdRefusals: client.Counter<'reason'>;
  private readonly replicationRefusals: client.Counter<'reason'>;
  private readonly apiRequests: client.Counter<'route' | 'method'>;
  /** Per volume, per operation: resolved once so a request costs no label hashing. */
  private readonly children = new Map<string, Map<NbdCommandName, OpChildren>>();
  /** Set once the replication service exists. */
  replication: ReplicationSource | undefined;

  constructor(nodeName: string, volumeSizes: () => Array<{ name: string; sizeBytes: number; allocatedBytes: number }>) {
    this.registry.setDefaultLabels({ node: nodeName });
    client.collectDefaultMetrics({ register: this.registry, prefix: 'tricopy_' });
    this.requests = new client.Counter({
      name: 'tricopy_nbd_requests_total', help: 'NBD requests completed, by volume, operation and result',
      labelNames: ['volume', 'op', 'result'], registers: [this.registry],
    });
    this.bytes = new client.Counter({
      name: 'tricopy_nbd_bytes_total', help: 'Bytes read, written or zeroed through NBD',
      labelNames: ['volume', 'op'], registers: [this.registry],
    });
    this.latency = new client.Histogram({
      name: 'tricopy_nbd_request_duration_seconds', help: 'NBD request latency from receipt to reply',
      labelNames: ['volume', 'op'], registers: [this.registry],
      buckets: [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    });
    this.clients = new client.Gauge({
      name: 'tricopy_nbd_clients', help: 'NBD clients attached, by volume', labelNames: ['volume'], registers: [this.registry],
    });
    this.protocolErrors = new client.Counter({
      name: 'tricopy_nbd_protocol_errors_total', help: 'NBD connections dropped for protocol violations', registers: [this.registry],
    });
    this.nbdRefusals = new client.Counter({
      name: 'tricopy_nbd_refused_total', help: 'NBD connections, options and requests refused, by reason',
      labelNames: ['reason'], registers: [this.registry],
    });
    this.replicationRefusals = new client.Counter({
      name: 'tricopy_replication_refused_total', help: 'Replication connections refused or dropped for protocol violations, by reason',
      labelNames: ['reason'], registers: [this.registry],
    });
    this.apiRequests = new client.Counter({
      name: 'tricopy_api_requests_total', help: 'Control API requests answered, by route pattern and method',
      labelNames: ['route', 'method'], registers: [this.registry],
    });
    // Every reason from the start, so rates and alerts see a zero rather than no series.
    for (const reason of nbdRefusalReasons) this.nbdRefusals.inc({ reason }, 0);
    for (const reason of linkRefusalReasons) this.replicationRefusals.inc({ reason }, 0);
    new client.Gauge({
      name: 'tricopy_volume_size_bytes', help: 'Logical size of each volume', labelNames: ['volume'], registers: [this.registry],
      collect() {
        this.reset();
        for (const v of volumeSizes()) this.set({ volume: v.name }, v.sizeBytes);
      },
    });
    const replication = (): ReplicationSource | undefined => this.replication;
    const groupGauge = (name: string, help: string, pick: (g: GroupStatus) => number | undefined): void => {
      new client.Gauge({
        name, help, labelNames: ['group', 'role'], registers: [this.registry],
        collect() {
          this.reset();
          for (const g of replication()?.groups() ?? []) {
            const v = pick(g);
            if (v !== undefined) this.set({ group: g.group, role: g.role }, v);
          }
        },
      });
    };
    groupGauge('tricopy_group_lag_seconds', 'Age of the oldest write not yet applied at the secondary', (g) => g.lag.seconds);
    groupGauge('tricopy_group_lag_bytes', 'Bytes written at the primary not yet applied at the secondary', (g) => g.lag.bytes);
    groupGauge('tricopy_group_lag_entries', 'Journal entries not yet applied at the secondary', (g) => g.lag.entries);
    groupGauge('tricopy_group_journal_used_bytes', 'Bytes of the group journal in use', (g) => g.journal?.usedBytes);
    groupGauge('tricopy_group_journal_capacity_bytes', 'Capacity of the group journal', (g) => g.journal?.capacityBytes);
    groupGauge('tricopy_group_applied_seq', 'Last journal entry applied at the secondary', (g) => g.appliedSeq);
    new client.Gauge({
      name: 'tricopy_pair_state', help: 'Pairs of this node: 1 for the current state and code', labelNames: ['pair', 'role', 'state', 'code'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of replication()?.pairs() ?? []) this.set({ pair: p.name, role: p.role, state: p.state, code: p.code }, 1);
      },
    });
    new client.Gauge({
      name: 'tricopy_pair_differential_bytes', help: 'Bytes recorded as changed, to be copied by the next resync', labelNames: ['pair'],
      registers: [this.registry],
      collect() {
        this.reset();
        for (const p of replication()?.pairs() ?? []) this.set({ pair: p.name }, p.differentialBytes);
      },
    });
    new client.Gauge({
      name: 'tricopy_peer_connected', help: '1 while the replication link to a peer node is up', labelNames: ['peer'],
      registers: [this.registry],
      collect() {
        this.reset();
        const peers = new Map<string, boolean>();
        for (const p of replication()?.pairs() ?? []) peers.set(p.peer.node, p.peer.connected);
        for (const [peer, up] of peers) this.set({ peer }, up ? 1 : 0);
      },
    });
    new client.Gauge({
      name: 'tricopy_volume_allocated_bytes', help: 'Bytes of each volume that hold data (allocation map)',
      labelNames: ['volume'], registers: [this.registry],
      collect() {
        this.reset();
        for (const v of volumeSizes()) this.set({ volume: v.name }, v.allocatedBytes);
      },
    });
  }

  requestCompleted(volume: string, op: NbdCommandName, bytes: number, seconds: number, errno: number): void {
    let byOp = this.children.get(volume);
    if (!byOp) {
      byOp = new Map();
      this.children.set(volume, byOp);
    }
    let c = byOp.get(op);
    if (!c) {
      c = {
        ok: this.requests.labels(volume, op, 'ok'),
        failed: this.requests.labels(volume, op, 'error'),
        bytes: this.bytes.labels(volume, op),
        latency: this.latency.labels(volume, op),
      };
      byOp.set(op, c);
    }
    (errno === 0 ? c.ok : c.failed).inc();
    if (errno === 0 && bytes > 0) c.bytes.inc(bytes);
    c.latency.observe(seconds);
  }

  clientAttached(volume: string, _client: NbdClientInfo): void {
    this.clients.inc({ volume });
  }

  clientDetached(volume: string, _client: NbdClientInfo): void {
    this.clients.dec({ volume });
  }

  nbdRefused(reason: NbdRefusalReason, dropped: boolean): void {
    this.nbdRefusals.inc({ reason });
    if (dropped && reason !== 'too-many-connections') this.protocolErrors.inc();
  }

  apiRequest(route: string, method: string): void {
    this.apiRequests.inc({ route, method });
  }

  replicationRefused(reason: LinkRefusalReason): void {
    this.replicationRefusals.inc({ reason });
  }

  /** Drops a deleted volume's series so they do not linger forever. */
  forgetVolume(volume: string): void {
    this.children.delete(volume);
    for (const op of ['read', 'write', 'flush', 'trim', 'write_zeroes', 'cache', 'block_status']) {
      this.requests.remove(volume, op, 'ok');
      this.requests.remove(volume, op, 'error');
      this.bytes.remove(volume, op);
      this.latency.remove(volume, op);
    }
    this.clients.remove(volume);
  }
}
