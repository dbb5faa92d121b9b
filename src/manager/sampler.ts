// Performance samples and node liveness from each node's Prometheus metrics: one GET /metrics per
// node per interval (spec 000 E5: liveness per device, not per volume; its cost grows with nodes,
// not copies). From two scrapes it derives per volume IOPS, read ratio, MiB/s and mean latency,
// and per group the lag and journal use, and keeps them at decreasing resolution: every sample for
// an hour, one a minute for a day, one per 15 minutes for 30 days. A node that does not answer
// three scrapes in a row is unreachable (an alert); the copies it held are reported by its peers.
import type { PerfSample } from '../contracts/manager';

export const unreachableAfterFailures = 3;

/** Keep-one-per-bucket tiers: samples older than `ageMs` keep one per `bucketMs`. */
export const sampleTiers: Array<{ ageMs: number; bucketMs: number }> = [
  { ageMs: 3_600_000, bucketMs: 60_000 },
  { ageMs: 86_400_000, bucketMs: 900_000 },
];
export const sampleRetentionMs = 30 * 86_400_000;

export interface Series {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text exposition (the subset prom-client writes). */
export function parseMetrics(text: string): Series[] {
  const out: Series[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    out.push({ name: m[1]!, labels, value: Number(m[4]) });
  }
  return out;
}

/** Counters of one scrape, per volume (NBD) — what two scrapes turn into rates. */
export interface VolumeCounters {
  reads: number;
  writes: number;
  bytes: number;
  latencySum: number;
  latencyCount: number;
}

export interface GroupFigures {
  role: string;
  lagSeconds: number;
  lagBytes: number;
  lagEntries: number;
  journalUsed: number | null;
  journalCapacity: number | null;
}

export function volumeCounters(series: Series[]): Map<string, VolumeCounters> {
  const out = new Map<string, VolumeCounters>();
  const of = (v: string): VolumeCounters => {
    let c = out.get(v);
    if (!c) out.set(v, (c = { reads: 0, writes: 0, bytes: 0, latencySum: 0, latencyCount: 0 }));
    return c;
  };
  for (const s of series) {
    const v = s.labels.volume;
    if (v === undefined) continue;
    if (s.name === 'tricopy_nbd_requests_total' && s.labels.result === 'ok') {
      if (s.labels.op === 'read') of(v).reads += s.value;
      if (s.labels.op === 'write' || s.labels.op === 'write_zeroes' || s.labels.op === 'trim') of(v).writes += s.value;
    } else if (s.name === 'tricopy_nbd_bytes_total' && (s.labels.op === 'read' || s.labels.op === 'write')) {
      of(v).bytes += s.value;
    } else if (s.name === 'tricopy_nbd_request_duration_seconds_sum' && (s.labels.op === 'read' || s.labels.op === 'write')) {
      of(v).latencySum += s.value;
    } else if (s.name === 'tricopy_nbd_request_duration_seconds_count' && (s.labels.op === 'read' || s.labels.op === 'write')) {
      of(v).latencyCount += s.value;
    }
  }
  return out;
}

export function groupFigures(series: Series[]): Map<string, GroupFigures> {
  const out = new Map<string, GroupFigures>();
  for (const s of series) {
    const { group, role } = s.labels;
    if (group === undefined || role === undefined) continue;
    const key = `${group}/${role}`;
    const g = out.get(key) ?? { role, lagSeconds: 0, lagBytes: 0, lagEntries: 0, journalUsed: null, journalCapacity: null };
    if (s.name === 'tricopy_group_lag_seconds') g.lagSeconds = s.value;
    else if (s.name === 'tricopy_group_lag_bytes') g.lagBytes = s.value;
    else if (s.name === 'tricopy_group_lag_entries') g.lagEntries = s.value;
    else if (s.name === 'tricopy_group_journal_used_bytes') g.journalUsed = s.value;
    else if (s.name === 'tricopy_group_journal_capacity_bytes') g.journalCapacity = s.value;
    else continue;
    out.set(key, g);
  }
  return out;
}

/** Samples from two scrapes `seconds` apart: rates per volume, figures per group (primary side). */
export function samplesBetween(node: string, time: string, seconds: number, before: Map<string, VolumeCounters>,
  after: Map<string, VolumeCounters>, groups: Map<string, GroupFigures>): PerfSample[] {
  const out: PerfSample[] = [];
  for (const [volume, a] of after) {
    const b = before.get(volume);
    if (!b || seconds <= 0) continue;
    const reads = Math.max(0, a.reads - b.reads);
    const writes = Math.max(0, a.writes - b.writes);
    const count = Math.max(0, a.latencyCount - b.latencyCount);
    out.push({
      time, node, subject: `volume:${volume}`, intervalSeconds: seconds, iops: (reads + writes) / seconds,
      readRatio: reads + writes > 0 ? reads / (reads + writes) : null, mibPerSecond: Math.max(0, a.bytes - b.bytes) / seconds / 1048576,
      latencyMs: count > 0 ? ((a.latencySum - b.latencySum) / count) * 1000 : null, lagSeconds: null, lagBytes: null, journalPercent: null,
    });
  }
  for (const [key, g] of groups) {
    if (g.role !== 'primary') continue;
    out.push({
      time, node, subject: `group:${key.split('/')[0]}`, intervalSeconds: seconds, iops: null, readRatio: null, mibPerSecond: null, latencyMs: null,
      lagSeconds: g.lagSeconds, lagBytes: g.lagBytes,
      journalPercent: g.journalUsed !== null && g.journalCapacity ? (g.journalUsed / g.journalCapacity) * 100 : null,
    });
  }
  return out;
}

/** The keys of samples the resolution tiers drop (rows of each series oldest first, as the store lists them). */
export function thinnedKeys(rows: Array<{ key: string; series: string; timeMs: number }>, nowMs: number): string[] {
  const dels: string[] = [];
  const lastKept = new Map<string, number>();
  for (const { key, series, timeMs } of rows) {
    if (keepSample(timeMs, nowMs - timeMs, lastKept.get(series) ?? null)) lastKept.set(series, timeMs);
    else dels.push(key);
  }
  return dels;
}

/** Whether a sample `ageMs` old at `timeMs` is kept by the resolution tiers (the first of its bucket). */
export function keepSample(timeMs: number, ageMs: number, previousKeptMs: number | null): boolean {
  if (ageMs > sampleRetentionMs) return false;
  const tier = [...sampleTiers].reverse().find((t) => ageMs > t.ageMs);
  if (!tier || previousKeptMs === null) return true;
  return Math.floor(timeMs / tier.bucketMs) !== Math.floor(previousKeptMs / tier.bucketMs);
}
