// A topology file: one protected set of volumes across three sites (spec 001), as the operator
// writes it. Parsed and validated here once; everything else works with the typed value.
import { promises as fsp } from 'node:fs';
import YAML from 'yaml';
import { TricopyError } from '../common/errors';
import { parseDurationMs, parseSize } from '../common/units';

export type Layout = 'multi-target' | 'cascade';
export type VolumeRole = 'data' | 'log';

export interface TopologyVolume {
  name: string;
  sizeBytes: number;
  /** Log/data layout (spec 001 §6.14): every volume goes to the sync site, only logs to the async site. */
  role: VolumeRole;
}

export interface SiteSpec {
  site: string;
  node: string;
  /** How this site's node reaches the etcd arbiter, when not by the arbiter's endpoints (its local members, a relay). */
  etcd?: string[];
}

/**
 * Who decides that the sync site may take over by itself: etcd (a leader key with a TTL), or a
 * spec 004 quorum pair between the primary and the sync site (apply creates it: `volume` at the
 * primary, its S-VOL at the sync site).
 */
export type ArbiterSpec = { kind: 'etcd'; endpoints: string[] } | { kind: 'quorum-pair'; volume: string; sizeBytes: number };

/** A quorum volume holds nothing but the pair's state; spec 004 calls it small (the node refuses more than 1 GiB). */
export const defaultQuorumVolumeBytes = 1024 * 1024;
export const maxQuorumVolumeBytes = 1024 * 1024 * 1024;

/**
 * Automatic failover (failover: automatic): the site where the application runs holds the arbiter
 * and renews its hold every `renewMs`; it refuses host writes once `leaseMs - fenceMarginMs` passed
 * since the last renewal it sent that succeeded, before the lease can pass to another site; the
 * sync site takes over only after it holds the arbiter. leaseMs > renewMs + fenceMarginMs.
 */
export interface FailoverSettings {
  mode: 'manual' | 'automatic';
  arbiter: ArbiterSpec | null;
  leaseMs: number;
  renewMs: number;
  fenceMarginMs: number;
  /** When the holder cannot reach the arbiter: fence (refuse writes) or continue (only with fence data). */
  onArbiterLost: 'fence' | 'continue';
  /**
   * After an automatic failover, who brings the application back to the primary site: a person
   * (manual, the default) or the sync site's node that holds the arbiter, once the primary site has
   * been back and sees the arbiter for `failbackDelayMs` without a break (automatic).
   */
  failback: 'manual' | 'automatic';
  failbackDelayMs: number;
}

export const defaultLeaseMs = 10_000;
export const minRenewMs = 100;
export const maxLeaseMs = 600_000;
/** A returning primary must stay back this long at least before an automatic failback moves the application (a flapping site does not get it). */
export const minFailbackDelayMs = 5_000;
export const maxFailbackDelayMs = 86_400_000;
export const defaultFailbackDelayMs = 60_000;

export interface Topology {
  name: string;
  layout: Layout;
  volumes: TopologyVolume[];
  primary: SiteSpec;
  sync: SiteSpec & { fence: 'data' | 'never' };
  async: SiteSpec;
  /** True when some volume is marked log: then only log volumes go to the async site. */
  logLayout: boolean;
  /** Absent: manual failover (a person runs topology failover). */
  failover?: FailoverSettings;
  /**
   * Every pair goes through this remote copy network (spec 002), under the one order-guarantee id
   * that leads from the source site's edge to the target site's.
   */
  network?: string;
}

const namePattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$/;
const knownKeys = new Set(['name', 'layout', 'volumes', 'primary', 'sync', 'async', 'network', 'failover', 'arbiter', 'lease', 'renew', 'fence-margin', 'arbiter-lost', 'failback', 'failback-delay']);

