// The manager's side of spec 000 §6.2: which command path each copy has, and the construct and
// release commands that make the nodes' management tables match. A copy's path starts at the node
// that feeds no other copy's target chain and ends at the copy's source (its executor): in a
// cascade the copy from the middle site travels through the primary (path [primary, middle]); in
// a multi-target layout both copies are the primary's own (path [primary]). Run after a node or
// topology is added, after a procedure, and when a node reports a pair created or deleted: once per
// change, never on a schedule. Idempotent: a copy whose path and monitored set already match is
// left alone.
import { randomUUID } from 'node:crypto';
import { errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import {
  type CopyDescriptor, type Hop, type ManagementTableEntry, type MonitorCommand, type MonitoredSet, managerNeighbourPrefix,
} from '../contracts/monitor';
import type { NodeClient, NodeMonitorClient } from '../contracts/node-client';
import type { PairStatus } from '../contracts/pairs';
import { type Topology, parsePairName } from '../topology/topology-file';
import type { StoredNode } from './store/collections';

/** A feeding chain longer than this is a loop in the pairs' description, not a real path. */
const maxPathLength = 4;

export interface PathDeps {
  managerId: string;
  monitored: MonitoredSet;
  log: Logger;
  clientFor: (node: StoredNode) => NodeClient & NodeMonitorClient;
  /** Records what was sent (the manager's history). */
  record: (kind: 'command-construct' | 'command-release', copy: CopyDescriptor, path: string[], note: string) => Promise<void>;
}

/** What to reconcile: one topology's copies, or the copies of one node outside every topology. */
export type Scope = { topology: Topology } | { node: string; topologies: Topology[] };

interface NodeView {
  node: StoredNode;
  pairs: PairStatus[];
  table: ManagementTableEntry[];
}

interface ExistingPath {
  copy: CopyDescriptor;
  hops: string[];
  monitored: MonitoredSet | null;
}

export interface ReconcileResult {
  constructed: string[];
  released: string[];
  unreachable: string[];
}

export async function reconcilePaths(deps: PathDeps, scope: Scope, nodes: StoredNode[]): Promise<ReconcileResult> {
  const members = 'topology' in scope ? nodesOfTopology(scope.topology, nodes) : nodes.filter((n) => n.name === scope.node);
  const result: ReconcileResult = { constructed: [], released: [], unreachable: [] };
  const views: NodeView[] = [];
  for (const node of members) {
    try {
      const api = deps.clientFor(node);
      views.push({ node, pairs: await api.listPairs(), table: (await api.monitorStatus()).table });
    } catch (err) {
      result.unreachable.push(node.name);
      deps.log.info({ node: node.name, err: errorMessage(err) }, 'node not reachable while reconciling command paths');
    }
  }
  const inScope = (c: CopyDescriptor): boolean => ('topology' in scope ? c.topology === scope.topology.name : c.topology === null);
  const copies = copiesOf(views, scope).filter(inScope);
  const desired = new Map(copies.map((c) => [c.copyId, { copy: c, hops: pathOf(c, copies) }]));
  // Rows of this scope, and rows registered before the copy was known to be in this scope (a
  // node added before its topology): both are replaced by the paths wanted now.
  const existing = existingPaths(deps.managerId, views).filter((p) => inScope(p.copy) || desired.has(p.copy.copyId));
  const byName = new Map(nodes.map((n) => [n.name, n]));
  for (const old of existing) {
    const want = desired.get(old.copy.copyId);
    const sameRow = want !== undefined && JSON.stringify(old.copy) === JSON.stringify(want.copy) && JSON.stringify(old.monitored) === JSON.stringify(deps.monitored);
    if (want && sameHops(want.hops, old.hops) && sameRow) {
      desired.delete(old.copy.copyId);
      continue;
    }
    if (want && sameHops(want.hops, old.hops)) continue; // a new construct replaces the row (new descriptor or monitored set)
    if (await send(deps, 'release', old.copy, old.hops, byName)) result.released.push(old.copy.copyId);
  }
  for (const { copy, hops } of desired.values()) {
    if (hops.some((h) => result.unreachable.includes(h))) continue;
    if (await send(deps, 'construct', copy, hops, byName)) result.constructed.push(copy.copyId);
  }
  return result;
}

function nodesOfTopology(t: Topology, nodes: StoredNode[]): StoredNode[] {
  const urls = [t.primary.node, t.sync.node, t.async.node].map(normal);
  return nodes.filter((n) => urls.includes(normal(n.url)));
}

function normal(url: string): string {
  try {
    return new URL(url).toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}

/** Every copy the nodes execute: a pair where the node is the primary (the copy's source, A5). */
function copiesOf(views: NodeView[], scope: Scope): CopyDescriptor[] {
  const topologies = 'topology' in scope ? [scope.topology] : scope.topologies;
  const out: CopyDescriptor[] = [];
  for (const v of views) {
    for (const p of v.pairs) {
      // A primary that was taken over is no longer the source of anything.
      if (p.role !== 'primary' || p.suspendCause === 'takeover-by-peer') continue;
      const t = topologies.find((x) => parsePairName(x, p.name) !== undefined);
      out.push({ copyId: p.name, source: v.node.name, target: p.peer.node, volume: p.volume, mode: p.mode, topology: t?.name ?? null });
    }
  }
  return out;
}

/** The command path of a copy: the chain of copies that feeds its source, then the source itself. */
function pathOf(copy: CopyDescriptor, copies: CopyDescriptor[]): string[] {
  const hops = [copy.source];
  let current = copy.source;
  while (hops.length < maxPathLength) {
    const feeder = copies.find((c) => c.target === current && c.volume === copy.volume && !hops.includes(c.source));
    if (!feeder) break;
    hops.unshift(feeder.source);
    current = feeder.source;
  }
  return hops;
}

/** The paths the tables hold now: from each row the manager sent, follow sentTo to the executor. */
function existingPaths(managerId: string, views: NodeView[]): ExistingPath[] {
  const me = `${managerNeighbourPrefix}${managerId}`;
  const tableOf = new Map(views.map((v) => [v.node.name, v.table]));
  const out: ExistingPath[] = [];
  for (const v of views) {
    for (const head of v.table.filter((r) => r.receivedFrom === me)) {
      const hops = [v.node.name];
      let row: ManagementTableEntry | undefined = head;
      while (row && row.sentTo !== hops[hops.length - 1] && hops.length < maxPathLength) {
        const from = hops[hops.length - 1]!;
        hops.push(row.sentTo);
        row = tableOf.get(row.sentTo)?.find((r) => r.receivedFrom === from && r.copy.copyId === head.copy.copyId);
      }
      out.push({ copy: head.copy, hops, monitored: row?.monitored ?? null });
    }
  }
  return out;
}

function sameHops(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function send(deps: PathDeps, type: 'construct' | 'release', copy: CopyDescriptor, hops: string[], byName: Map<string, StoredNode>): Promise<boolean> {
  const path: Hop[] = [];
  for (const h of hops) {
    const n = byName.get(h);
    if (!n) {
      deps.log.warn({ copy: copy.copyId, node: h }, 'command path names a node that is not registered; skipped');
      return false;
    }
    path.push({ node: n.name, url: n.url });
  }
  const command: MonitorCommand = {
    commandId: `${deps.managerId.slice(0, 8)}-${randomUUID()}`, type, copy, issuer: deps.managerId, path,
    ...(type === 'construct' ? { monitored: deps.monitored } : {}),
  };
  try {
    await deps.clientFor(byName.get(hops[0]!)!).sendCommand(command);
    await deps.record(type === 'construct' ? 'command-construct' : 'command-release', copy, hops, `${type} ${command.commandId}`);
    return true;
  } catch (err) {
    deps.log.warn({ copy: copy.copyId, type, err: errorMessage(err) }, 'command failed');
    await deps.record(type === 'construct' ? 'command-construct' : 'command-release', copy, hops, `${type} failed: ${errorMessage(err)}`);
    return false;
  }
}
