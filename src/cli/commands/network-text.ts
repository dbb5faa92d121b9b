// What `tricopy network` and `tricopy edge status` print: an applied network (routes, nodes), a
// relay's status (links, counters 732/733/734 per order-guarantee id, log area use, pairs) and the
// virtual storages edges present.
import { formatBytes } from '../../common/units';
import type { RelayNetworkConfig, RelayStatus, SuspendResult, FailbackResult, VirtualStorage, VirtualStoragesAnswer } from '../../contracts/network';
import { table } from '../format';

/** What `network apply` prints: the counts, each order's route, each node's edge. */
export function appliedText(config: RelayNetworkConfig): string {
  return [
    `network ${config.network} applied (version ${config.version}): ${Object.keys(config.relays).length} relays, ` +
      `${Object.keys(config.storages).length} storage nodes, ${Object.keys(config.orders).length} order-guarantee ids`,
    table(['ORDER', 'FROM', 'TO', 'ROUTE'], Object.entries(config.orders).map(([id, o]) =>
      [id, o.from, o.to, config.routes.find((r) => r.from === o.from && r.to === o.to)?.hops.join(' → ') ?? '-'])),
    table(['NODE', 'EDGE', 'CUSTOMER'], Object.entries(config.storages).map(([name, s]) => [name, s.edge, s.customer])),
  ].join('\n');
}

/** A relay's status as text: links, orders with their counters, pairs. */
export function relayStatusText(s: RelayStatus): string {
  const lines = [`${s.role} ${s.name} (network ${s.network ?? '-'}, version ${s.configVersion ?? '-'})`];
  lines.push(`  links: ${s.links.map((l) => `${l.kind === 'storage' ? `${l.peer} as ${l.as}` : l.peer} ${l.up ? (l.tls ? 'up (tls)' : 'up') : 'down'}`).join(', ') || '-'}`);
  // Older relays (before TLS was reported) leave it out.
  if (s.tls !== undefined) {
    const cert = s.tls.certificate ? `; presents ${s.tls.certificate.subject}, valid until ${s.tls.certificate.notAfter}` : '';
    lines.push(`  tls: ${s.tls.mode}${s.tls.mode === 'off' ? '' : s.tls.mutual ? ', mutual (peers\' certificates checked against the CA)' : ', certificates not verified (no --tls-ca)'}${cert}`);
  }
  const sent = s.counters.bytesSent !== s.counters.bytesForwarded ? `, ${formatBytes(s.counters.bytesSent)} sent compressed` : '';
  lines.push(`  forwarded ${s.counters.entriesForwarded} entries (${formatBytes(s.counters.bytesForwarded)}${sent}), dropped ${s.counters.entriesDropped}, ` +
    `refused ${s.counters.refusedConnections} connections and ${s.counters.refusedRequests} requests`);
  // Older relays (before rerouting around links) leave these out; at zero they say nothing.
  if (s.counters.reroutes > 0 || s.counters.pathDownNotices > 0) {
    lines.push(`  rerouted ${s.counters.reroutes ?? 0} times, reported ${s.counters.pathDownNotices ?? 0} entries it could not forward on their path`);
  }
  for (const p of s.paths?.toward ?? []) lines.push(`  path to ${p.to}: ${p.hops.join(' → ')}`);
  for (const a of s.paths?.avoided ?? []) lines.push(`  avoiding link ${a.between.join('–')} until ${a.until} (${a.reason})`);
  if (s.lastRefusal) lines.push(`  last refused: ${s.lastRefusal.peer ?? 'unknown peer'} at ${s.lastRefusal.at}: ${s.lastRefusal.detail}`);
  if (s.orders.length > 0) {
    lines.push(table(['  ORDER', 'SIDE', 'FROM→TO', 'STATE', '732', '733', '734', 'IN FLIGHT', 'LOG', 'ACK DELAY', 'REFLECT DELAY', 'RESENT'], s.orders.map((o) => [
      `  ${o.id}`, o.side, `${o.from}→${o.to}`, o.state, o.side === 'source' ? String(o.generated) : '-', o.side === 'target' ? String(o.reflected) : '-',
      o.side === 'source' ? String(o.deleted) : '-', String(o.inFlight), `${formatBytes(o.log.bytes)}/${formatBytes(o.log.capacityBytes)} (${o.log.entries})`,
      o.ackDelayMs === null ? '-' : `${o.ackDelayMs} ms`, o.reflectionDelayMs === null ? '-' : `${o.reflectionDelayMs} ms`, String(o.retransmissions),
    ])));
    for (const o of s.orders) if (o.state !== 'active') lines.push(`  ${o.id}: ${o.state}: ${o.reason}`);
    for (const o of s.orders) {
      if (o.residual) lines.push(`  ${o.id}: RESIDUAL ${o.residual}: a fast failover still applies entries; its storages' hosts' writes wait`);
    }
  }
  if (s.pairs.length > 0) {
    lines.push(table(['  PAIR', 'ORDER', 'SIDE', 'SOURCE→TARGET', 'STATE', 'DIFF (727)'], s.pairs.map((p) => [
      `  ${p.name}`, p.order, p.side, `${p.source}→${p.target}`, p.state, formatBytes(p.differentialBytes),
    ])));
  }
  return lines.join('\n');
}

