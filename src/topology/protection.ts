// What protection is missing now, each with the command that restores it: the headline of
// `topology status` names every one, and says "healthy" only when there is none. Protected means:
// the application runs at the primary site of the file; every volume has a sync copy in step at
// another site and every async volume an async copy in step (link up) at a third; no site refuses
// the application's writes (fence); the ends of every pair agree; no other site accepts writes.
import type { PairAgreement } from './agreement';
import { type Facts, type SiteFacts, siteFacts, siteOfNode } from './facts';
import type { Writer } from './writer';
import { writableVolumes } from './writer';
import { asyncVolumes } from './topology-file';

export interface MissingProtection {
  /** Short words for the headline: "no sync copy", "async site unreachable for 40 s". */
  what: string;
  /** The site that does not answer, when that is what this is about. */
  unreachable?: string;
  detail: string;
  /** The command to run (or what to do) instead. */
  hint: string;
}

/** A copy as status lists it (see status.ts). */
export interface LegView {
  pair: string;
  volume: string;
  from: string;
  to: string;
  mode: 'sync' | 'async';
  code: string;
  reason: string;
}

export function missingProtection(f: Facts, active: string | null, writer: Writer, legs: LegView[], agreements: PairAgreement[], now: number): MissingProtection[] {
  const out: MissingProtection[] = [];
  const primary = f.t.primary.site;
  if (active === null) {
    out.push(noActiveSite(f, writer));
  } else {
    if (active !== primary) {
      out.push({ what: `application at ${active}, not ${primary}`, detail: `the application runs at ${active} after a failover; the layout of the file is not in place`,
        hint: `when ${primary} is back: tricopy topology failback <file> --to ${primary} --wait` });
    }
    const a = siteFacts(f, active);
    const fenced = a.volumes.find((v) => v.hostWrites.state === 'refused');
    if (fenced) {
      out.push({ what: `writes refused: ${active} is fenced`,
        detail: `${fenced.hostWrites.reason ?? 'fence data'}; every write and flush fails with EIO, for clients attached before and after alike (the export stays writable, reads work)`,
        hint: `writes resume by themselves once the sync copy can be updated again; to go on without it (an operator decision): tricopy topology repair <file>` });
    }
    out.push(...copyGaps(f, a, legs, now));
    for (const s of f.sites) {
      if (s.site !== active && s.info && writableVolumes(f, s).length === f.t.volumes.length && s.volumes.length > 0) {
        out.push({ what: `${s.site} also accepts writes`, detail: `${s.site}'s copies are writable too: the application must run at one site only`,
          hint: `keep the application stopped at ${s.site}; tricopy topology failback|repair <file> turns its copies back into secondaries` });
      }
    }
  }
  for (const g of agreements.filter((x) => x.state === 'disagree')) {
    out.push({ what: `ends of ${g.pair} disagree`, detail: g.problems.join('; '), hint: g.hint ?? 'rerun the last topology command' });
  }
  const named = new Set(out.map((m) => m.unreachable));
  for (const s of f.sites.filter((x) => !x.info && !named.has(x.site))) {
    out.push({ what: `${s.site} does not answer${downFor(f, s, now)}`, unreachable: s.site, detail: s.error ?? 'no answer',
      hint: `check the node at ${s.node}; when it is back: ${active === f.t.primary.site ? 'tricopy topology repair <file> --wait' : `tricopy topology failback <file> --to ${f.t.primary.site} --wait`}` });
  }
  return out;
}

function noActiveSite(f: Facts, writer: Writer): MissingProtection {
  if (writer.site !== null && !writer.reachable) {
    const survivors = f.sites.filter((s) => s.info && s.site !== writer.site).map((s) => s.site);
    const to = survivors.includes(f.t.sync.site) ? f.t.sync.site : survivors[0];
    return { what: 'no site accepts writes', detail: `${writer.site} held the newest writes and does not answer (${writer.basis})`, unreachable: writer.site,
      hint: to ? `read LOSS IF FAILED OVER HERE, then fail over (docs/runbook.md): tricopy topology failover <file> --to ${to}`
        : 'no site answers: start the nodes (docs/runbook.md)' };
  }
  return { what: 'no site accepts writes', detail: writer.basis, hint: 'tricopy topology apply <file> --wait creates the copies; after a disaster see docs/runbook.md' };
}

