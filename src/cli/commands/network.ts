// `tricopy network`: a remote copy network of edges and cores (spec 002), described by a network
// file: apply it (every relay gets the tables, every attached node its edge), show its status
// (per edge: log area use, counters 732/733/734, delays, pairs), and fail an order over (§6.9).
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes, parseDurationMs } from '../../common/units';
import type { RelayStatus } from '../../contracts/network';
import { printJson, table } from '../format';
import { globals, tokenOf } from '../globals';

export function registerNetworkCommands(program: Command): void {
  const network = program.command('network').description('remote copy networks of edges and cores: apply a network file, status, failover');
  network.command('apply <file>')
    .description('check the network file against the running relays and storage nodes, compute the routes, and give\n' +
      'every relay the network and every attached storage node its edge')
    .action(async (file: string, _opts, cmd: Command) => {
      const { loadNetworkFile } = await import('../../edge/network-file');
      const { planNetwork } = await import('../../edge/apply');
      const { HttpRelayClient } = await import('../../edge/client');
      const { HttpNodeClient } = await import('../../node/api-client');
      const n = await loadNetworkFile(file);
      const plan = await planNetwork(n, (api) => new HttpRelayClient(api).info(), (api) => new HttpNodeClient(api, tokenOf(cmd)).nodeInfo());
      for (const r of Object.values(plan.config.relays)) await new HttpRelayClient(r.api).apply(plan.config);
      for (const a of plan.attachments) await new HttpNodeClient(a.api, tokenOf(cmd)).putNetwork(a.attachment);
      if (globals(cmd).json) return printJson(plan.config);
      console.log(`network ${n.name} applied (version ${plan.config.version}): ${Object.keys(plan.config.relays).length} relays, ` +
        `${Object.keys(plan.config.storages).length} storage nodes, ${Object.keys(plan.config.orders).length} order-guarantee ids`);
      console.log(table(['ORDER', 'FROM', 'TO', 'ROUTE'], Object.entries(plan.config.orders).map(([id, o]) =>
        [id, o.from, o.to, plan.config.routes.find((r) => r.from === o.from && r.to === o.to)?.hops.join(' → ') ?? '-'])));
      console.log(table(['NODE', 'EDGE', 'CUSTOMER'], Object.entries(plan.config.storages).map(([name, s]) => [name, s.edge, s.customer])));
    });
  network.command('status <file>')
    .description('every relay of the network: links, order-guarantee ids with counters 732/733/734, log area use,\n' +
      'acknowledgement and reflection delays, and the pairs going through each edge')
    .action(async (file: string, _opts, cmd: Command) => {
      const { loadNetworkFile } = await import('../../edge/network-file');
      const { HttpRelayClient } = await import('../../edge/client');
      const n = await loadNetworkFile(file);
      const relays = [...Object.entries(n.edges), ...Object.entries(n.cores)];
      const statuses = await Promise.all(relays.map(async ([name, spec]) => {
        try {
          return await new HttpRelayClient(spec.api, 10_000).status();
        } catch (err) {
          return { name, error: (err as Error).message };
        }
      }));
      if (globals(cmd).json) return printJson({ network: n.name, relays: statuses });
      for (const s of statuses) {
        if ('error' in s) console.log(`${s.name}: unreachable: ${s.error}\n`);
        else console.log(`${relayStatusText(s)}\n`);
      }
    });
  network.command('failover <file>')
    .description('after the loss of a source site (§6.9): the target edge of the order asks the source edge to flush\n' +
      'and stop, applies what arrives in order up to the source\'s last number (or until the timeout), and stops.\n' +
      'Then take the pair over at the target node: tricopy pair takeover')
    .requiredOption('--order <id>', 'the order-guarantee id to stop')
    .option('--timeout <duration>', 'how long to wait for the source edge and the missing entries (default: the order\'s failoverTimeout)')
    .action(async (file: string, opts: { order: string; timeout?: string }, cmd: Command) => {
      const { loadNetworkFile } = await import('../../edge/network-file');
      const { HttpRelayClient } = await import('../../edge/client');
      const n = await loadNetworkFile(file);
      const o = n.orders[opts.order];
      if (!o) throw new TricopyError('invalid-argument', `${file} has no order ${opts.order}`, `orders: ${Object.keys(n.orders).join(', ')}`);
      const result = await new HttpRelayClient(n.edges[o.to]!.api).failover(opts.order, opts.timeout ? parseDurationMs(opts.timeout, '--timeout') : undefined);
      if (globals(cmd).json) return printJson(result);
      console.log(`order ${result.order} stopped at ${o.to}: reflected through ${result.reflected}; ` +
        (result.highWaterMark === null ? 'the source edge did not answer' : `high-water mark ${result.highWaterMark}, ${result.missing} missing`));
    });
}

/** A relay's status as text: links, orders with their counters, pairs. */
export function relayStatusText(s: RelayStatus): string {
  const lines = [`${s.role} ${s.name} (network ${s.network ?? '-'}, version ${s.configVersion ?? '-'})`];
  lines.push(`  links: ${s.links.map((l) => `${l.kind === 'storage' ? `${l.peer} as ${l.as}` : l.peer} ${l.up ? 'up' : 'down'}`).join(', ') || '-'}`);
  const sent = s.counters.bytesSent !== s.counters.bytesForwarded ? `, ${formatBytes(s.counters.bytesSent)} sent compressed` : '';
  lines.push(`  forwarded ${s.counters.entriesForwarded} entries (${formatBytes(s.counters.bytesForwarded)}${sent}), dropped ${s.counters.entriesDropped}, ` +
    `refused ${s.counters.refusedConnections} connections and ${s.counters.refusedRequests} requests`);
  if (s.lastRefusal) lines.push(`  last refused: ${s.lastRefusal.peer ?? 'unknown peer'} at ${s.lastRefusal.at}: ${s.lastRefusal.detail}`);
  if (s.orders.length > 0) {
    lines.push(table(['  ORDER', 'SIDE', 'FROM→TO', 'STATE', '732', '733', '734', 'IN FLIGHT', 'LOG', 'ACK DELAY', 'REFLECT DELAY', 'RESENT'], s.orders.map((o) => [
      `  ${o.id}`, o.side, `${o.from}→${o.to}`, o.state, o.side === 'source' ? String(o.generated) : '-', o.side === 'target' ? String(o.reflected) : '-',
      o.side === 'source' ? String(o.deleted) : '-', String(o.inFlight), `${formatBytes(o.log.bytes)}/${formatBytes(o.log.capacityBytes)} (${o.log.entries})`,
      o.ackDelayMs === null ? '-' : `${o.ackDelayMs} ms`, o.reflectionDelayMs === null ? '-' : `${o.reflectionDelayMs} ms`, String(o.retransmissions),
    ])));
    for (const o of s.orders) if (o.state !== 'active') lines.push(`  ${o.id}: ${o.state}: ${o.reason}`);
  }
  if (s.pairs.length > 0) {
    lines.push(table(['  PAIR', 'ORDER', 'SIDE', 'SOURCE→TARGET', 'STATE', 'DIFF (727)'], s.pairs.map((p) => [
      `  ${p.name}`, p.order, p.side, `${p.source}→${p.target}`, p.state, formatBytes(p.differentialBytes),
    ])));
  }
  return lines.join('\n');
}
