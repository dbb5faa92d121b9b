// The network file (spec 002 §6.12): the edges and cores of a remote copy network, the links between
// them, which storage node attaches to which edge, the order-guarantee ids and, optionally, routes,
// customers with their contract limits and core batch transfer. Parsed and validated here once,
// with errors that say what to fix; routes are computed here too (shortest path over the links,
// cores at capacity skipped, the reverse route installed). Pure apart from reading the file.
import { promises as fsp } from 'node:fs';
import YAML from 'yaml';
import { TricopyError } from '../common/errors';
import { parseDurationMs, parseSize } from '../common/units';
import type { BatchConfig, CustomerConfig, LinkAddress, LinkShaping, OrderConfig, RouteConfig } from '../contracts/network';
import { maxCompressLevel, minCompressLevel, minLinkBandwidthBitsPerSecond, parseBandwidth } from './link-shaping';

export const relayNamePattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

export const defaultOrderTimings = {
  retransmitMs: 2000,
  retransmitMaxMs: 30_000,
  giveUpMs: 120_000,
  logBytes: 1024 * 1024 * 1024,
  fullTimeoutMs: 60_000,
  failoverTimeoutMs: 30_000,
} as const;

export const defaultCustomer = 'default';

export interface AttachSpec {
  /** The storage node's control API URL. */
  node: string;
  customer: string;
}

export interface EdgeSpec {
  api: string;
  attach: AttachSpec[];
}

export interface CoreSpec {
  api: string;
  /** Routes this core may carry (null: no limit). */
  capacity: number | null;
  batch: BatchConfig | null;
}

export interface NetworkFile {
  name: string;
  edges: Record<string, EdgeSpec>;
  cores: Record<string, CoreSpec>;
  links: Array<[string, string]>;
  /** Link addresses given in the file: `from` reaches `to` at host:port. */
  linkAddresses: LinkAddress[];
  /** Links given `compress:` or `bandwidth:`. */
  linkShaping: LinkShaping[];
  /** Routes given in the file (edge to edge); the others are computed. */
  routes: string[][];
  orders: Record<string, OrderConfig & { customer: string }>;
  customers: Record<string, CustomerConfig>;
  /** Fig. 2 variant (§6.13): virtual storages answer under names of their own, not their partners'. */
  virtualStorages: 'partner' | 'own';
  /** Names given in the file (edge → partner node → name); the others are allocated at apply. */
  virtualNames: Record<string, Record<string, string>>;
}

/** A virtual storage's own name: what a node name may be (it stands for one in the node's pairs). */
export const virtualNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

const topKeys = ['name', 'edges', 'cores', 'links', 'routes', 'orders', 'customers', 'virtualStorages', 'virtualNames'];