/** The sync and async copies the active site needs, and why each is missing. */
function copyGaps(f: Facts, a: SiteFacts, legs: LegView[], now: number): MissingProtection[] {
  const out: MissingProtection[] = [];
  const fromActive = legs.filter((l) => l.from === a.site);
  const syncGaps = f.t.volumes.filter((v) => !fromActive.some((l) => l.volume === v.name && l.mode === 'sync' && l.code === 'PAIR' && linkUp(f, a, l.to)));
  if (syncGaps.length > 0) out.push(syncGap(f, a, fromActive, syncGaps.map((v) => v.name), now));
  // Cascade: the async copy leaves from the site the active one copies to synchronously.
  const senders = f.t.layout === 'cascade' ? new Set([a.site, ...fromActive.filter((l) => l.mode === 'sync').map((l) => l.to)]) : new Set([a.site]);
  const asyncLegs = legs.filter((l) => senders.has(l.from) && l.mode === 'async');
  const uncopied = asyncVolumes(f.t).filter((v) => !asyncLegs.some((l) => l.volume === v.name)).map((v) => v.name);
  if (uncopied.length > 0) {
    out.push({ what: 'no async copy', detail: `no async copy of ${uncopied.join(', ')} leaves ${[...senders].join(' or ')}`, hint: repairHint(f, a) });
    return out;
  }
  for (const v of asyncVolumes(f.t)) {
    const leg = asyncLegs.find((l) => l.volume === v.name)!;
    const sender = siteFacts(f, leg.from);
    if (leg.code !== 'PAIR') {
      out.push({ what: `async copy to ${leg.to} ${leg.code === 'COPY' ? 'still copying' : 'suspended'}`, detail: `${leg.pair} ${leg.code}: ${leg.reason}`, hint: repairHint(f, a) });
      break;
    }
    if (!linkUp(f, sender, leg.to)) {
      const far = siteFacts(f, leg.to);
      // The CLI may reach a site its peer cannot: then it is the link that is down.
      const what = far.info ? `async copy: link ${leg.from}–${leg.to} down` : `async site ${leg.to} unreachable`;
      out.push({ what: `${what}${downFor(f, far, now, sender)}`, unreachable: far.info ? undefined : leg.to, detail: `${leg.from} cannot reach ${leg.to}: its journal keeps the writes meanwhile`,
        hint: `when ${leg.to} is back it catches up by itself; if its copies stay suspended: tricopy topology repair <file> --wait` });
      break;
    }
  }
  return out;
}

function syncGap(f: Facts, a: SiteFacts, fromActive: LegView[], volumes: string[], now: number): MissingProtection {
  const legs = fromActive.filter((l) => l.mode === 'sync' && volumes.includes(l.volume));
  if (legs.length === 0) {
    return { what: 'no sync copy', detail: `no sync copy of ${volumes.join(', ')} leaves ${a.site}`, hint: repairHint(f, a) };
  }
  const to = legs[0]!.to;
  const target = siteFacts(f, to);
  if (!target.info || !linkUp(f, a, to)) {
    const what = target.info ? `no sync copy: link ${a.site}–${to} down` : `no sync copy: ${to} unreachable`;
    return { what: `${what}${downFor(f, target, now, a)}`, unreachable: target.info ? undefined : to, detail: legs.map((l) => `${l.pair} ${l.code}: ${l.reason}`).join('; '),
      hint: `wait for ${to} (the copies resynchronise by themselves), or go on without it: tricopy topology repair <file>` };
  }
  const state = legs.some((l) => l.code === 'PSUS') ? 'split' : legs.some((l) => l.code === 'COPY') ? 'copying' : 'suspended';
  return { what: `no sync copy: ${state}`, detail: legs.map((l) => `${l.pair} ${l.code}: ${l.reason}`).join('; '), hint: repairHint(f, a) };
}

function repairHint(f: Facts, a: SiteFacts): string {
  return a.site === f.t.primary.site ? 'tricopy topology repair <file> --wait' : `tricopy topology failback <file> --to ${f.t.primary.site} --wait restores the layout`;
}

function linkUp(f: Facts, from: SiteFacts, to: string): boolean {
  const node = siteFacts(f, to).info?.name;
  const links = from.info?.peerLinks ?? [];
  const link = links.find((l) => (node ? l.node === node : siteOfNode(f, l.node) === to));
  return link?.up ?? false;
}

/** " for 40 s" when a reachable site reports its link to `s` down since then. */
function downFor(f: Facts, s: SiteFacts, now: number, from?: SiteFacts): string {
  const observers = from ? [from] : f.sites.filter((x) => x.info && x !== s);
  const since = observers.flatMap((o) => (o.info?.peerLinks ?? []).filter((l) => !l.up && siteOfNode(f, l.node) === s.site)).map((l) => Date.parse(l.since));
  if (since.length === 0) return '';
  return ` for ${Math.max(0, Math.round((now - Math.min(...since)) / 1000))} s`;
}
