// Storage node configuration: defaults, an optional YAML/JSON file and command-line flags, merged
// and validated once here so the rest of the node works with a typed, trusted value.
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { TricopyError } from '../common/errors';
import { type LogLevel, logLevels } from '../common/log';
import { parseDurationMs, parseSize } from '../common/units';
import type { TlsMode } from '../nbd/types';
import { type LinkTlsMode, linkTlsModes } from '../replication/transport/link-tls';
import { minJournalBytes } from '../replication/limits';
import { type DataArea, DataAreas, parseDataArea } from '../volume/areas';
import { minRelocationRateBytesPerSecond } from '../volume/relocation';

export { minJournalBytes };
export interface NodeConfig {
  name: string;
  site: string;
  dataDir: string;
  host: string;
  /** Address of the control API (default: host); keep it on loopback when NBD faces the network. */
  apiHost: string;
  nbdPort: number;
  apiPort: number;
  replPort: number;
  /** Address other nodes and clients should use to reach this node (defaults to host). */
  advertiseHost: string;
  /** Replication port peers should dial, when a relay or NAT stands in front of this node. */
  advertiseReplPort: number | undefined;
  /** NBD port put in export URIs, when a relay, NAT or proxy forwards another port to this node. */
  advertiseNbdPort: number | undefined;
  logLevel: LogLevel;
  tlsMode: TlsMode;
  tlsCert: string | undefined;
  tlsKey: string | undefined;
  tlsCa: string | undefined;
  tlsPskFile: string | undefined;
  /** TLS on replication links (to peer nodes and to an edge), with tlsCert/tlsKey and tlsCa for mutual TLS. */
  replTlsMode: LinkTlsMode;
  /** File holding the bearer token the control API demands; unset = no token (bind to loopback!). */
  apiTokenFile: string | undefined;
  maxConnections: number;
  handshakeTimeoutMs: number;
  minBlockBytes: number;
  /** File holding the secret every node of the cluster shares; nodes prove it to each other. */
  clusterSecretFile: string | undefined;
  /** Silence after which a peer node is declared unreachable. */
  peerTimeoutMs: number;
  /** Capacity of each async consistency group's journal. */
  journalSizeBytes: number;
  journalFullPolicy: 'delay' | 'suspend';
  autoResync: boolean;
  /** Window in which refusals from one address are aggregated into one summary event. */
  securityEventWindowMs: number;
  /** Bytes per second each background copy of an in-node replica may copy; 0 = unthrottled. */
  replicaCopyRateBytesPerSecond: number;
  /** Data areas besides the data directory (tier `default`), each a directory volumes can live in. */
  dataAreas: DataArea[];
  /** Bytes of data per second each volume relocation may copy; 0 = unthrottled. */
  relocationRateBytesPerSecond: number;
}

export const defaultNodeConfig = {
  host: '127.0.0.1',
  nbdPort: 10809,
  apiPort: 7801,
  replPort: 7800,
  logLevel: 'info' as LogLevel,
  tlsMode: 'off' as TlsMode,
  replTlsMode: 'off' as LinkTlsMode,
  maxConnections: 256,
  handshakeTimeoutMs: 10_000,
  minBlockBytes: 1,
  peerTimeoutMs: 4000,
  journalSizeBytes: 1024 ** 3,
  journalFullPolicy: 'delay' as const,
  autoResync: true,
  securityEventWindowMs: 60_000,
  replicaCopyRateBytesPerSecond: 0,
  relocationRateBytesPerSecond: 0,
};

const nodeNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const knownKeys = new Set([
  'name', 'site', 'dataDir', 'host', 'apiHost', 'nbdPort', 'apiPort', 'replPort', 'advertiseHost', 'advertiseReplPort', 'advertiseNbdPort', 'logLevel', 'tlsMode', 'replTls',
  'tlsCert', 'tlsKey', 'tlsCa', 'tlsPskFile', 'apiTokenFile', 'maxConnections', 'handshakeTimeout', 'minBlockBytes',
  'clusterSecretFile', 'peerTimeout', 'journalSize', 'journalFull', 'autoResync', 'securityEventWindow', 'replicaCopyRate',
  'dataAreas', 'relocationRate',
]);