export async function loadTopology(file: string): Promise<Topology> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new TricopyError('invalid-argument', `cannot read topology file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new TricopyError('invalid-argument', `topology file ${file} is not valid YAML: ${(err as Error).message}`);
  }
  return parseTopology(value, file);
}

export function parseTopology(value: unknown, file = 'topology'): Topology {
  const fail = (message: string, hint?: string): never => {
    throw new TricopyError('invalid-argument', `${file}: ${message}`, hint);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('the file must hold a mapping (name, layout, volumes, primary, sync, async)');
  const raw = value as Record<string, unknown>;
  for (const key of Object.keys(raw)) {
    if (!knownKeys.has(key)) fail(`unknown key "${key}"`, `known keys: ${[...knownKeys].join(', ')}`);
  }
  const name = raw.name;
  if (typeof name !== 'string' || !namePattern.test(name)) {
    fail(`"name" must be 1–24 letters, digits, "_" or "-" (got ${JSON.stringify(name)})`, 'pair names are built from it, so it is kept short');
  }
  const layout = raw.layout ?? 'multi-target';
  if (layout !== 'multi-target' && layout !== 'cascade') fail(`"layout" must be multi-target or cascade (got ${JSON.stringify(layout)})`);
  const site = (key: 'primary' | 'sync' | 'async'): SiteSpec & Record<string, unknown> => {
    const s = raw[key];
    if (typeof s !== 'object' || s === null) return fail(`"${key}" must be a mapping like { site: tokyo, node: http://127.0.0.1:7801 }`);
    const o = s as Record<string, unknown>;
    for (const k of Object.keys(o)) if (!['site', 'node', 'fence', 'etcd'].includes(k)) fail(`${key}: unknown key "${k}"`);
    if (o.etcd !== undefined && (!Array.isArray(o.etcd) || o.etcd.length === 0 || !o.etcd.every((u) => typeof u === 'string' && /^https?:\/\/[^\s]+$/.test(u)))) {
      fail(`${key}.etcd must list etcd client URLs (how this site reaches the arbiter)`);
    }
    if (typeof o.site !== 'string' || !namePattern.test(o.site)) fail(`${key}.site must be a short name (letters, digits, "_", "-")`);
    if (typeof o.node !== 'string') fail(`${key}.node must be the node's control API URL, e.g. http://127.0.0.1:7801`);
    try {
      const url = new URL(o.node as string);
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error('scheme');
    } catch {
      fail(`${key}.node "${String(o.node)}" is not an http(s) URL`);
    }
    if (key !== 'sync' && o.fence !== undefined) fail(`${key}: "fence" belongs to the sync site`);
    return o as SiteSpec & Record<string, unknown>;
  };
  const primary = site('primary');
  const sync = site('sync');
  const asyncSite = site('async');
  const fence = sync.fence ?? 'data';
  if (fence !== 'data' && fence !== 'never') fail('sync.fence must be data or never');
  const sites = [primary.site, sync.site, asyncSite.site];
  if (new Set(sites).size !== 3) fail('primary, sync and async must be three different sites');
  if (new Set([primary.node, sync.node, asyncSite.node]).size !== 3) fail('primary, sync and async must be three different nodes');
  if (typeof raw.volumes !== 'object' || raw.volumes === null || Array.isArray(raw.volumes) || Object.keys(raw.volumes).length === 0) {
    fail('"volumes" must map volume names to sizes, e.g. { db1: 10GiB, log1: { size: 2GiB, role: log } }');
  }
  const volumes: TopologyVolume[] = [];
  for (const [volume, spec] of Object.entries(raw.volumes as Record<string, unknown>)) {
    if (!/^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$/.test(volume)) fail(`volume name "${volume}" must be 1–24 letters, digits, "_" or "-"`);
    let size: unknown = spec;
    let role: unknown = 'data';
    if (typeof spec === 'object' && spec !== null) {
      const o = spec as Record<string, unknown>;
      for (const k of Object.keys(o)) if (!['size', 'role'].includes(k)) fail(`volume ${volume}: unknown key "${k}"`);
      size = o.size;
      role = o.role ?? 'data';
    }
    if (role !== 'data' && role !== 'log') fail(`volume ${volume}: role must be data or log`);
    if (typeof size !== 'string' && typeof size !== 'number') fail(`volume ${volume}: size missing`);
    let sizeBytes = 0;
    try {
      sizeBytes = parseSize(size as string | number, `size of volume ${volume}`);
    } catch (err) {
      fail((err as Error).message, (err as TricopyError).hint);
    }
    volumes.push({ name: volume, sizeBytes, role: role as VolumeRole });
  }
  const logLayout = volumes.some((v) => v.role === 'log');
  if (raw.network !== undefined && (typeof raw.network !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(raw.network))) {
    fail(`"network" must name a remote copy network (its file's name), e.g. rcn (got ${JSON.stringify(raw.network)})`);
  }
  const failover = parseFailover(raw, layout as Layout, fence as 'data' | 'never', volumes.map((v) => v.name), fail);
  return {
    name: name as string,
    layout: layout as Layout,
    volumes,
    primary: { site: primary.site, node: primary.node, ...etcdOf(primary) },
    sync: { site: sync.site, node: sync.node, fence: fence as 'data' | 'never', ...etcdOf(sync) },
    async: { site: asyncSite.site, node: asyncSite.node, ...etcdOf(asyncSite) },
    logLayout,
    ...(failover ? { failover } : {}),
    ...(typeof raw.network === 'string' ? { network: raw.network } : {}),
  };
}

function etcdOf(s: Record<string, unknown>): { etcd?: string[] } {
  return Array.isArray(s.etcd) ? { etcd: s.etcd as string[] } : {};
}

