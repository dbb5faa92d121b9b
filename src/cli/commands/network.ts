// `tricopy network`: a remote copy network of edges and cores (spec 002), described by a network
// file: apply it (every relay gets the tables, every attached node its edge), show its status
// (per edge: log area use, counters 732/733/734, delays, pairs), list the virtual storages edges
// present (§9.50, 55), and fail an order over (§6.9).
// The manager also keeps their history (`network history`).
// With --manager the manager keeps the network, applies it and collects its status (network-manager.ts).
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { parseDurationMs } from '../../common/units';
import { printJson } from '../format';
import { globals, tokenOf, viaManager } from '../globals';
import type { HttpRelayClient } from '../../edge/client';
import { applyThroughManager, failbackThroughManager, failoverThroughManager, historyThroughManager, listThroughManager, removeThroughManager, statusThroughManager } from './network-manager';
import { appliedText, configurationText, failbackText, failoverText, relayStatusText, virtualStoragesText } from './network-text';

export { relayStatusText };

export function registerNetworkCommands(program: Command): void {
  const network = program.command('network').description('remote copy networks of edges and cores: apply a network file, status, failover');
  network.command('apply <file>')
    .description('check the network file against the running relays and storage nodes, compute the routes, and give\n' +
      'every relay the network and every attached storage node its edge. With --manager URL the manager keeps\n' +
      'the file (the master copy), does this itself, applies it again when a relay lost it, and collects its status')
    .action(async (file: string, _opts, cmd: Command) => {
      const { loadNetworkFile } = await import('../../edge/network-file');
      const n = await loadNetworkFile(file);
      if (viaManager(cmd)) return applyThroughManager(cmd, file, n.name);
      const { applyNetwork, httpApplyClients } = await import('../../edge/apply');
      const token = tokenOf(cmd);
      const plan = await applyNetwork(n, httpApplyClients(() => token));
      if (globals(cmd).json) return printJson(plan.config);
      console.log(appliedText(plan.config));
    });
  network.command('status <file|name>')
    .description('every relay of the network: links, order-guarantee ids with counters 732/733/734, log area use,\n' +
      'acknowledgement and reflection delays, and the pairs going through each edge.\n' +
      'With --manager URL: what the manager last collected; the argument is the network\'s name (or its file)')
    .action(async (file: string, _opts, cmd: Command) => {
      if (viaManager(cmd)) return statusThroughManager(cmd, file);
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
  network.command('storages <file>')
    .description('the virtual storages each edge presents to its attached nodes (spec 002 §4.4): each answers as a ' +
      'partner node attached to another edge, under the partner\'s name (or a name of its own with virtualStorages: own ' +
      'in the file), with the partner\'s configuration as the last `network apply` collected it (run it again after ' +
      'creating volumes). --edge and --storage: one configuration query')
    .option('--edge <name>', 'one edge only')
    .option('--storage <wwn>', 'the configuration query to one virtual storage (needs --edge): its volumes')
    .action(async (file: string, opts: { edge?: string; storage?: string }, cmd: Command) => {
      const { loadNetworkFile } = await import('../../edge/network-file');
      const { HttpRelayClient: Client } = await import('../../edge/client');
      const n = await loadNetworkFile(file);
      const edges = opts.edge === undefined ? Object.keys(n.edges) : [opts.edge];
      for (const e of edges) {
        if (!n.edges[e]) throw new TricopyError('invalid-argument', `${file} has no edge ${e}`, `edges: ${Object.keys(n.edges).join(', ')}`);
      }
      if (opts.storage !== undefined) {
        if (opts.edge === undefined) throw new TricopyError('invalid-argument', '--storage needs --edge: a virtual storage answers at one edge');
        const v = await new Client(n.edges[opts.edge]!.api).virtualStorage(opts.storage);
        if (globals(cmd).json) return printJson(v);
        return console.log(configurationText(opts.edge, v));
      }
      const answers = await Promise.all(edges.map((e) => new Client(n.edges[e]!.api, 10_000).virtualStorages()));
      if (globals(cmd).json) return printJson(answers);
      console.log(virtualStoragesText(answers));
    });
  network.command('list')
    .description('the networks the manager keeps (needs --manager)')
    .action(async (_opts, cmd: Command) => listThroughManager(cmd));
  network.command('history <name>')
    .description('the counters the manager collected over time, per order-guarantee id and edge (needs --manager): ' +
      '732/733/734, entries in flight, log area use, delays. Kept: every sample for an hour, then one a minute for a day, ' +
      'then one per 15 minutes for 30 days. The argument is the network\'s name (or its file)')
    .option('--order <id>', 'one order-guarantee id only')
    .option('--since <duration>', 'samples of the last DURATION only (for example 10m, 2h)')
    .action(async (name: string, opts: { order?: string; since?: string }, cmd: Command) =>
      historyThroughManager(cmd, name, opts.order, opts.since === undefined ? undefined : parseDurationMs(opts.since, '--since')));
  network.command('remove <name>')
    .description('the manager forgets a network and stops collecting it (needs --manager); the relays keep running it')
    .action(async (name: string, _opts, cmd: Command) => removeThroughManager(cmd, name));
  network.command('failover <file|name>')
    .description('after the loss of a source site (§6.9): the target edge of the order asks the source edge to flush\n' +
      'and stop, applies what arrives in order up to the source\'s last number (or until the timeout), and stops.\n' +
      'Then take the pair over at the target node: tricopy pair takeover.\n' +
      '--fast (¶0087): the target storages see their primary gone at once, so they can be taken over now; the edge\n' +
      'applies the entries still arriving as plain writes, and hosts\' writes to those volumes wait until it is done\n' +
      '(network status shows RESIDUAL). --discard-residual ends that wait, discarding what was not applied.\n' +
      'With --manager URL the manager asks the target edge it keeps for the network (the argument is the network\'s\n' +
      'name or its file) and records the outcome in its history')
    .requiredOption('--order <id>', 'the order-guarantee id to stop')
    .option('--timeout <duration>', 'how long to wait for the source edge and the missing entries (default: the order\'s failoverTimeout)')
    .option('--fast', 'the fast variant: answer at once and apply the residual entries after (hosts\' writes wait for them)')
    .option('--discard-residual', 'end a fast failover\'s wait: the residual entries not applied yet are discarded')
    .action(async (file: string, opts: { order: string; timeout?: string; fast?: boolean; discardResidual?: boolean }, cmd: Command) => {
      const timeoutMs = opts.timeout ? parseDurationMs(opts.timeout, '--timeout') : undefined;
      if (opts.fast && opts.discardResidual) throw new TricopyError('invalid-argument', '--fast and --discard-residual do not go together', 'fail over with --fast, then discard with --discard-residual');
      if (viaManager(cmd)) {
        if (opts.discardResidual) throw new TricopyError('invalid-argument', '--discard-residual goes to the target edge itself', 'run it with the network file instead of --manager');
        return failoverThroughManager(cmd, file, opts.order, timeoutMs, opts.fast === true);
      }
      const { o, edge } = await targetEdge(file, opts.order);
      const result = opts.discardResidual ? await edge.discardResidual(opts.order) : await edge.failover(opts.order, timeoutMs, opts.fast === true);
      if (globals(cmd).json) return printJson(result);
      console.log(failoverText(result, o.to));
    });
  network.command('failback <file|name>')
    .description('after a failover, once the old source site is back (E-22): the order\'s target edge lets its storages\n' +
      'reach the old source storages again (a failover holds them apart until the order resumes, which the\n' +
      'returning primary\'s first message does by itself). Then swap the pairs back: tricopy pair swap.\n' +
      'topology failback does this itself for a topology whose pairs go through a network.\n' +
      'With --manager URL the manager asks the target edge it keeps for the network and records it in its history')
    .requiredOption('--order <id>', 'the order-guarantee id that failed over')
    .action(async (file: string, opts: { order: string }, cmd: Command) => {
      if (viaManager(cmd)) return failbackThroughManager(cmd, file, opts.order);
      const { edge } = await targetEdge(file, opts.order);
      const result = await edge.failback(opts.order);
      if (globals(cmd).json) return printJson(result);
      console.log(failbackText(result));
    });
}

/** The order of a network file, and a client of its target edge (where §6.9 and E-22 run). */
async function targetEdge(file: string, order: string): Promise<{ o: { from: string; to: string }; edge: HttpRelayClient }> {
  const { loadNetworkFile } = await import('../../edge/network-file');
  const { HttpRelayClient: Client } = await import('../../edge/client');
  const n = await loadNetworkFile(file);
  const o = n.orders[order];
  if (!o) throw new TricopyError('invalid-argument', `${file} has no order ${order}`, `orders: ${Object.keys(n.orders).join(', ')}`);
  return { o, edge: new Client(n.edges[o.to]!.api) };
}
