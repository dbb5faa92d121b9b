// "Loss if failed over here": what the application would lose if the site holding the newest writes
// (the writer) were lost now and it moved to another site with that site's own copy. Counted only
// from facts the ends of each copy report (states, suspend causes, fence levels, journal positions,
// delta records, recorded regions, volumes and data-directory identities), never from hope: where
// the facts do not bound the loss, the claim says "unknown" and why, or "everything written at …".
// Pure: computed from Facts.
import type { PairStatus } from '../contracts/pairs';
import { formatBytes } from '../common/units';
import { sitesWithOtherDataDir } from './agreement';
import { type Facts, type PairEnds, reachable, siteFacts, volumesKeptAt } from './facts';
import { pairName } from './topology-file';
import type { Writer } from './writer';

/**
 * none: every acknowledged write is there. bounded: at most `writes` writes (journal entries)
 * and/or `bytes` bytes are missing. unknown: the facts cannot tell. unbounded: writes are missing
 * and nothing bounds how many.
 */
export type LossKind = 'none' | 'bounded' | 'unknown' | 'unbounded';

export interface LossClaim {
  kind: LossKind;
  writes: number | null;
  bytes: number | null;
  seconds: number | null;
  text: string;
}

/**
 * One volume's claim; bounded claims with the same `share` count once (a consistency group's lag).
 * `noCopy`: no copy of the writer's data reaches the site (nothing to say about it when it is away).
 */
interface VolumeClaim extends LossClaim {
  share?: string;
  noCopy?: boolean;
  /** The text names no amount: the site's claim adds the changed regions of all volumes once, then `note`. */
  regions?: boolean;
  note?: string;
}

const kindOrder: LossKind[] = ['none', 'bounded', 'unknown', 'unbounded'];

export function lossAt(f: Facts, site: string, writer: Writer): LossClaim {
  const w = writer.site;
  if (w === null) return claim('unknown', `unknown: ${writer.basis}`);
  if (site === w) return writer.reachable ? claim('none', 'none (the application runs here)') : claim('unknown', `unknown: ${site} held the newest writes and does not answer`);
  const s = siteFacts(f, site);
  if (s.info && sitesWithOtherDataDir(f).has(site)) {
    return claim('unbounded', `everything: ${site} runs on another data directory than the one its copies were built with (it lost its data)`);
  }
  const kept = volumesKeptAt(f, site);
  const missing = kept.filter((v) => !s.volumes.some((x) => x.name === v));
  if (s.info && missing.length > 0) return claim('unbounded', `everything: ${site} has no volume ${missing.join(', ')} (it lost its data)`);
  const claims = kept.map((v) => volumeLoss(f, v, w, site));
  const total = combine(claims, kept);
  if (s.info) return total;
  // Away: the writer's side of the copy tells what the site would hold if it returns with its data.
  const known = total.kind !== 'unknown' && !claims.some((c) => c.noCopy);
  return claim('unknown', `unknown: ${site} does not answer${known ? `; if it returns with its data: ${total.text}` : ''}`);
}

function claim(kind: LossKind, text: string, amounts: Partial<Pick<LossClaim, 'writes' | 'bytes' | 'seconds'>> = {}): VolumeClaim {
  return { kind, writes: amounts.writes ?? null, bytes: amounts.bytes ?? null, seconds: amounts.seconds ?? null, text };
}

/** The copy of volume `v` at `site`, against the writer `w`: directly, or through the third site (cascade). */
function volumeLoss(f: Facts, v: string, w: string, site: string): VolumeClaim {
  const direct = legLoss(f, v, w, site);
  if (direct) return direct;
  const mid = f.sites.map((x) => x.site).find((x) => x !== w && x !== site)!;
  const first = legLoss(f, v, w, mid);
  const second = legLoss(f, v, mid, site);
  if (first && second) return chain(first, second, mid);
  return noCopy(f, v, w, site);
}

function ends(f: Facts, v: string, a: string, b: string): PairEnds | undefined {
  const name = pairName(f.t, v, a, b);
  return f.pairs.find((e) => e.name === name);
}