/** failover, arbiter, lease, renew, fence-margin, arbiter-lost, failback, failback-delay; undefined when none is given (manual). */
function parseFailover(raw: Record<string, unknown>, layout: Layout, fence: 'data' | 'never', volumeNames: string[],
  fail: (message: string, hint?: string) => never): FailoverSettings | undefined {
  const keys = ['failover', 'arbiter', 'lease', 'renew', 'fence-margin', 'arbiter-lost', 'failback', 'failback-delay'];
  if (keys.every((k) => raw[k] === undefined)) return undefined;
  const mode = raw.failover ?? 'manual';
  if (mode !== 'manual' && mode !== 'automatic') fail(`"failover" must be manual or automatic (got ${JSON.stringify(mode)})`);
  let arbiter: ArbiterSpec | null = null;
  if (raw.arbiter !== undefined) {
    const a = raw.arbiter;
    if (typeof a !== 'object' || a === null || Array.isArray(a) || Object.keys(a).length !== 1) {
      fail('"arbiter" must be { etcd: [URL, …] } or { quorum-pair: { volume: NAME } }');
    }
    const o = a as Record<string, unknown>;
    if (o.etcd !== undefined) {
      const list = typeof o.etcd === 'string' ? [o.etcd] : o.etcd;
      if (!Array.isArray(list) || list.length === 0 || !list.every((u) => typeof u === 'string' && /^https?:\/\/[^\s]+$/.test(u))) {
        fail('arbiter.etcd must list etcd client URLs, e.g. [http://127.0.0.1:2379]');
      }
      arbiter = { kind: 'etcd', endpoints: list as string[] };
    } else if (o['quorum-pair'] !== undefined) {
      arbiter = parseQuorumPairArbiter(o['quorum-pair'], volumeNames, fail);
    } else {
      fail(`arbiter: unknown kind "${Object.keys(o)[0]}"`, 'use { etcd: [URL, …] } or { quorum-pair: { volume: NAME } }');
    }
  }
  const duration = (key: string, fallback: number): number => {
    const v = raw[key];
    if (v === undefined) return fallback;
    try {
      return parseDurationMs(v as string | number, key);
    } catch (err) {
      return fail((err as Error).message, 'write it like 10s or 500ms');
    }
  };
  const leaseMs = duration('lease', defaultLeaseMs);
  const renewMs = duration('renew', Math.floor(leaseMs / 5));
  const fenceMarginMs = duration('fence-margin', Math.floor(leaseMs / 5));
  const onArbiterLost = raw['arbiter-lost'] ?? 'fence';
  if (onArbiterLost !== 'fence' && onArbiterLost !== 'continue') fail('"arbiter-lost" must be fence or continue');
  if (mode === 'automatic') {
    if (!arbiter) fail('failover: automatic needs an arbiter', 'add arbiter: { etcd: [http://HOST:2379] }');
    if (layout !== 'multi-target') fail('automatic failover is for multi-target topologies', 'use layout: multi-target, or failover: manual');
  }
  if (leaseMs < 1000 || leaseMs > maxLeaseMs) fail(`"lease" must be from 1s to ${maxLeaseMs / 1000}s`);
  if (renewMs < minRenewMs) fail(`"renew" must be at least ${minRenewMs}ms`);
  if (fenceMarginMs < 0) fail('"fence-margin" must not be negative');
  if (leaseMs <= renewMs + fenceMarginMs) {
    fail(`lease (${leaseMs} ms) must be longer than renew (${renewMs} ms) + fence-margin (${fenceMarginMs} ms)`,
      'a site that renews on time must never reach its fence; e.g. lease: 10s, renew: 2s, fence-margin: 2s');
  }
  if (onArbiterLost === 'continue' && fence !== 'data') {
    fail('arbiter-lost: continue needs sync.fence: data', 'only fence data keeps a primary that lost the arbiter from acknowledging writes the sync site lacks');
  }
  const { failback, failbackDelayMs } = parseFailback(raw, mode as 'manual' | 'automatic', duration, fail);
  return { mode: mode as 'manual' | 'automatic', arbiter, leaseMs, renewMs, fenceMarginMs, onArbiterLost: onArbiterLost as 'fence' | 'continue', failback, failbackDelayMs };
}

/**
 * arbiter: { quorum-pair: { volume: NAME, size?: SIZE } }: a volume of its own (not one of the
 * topology's, which are data), small.
 */
