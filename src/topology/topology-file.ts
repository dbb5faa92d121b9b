// A topology file: one protected set of volumes across three sites (spec 001), as the operator
// writes it. Parsed and validated here once; everything else works with the typed value.
import { promises as fsp } from 'node:fs';
import YAML from 'yaml';
import { TricopyError } from '../common/errors';
import { parseSize } from '../common/units';

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
}

export interface Topology {
  name: string;
  layout: Layout;
  volumes: TopologyVolume[];
  primary: SiteSpec;
  sync: SiteSpec & { fence: 'data' | 'never' };
  async: SiteSpec;
  /** True when some volume is marked log: then only log volumes go to the async site. */
  logLayout: boolean;
}

const namePattern = /^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$/;
const knownKeys = new Set(['name', 'layout', 'volumes', 'primary', 'sync', 'async']);

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
    for (const k of Object.keys(o)) if (!['site', 'node', 'fence'].includes(k)) fail(`${key}: unknown key "${k}"`);
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
  return {
    name: name as string,
    layout: layout as Layout,
    volumes,
    primary: { site: primary.site, node: primary.node },
    sync: { site: sync.site, node: sync.node, fence: fence as 'data' | 'never' },
    async: { site: asyncSite.site, node: asyncSite.node },
    logLayout,
  };
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
