// Whether both ends of every pair agree on what the pair is: role (one primary, one secondary),
// state and suspend cause, mode, fence level, fence group, consistency group and generation; and
// whether each end runs on the data directory the pair was built with. Every procedure must leave
// them agreeing; `topology status` shows a disagreement as such, with the command that resolves it.
// Pure: computed from the records the nodes report.
import type { PairStatus } from '../contracts/pairs';
import { type Facts, type PairEnds, otherEnd, siteFacts } from './facts';

export type EndsState =
  | 'agree'
  | 'disagree'
  /** The ends cannot be compared now: a site does not answer, or the link between them is down. */
  | 'unchecked';

export interface PairAgreement {
  pair: string;
  state: EndsState;
  /** What differs (disagree) or why it was not compared (unchecked); empty when they agree. */
  problems: string[];
  hint: string | null;
}

/** A secondary took the pair over (SSWS) and its old primary learnt it: an expected pairing, not a disagreement. */
export function takenOver(a: PairStatus, b: PairStatus): boolean {
  const [p, s] = a.role === 'primary' ? [a, b] : [b, a];
  return p.role === 'primary' && p.suspendCause === 'takeover-by-peer' && s.role === 'secondary' && s.code === 'SSWS';
}

export function checkAgreement(f: Facts, e: PairEnds, active: string | null): PairAgreement {
  const [x, y] = e.sites;
  const sx = siteFacts(f, x);
  const sy = siteFacts(f, y);
  const identity = identityProblems(f, e);
  if (identity.length > 0) return { pair: e.name, state: 'disagree', problems: identity, hint: rebuildHint(f, active) };
  if (!sx.info || !sy.info) {
    const down = !sx.info ? x : y;
    return { pair: e.name, state: 'unchecked', problems: [`${down} does not answer`], hint: null };
  }
  const a = e.at.get(x);
  const b = e.at.get(y);
  if (!a || !b) return oneSided(f, e, a ? x : y, a ? y : x, active);
  if (!a.peer.connected || !b.peer.connected) {
    return { pair: e.name, state: 'unchecked', problems: [`the link between ${x} and ${y} is down`], hint: null };
  }
  const problems = differences(x, a, y, b);
  if (problems.length === 0) return { pair: e.name, state: 'agree', problems, hint: null };
  return { pair: e.name, state: 'disagree', problems, hint: disagreementHint(x, a, y, b) };
}

function differences(x: string, a: PairStatus, y: string, b: PairStatus): string[] {
  const out: string[] = [];
  const differs = (what: string, va: unknown, vb: unknown): void => {
    if (va !== vb) out.push(`${what} ${String(va)} at ${x}, ${String(vb)} at ${y}`);
  };
  if (a.role === b.role) out.push(`both ${x} and ${y} are the ${a.role}`);
  differs('mode', a.mode, b.mode);
  differs('fence', a.fence, b.fence);
  differs('fence group', a.fenceGroup ?? '-', b.fenceGroup ?? '-');
  differs('group', a.group ?? '-', b.group ?? '-');
  if (!takenOver(a, b)) {
    differs('state', describeState(a), describeState(b));
    differs('generation', a.generation, b.generation);
  }
  return out;
}

function describeState(p: PairStatus): string {
  return p.suspendCause ? `${p.state} (${p.suspendCause})` : p.state;
}

function disagreementHint(x: string, a: PairStatus, y: string, b: PairStatus): string {
  if (a.role === b.role && a.role === 'secondary') return `run tricopy pair swap ${a.name} at the node that should be the primary`;
  if (a.role === b.role) return `both accept writes: stop the application at one of them, then fail back or over with tricopy topology failback|failover <file>`;
  const primary = a.role === 'primary' ? x : y;
  if (a.fence !== b.fence || a.fenceGroup !== b.fenceGroup) {
    return `rerun the last topology command: it sets the protection at the primary ${primary}, and the secondary follows it`;
  }
  return `states settle within seconds after a command; if it persists, rerun the last topology command`;
}

/** A pair one reachable end holds and the other does not. */
function oneSided(f: Facts, e: PairEnds, holder: string, missing: string, active: string | null): PairAgreement {
  const m = siteFacts(f, missing);
  const p = e.at.get(holder)!;
  const hasVolume = m.volumes.some((v) => v.name === p.peer.volume);
  const why = hasVolume
    ? `${missing} no longer has it (it took the pair over and dissolved it, or it was deleted there)`
    : `${missing} has neither the pair nor volume ${p.peer.volume} (it lost its data)`;
  return {
    pair: e.name, state: 'disagree', problems: [`exists only at ${holder}: ${why}`],
    hint: rebuildHint(f, active),
  };
}

/** The command that dissolves or rebuilds a pair left over or lost: repair at the primary site, failback from elsewhere. */
function rebuildHint(f: Facts, active: string | null): string {
  const primary = f.t.primary.site;
  if (active === primary) return 'tricopy topology repair <file> --wait';
  if (active === null) return 'fail over first (see the hint above), then repair or fail back';
  return `tricopy topology failback <file> --to ${primary} --wait (stop the application at ${active} first)`;
}

/** An end running on another data directory than the one the pair was built with. */
function identityProblems(f: Facts, e: PairEnds): string[] {
  const out: string[] = [];
  for (const [at, p] of e.at) {
    const peer = siteFacts(f, otherEnd(e, at));
    if (!p.peerDataDirId || !peer.info || peer.info.dataDirId === p.peerDataDirId) continue;
    out.push(`${peer.site} runs on another data directory (${short(peer.info.dataDirId)}) than the one the pair was built with (${short(p.peerDataDirId)}), as ${at} recorded: it lost its data`);
  }
  return out;
}

/** Sites whose data directory is not the one some pair was built with there. */
export function sitesWithOtherDataDir(f: Facts): Set<string> {
  const out = new Set<string>();
  for (const e of f.pairs) {
    for (const [at, p] of e.at) {
      const peer = siteFacts(f, otherEnd(e, at));
      if (p.peerDataDirId && peer.info && peer.info.dataDirId !== p.peerDataDirId) out.add(peer.site);
    }
  }
  return out;
}

function short(id: string): string {
  return id.slice(0, 8);
}
