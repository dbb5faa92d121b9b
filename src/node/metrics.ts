// Prometheus metrics of a storage node. Takes the NBD observer's traffic calls as plain additions
// (request-stats.ts), and counts refusals on the node's listeners under a fixed set of reasons
// (label values are never taken from the network).
import * as client from 'prom-client';
import { nbdRefusalReasons, type NbdClientInfo, type NbdCommandName, type NbdRefusalReason } from '../nbd/types';
import { linkRefusalReasons, type LinkRefusalReason } from '../replication/transport/link';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import { RequestStats } from './request-stats';

export interface ReplicationSource {
  pairs(): PairStatus[];
  groups(): GroupStatus[];
}


export class NodeMetrics {
  readonly registry = new client.Registry();
  /** NBD requests per volume and operation, as plain numbers (request-stats.ts). */
  private readonly requestStats = new RequestStats();
  private readonly clients: client.Gauge;
  private readonly protocolErrors: client.Counter;
  private readonly nbdRefusals: client.Counter<'reason'>;
  private readonly replicationRefusals: client.Counter<'reason'>;
  private readonly apiRequests: client.Counter<'route' | 'method'>;
  /** Set once the replication service exists. */
  replication: ReplicationSource | undefined;

  constructor(nodeName: string, volumeSizes: () => Array<{ name: string; sizeBytes: number; allocatedBytes: number }>) {
    this.registry.setDefaultLabels({ node: nodeName });
    client.collectDefaultMetrics({ register: this.registry, prefix: 'tricopy_' });
    const requestStats = this.requestStats;
    new client.Counter({
      name: 'tricopy_nbd_requests_total', help: 'NBD requests completed, by volume, operation and result',
      labelNames: ['volume', 'op', 'result'], registers: [this.registry],
      collect() {
        this.reset();
        for (const { volume, op, stats } of requestStats.entries()) {
          this.inc({ volume, op, result: 'ok' }, stats.ok);
          this.inc({ volume, op, result: 'error' }, stats.failed);
        }
      },
    });
    new client.Counter({
      name: 'tricopy_nbd_bytes_total', help: 'Bytes read, written or zeroed through NBD',
      labelNames: ['volume', 'op'], registers: [this.registry],
      collect() {
        this.reset();
        for (const { volume, op, stats } of requestStats.entries()) this.inc({ volume, op }, stats.bytes);
      },
    });
    this.registry.registerMetric(requestStats.latencyHistogram('tricopy_nbd_request_duration_seconds', 'NBD request latency from receipt to reply'));
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
    this.requestStats.of(volume, op).record(bytes, seconds, errno);
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
    this.requestStats.forget(volume);
    this.clients.remove(volume);
  }
}
