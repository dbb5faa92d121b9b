// The human form of `topology status`: the headline with every missing protection, the sites with
// what a failover to each would lose, every copy with both ends' agreement and its delta method,
// then the reasons in full (nothing is cut to fit a column).
import { formatBytes } from '../common/units';
import type { TopologyStatus } from '../topology/orchestrator';
import { table } from './format';

export function renderTopologyStatus(status: TopologyStatus, file: string): string {
  const lines: string[] = [];
  const where = status.activeSite ? `application at ${status.activeSite}`
    : status.writer.site ? `no site accepts writes (the newest are at ${status.writer.site}${status.writer.reachable ? '' : ', which does not answer'})` : 'no site accepts writes';
  const verdict = status.healthy ? 'healthy' : `NOT protected: ${status.missing.map((m) => m.what).join('; ')}`;
  lines.push(`topology ${status.name} (${status.layout}): ${where} — ${verdict}`);
  lines.push(table(['SITE', 'ROLE', 'REACHABLE', 'WRITABLE', 'LOSS IF FAILED OVER HERE'], status.sites.map((s) => [
    s.site, s.role, s.reachable ? 'yes' : 'no', s.fenced ? 'no: fenced' : s.writable.join(',') || '-', s.atRisk.text,
  ])));
  lines.push(table(['COPY', 'FROM', 'TO', 'MODE', 'STATE', 'CODE', 'COPIED', 'LAG', 'DELTA', 'ENDS'], status.legs.map((l) => [
    l.pair, l.from, l.to, l.mode, l.state, l.code, l.progressPercent === null ? '-' : `${l.progressPercent}%`,
    l.lagSeconds === null ? '-' : `${l.lagSeconds.toFixed(1)}s${l.lagBytes !== null ? ` ${formatBytes(l.lagBytes)}` : ''}`,
    l.deltaMethod ? `${l.deltaMethod} ${formatBytes(l.deltaBytes ?? 0)}` : '-', l.ends,
  ])));
  for (const m of status.missing) lines.push(`missing: ${m.what}: ${m.detail}`, `  hint: ${m.hint}`);
  for (const s of status.sites) {
    const said = status.missing.some((m) => m.unreachable === s.site && m.detail === s.error);
    if (!s.reachable && !said) lines.push(`${s.site}: does not answer: ${s.error ?? ''}`);
  }
  const unchecked = new Map<string, string[]>();
  for (const p of status.pairs.filter((x) => x.state === 'unchecked')) {
    const why = p.problems.join('; ');
    unchecked.set(why, [...(unchecked.get(why) ?? []), p.pair]);
  }
  for (const [why, pairs] of unchecked) lines.push(`ends not compared (${why}): ${pairs.join(', ')}`);
  for (const l of status.legs) {
    if (l.code === 'PSUE' || l.code === 'PSUS' || l.code === 'SSWS') lines.push(`${l.pair}: ${l.reason}`);
    if (l.deltaMethod && l.deltaNote) lines.push(`${l.pair}: delta copy by ${l.deltaMethod}: ${l.deltaNote}`);
  }
  for (const s of status.sites) {
    if (s.deltaResync) lines.push(`a failover to ${s.site} brings the async site up to date by ${s.deltaResync.method === 'sequence' ? 'sequence numbers' : 'comparing whole volumes'}: ${s.deltaResync.why}`);
    for (const d of s.deltaRecords) lines.push(`delta record at ${s.site} for ${d.volume}: ${d.text}`);
  }
  return lines.join('\n').replaceAll('<file>', file);
}