export async function loadNetworkFile(file: string): Promise<NetworkFile> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new TricopyError('invalid-argument', `cannot read network file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new TricopyError('invalid-argument', `network file ${file} is not valid YAML: ${(err as Error).message}`);
  }
  return parseNetworkFile(value, file);
}

type Raw = Record<string, unknown>;

export function parseNetworkFile(value: unknown, file = 'network'): NetworkFile {
  const fail = (message: string, hint?: string): never => {
    throw new TricopyError('invalid-argument', `${file}: ${message}`, hint);
  };
  const mapping = (v: unknown, what: string, example: string): Raw => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return fail(`${what} must be a mapping, e.g. ${example}`);
    return v as Raw;
  };
  const onlyKeys = (o: Raw, allowed: string[], what: string): void => {
    for (const k of Object.keys(o)) if (!allowed.includes(k)) fail(`${what}: unknown key "${k}"`, `known keys: ${allowed.join(', ')}`);
  };
  const url = (v: unknown, what: string): string => {
    if (typeof v !== 'string') return fail(`${what} must be a control API URL, e.g. http://127.0.0.1:7831`);
    try {
      const u = new URL(v);
      if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('scheme');
    } catch {
      fail(`${what} "${v}" is not an http(s) URL`);
    }
    return v.replace(/\/+$/, '');
  };
  const name = (v: string, what: string): void => {
    if (!relayNamePattern.test(v)) fail(`${what} "${v}" must be 1–63 letters, digits, "_" or "-", starting with a letter or digit`);
  };
  const duration = (v: unknown, what: string, fallback: number): number => {
    if (v === undefined) return fallback;
    try {
      const ms = parseDurationMs(v as string | number, what);
      if (!(ms > 0)) throw new TricopyError('invalid-argument', `${what} must be positive`);
      return ms;
    } catch (err) {
      return fail((err as Error).message, 'use e.g. 500ms, 5s, 2m');
    }
  };
  const size = (v: unknown, what: string, fallback: number): number => {
    if (v === undefined) return fallback;
    try {
      return parseSize(v as string | number, what);
    } catch (err) {
      return fail((err as Error).message, (err as TricopyError).hint);
    }
  };

  const raw = mapping(value, 'the file', 'name: rcn, edges: {...}, cores: {...}, links: [...], orders: {...}');
  onlyKeys(raw, topKeys, 'the file');
  if (typeof raw.name !== 'string' || !relayNamePattern.test(raw.name)) {
    fail(`"name" must be 1–63 letters, digits, "_" or "-" (got ${JSON.stringify(raw.name)})`, 'pairs name the network with --via NAME:ORDER');
  }

  const customers: Record<string, CustomerConfig> = {};
  if (raw.customers !== undefined) {
    for (const [c, spec] of Object.entries(mapping(raw.customers, '"customers"', '{ c1: { edges: [e-tokyo], maxStorages: 4 } }'))) {
      name(c, 'customer');
      const o = spec === null ? {} : mapping(spec, `customer ${c}`, '{ edges: [e-tokyo], maxStorages: 4, maxOrders: 2 }');
      onlyKeys(o, ['edges', 'maxStorages', 'maxOrders'], `customer ${c}`);
      const limit = (v: unknown, what: string): number | null => {
        if (v === undefined) return null;
        if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) return fail(`customer ${c}: ${what} must be a whole number`);
        return v;
      };
      if (o.edges !== undefined && (!Array.isArray(o.edges) || o.edges.some((e) => typeof e !== 'string'))) fail(`customer ${c}: edges must be a list of edge names`);
      customers[c] = { edges: (o.edges as string[] | undefined) ?? [], maxStorages: limit(o.maxStorages, 'maxStorages'), maxOrders: limit(o.maxOrders, 'maxOrders') };
    }
  }
  const customerOf = (v: unknown, what: string): string => {
    if (v === undefined) return defaultCustomer;
    if (typeof v !== 'string') return fail(`${what}: customer must be a name`);
    if (Object.keys(customers).length > 0 && !customers[v]) fail(`${what}: customer "${v}" is not in "customers"`, `customers: ${Object.keys(customers).join(', ')}`);
    return v;
  };

  const edges: Record<string, EdgeSpec> = {};
  const edgesRaw = mapping(raw.edges, '"edges"', '{ e-tokyo: { api: http://127.0.0.1:7831, attach: [http://127.0.0.1:7801] } }');
  if (Object.keys(edgesRaw).length === 0) fail('"edges" is empty: a network needs at least one edge');
  const attachedAt = new Map<string, string>();
  for (const [e, spec] of Object.entries(edgesRaw)) {
    name(e, 'edge');
    const o = mapping(spec, `edge ${e}`, '{ api: http://127.0.0.1:7831, attach: [http://127.0.0.1:7801] }');
    onlyKeys(o, ['api', 'attach', 'customer'], `edge ${e}`);
    const edgeCustomer = customerOf(o.customer, `edge ${e}`);
    const attach: AttachSpec[] = [];
    if (o.attach !== undefined && !Array.isArray(o.attach)) fail(`edge ${e}: "attach" must be a list of storage node URLs`);
    for (const a of (o.attach as unknown[] | undefined) ?? []) {
      let item: AttachSpec;
      if (typeof a === 'string') item = { node: url(a, `edge ${e}: attach`), customer: edgeCustomer };
      else {
        const ao = mapping(a, `edge ${e}: an attach item`, '{ node: http://127.0.0.1:7801, customer: c1 }');
        onlyKeys(ao, ['node', 'customer'], `edge ${e}: attach`);
        item = { node: url(ao.node, `edge ${e}: attach node`), customer: ao.customer === undefined ? edgeCustomer : customerOf(ao.customer, `edge ${e}: attach ${String(ao.node)}`) };
      }
      const other = attachedAt.get(item.node);
      if (other) fail(`storage node ${item.node} is attached to both ${other} and ${e}`, 'a storage node attaches to one edge');
      attachedAt.set(item.node, e);
      const cust = customers[item.customer];
      if (cust && cust.edges.length > 0 && !cust.edges.includes(e)) {
        fail(`edge ${e}: customer ${item.customer} may not attach storages here (its contract allows ${cust.edges.join(', ')})`);
      }
      attach.push(item);
    }
    edges[e] = { api: url(o.api, `edge ${e}: api`), attach };
  }

  const cores: Record<string, CoreSpec> = {};
  if (raw.cores !== undefined && raw.cores !== null) {
    for (const [c, spec] of Object.entries(mapping(raw.cores, '"cores"', '{ c-1: { api: http://127.0.0.1:7841 } }'))) {
      name(c, 'core');
      if (edges[c]) fail(`"${c}" is both an edge and a core`);
      const o = mapping(spec, `core ${c}`, '{ api: http://127.0.0.1:7841 }');
      onlyKeys(o, ['api', 'capacity', 'batch'], `core ${c}`);
      let batch: BatchConfig | null = null;
      if (o.batch !== undefined && o.batch !== null && o.batch !== false) {
        const b = mapping(o.batch, `core ${c}: batch`, '{ wait: 5ms, maxBytes: 1MiB }');
        onlyKeys(b, ['wait', 'maxBytes'], `core ${c}: batch`);
        batch = { waitMs: duration(b.wait, `core ${c}: batch wait`, 5), maxBytes: size(b.maxBytes, `core ${c}: batch maxBytes`, 1024 * 1024) };
      }
      if (o.capacity !== undefined && (typeof o.capacity !== 'number' || !Number.isInteger(o.capacity) || o.capacity < 1)) {
        fail(`core ${c}: capacity must be a whole number of routes (at least 1)`);
      }
      cores[c] = { api: url(o.api, `core ${c}: api`), capacity: (o.capacity as number | undefined) ?? null, batch };
    }
  }
  const relays = new Set([...Object.keys(edges), ...Object.keys(cores)]);
  const apis = new Map<string, string>();
  for (const [r, spec] of [...Object.entries(edges), ...Object.entries(cores)]) {
    const other = apis.get(spec.api);
    if (other) fail(`${other} and ${r} have the same api URL ${spec.api}`);
    apis.set(spec.api, r);
  }

  const links: Array<[string, string]> = [];
  const linkAddresses: LinkAddress[] = [];
  const linkShaping: LinkShaping[] = [];
  const linkSet = new Set<string>();
  if (raw.links !== undefined && raw.links !== null) {
    if (!Array.isArray(raw.links)) fail('"links" must be a list of relay pairs, e.g. [[e-tokyo, c-1], [c-1, e-sapporo]]');
    for (const item of raw.links as unknown[]) {
      let l = item;
      let addresses: Raw | undefined;
      let shaping: Omit<LinkShaping, 'between'> | undefined;
      if (!Array.isArray(item) && typeof item === 'object' && item !== null) {
        const o = item as Raw;
        onlyKeys(o, ['between', 'address', 'compress', 'bandwidth'], 'a link');
        l = o.between;
        if (o.address !== undefined) addresses = mapping(o.address, `link ${JSON.stringify(o.between)}: address`, '{ e-sapporo: 127.0.0.1:9000 }');
        if (o.compress !== undefined || o.bandwidth !== undefined) shaping = linkShapingOf(o, JSON.stringify(o.between), fail);
      }
      if (!Array.isArray(l) || l.length !== 2 || l.some((x) => typeof x !== 'string')) fail(`link ${JSON.stringify(l)} must be a pair of relay names, e.g. [e-tokyo, c-1] or { between: [e-tokyo, c-1], address: { c-1: 10.0.0.2:7840 } }`);
      const [a, b] = l as [string, string];
      for (const [to, addr] of Object.entries(addresses ?? {})) {
        if (to !== a && to !== b) fail(`link [${a}, ${b}]: address names ${to}, which is not an end of the link`);
        const m = typeof addr === 'string' ? /^(.+):(\d+)$/.exec(addr) : null;
        if (!m || Number(m[2]) < 1 || Number(m[2]) > 65535) fail(`link [${a}, ${b}]: address of ${to} must be HOST:PORT (got ${JSON.stringify(addr)})`);
        linkAddresses.push({ from: to === a ? b : a, to, host: m![1]!, port: Number(m![2]) });
      }
      for (const x of [a, b]) if (!relays.has(x)) fail(`link [${a}, ${b}]: "${x}" is neither an edge nor a core`, `relays: ${[...relays].join(', ')}`);
      if (a === b) fail(`link [${a}, ${b}] connects a relay to itself`);
      const key = [a, b].sort().join('\u0000');
      if (linkSet.has(key)) fail(`link [${a}, ${b}] is given twice`);
      linkSet.add(key);
      links.push([a, b]);
      if (shaping) linkShaping.push({ between: [a, b], ...shaping });
    }
  }

  const routes: string[][] = [];
  if (raw.routes !== undefined && raw.routes !== null) {
    if (!Array.isArray(raw.routes)) fail('"routes" must be a list of paths from edge to edge, e.g. [[e-tokyo, c-1, e-sapporo]]');
    for (const r of raw.routes as unknown[]) {
      if (!Array.isArray(r) || r.length < 1 || r.some((x) => typeof x !== 'string')) fail(`route ${JSON.stringify(r)} must be a list of relay names`);
      const hops = r as string[];
      for (const h of hops) if (!relays.has(h)) fail(`route [${hops.join(', ')}]: "${h}" is neither an edge nor a core`);
      if (!edges[hops[0]!] || !edges[hops.at(-1)!]) fail(`route [${hops.join(', ')}] must start and end at an edge`);
      for (let i = 1; i < hops.length - 1; i++) if (!cores[hops[i]!]) fail(`route [${hops.join(', ')}]: "${hops[i]}" is not a core; only cores relay between edges`);
      if (new Set(hops).size !== hops.length) fail(`route [${hops.join(', ')}] visits a relay twice`);
      for (let i = 0; i + 1 < hops.length; i++) {
        if (!linkSet.has([hops[i]!, hops[i + 1]!].sort().join('\u0000'))) fail(`route [${hops.join(', ')}]: no link between ${hops[i]} and ${hops[i + 1]}`, 'add it to "links"');
      }
      routes.push(hops);
    }
  }

  const orders: Record<string, OrderConfig & { customer: string }> = {};
  const ordersRaw = raw.orders === undefined || raw.orders === null ? {} : mapping(raw.orders, '"orders"', '{ erp: { from: e-tokyo, to: e-sapporo } }');
  const pairOrder = new Map<string, string>();
  for (const [id, spec] of Object.entries(ordersRaw)) {
    name(id, 'order-guarantee id');
    const o = mapping(spec, `order ${id}`, '{ from: e-tokyo, to: e-sapporo }');
    onlyKeys(o, ['from', 'to', 'pairs', 'customer', 'retransmit', 'logSize', 'fullTimeout', 'failoverTimeout'], `order ${id}`);
    for (const k of ['from', 'to'] as const) {
      if (typeof o[k] !== 'string' || !edges[o[k] as string]) fail(`order ${id}: "${k}" must name an edge`, `edges: ${Object.keys(edges).join(', ')}`);
    }
    const pairs: string[] = [];
    if (o.pairs !== undefined) {
      if (!Array.isArray(o.pairs) || o.pairs.some((p) => typeof p !== 'string' || p.length === 0 || p.length > 63)) fail(`order ${id}: "pairs" must be a list of pair names`);
      for (const p of o.pairs as string[]) {
        const other = pairOrder.get(p);
        if (other) fail(`pair ${p} is in both order ${other} and order ${id}`, 'a pair has one order-guarantee id');
        pairOrder.set(p, id);
        pairs.push(p);
      }
    }
    let rt: Raw = {};
    if (o.retransmit !== undefined) {
      rt = mapping(o.retransmit, `order ${id}: retransmit`, '{ timeout: 2s, max: 30s, giveUp: 120s }');
      onlyKeys(rt, ['timeout', 'max', 'giveUp'], `order ${id}: retransmit`);
    }
    const retransmitMs = duration(rt.timeout, `order ${id}: retransmit timeout`, defaultOrderTimings.retransmitMs);
    const retransmitMaxMs = duration(rt.max, `order ${id}: retransmit max`, Math.max(retransmitMs, defaultOrderTimings.retransmitMaxMs));
    const giveUpMs = duration(rt.giveUp, `order ${id}: retransmit giveUp`, Math.max(retransmitMaxMs, defaultOrderTimings.giveUpMs));
    if (retransmitMaxMs < retransmitMs) fail(`order ${id}: retransmit max (${retransmitMaxMs} ms) is below its timeout (${retransmitMs} ms)`);
    if (giveUpMs < retransmitMs) fail(`order ${id}: retransmit giveUp (${giveUpMs} ms) is below its timeout (${retransmitMs} ms)`);
    const logBytes = size(o.logSize, `order ${id}: logSize`, defaultOrderTimings.logBytes);
    if (logBytes < 4 * 1024 * 1024) fail(`order ${id}: logSize must be at least 4MiB`);
    orders[id] = {
      from: o.from as string, to: o.to as string, pairs, customer: customerOf(o.customer, `order ${id}`), retransmitMs, retransmitMaxMs, giveUpMs, logBytes,
      fullTimeoutMs: duration(o.fullTimeout, `order ${id}: fullTimeout`, defaultOrderTimings.fullTimeoutMs),
      failoverTimeoutMs: duration(o.failoverTimeout, `order ${id}: failoverTimeout`, defaultOrderTimings.failoverTimeoutMs),
    };
  }

  // Contract limits (§6.12 step 903, E-29).
  for (const [c, limits] of Object.entries(customers)) {
    const storages = Object.values(edges).flatMap((e) => e.attach).filter((a) => a.customer === c).length;
    if (limits.maxStorages !== null && storages > limits.maxStorages) fail(`customer ${c} attaches ${storages} storage nodes; its contract allows ${limits.maxStorages}`);
    const count = Object.values(orders).filter((o) => o.customer === c).length;
    if (limits.maxOrders !== null && count > limits.maxOrders) fail(`customer ${c} has ${count} order-guarantee ids; its contract allows ${limits.maxOrders}`);
  }

  const { virtualStorages, virtualNames } = parseVirtualNames(raw, edges, fail);
  const parsed: NetworkFile = { name: raw.name as string, edges, cores, links, linkAddresses, linkShaping, routes, orders, customers, virtualStorages, virtualNames };
  computeRoutes(parsed, file); // fails early when an order has no path
  return parsed;
}

