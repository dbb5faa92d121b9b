// `tricopy network … --manager`: the manager keeps the network file (the master copy), computes the
// routes and applies it to the relays and attached nodes itself, and collects every relay's status
// while it leads; these commands hand it the file and show what it collected, now and over time.
import { promises as fsp } from 'node:fs';
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { formatBytes } from '../../common/units';
import type { NetworkStatusDocument } from '../../contracts/managed-network';
import { printJson, table } from '../format';
import { globals, managerClient, viaManager } from '../globals';
import { appliedText, failbackText, failoverText, relayStatusText } from './network-text';

export async function applyThroughManager(cmd: Command, file: string, name: string): Promise<void> {
  const record = await managerClient(cmd).putNetwork(name, await fsp.readFile(file, 'utf8'));
  if (record.applyError !== null || record.config === null) {
    throw new TricopyError('unavailable', `the manager keeps network ${name} but could not apply it: ${record.applyError ?? 'not applied'}`,
      'start the relay or node it names; the leading manager applies the network again at each collection (--sample-interval)');
  }
  if (globals(cmd).json) return printJson(record.config);
  console.log(`${appliedText(record.config)}\n(kept by the manager, which applies it again when a relay lost it)`);
}

/** The argument is the network's name, or its file (whose name is read). */
async function networkName(arg: string): Promise<string> {
  const stat = await fsp.stat(arg).catch(() => undefined);
  if (!stat?.isFile()) return arg;
  const { loadNetworkFile } = await import('../../edge/network-file');
  return (await loadNetworkFile(arg)).name;
}

export async function statusThroughManager(cmd: Command, arg: string): Promise<void> {
  const doc = await managerClient(cmd).networkStatus(await networkName(arg));
  if (globals(cmd).json) return printJson(doc);
  console.log(networkStatusText(doc));
}

export async function failoverThroughManager(cmd: Command, arg: string, order: string, timeoutMs: number | undefined, fast: boolean): Promise<void> {
  const result = await managerClient(cmd).networkFailover(await networkName(arg), order, timeoutMs, fast);
  if (globals(cmd).json) return printJson(result);
  console.log(failoverText(result, result.edge));
}

export async function failbackThroughManager(cmd: Command, arg: string, order: string): Promise<void> {
  const result = await managerClient(cmd).networkFailback(await networkName(arg), order);
  if (globals(cmd).json) return printJson(result);
  console.log(failbackText(result));
}

export async function historyThroughManager(cmd: Command, arg: string, order: string | undefined, sinceAgoMs: number | undefined): Promise<void> {
  needsManager(cmd, 'history');
  const name = await networkName(arg);
  const samples = await managerClient(cmd).networkSamples(name, { ...(order === undefined ? {} : { order }), ...(sinceAgoMs === undefined ? {} : { sinceMs: Date.now() - sinceAgoMs }) });
  if (globals(cmd).json) return printJson({ network: name, samples });
  if (samples.length === 0) return console.log(`no samples of network ${name}${order ? ` order ${order}` : ''} yet (the leading manager takes one per --sample-interval)`);
  console.log(table(['TIME', 'ORDER', 'EDGE', 'SIDE', 'STATE', '732', '733', '734', 'IN FLIGHT', 'LOG', 'ACK DELAY', 'REFLECT DELAY', 'RESENT'], samples.map((s) => [
    s.time, s.order, s.edge, s.side, s.state, s.side === 'source' ? String(s.generated) : '-', s.side === 'target' ? String(s.reflected) : '-',
    s.side === 'source' ? String(s.deleted) : '-', String(s.inFlight), `${formatBytes(s.logBytes)}/${formatBytes(s.logCapacityBytes)}`,
    s.ackDelayMs === null ? '-' : `${s.ackDelayMs} ms`, s.reflectionDelayMs === null ? '-' : `${s.reflectionDelayMs} ms`, String(s.retransmissions),
  ])));
}

export function networkStatusText(doc: NetworkStatusDocument): string {
  const lines = [`network ${doc.network}: version ${doc.version ?? '-'}, applied ${doc.appliedAt ?? 'never'}, collected ${doc.collectedAt ?? 'not yet'}`];
  if (doc.applyError) lines.push(`  not applied everywhere: ${doc.applyError} (the manager tries again)`);
  lines.push('');
  for (const r of doc.relays) {
    if (r.status) lines.push(relayStatusText(r.status));
    else lines.push(`${r.role} ${r.name} (${r.api})`);
    if (!r.reachable) lines.push(`  unreachable (last answered ${r.collectedAt ?? 'never'}): ${r.error ?? 'not collected yet'}`);
    lines.push('');
  }
  return lines.join('\n').trimEnd();
}

function needsManager(cmd: Command, what: string): void {
  if (!viaManager(cmd)) throw new TricopyError('invalid-argument', `network ${what} asks the manager`, 'add --manager URL (or set TRICOPY_MANAGER and pass --manager)');
}

export async function listThroughManager(cmd: Command): Promise<void> {
  needsManager(cmd, 'list');
  const networks = await managerClient(cmd).listNetworks();
  if (globals(cmd).json) return printJson(networks);
  if (networks.length === 0) return console.log('the manager keeps no network; give it one: tricopy network apply FILE --manager URL');
  console.log(table(['NAME', 'VERSION', 'RELAYS', 'ORDERS', 'APPLIED', 'ERROR'], networks.map((n) => [
    n.name, n.config?.version ?? '-', n.config ? String(Object.keys(n.config.relays).length) : '-', n.config ? String(Object.keys(n.config.orders).length) : '-',
    n.appliedAt ?? '-', n.applyError ?? '-',
  ])));
}

export async function removeThroughManager(cmd: Command, name: string): Promise<void> {
  needsManager(cmd, 'remove');
  await managerClient(cmd).removeNetwork(name);
  if (globals(cmd).json) return printJson({ removed: name });
  console.log(`the manager forgot network ${name}; its relays keep running it`);
}
