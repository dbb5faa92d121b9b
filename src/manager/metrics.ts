// The manager's Prometheus metrics: per topology and site the data at risk (bytes and seconds) and
// the async lag, alerts open by kind, reports received, and the prior-art mode's queries, so the
// push and the polling modes can be compared from outside. Gauges are computed when scraped.
import * as client from 'prom-client';
import type { StatusDocument } from '../contracts/manager';

export class ManagerMetrics {
  readonly registry = new client.Registry();
  readonly reports: client.Counter<'result'>;
  readonly pollQueries: client.Counter;
  readonly ingested: client.Counter;
  readonly scrapes: client.Counter<'result'>;
  /** Set by the manager: the status document the gauges are computed from. */
  status: (() => Promise<StatusDocument>) | undefined;

  constructor() {
    client.collectDefaultMetrics({ register: this.registry, prefix: 'tricopy_manager_' });
    this.reports = new client.Counter({ name: 'tricopy_manager_reports_total', help: 'Copy reports received from nodes, by result (accepted, duplicate)', labelNames: ['result'], registers: [this.registry] });
    this.pollQueries = new client.Counter({ name: 'tricopy_manager_poll_queries_total', help: 'Status queries sent to nodes in polling mode (spec 000 §6.1)', registers: [this.registry] });
    this.ingested = new client.Counter({ name: 'tricopy_manager_node_events_total', help: 'Events pushed by nodes and stored', registers: [this.registry] });
    this.scrapes = new client.Counter({ name: 'tricopy_manager_scrapes_total', help: 'Node /metrics scrapes (samples and liveness), by result', labelNames: ['result'], registers: [this.registry] });
    const status = (): Promise<StatusDocument> | undefined => this.status?.();
    const gauge = (name: string, help: string, labelNames: string[], fill: (g: client.Gauge, s: StatusDocument) => void): void => {
      new client.Gauge({
        name, help, labelNames, registers: [this.registry],
        async collect() {
          const s = await status();
          this.reset();
          if (s) fill(this, s);
        },
      });
    };
    gauge('tricopy_manager_data_at_risk_bytes', 'What a failover to the site would lose now, in bytes (absent when unknown)', ['topology', 'site'], (g, s) => {
      for (const r of s.dataAtRisk) if (r.bytes !== null) g.set({ topology: r.topology, site: r.site }, r.bytes);
    });
    gauge('tricopy_manager_data_at_risk_seconds', 'What a failover to the site would lose now, in seconds of writes', ['topology', 'site'], (g, s) => {
      for (const r of s.dataAtRisk) if (r.seconds !== null) g.set({ topology: r.topology, site: r.site }, r.seconds);
    });
    gauge('tricopy_manager_topology_healthy', '1 while every copy of the topology is in step', ['topology'], (g, s) => {
      for (const t of s.topologies) g.set({ topology: t.name }, t.healthy ? 1 : 0);
    });
    gauge('tricopy_manager_lag_seconds', 'Async lag of each topology leg', ['topology', 'site'], (g, s) => {
      for (const t of s.topologies) for (const l of t.legs) if (l.mode === 'async' && l.lagSeconds !== null) g.set({ topology: t.name, site: l.to }, l.lagSeconds);
    });
    gauge('tricopy_manager_alerts_open', 'Alerts open or acknowledged (not closed)', ['kind'], (g, s) => {
      g.set({ kind: 'all' }, s.alertsOpen);
    });
    gauge('tricopy_manager_nodes_reachable', 'Registered nodes the manager reaches', ['site'], (g, s) => {
      for (const site of s.sites) g.set({ site: site.site }, site.reachable ? 1 : 0);
    });
    gauge('tricopy_manager_leader', '1 on the leading manager', [], (g, s) => g.set(s.manager.leader ? 1 : 0));
  }
}