export type RawNodeConfig = Record<string, unknown>;

export async function loadConfigFile(file: string): Promise<RawNodeConfig> {
  let text: string;
  try {
    text = await fsp.readFile(file, 'utf8');
  } catch (err) {
    throw new TricopyError('invalid-argument', `cannot read config file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = YAML.parse(text);
  } catch (err) {
    throw new TricopyError('invalid-argument', `config file ${file} is not valid YAML or JSON: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TricopyError('invalid-argument', `config file ${file} must hold a mapping of settings`);
  }
  const raw = value as RawNodeConfig;
  for (const key of Object.keys(raw)) {
    if (!knownKeys.has(key)) {
      throw new TricopyError('invalid-argument', `config file ${file}: unknown setting "${key}"`,
        `known settings: ${[...knownKeys].join(', ')}`);
    }
  }
  // Paths in a config file are relative to the file, not to wherever the node was started.
  for (const key of ['dataDir', 'tlsCert', 'tlsKey', 'tlsCa', 'tlsPskFile', 'apiTokenFile', 'clusterSecretFile']) {
    const v = raw[key];
    if (typeof v === 'string') raw[key] = path.resolve(path.dirname(file), v);
  }
  // dataAreas: a mapping of tier name to directory, relative to the file like the other paths.
  const areas = raw.dataAreas;
  if (areas !== undefined) {
    if (typeof areas !== 'object' || areas === null || Array.isArray(areas)) {
      throw new TricopyError('invalid-argument', `config file ${file}: dataAreas must map tier names to directories`, 'e.g. dataAreas: { fast: /mnt/nvme/tricopy }');
    }
    raw.dataAreas = Object.entries(areas as Record<string, unknown>).map(([tier, dir]) => {
      if (typeof dir !== 'string') throw new TricopyError('invalid-argument', `config file ${file}: data area ${tier} must be a directory path`);
      return `${tier}=${path.resolve(path.dirname(file), dir)}`;
    });
  }
  return raw;
}

/** Merges file settings with flags (flags win) and validates the result. */
export function resolveNodeConfig(fromFile: RawNodeConfig, fromFlags: RawNodeConfig): NodeConfig {
  const raw: RawNodeConfig = { ...fromFile };
  for (const [key, value] of Object.entries(fromFlags)) if (value !== undefined) raw[key] = value;

  const name = requireString(raw, 'name');
  if (!nodeNamePattern.test(name)) {
    throw new TricopyError('invalid-argument', `node name "${name}" is not valid`, 'use letters, digits, ".", "_" or "-"');
  }
  const dataDir = path.resolve(requireString(raw, 'dataDir'));
  const host = optionalString(raw, 'host') ?? defaultNodeConfig.host;
  const tlsMode = (optionalString(raw, 'tlsMode') ?? defaultNodeConfig.tlsMode) as TlsMode;
  if (!['off', 'optional', 'required'].includes(tlsMode)) {
    throw new TricopyError('invalid-argument', `tls mode "${tlsMode}" is not one of off, optional, required`);
  }
  const replTlsMode = (optionalString(raw, 'replTls') ?? defaultNodeConfig.replTlsMode) as LinkTlsMode;
  if (!linkTlsModes.includes(replTlsMode)) {
    throw new TricopyError('invalid-argument', `replication TLS mode "${replTlsMode}" (--repl-tls) is not one of ${linkTlsModes.join(', ')}`);
  }
  const logLevel = (optionalString(raw, 'logLevel') ?? defaultNodeConfig.logLevel) as LogLevel;
  if (!logLevels.includes(logLevel)) {
    throw new TricopyError('invalid-argument', `log level "${logLevel}" is not one of ${logLevels.join(', ')}`);
  }
  const config: NodeConfig = {
    name,
    site: optionalString(raw, 'site') ?? name,
    dataDir,
    host,
    apiHost: optionalString(raw, 'apiHost') ?? host,
    nbdPort: port(raw, 'nbdPort', defaultNodeConfig.nbdPort),
    apiPort: port(raw, 'apiPort', defaultNodeConfig.apiPort),
    replPort: port(raw, 'replPort', defaultNodeConfig.replPort),
    advertiseHost: optionalString(raw, 'advertiseHost') ?? (host === '0.0.0.0' || host === '::' ? primaryAddress() : host),
    advertiseReplPort: raw.advertiseReplPort === undefined ? undefined : integer(raw, 'advertiseReplPort', 0, 1, 65_535),
    advertiseNbdPort: raw.advertiseNbdPort === undefined ? undefined : integer(raw, 'advertiseNbdPort', 0, 1, 65_535),
    logLevel,
    tlsMode,
    tlsCert: optionalPath(raw, 'tlsCert'),
    tlsKey: optionalPath(raw, 'tlsKey'),
    tlsCa: optionalPath(raw, 'tlsCa'),
    tlsPskFile: optionalPath(raw, 'tlsPskFile'),
    replTlsMode,
    apiTokenFile: optionalPath(raw, 'apiTokenFile'),
    maxConnections: integer(raw, 'maxConnections', defaultNodeConfig.maxConnections, 1, 65_535),
    handshakeTimeoutMs: raw.handshakeTimeout === undefined ? defaultNodeConfig.handshakeTimeoutMs
      : parseDurationMs(raw.handshakeTimeout as string, 'handshake timeout'),
    minBlockBytes: integer(raw, 'minBlockBytes', defaultNodeConfig.minBlockBytes, 1, 65_536),
    clusterSecretFile: optionalPath(raw, 'clusterSecretFile'),
    peerTimeoutMs: raw.peerTimeout === undefined ? defaultNodeConfig.peerTimeoutMs : parseDurationMs(raw.peerTimeout as string, 'peer timeout'),
    journalSizeBytes: raw.journalSize === undefined ? defaultNodeConfig.journalSizeBytes : parseSize(raw.journalSize as string, 'journal size'),
    journalFullPolicy: (optionalString(raw, 'journalFull') ?? defaultNodeConfig.journalFullPolicy) as 'delay' | 'suspend',
    autoResync: raw.autoResync === undefined ? defaultNodeConfig.autoResync : raw.autoResync === true || raw.autoResync === 'true',
    securityEventWindowMs: raw.securityEventWindow === undefined ? defaultNodeConfig.securityEventWindowMs
      : parseDurationMs(raw.securityEventWindow as string, 'security event window'),
    replicaCopyRateBytesPerSecond: raw.replicaCopyRate === undefined ? defaultNodeConfig.replicaCopyRateBytesPerSecond
      : parseSize(String(raw.replicaCopyRate), 'replica copy rate'),
    dataAreas: dataAreasOf(raw.dataAreas),
    relocationRateBytesPerSecond: raw.relocationRate === undefined ? defaultNodeConfig.relocationRateBytesPerSecond
      : parseSize(String(raw.relocationRate), 'relocation rate'),
  };
  // Checked here (names, duplicates, shared directories) so the node never starts with a bad set.
  new DataAreas(path.join(dataDir, 'volumes'), config.dataAreas);
  if (config.relocationRateBytesPerSecond !== 0 && config.relocationRateBytesPerSecond < minRelocationRateBytesPerSecond) {
    throw new TricopyError('invalid-argument', 'the relocation rate is at least 1MiB (per second), or 0 for unthrottled');
  }
  if (config.replicaCopyRateBytesPerSecond !== 0 && config.replicaCopyRateBytesPerSecond < 1024 * 1024) {
    throw new TricopyError('invalid-argument', 'the replica copy rate is at least 1MiB (per second), or 0 for unthrottled');
  }
  if (config.securityEventWindowMs < 1000 || config.securityEventWindowMs > 3_600_000) {
    throw new TricopyError('invalid-argument', 'the security event window must be between 1s and 1h');
  }
  if (config.journalFullPolicy !== 'delay' && config.journalFullPolicy !== 'suspend') {
    throw new TricopyError('invalid-argument', `journal-full policy "${config.journalFullPolicy}" is not delay or suspend`);
  }
  if (config.journalSizeBytes < minJournalBytes) {
    throw new TricopyError('invalid-argument', 'the journal must hold at least 64MiB', 'it must take at least two of the largest NBD writes (32 MiB each) to keep order');
  }
  if (config.peerTimeoutMs < 500 || config.peerTimeoutMs > 600_000) {
    throw new TricopyError('invalid-argument', 'peer timeout must be between 500ms and 10m');
  }
  if (![1, 512, 4096].includes(config.minBlockBytes)) {
    throw new TricopyError('invalid-argument', `minimum block size ${config.minBlockBytes} is not 1, 512 or 4096`);
  }
  if (config.handshakeTimeoutMs < 100 || config.handshakeTimeoutMs > 600_000) {
    throw new TricopyError('invalid-argument', 'handshake timeout must be between 100ms and 10m');
  }
  const hasX509 = config.tlsCert !== undefined || config.tlsKey !== undefined;
  if (hasX509 && (config.tlsCert === undefined || config.tlsKey === undefined)) {
    throw new TricopyError('invalid-argument', 'X.509 TLS needs both --tls-cert and --tls-key');
  }
  if (hasX509 && config.tlsPskFile !== undefined) {
    throw new TricopyError('invalid-argument', 'choose either X.509 certificates or a PSK file for TLS, not both');
  }
  if (config.tlsCa !== undefined && !hasX509) {
    throw new TricopyError('invalid-argument', '--tls-ca verifies client certificates and needs --tls-cert and --tls-key');
  }
  if (config.tlsMode !== 'off' && !hasX509 && config.tlsPskFile === undefined) {
    throw new TricopyError('invalid-argument', `tls mode ${config.tlsMode} needs --tls-cert/--tls-key or --tls-psk-file`);
  }
  if (config.replTlsMode !== 'off' && !hasX509) {
    throw new TricopyError('invalid-argument', `--repl-tls ${config.replTlsMode} needs --tls-cert and --tls-key`,
      'replication links use X.509 certificates (add --tls-ca for mutual TLS); PSK is for NBD only');
  }
  if (config.tlsMode === 'off' && (config.tlsPskFile !== undefined || (hasX509 && config.replTlsMode === 'off'))) {
    throw new TricopyError('invalid-argument', 'TLS credentials were given but --tls is off',
      'pass --tls optional or --tls required (NBD), or --repl-tls optional or required (replication), to use them');
  }
  const distinct = [config.nbdPort, config.apiPort, config.replPort].filter((p) => p !== 0);
  if (new Set(distinct).size !== distinct.length) {
    throw new TricopyError('invalid-argument', 'the NBD, API and replication ports must differ (or be 0 for any free port)');
  }
  return config;
}

/** Data areas from flags (`NAME=DIR`, repeatable) or the config file (already in that form). */
function dataAreasOf(value: unknown): DataArea[] {
  if (value === undefined || value === null) return [];
  const specs = Array.isArray(value) ? value : [value];
  return specs.map((s) => {
    if (typeof s !== 'string') throw new TricopyError('invalid-argument', 'a data area is NAME=DIRECTORY');
    return parseDataArea(s);
  });
}

/** The first non-loopback IPv4 address of this machine (what peers can reach), else loopback. */
function primaryAddress(): string {
  for (const addresses of Object.values(os.networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

function requireString(raw: RawNodeConfig, key: string): string {
  const v = optionalString(raw, key);
  if (v === undefined || v === '') {
    throw new TricopyError('invalid-argument', `setting "${key}" is required`, `pass --${kebab(key)} or set it in the config file`);
  }
  return v;
}

function optionalString(raw: RawNodeConfig, key: string): string | undefined {
  const v = raw[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new TricopyError('invalid-argument', `setting "${key}" must be a string`);
  return v;
}

function optionalPath(raw: RawNodeConfig, key: string): string | undefined {
  const v = optionalString(raw, key);
  return v === undefined ? undefined : path.resolve(v);
}

function integer(raw: RawNodeConfig, key: string, fallback: number, min: number, max: number): number {
  const v = raw[key];
  if (v === undefined || v === null) return fallback;
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : NaN;
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new TricopyError('invalid-argument', `setting "${key}" (--${kebab(key)}) must be a whole number from ${min} to ${max}, got ${String(v)}`);
  }
  return n;
}

function port(raw: RawNodeConfig, key: string, fallback: number): number {
  return integer(raw, key, fallback, 0, 65_535);
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`);
}