/** `virtualStorages: partner | own` and the names given under `virtualNames` (their partners are checked at apply). */
function parseVirtualNames(raw: Raw, edges: Record<string, EdgeSpec>, fail: (message: string, hint?: string) => never): Pick<NetworkFile, 'virtualStorages' | 'virtualNames'> {
  const variant = raw.virtualStorages ?? 'partner';
  if (variant !== 'partner' && variant !== 'own') {
    fail(`"virtualStorages" must be partner (a virtual storage answers under its partner's name) or own (Fig. 2: under a name of its own); got ${JSON.stringify(variant)}`);
  }
  const virtualNames: Record<string, Record<string, string>> = {};
  if (raw.virtualNames === undefined || raw.virtualNames === null) return { virtualStorages: variant as 'partner' | 'own', virtualNames };
  if (variant !== 'own') fail('"virtualNames" is given, but virtual storages answer under their partners\' names', 'add virtualStorages: own');
  const byEdge = raw.virtualNames;
  if (typeof byEdge !== 'object' || Array.isArray(byEdge)) fail('"virtualNames" must be a mapping, e.g. { e-tokyo: { sapporo: V106 } }');
  const seen = new Map<string, string>();
  for (const [edge, names] of Object.entries(byEdge as Raw)) {
    if (!edges[edge]) fail(`virtualNames: "${edge}" is not an edge`, `edges: ${Object.keys(edges).join(', ')}`);
    if (typeof names !== 'object' || names === null || Array.isArray(names)) fail(`virtualNames.${edge} must map partner node names to names, e.g. { sapporo: V106 }`);
    virtualNames[edge] = {};
    for (const [partner, v] of Object.entries(names as Raw)) {
      if (typeof v !== 'string' || !virtualNamePattern.test(v)) fail(`virtualNames.${edge}.${partner} must be 1–63 letters, digits, ".", "_" or "-" (got ${JSON.stringify(v)})`);
      const other = seen.get(v as string);
      if (other) fail(`virtual name ${String(v)} is given twice (${other} and ${edge}.${partner})`, 'each virtual storage has a name of its own');
      seen.set(v as string, `${edge}.${partner}`);
      virtualNames[edge]![partner] = v as string;
    }
  }
  return { virtualStorages: 'own', virtualNames };
}