/** The claim for a copy `from` → `to` of `v`, or undefined when there is no such copy. */
function legLoss(f: Facts, v: string, from: string, to: string): VolumeClaim | undefined {
  const e = ends(f, v, from, to);
  if (!e) return undefined;
  const atFrom = e.at.get(from);
  const atTo = e.at.get(to);
  if (atTo) {
    if (atTo.role === 'primary' && atTo.suspendCause === 'takeover-by-peer') return tookOverLoss(from, to, atFrom);
    if (atTo.role !== 'secondary' || atTo.code === 'SSWS') return undefined;
  } else if (!atFrom || !(atFrom.role === 'primary' || atFrom.code === 'SSWS')) {
    return undefined;
  } else if (reachable(f, to)) {
    return claim('unbounded', `everything: ${to} has no copy of ${v} from ${from} (pair ${e.name} exists only at ${from})`);
  } else if (atFrom.code === 'SSWS') {
    return tookOverLoss(from, to, atFrom);
  }
  const rec = atFrom ?? atTo!;
  const incomplete = [atFrom, atTo].find((p) => p && (p.interruptedCopyPercent !== null || p.code === 'COPY'));
  if (incomplete) {
    const pct = incomplete.progressPercent ?? incomplete.interruptedCopyPercent;
    return claim('unbounded', `everything: the copy of ${v} at ${to} is incomplete (${incomplete.code === 'COPY' ? 'copying' : 'copy stopped'} at ${pct ?? 0}%): not a usable image`);
  }
  return rec.mode === 'sync' ? syncLoss(from, to, rec, atFrom) : asyncLoss(f, from, to, rec, atFrom, atTo);
}

/** `from` took the pair over from `to`; its record (SSWS) holds the regions written since. */
function tookOverLoss(from: string, to: string, atFrom: PairStatus | undefined): VolumeClaim {
  if (!atFrom) return claim('unbounded', `everything written at ${from} since it took over from ${to}`);
  return { ...claim('bounded', `writes made at ${from} since it took over`, { bytes: atFrom.differentialBytes }), regions: true,
    note: `${to}'s own unsent writes would be discarded` };
}

function syncLoss(from: string, to: string, rec: PairStatus, atFrom: PairStatus | undefined): VolumeClaim {
  if (rec.state === 'duplex') return claim('none', 'nothing (sync copy in step)');
  // With fence data the primary refuses host writes while suspended by anything but the operator
  // (a failure, a restart): whatever `to` did not get was never acknowledged.
  if (rec.fence === 'data' && rec.suspendCause !== 'operator' && rec.suspendCause !== 'takeover-by-peer') {
    return claim('none', `nothing acknowledged (${from} refused every write ${to} did not get: fence data)`);
  }
  const how = rec.suspendCause === 'operator' ? 'split' : `suspended (${rec.suspendCause ?? 'unknown cause'}, fence ${rec.fence})`;
  if (!atFrom) return claim('unbounded', `every write ${from} accepted since the sync copy was ${how}`);
  return { ...claim('bounded', `writes since the sync copy was ${how}`, { bytes: atFrom.differentialBytes }), regions: true };
}

function asyncLoss(f: Facts, from: string, to: string, rec: PairStatus, atFrom: PairStatus | undefined, atTo: PairStatus | undefined): VolumeClaim {
  const group = rec.group ?? f.t.name;
  if (rec.state !== 'duplex') {
    if (!atFrom) return claim('unbounded', `every write ${from} accepted since the async copy was suspended`);
    return { ...claim('bounded', `writes since the async copy was suspended`, { bytes: atFrom.differentialBytes }), regions: true };
  }
  const sender = reachable(f, from) ? siteFacts(f, from).groups.find((g) => g.group === group && g.role === 'primary') : undefined;
  if (sender) {
    const lag = sender.lag;
    return { ...claim('bounded', `${formatBytes(lag.bytes)} / ${lag.seconds.toFixed(1)} s of writes not yet applied there (${lag.entries} entries)`,
      { writes: lag.entries, bytes: lag.bytes, seconds: lag.seconds }), share: `lag ${group}` };
  }
  const received = siteFacts(f, to).groups.find((g) => g.group === group && g.role === 'secondary')?.receivedSeq;
  if (received === undefined || !atTo) return claim('unknown', `unknown: ${from} does not answer and ${to}'s journal position is not known`);
  const newest = newestTagged(f, atTo.peer.node, group, to);
  if (!newest) {
    return claim('unknown', `unknown: ${from} does not answer; ${to} received its writes through entry ${received}, and what ${from} acknowledged after that is lost (no survivor records its stream)`);
  }
  const writes = Math.max(0, newest.seq - received);
  if (writes === 0) {
    return claim('none', `nothing acknowledged: ${to} received ${from}'s writes through entry ${received}, the newest ${newest.site} records (every acknowledged write reached ${newest.site})`);
  }
  return { ...claim('bounded', `at most ${writes} writes: ${to} received ${from}'s writes through entry ${received}, ${newest.site} holds them through entry ${newest.seq} (fail over with --newest-from ${newest.site} to lose none)`,
    { writes }), share: `tail ${group}` };
}

