// What nodes send the manager, taken in (spec 000 §6.3 step 6: a report that reaches the manager
// stops there and starts failure handling): copy reports, each taken once (by reportId, kept in
// the store, so a retry or a second path never counts twice), recorded in the history and opening
// or closing an alert; and each node's pushed snapshot and events, applied to the read model and
// recorded. Only the leading manager takes them (the others forward).
import { TricopyError } from '../common/errors';
import type { AlertKind } from '../contracts/manager';
import type { CopyReport, IngestAck, IngestBatch, ReportAck, ReportBatch } from '../contracts/monitor';
import type { AlertInput } from './alerts';
import type { ManagerContext } from './context';

/** What a node's event means for the command paths (the manager registers new copies). */
export type PairChange = { node: string; pair: string; kind: 'created' | 'deleted' };

export class Ingest {
  constructor(private readonly ctx: ManagerContext, private readonly pairChanged: (c: PairChange) => void) {}

  async reports(batch: ReportBatch): Promise<ReportAck> {
    const { store, writer, alerts, metrics } = this.ctx;
    return writer.run(async (tx) => {
      let accepted = 0;
      let duplicates = 0;
      const seen = new Set<string>();
      for (const r of batch.reports) {
        if (seen.has(r.reportId) || (await store.hasReport(r.reportId))) {
          duplicates++;
          continue;
        }
        seen.add(r.reportId);
        accepted++;
        tx.ops.push(store.markReport(r.reportId, new Date(this.ctx.clock.now()).toISOString()));
        tx.event({
          kind: 'copy-report', node: r.origin, subject: r.copy.copyId,
          reason: `${r.status.change} ${r.status.condition} at ${r.origin} (${r.hops + 1} hop${r.hops === 0 ? '' : 's'}, last ${r.lastHop}): ${r.status.reason}`,
          details: { reportId: r.reportId, origin: r.origin, lastHop: r.lastHop, hops: r.hops, change: r.status.change, condition: r.status.condition, detectedAt: r.detectedAt },
        });
        const input = alertFor(r);
        tx.alert(r.status.change === 'entered' ? alerts.raise(input) : alerts.clear(input.key, `${r.origin} reports ${r.copy.copyId} ${r.status.code ?? 'gone'}`));
      }
      metrics.reports.inc({ result: 'accepted' }, accepted);
      metrics.reports.inc({ result: 'duplicate' }, duplicates);
      return { accepted, duplicates };
    });
  }

  async ingest(batch: IngestBatch): Promise<IngestAck> {
    const { store, writer, model, alerts } = this.ctx;
    const node = await store.getNode(batch.node);
    if (!node) {
      throw new TricopyError('not-found', `node ${batch.node} is not registered at this manager`, `register it: tricopy manager node add <its URL>`);
    }
    const changes: PairChange[] = [];
    const ack = await writer.run(async (tx) => {
      const { fresh, ops } = model.ingest(batch);
      tx.ops.push(...ops);
      const now = new Date(this.ctx.clock.now()).toISOString();
      if (!node.reachable || node.incarnation !== batch.incarnation) {
        tx.ops.push(store.putNode({ ...node, reachable: true, lastSeenAt: now, lastError: null, incarnation: batch.incarnation,
          version: batch.snapshot?.info.version ?? node.version }));
        tx.alert(alerts.clear(`node:${node.name}`, `${node.name} pushes again`));
      }
      if (batch.snapshot) {
        tx.event({ kind: 'node-snapshot', node: batch.node, subject: batch.node,
          reason: `state pushed after (re)connecting: ${batch.snapshot.pairs.length} pairs, ${batch.snapshot.volumes.length} volumes, ${batch.snapshot.table.length} table rows` });
      }
      if (batch.droppedEvents > 0) {
        tx.event({ kind: 'node-events-dropped', node: batch.node, subject: batch.node,
          reason: `${batch.droppedEvents} events were dropped on the node while the manager was away (its buffer was full); the snapshot carries the current state` });
      }
      for (const e of fresh) {
        tx.event({ kind: e.event.kind, node: batch.node, subject: e.event.subject, reason: e.event.reason,
          details: { ...(e.event.details ?? {}), nodeEventId: e.event.id, nodeTime: e.event.time } });
        if (e.event.kind === 'monitor-local-alert') tx.alert(alerts.raise(unroutable(batch.node, e.event.subject, e.event.reason)));
        if (e.event.kind === 'pair-created' && e.event.details?.role === 'primary') changes.push({ node: batch.node, pair: e.event.subject, kind: 'created' });
        if (e.event.kind === 'pair-deleted') changes.push({ node: batch.node, pair: e.event.subject, kind: 'deleted' });
      }
      this.ctx.metrics.ingested.inc(fresh.length);
      return { accepted: fresh.length };
    });
    for (const c of changes) this.pairChanged(c);
    return ack;
  }
}

function alertFor(r: CopyReport): AlertInput {
  const kinds: Record<string, AlertKind> = { 'lag-high': 'copy-lag', 'journal-high': 'journal-full' };
  const kind = kinds[r.status.condition] ?? 'copy-failed';
  const what = r.status.condition === 'link-down' ? `has lost its link to ${r.copy.target} (${r.status.code ?? '?'})`
    : kind === 'copy-failed' ? `is ${r.status.code ?? r.status.condition}` : kind === 'copy-lag'
    ? `lags ${r.status.lagSeconds?.toFixed(1) ?? '?'} s behind` : 'has a nearly full journal';
  return {
    key: `${kind === 'copy-failed' ? 'copy' : kind}:${r.copy.copyId}`, kind, severity: kind === 'copy-failed' ? 'critical' : 'warning',
    subject: r.copy.copyId, message: `copy ${r.copy.copyId} (${r.copy.source} → ${r.copy.target}, ${r.copy.mode}) ${what}: ${r.status.reason}; reported by ${r.origin}`,
    copy: r.copy.copyId, reportedBy: r.origin, topology: r.copy.topology, report: r,
  };
}

function unroutable(node: string, copy: string, reason: string): AlertInput {
  return {
    key: `unroutable:${node}:${copy}`, kind: 'unroutable-report', severity: 'warning', subject: copy,
    message: `node ${node} holds a report it cannot route (${reason}); the copy's command path is gone — re-register it: tricopy manager topology add <file>`,
    copy, reportedBy: node, topology: null, report: null,
  };
}