/**
 * The route of every order, both directions (§6.12 step 6, §5.7(3)): a route given in the file,
 * else the path with the fewest cores over the links, skipping cores already carrying as many
 * routes as their capacity allows. Orders are routed in name order, so the result is stable. Each
 * route also gets its alternates: for each of its cores, the shortest path without that core, then
 * for each of its links, the shortest path without that link (a core and its links can fail apart:
 * a cut link whose relays are both up). A detour carries traffic only while something on the
 * route is down, so capacity does not limit it.
 */
export function computeRoutes(n: NetworkFile, file = 'network'): RouteConfig[] {
  const out = new Map<string, RouteConfig>();
  const load = new Map<string, number>();
  const neighbours = new Map<string, string[]>();
  for (const [a, b] of n.links) {
    neighbours.set(a, [...(neighbours.get(a) ?? []), b].sort());
    neighbours.set(b, [...(neighbours.get(b) ?? []), a].sort());
  }
  const install = (hops: string[]): void => {
    const from = hops[0]!;
    const to = hops.at(-1)!;
    if (out.has(`${from}\u0000${to}`)) return;
    out.set(`${from}\u0000${to}`, { from, to, hops });
    out.set(`${to}\u0000${from}`, { from: to, to: from, hops: [...hops].reverse() });
    for (const h of hops.slice(1, -1)) load.set(h, (load.get(h) ?? 0) + 1);
  };
  for (const hops of n.routes) install(hops);
  for (const id of Object.keys(n.orders).sort()) {
    const { from, to } = n.orders[id]!;
    if (out.has(`${from}\u0000${to}`)) continue;
    if (from === to) {
      install([from]);
      continue;
    }
    const path = shortestPath(from, to, neighbours, (r) => {
      const core = n.cores[r];
      return core !== undefined && (core.capacity === null || (load.get(r) ?? 0) < core.capacity);
    });
    if (!path) {
      throw new TricopyError('invalid-argument', `${file}: order ${id}: no path from ${from} to ${to} over the links through cores with spare capacity`,
        'add links (edges talk directly or through cores), or raise a core\'s capacity');
    }
    install(path);
  }
  // Computed one way and reversed for the other, so that both directions agree (§5.7(3)).
  for (const route of out.values()) {
    if (route.from >= route.to) continue;
    const alternates = alternatesOf(route.hops, neighbours, (r) => n.cores[r] !== undefined);
    if (alternates.length === 0) continue;
    route.alternates = alternates;
    out.get(`${route.to}\u0000${route.from}`)!.alternates = alternates.map((hops) => [...hops].reverse());
  }
  return [...out.values()].sort((a, b) => (a.from + a.to).localeCompare(b.from + b.to));
}