/** The newest entry of `origin`'s group stream a survivor's usable delta record holds (the sync copy tags every write). */
function newestTagged(f: Facts, origin: string, group: string, except: string): { site: string; seq: number } | undefined {
  let best: { site: string; seq: number } | undefined;
  for (const s of f.sites) {
    if (s.site === except || !s.info) continue;
    for (const p of s.pairs) {
      const d = p.deltaRecord;
      if (d && d.usable && d.origin === origin && d.group === group && (!best || d.newestSeq > best.seq)) best = { site: s.site, seq: d.newestSeq };
    }
  }
  return best;
}

/** writer → mid → site (a cascade): what mid lacks plus what mid has not yet sent on. */
function chain(first: VolumeClaim, second: VolumeClaim, mid: string): VolumeClaim {
  const kind = worst([first.kind, second.kind]);
  const sum = (a: number | null, b: number | null): number | null => (a === null || b === null ? null : a + b);
  const text = first.kind === 'none' ? `${second.text} (through ${mid}, which has every write)`
    : first.kind === 'bounded' ? `${first.text} at ${mid}, then ${second.text}` : `${first.text} (its copy comes from ${mid})`;
  if (kind !== 'bounded') return claim(kind, text);
  const c = claim('bounded', text, { writes: sum(first.writes ?? 0, second.writes), bytes: sum(first.bytes ?? 0, second.bytes), seconds: sum(first.seconds ?? 0, second.seconds) });
  return second.share ? { ...c, share: second.share } : c;
}

function noCopy(f: Facts, v: string, w: string, site: string): VolumeClaim {
  const follows = f.pairs.filter((e) => e.volume === v && e.at.get(site)?.role === 'secondary').map((e) => e.sites.find((x) => x !== site)!);
  // Without the volume's name: the same words for every volume are said once.
  const why = follows.length > 0 ? `its copies follow ${follows.join(', ')}, not ${w}` : `no copy reaches it from ${w}`;
  return { ...claim('unbounded', `everything written at ${w} since ${site} last received from it: ${why}`), noCopy: true };
}

function worst(kinds: LossKind[]): LossKind {
  return kinds.reduce((a, b) => (kindOrder.indexOf(b) > kindOrder.indexOf(a) ? b : a), 'none');
}

/** The site's claim from its volumes': the worst kind; amounts summed, a shared amount (a group's lag) counted once. */
function combine(claims: VolumeClaim[], volumes: string[]): LossClaim {
  const kind = worst(claims.map((c) => c.kind));
  const texts = new Set(claims.map((c) => c.text));
  const text = texts.size <= 1 ? [...texts][0] ?? 'nothing to lose: no volume is kept here'
    : claims.map((c, i) => `${volumes[i]}: ${c.text}`).join('; ');
  if (kind !== 'bounded') return { kind, writes: null, bytes: null, seconds: null, text: kind === 'none' ? [...texts][0]! : text };
  const counted = new Map<string, VolumeClaim>();
  claims.forEach((c, i) => {
    if (c.kind === 'bounded') counted.set(c.share ?? `volume ${volumes[i]}`, c);
  });
  const add = (pick: (c: VolumeClaim) => number | null): number | null => {
    let n = 0;
    for (const c of counted.values()) {
      const x = pick(c);
      if (x === null) return null;
      n += x;
    }
    return n;
  };
  const seconds = Math.max(0, ...[...counted.values()].map((c) => c.seconds ?? 0));
  const bytes = add((c) => c.bytes);
  const regions = claims.some((c) => c.regions) && bytes !== null ? `: at most ${formatBytes(bytes)} of changed regions` : '';
  const note = claims.find((c) => c.note)?.note;
  return { kind, writes: add((c) => c.writes), bytes, seconds: counted.size > 0 ? seconds : null, text: `${text}${regions}${note ? `; ${note}` : ''}` };
}