function parseQuorumPairArbiter(value: unknown, volumeNames: string[], fail: (message: string, hint?: string) => never): ArbiterSpec {
  const q = value as Record<string, unknown> | null;
  if (typeof q !== 'object' || q === null || Array.isArray(q) || typeof q.volume !== 'string' || !/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/.test(q.volume)) {
    return fail('arbiter.quorum-pair must name the quorum volume: { quorum-pair: { volume: erp-quorum } }', 'letters, digits, "_" and "-"');
  }
  for (const k of Object.keys(q)) if (k !== 'volume' && k !== 'size') fail(`arbiter.quorum-pair: unknown key "${k}" (volume, size)`);
  if (volumeNames.includes(q.volume)) {
    fail(`arbiter.quorum-pair.volume ${q.volume} is one of the topology's volumes`, 'the quorum volume is a small volume of its own, e.g. erp-quorum');
  }
  let sizeBytes = defaultQuorumVolumeBytes;
  if (q.size !== undefined) {
    try {
      sizeBytes = parseSize(q.size as string | number, 'arbiter.quorum-pair.size');
    } catch (err) {
      fail((err as Error).message, (err as TricopyError).hint);
    }
    if (sizeBytes > maxQuorumVolumeBytes) fail(`arbiter.quorum-pair.size must be at most 1GiB (a quorum volume holds only the pair's state)`);
  }
  return { kind: 'quorum-pair', volume: q.volume, sizeBytes };
}

/** failback (manual | automatic) and failback-delay: automatic failback only follows an automatic failover. */
function parseFailback(raw: Record<string, unknown>, mode: 'manual' | 'automatic', duration: (key: string, fallback: number) => number,
  fail: (message: string, hint?: string) => never): { failback: 'manual' | 'automatic'; failbackDelayMs: number } {
  const failback = raw.failback ?? 'manual';
  if (failback !== 'manual' && failback !== 'automatic') fail(`"failback" must be manual or automatic (got ${JSON.stringify(failback)})`);
  if (failback === 'automatic' && mode !== 'automatic') {
    fail('failback: automatic needs failover: automatic', 'the node that holds the arbiter runs the failback; without automatic failover no node holds one');
  }
  if (failback !== 'automatic' && raw['failback-delay'] !== undefined) fail('"failback-delay" is only for failback: automatic');
  const failbackDelayMs = duration('failback-delay', defaultFailbackDelayMs);
  if (failbackDelayMs < minFailbackDelayMs || failbackDelayMs > maxFailbackDelayMs) {
    fail(`"failback-delay" must be from ${minFailbackDelayMs / 1000}s to ${maxFailbackDelayMs / 3_600_000}h (got ${failbackDelayMs} ms)`,
      'the returning primary site must stay back this long before the application moves to it: a site that comes and goes does not get it');
  }
  return { failback: failback as 'manual' | 'automatic', failbackDelayMs };
}

/** Volumes that go to the async site: all of them, or only the logs in a log/data layout. */
export function asyncVolumes(t: Topology): TopologyVolume[] {
  return t.logLayout ? t.volumes.filter((v) => v.role === 'log') : t.volumes;
}

/** The pair of one volume between two sites (the name does not depend on the direction). */
export function pairName(t: Topology, volume: string, siteA: string, siteB: string): string {
  const [a, b] = [siteA, siteB].sort();
  return `${t.name}.${volume}.${a}.${b}`;
}

export function parsePairName(t: Topology, pair: string): { volume: string; sites: [string, string] } | undefined {
  const prefix = `${t.name}.`;
  if (!pair.startsWith(prefix)) return undefined;
  const rest = pair.slice(prefix.length).split('.');
  if (rest.length !== 3) return undefined;
  return { volume: rest[0]!, sites: [rest[1]!, rest[2]!] };
}

/** The other site of topology pair `pair`, seen from `site`; undefined when `pair` is not one of t's pairs. */
export function pairPeerSite(t: Topology, pair: string, site: string): string | undefined {
  return parsePairName(t, pair)?.sites.find((x) => x !== site);
}

/** The topology as a document parseTopology reads back to the same value (what apply gives the nodes). */
export function topologyDocument(t: Topology): Record<string, unknown> {
  const f = t.failover;
  return {
    name: t.name, layout: t.layout,
    volumes: Object.fromEntries(t.volumes.map((v) => [v.name, { size: v.sizeBytes, role: v.role }])),
    primary: { ...t.primary }, sync: { ...t.sync }, async: { ...t.async },
    ...(t.network !== undefined ? { network: t.network } : {}),
    ...(f ? {
      failover: f.mode,
      ...(f.arbiter ? { arbiter: f.arbiter.kind === 'etcd' ? { etcd: f.arbiter.endpoints } : { 'quorum-pair': { volume: f.arbiter.volume, size: f.arbiter.sizeBytes } } } : {}),
      lease: `${f.leaseMs}ms`, renew: `${f.renewMs}ms`, 'fence-margin': `${f.fenceMarginMs}ms`, 'arbiter-lost': f.onArbiterLost,
      failback: f.failback, ...(f.failback === 'automatic' ? { 'failback-delay': `${f.failbackDelayMs}ms` } : {}),
    } : {}),
  };
}