/**
 * For each core of `hops` in turn, the shortest path around it, then for each link of `hops`, the
 * shortest path without it; distinct, and none equal to `hops`.
 */
export function alternatesOf(hops: string[], neighbours: Map<string, string[]>, isCore: (relay: string) => boolean): string[][] {
  const seen = new Set([hops.join('\u0000')]);
  const out: string[][] = [];
  const add = (path: string[] | undefined): void => {
    if (!path || seen.has(path.join('\u0000'))) return;
    seen.add(path.join('\u0000'));
    out.push(path);
  };
  for (const avoid of hops.slice(1, -1)) add(shortestPath(hops[0]!, hops.at(-1)!, neighbours, (r) => r !== avoid && isCore(r)));
  for (let i = 0; i + 1 < hops.length; i++) {
    const cut = linkKey(hops[i]!, hops[i + 1]!);
    add(shortestPath(hops[0]!, hops.at(-1)!, neighbours, isCore, (a, b) => linkKey(a, b) !== cut));
  }
  return out;
}

/** A link's name either way round (a link carries both directions). */
export function linkKey(a: string, b: string): string {
  return a < b ? `${a}\u0000${b}` : `${b}\u0000${a}`;
}

/**
 * Breadth-first: the fewest hops; only relays `passable` may be in the middle, and only links
 * `usable` (default all) are crossed.
 */