/** A failover's outcome at the target edge `edge` (§6.9): the recovery point. */
export function failoverText(result: SuspendResult, edge: string): string {
  if (result.residual !== undefined) {
    return `order ${result.order} failed over fast at ${edge}: its target storages see their primary gone now (take the pairs over: tricopy pair takeover); ` +
      `${edge} applies the residual entries (${result.residual} left${result.highWaterMark === null ? ' at least: the source edge has not answered yet' : ''}) and their hosts' writes wait until then; ` +
      `watch: tricopy network status; discard them: tricopy network failover FILE --order ${result.order} --discard-residual`;
  }
  return `order ${result.order} stopped at ${edge}: reflected through ${result.reflected}; ` +
    (result.highWaterMark === null ? 'the source edge did not answer' : `high-water mark ${result.highWaterMark}, ${result.missing} missing`);
}

/** A failback's outcome at the target edge (E-22). */
export function failbackText(result: FailbackResult): string {
  if (!result.released) return `order ${result.order} had not failed over at ${result.edge}: nothing was held apart`;
  return `order ${result.order} at ${result.edge}: the storages behind it reach the order's source again (pairs ${result.pairs.join(', ') || 'none'}); ` +
    'swap each pair back with tricopy pair swap at its taken-over node';
}

/** The virtual storages of some edges (§9.50): whom each answers as, for whom, and what it reports. */
export function virtualStoragesText(answers: VirtualStoragesAnswer[]): string {
  const rows = answers.flatMap((a) => a.virtualStorages.map((v) => [
    a.edge, v.wwn, v.partner, v.partnerEdge, v.presentedTo.join(','), v.orders.join(','),
    v.configuration ? `${v.configuration.product} ${v.configuration.version}` : '-',
    v.configuration ? String(v.configuration.volumeCount) : '-', v.configuration ? formatBytes(v.configuration.capacityBytes) : '-',
  ]));
  if (rows.length === 0) return 'no edge presents a virtual storage (no two nodes of one customer at edges joined by an order-guarantee id)';
  return table(['EDGE', 'VIRTUAL STORAGE (WWN)', 'PARTNER', 'PARTNER EDGE', 'FOR', 'ORDERS', 'PRODUCT', 'VOLUMES', 'CAPACITY'], rows);
}

/** A configuration query's answer (§9.55): the partner's identity and volumes. */
export function configurationText(edge: string, v: VirtualStorage): string {
  const c = v.configuration;
  const head = `virtual storage ${v.wwn} at ${edge} answers as ${v.partner} (attached to ${v.partnerEdge}; ${v.wwn === v.partner ? 'base variant' : 'Fig. 2 variant: a name of its own'})`;
  if (!c) return `${head}\n  no configuration collected: run tricopy network apply again`;
  const lines = [head, `  product ${c.product} ${c.version}, site ${c.site}, ${c.volumeCount} volume${c.volumeCount === 1 ? '' : 's'}, ${formatBytes(c.capacityBytes)}`, `  emulation: ${c.emulation}`];
  if (c.volumes.length > 0) {
    lines.push(table(['  VOLUME', 'SIZE', 'LUNS'], c.volumes.map((x) => [`  ${x.name}`, formatBytes(x.sizeBytes), x.luns.map((l) => `${l.hostGroup}:${l.lun}`).join(',') || '-'])));
  }
  if (c.volumes.length < c.volumeCount) lines.push(`  (the first ${c.volumes.length} of ${c.volumeCount} volumes)`);
  return lines.join('\n');
}
