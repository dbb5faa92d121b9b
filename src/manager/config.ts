// Manager configuration: command-line flags (and an optional YAML/JSON file), merged and validated
// once here so the rest of the manager works with a typed, trusted value.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import YAML from 'yaml';
import { TricopyError } from '../common/errors';
import { type LogLevel, logLevels } from '../common/log';
import { parseDurationMs } from '../common/units';
import { type MonitoredSet, defaultLinkDownSeconds, defaultMonitoredCodes } from '../contracts/monitor';
import { type ShortCode } from '../contracts/pairs';

export interface ManagerConfig {
  /** Embedded store and nothing else lives here (created when missing). */
  dataDir: string | undefined;
  host: string;
  apiPort: number;
  /** How nodes and other managers reach this one (default http://<host>:<port>). */
  advertiseUrl: string | undefined;
  store: 'embedded' | 'etcd';
  etcdEndpoints: string[];
  etcdPrefix: string;
  /** A leader that stops renewing its lease loses it after this long. */
  leaderTtlSeconds: number;
  /** Prior-art polling (spec 000 §6.1) for comparison; null = off (the default). */
  pollIntervalMs: number | null;
  /** /metrics scrape per node for samples and liveness; 0 = off. */
  sampleIntervalMs: number;
  webhooks: string[];
  apiTokenFile: string | undefined;
  logLevel: LogLevel;
  /** What nodes report on the copies the manager registers. */
  monitored: MonitoredSet;
}

export const defaultManagerConfig = {
  host: '127.0.0.1',
  apiPort: 7900,
  etcdPrefix: '/tricopy/',
  leaderTtlSeconds: 5,
  sampleIntervalMs: 10_000,
  lagSeconds: 60,
  journalPercent: 80,
};

const shortCodes: ShortCode[] = ['SMPL', 'COPY', 'PAIR', 'PSUS', 'PSUE', 'SSUS', 'SSWS'];

export type RawManagerConfig = Record<string, unknown>;

export async function loadManagerConfigFile(file: string): Promise<RawManagerConfig> {
  let value: unknown;
  try {
    value = YAML.parse(await fsp.readFile(file, 'utf8'));
  } catch (err) {
    throw new TricopyError('invalid-argument', `cannot read manager config ${file}: ${(err as Error).message}`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new TricopyError('invalid-argument', `manager config ${file} must hold a mapping of settings`);
  }
  return value as RawManagerConfig;
}

export function resolveManagerConfig(fromFile: RawManagerConfig, fromFlags: RawManagerConfig): ManagerConfig {
  const raw: RawManagerConfig = { ...fromFile };
  for (const [k, v] of Object.entries(fromFlags)) if (v !== undefined) raw[k] = v;
  const str = (k: string): string | undefined => (raw[k] === undefined || raw[k] === null ? undefined : String(raw[k]));
  const store = (str('store') ?? 'embedded') as ManagerConfig['store'];
  if (store !== 'embedded' && store !== 'etcd') throw new TricopyError('invalid-argument', `--store must be embedded or etcd, not ${store}`);
  const etcd = str('etcd');
  const etcdEndpoints = etcd ? etcd.split(',').map((s) => s.trim()).filter(Boolean) : [];
  if (store === 'etcd' && etcdEndpoints.length === 0) {
    throw new TricopyError('invalid-argument', '--store etcd needs --etcd URL[,URL…]', 'e.g. --etcd http://127.0.0.1:2379');
  }
  const dataDir = str('dataDir');
  if (store === 'embedded' && dataDir === undefined) {
    throw new TricopyError('invalid-argument', 'the embedded store needs --data-dir', 'e.g. --data-dir ./var/manager (or use --store etcd)');
  }
  const apiPort = Number(str('apiPort') ?? defaultManagerConfig.apiPort);
  if (!Number.isInteger(apiPort) || apiPort < 0 || apiPort > 65_535) throw new TricopyError('invalid-argument', '--api-port must be a port number (0 picks a free one)');
  const logLevel = (str('logLevel') ?? 'info') as LogLevel;
  if (!logLevels.includes(logLevel)) throw new TricopyError('invalid-argument', `log level "${logLevel}" is not one of ${logLevels.join(', ')}`);
  const poll = str('pollInterval');
  const pollIntervalMs = poll === undefined || poll === '0' ? null : parseDurationMs(poll, 'poll interval');
  if (pollIntervalMs !== null && pollIntervalMs < 100) throw new TricopyError('invalid-argument', '--poll-interval must be at least 100ms');
  const sample = str('sampleInterval');
  const sampleIntervalMs = sample === undefined ? defaultManagerConfig.sampleIntervalMs : parseDurationMs(sample, 'sample interval');
  if (sampleIntervalMs !== 0 && sampleIntervalMs < 500) throw new TricopyError('invalid-argument', '--sample-interval must be 0 (off) or at least 500ms');
  const ttl = Number(str('leaderTtl') ?? defaultManagerConfig.leaderTtlSeconds);
  if (!Number.isInteger(ttl) || ttl < 2 || ttl > 60) throw new TricopyError('invalid-argument', '--leader-ttl takes whole seconds from 2 to 60');
  const webhooks = raw.webhooks === undefined ? [] : (Array.isArray(raw.webhooks) ? raw.webhooks : [raw.webhooks]).map(String);
  for (const w of webhooks) {
    if (!/^https?:\/\//.test(w)) throw new TricopyError('invalid-argument', `webhook ${w} must be an http(s) URL`);
  }
  return {
    dataDir: dataDir === undefined ? undefined : path.resolve(dataDir),
    host: str('host') ?? defaultManagerConfig.host,
    apiPort,
    advertiseUrl: str('advertiseUrl'),
    store,
    etcdEndpoints,
    etcdPrefix: str('etcdPrefix') ?? defaultManagerConfig.etcdPrefix,
    leaderTtlSeconds: ttl,
    pollIntervalMs,
    sampleIntervalMs,
    webhooks,
    apiTokenFile: str('apiTokenFile') === undefined ? undefined : path.resolve(str('apiTokenFile')!),
    logLevel,
    monitored: monitoredSet(str('monitorCodes'), str('alertLag'), str('alertJournal'), str('alertLinkDown')),
  };
}

function monitoredSet(codes: string | undefined, lag: string | undefined, journal: string | undefined, linkDown: string | undefined): MonitoredSet {
  const list = codes === undefined ? [...defaultMonitoredCodes] : codes.split(',').map((c) => c.trim().toUpperCase());
  for (const c of list) {
    if (!shortCodes.includes(c as ShortCode)) throw new TricopyError('invalid-argument', `--monitor-codes: ${c} is not one of ${shortCodes.join(', ')}`);
  }
  const lagSeconds = lag === undefined ? defaultManagerConfig.lagSeconds : lag === '0' ? null : parseDurationMs(lag, 'alert lag') / 1000;
  const journalPercent = journal === undefined ? defaultManagerConfig.journalPercent : Number(journal);
  if (journalPercent !== null && (!Number.isFinite(journalPercent) || journalPercent < 0 || journalPercent > 100)) {
    throw new TricopyError('invalid-argument', '--alert-journal takes a percentage from 0 to 100 (0 = off)');
  }
  const linkDownSeconds = linkDown === undefined ? defaultLinkDownSeconds : linkDown === '0' ? null : parseDurationMs(linkDown, 'alert link down') / 1000;
  return { codes: list as ShortCode[], lagSeconds, journalPercent: journalPercent === 0 ? null : journalPercent, linkDownSeconds };
}