export function shortestPath(
  from: string, to: string, neighbours: ReadonlyMap<string, readonly string[]>, passable: (relay: string) => boolean,
  usable: (a: string, b: string) => boolean = () => true,
): string[] | undefined {
  const previous = new Map<string, string>([[from, '']]);
  const queue = [from];
  while (queue.length > 0) {
    const at = queue.shift()!;
    for (const next of neighbours.get(at) ?? []) {
      if (previous.has(next)) continue;
      if (next !== to && !passable(next)) continue;
      if (!usable(at, next)) continue;
      previous.set(next, at);
      if (next === to) {
        const path = [to];
        for (let p = at; p !== ''; p = previous.get(p)!) path.unshift(p);
        return path;
      }
      queue.push(next);
    }
  }
  return undefined;
}

/** A link's `compress:` (a zstd level, or off) and `bandwidth:` (e.g. 100Mbit). */
function linkShapingOf(o: Raw, link: string, fail: (message: string, hint?: string) => never): Omit<LinkShaping, 'between'> {
  let compressLevel: number | null = null;
  if (o.compress !== undefined && o.compress !== 'off' && o.compress !== false) {
    const level = o.compress === true ? 3 : o.compress;
    if (typeof level !== 'number' || !Number.isInteger(level) || level < minCompressLevel || level > maxCompressLevel) {
      fail(`link ${link}: compress must be a zstd level from ${minCompressLevel} to ${maxCompressLevel}, true (level 3) or off (got ${JSON.stringify(o.compress)})`);
    }
    compressLevel = level;
  }
  let bandwidthBitsPerSecond: number | null = null;
  if (o.bandwidth !== undefined && o.bandwidth !== 'unlimited') {
    const bits = parseBandwidth(o.bandwidth);
    if (bits === null) fail(`link ${link}: bandwidth must be a rate such as 100Mbit, 1.5Gbit or 800kbit (got ${JSON.stringify(o.bandwidth)})`);
    if (bits < minLinkBandwidthBitsPerSecond) fail(`link ${link}: bandwidth ${JSON.stringify(o.bandwidth)} is below ${minLinkBandwidthBitsPerSecond / 1000}kbit`);
    bandwidthBitsPerSecond = bits;
  }
  return { compressLevel, bandwidthBitsPerSecond };
}
