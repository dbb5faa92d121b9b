// The promises tricopy makes, checked against what the simulated hosts saw:
//   1. sync pairs with fence data: an acknowledged write is on the secondary when it is acknowledged;
//   2. what a copy must hold: every write acknowledged by its node (and, for a sync secondary, every
//      forwarded one) is there, not overwritten by an older write; after a power loss, every write
//      covered by a completed FLUSH (or written with FUA) still is;
//   3. an async secondary holds a prefix of its primary's write history across the group's volumes;
//   4. the differential records (with journals and activity logs) cover every sector where the two
//      copies of a pair differ, so a resync makes them equal;
//   5. at the end, after faults healed and commands ended: every pair duplex, both ends agree on
//      every attribute, and every copy is byte-equal.
import type { PairRecord } from '../src/replication/pairs/pair-model';
import type { PairInternals } from '../src/replication/status';
import { decodeVolume, sectorBytes } from './blocks';
import type { Cluster } from './cluster';
import { type HostFlush, type HostWrite, History } from './history';

type WriteSet = Set<number>;

export class Checker {
  /** node → volume → writes its copy must hold. */
  private readonly mustHave = new Map<string, Map<string, WriteSet>>();
  /** node → volume → writes its copy must hold even after a power loss. */
  private readonly durable = new Map<string, Map<string, WriteSet>>();
  /** When each volume's application moved to its active node (logical time): the async history starts there. */
  private readonly epochStart = new Map<string, number>();
  /** node/pair → the secondary holds a consistent image (it reached duplex since its last copy began). */
  private readonly consistent = new Map<string, boolean>();
  private violations = 0;
  checks = 0;

  constructor(private readonly cluster: Cluster, private readonly history: History) {
    for (const node of cluster.nodes.keys()) {
      this.mustHave.set(node, new Map());
      this.durable.set(node, new Map());
    }
  }

  private set(map: Map<string, Map<string, WriteSet>>, node: string, volume: string): WriteSet {
    const byVolume = map.get(node)!;
    let s = byVolume.get(volume);
    if (!s) {
      s = new Set();
      byVolume.set(volume, s);
    }
    return s;
  }

  private readonly reported = new Set<string>();

  fail(text: string): void {
    if (this.reported.has(text)) return;
    this.reported.add(text);
    this.violations++;
    if (this.violations <= 20) this.cluster.fail(text);
  }

  /**
   * A pair created at `node`: a new secondary is consistent only if it starts in duplex (no initial
   * copy); else once its copy ends. (A pair of the same name that existed before says nothing.)
   */
  notePairCreated(node: string, pair: string, role: unknown): void {
    if (role !== 'secondary') return;
    const record = this.cluster.node(node).service?.pairRecords().find((r) => r.name === pair);
    this.consistent.set(`${node}/${pair}`, record?.state === 'duplex');
  }

  /** A pair-state event at `node`: a secondary is consistent again once it reaches duplex. */
  noteTransition(node: string, pair: string, role: unknown, to: unknown): void {
    if (role !== 'secondary') return;
    if (to === 'initial-copying' || to === 'duplex-pending') this.consistent.set(`${node}/${pair}`, false);
    if (to === 'duplex') this.consistent.set(`${node}/${pair}`, true);
  }

  // --- observations from the hosts --------------------------------------------------------------

  acked(w: HostWrite, fua: boolean): void {
    this.set(this.mustHave, w.node, w.volume).add(w.id);
    if (fua) this.set(this.durable, w.node, w.volume).add(w.id);
    for (const p of this.forwardingSyncPairs(w.node, w.volume)) {
      const peer = p.record.peer.node;
      this.checkSecondaryHas(w, peer, p.record.peerVolume);
      this.set(this.mustHave, peer, p.record.peerVolume).add(w.id);
      if (fua) this.set(this.durable, peer, p.record.peerVolume).add(w.id);
    }
  }

  flushed(f: HostFlush): void {
    const must = this.set(this.mustHave, f.node, f.volume);
    const covered = this.history.ackedBefore(f.volume, f.node, f.issued).filter((w) => must.has(w.id)).map((w) => w.id);
    const durable = this.set(this.durable, f.node, f.volume);
    for (const id of covered) durable.add(id);
    for (const p of this.forwardingSyncPairs(f.node, f.volume)) {
      const peerMust = this.set(this.mustHave, p.record.peer.node, p.record.peerVolume);
      const peerDurable = this.set(this.durable, p.record.peer.node, p.record.peerVolume);
      for (const id of covered) if (peerMust.has(id)) peerDurable.add(id);
    }
  }

  /** Sync pairs with fence data that forward the volume's writes from `node` now. */
  private forwardingSyncPairs(node: string, volume: string): Array<{ record: PairRecord }> {
    const service = this.cluster.node(node).service;
    if (!service || !this.cluster.node(node).up) return [];
    return service.pairRecords().filter((r) => r.volume === volume && r.role === 'primary' && r.mode === 'sync' &&
      r.fence === 'data' && (r.state === 'duplex' || r.state === 'initial-copying' || r.state === 'duplex-pending')).map((record) => ({ record }));
  }

  /** Promise 1, at the moment of the acknowledgement. */
  private checkSecondaryHas(w: HostWrite, peer: string, peerVolume: string): void {
    const node = this.cluster.node(peer);
    if (!node.incarnation.alive) return; // the remote write failed with it; the pair fails and fences
    const index = this.volumeIndex(w.volume);
    const bytes = node.read(peerVolume, w.firstSector * sectorBytes, w.sectors * sectorBytes);
    const ids = decodeVolume(bytes, index, (s, why) => this.fail(`${peer}/${peerVolume} sector ${s}: ${why}`), w.firstSector);
    for (let i = 0; i < w.sectors; i++) {
      const id = ids[i]!;
      if (id === w.id) continue;
      const other = id ? this.history.write(id) : undefined;
      // Another write to the sector in flight together with this one may have landed after it.
      if (other && !History.before(other, w) && other.issued < w.completed) continue;
      this.fail(`write ${w.id} to ${w.volume} sectors ${w.firstSector}+${w.sectors} was acknowledged by ${w.node} (sync, fence data) but ` +
        `${peer}/${peerVolume} sector ${w.firstSector + i} holds ${id ? `write ${id}` : 'zeroes'}`);
      return;
    }
  }

  /** Called just before the node crashes (its pairs are still readable). */
  crashing(node: string, kind: 'kill' | 'power'): void {
    if (kind === 'kill') return;
    // The primary's history jumps at a power loss (unflushed writes may be lost in any order): its
    // async secondaries follow what it kept, so their prefix is counted from here.
    for (const [volume, active] of this.cluster.active) if (active === node) this.epochStart.set(volume, this.history.now);
    // The primary comes back with what its disk kept and resyncs its secondaries from that: they
    // may lose what was not durable here (a power loss loses unflushed writes, as a local disk does).
    for (const record of this.cluster.node(node).service?.pairRecords() ?? []) {
      const p = { record };
      if (p.record.role !== 'primary' || p.record.mode !== 'sync') continue;
      const durable = this.set(this.durable, node, p.record.volume);
      const peerMust = this.set(this.mustHave, p.record.peer.node, p.record.peerVolume);
      for (const id of [...peerMust]) if (!durable.has(id)) peerMust.delete(id);
    }
    for (const [volume, must] of this.mustHave.get(node)!) {
      const durable = this.set(this.durable, node, volume);
      for (const id of [...must]) if (!durable.has(id)) must.delete(id);
    }
  }

  /** The volume's application moved to `to`. `carry`: the new copy holds all the old one had (a planned swap). */
  activeChanged(volume: string, from: string | undefined, to: string, carry: boolean): void {
    this.epochStart.set(volume, this.history.now);
    if (from === undefined || from === to) return;
    // Moved without a planned swap: what only the other copies had is discarded when they are made
    // the new primary's secondaries (a swap or a failback copies its data over them, as documented),
    // the old primary's and a third site's alike (its sync copy of writes the new site never got).
    if (!carry) {
      for (const node of this.mustHave.keys()) if (node !== to) this.discarded(node, volume);
      return;
    }
    for (const id of this.set(this.mustHave, from, volume)) this.set(this.mustHave, to, volume).add(id);
    for (const id of this.set(this.durable, from, volume)) this.set(this.durable, to, volume).add(id);
  }

  /** The operator discarded `node`'s copy of the volume (split brain resolved, or a full copy over it). */
  discarded(node: string, volume: string): void {
    this.set(this.mustHave, node, volume).clear();
    this.set(this.durable, node, volume).clear();
  }

  // --- checks at quiet moments (no request in flight) -------------------------------------------

  checkpoint(): void {
    this.checks++;
    for (const [volume, node] of this.cluster.active) this.checkMustHave(node, volume);
    for (const name of this.pairNames()) this.checkPair(name);
  }

  /** Every pair some running node holds (a topology's pairs come and go with its procedures). */
  pairNames(): string[] {
    const names = new Set<string>(this.cluster.pairs.map((p) => p.name));
    for (const node of this.cluster.nodes.values()) {
      if (node.up) for (const r of node.service!.pairRecords()) names.add(r.name);
    }
    return [...names].sort();
  }

  /** The content of a volume's other copy `from` now holds too (a failover took the newest data from it). */
  carryFrom(from: string, to: string, volume: string): void {
    for (const id of this.set(this.mustHave, from, volume)) this.set(this.mustHave, to, volume).add(id);
  }

  /** Promise 2: no write the copy must hold is missing or overwritten by an older one. */
  checkMustHave(nodeName: string, volume: string): void {
    const node = this.cluster.node(nodeName);
    const must = this.mustHave.get(nodeName)!.get(volume);
    if (!node.up || !must || must.size === 0) return;
    const spec = this.cluster.volumes.find((v) => v.name === volume)!;
    const ids = decodeVolume(node.image(volume, spec.sizeBytes), spec.index, (s, why) => this.fail(`${nodeName}/${volume} sector ${s}: ${why}`));
    for (let s = 0; s < ids.length; s++) {
      const seen = ids[s]! ? this.history.write(ids[s]!) : undefined;
      for (const w of this.history.touching(volume, s)) {
        if (!must.has(w.id) || seen === w) continue;
        if (seen && !History.before(seen, w)) continue;
        this.fail(`${nodeName}/${volume} sector ${s} holds ${seen ? describe(seen) : 'zeroes'}, older than ${describe(w)} ` +
          `(${this.durable.get(nodeName)!.get(volume)?.has(w.id) ? 'flushed' : 'not flushed'}), which it must hold`);
        return;
      }
    }
  }

  private checkPair(name: string): void {
    const found = this.pairSides(name);
    if (!found) return;
    const { primary, secondary } = found;
    this.checkCoverage(primary, secondary);
    const group = primary.internals.record.group;
    const members = this.groupMembers(secondary.node, group);
    const membersConsistent = members.every((x) => this.consistent.get(`${secondary.node}/${x.name}`) !== false);
    if (primary.internals.record.mode === 'async' && membersConsistent &&
        secondary.internals.record.state !== 'secondary-writable' && !secondary.internals.record.secondaryWritable &&
        this.backlog(secondary.node, primary.internals.record.group!) === 0) {
      this.checkPrefix(primary.node, secondary.node, primary.internals.record.group!);
    }
  }

  /** Entries a node received for a group and has not applied yet (a secondary catching up after a restart). */
  backlog(node: string, group: string): number {
    const service = this.cluster.node(node).service;
    if (!service || !this.cluster.node(node).up) return 0;
    try {
      const g = service.groupStatus(group);
      return g.role === 'secondary' ? g.lag.entries : 0;
    } catch {
      return 0;
    }
  }

  /** Both ends of a pair, when both nodes are up and hold it with one primary. */
  pairSides(name: string): { primary: Side; secondary: Side } | undefined {
    const sides: Side[] = [];
    for (const node of this.cluster.nodes.values()) {
      if (!node.up) continue;
      const internals = node.service!.internals().find((p) => p.record.name === name);
      if (internals) sides.push({ node: node.name, internals });
    }
    if (sides.length !== 2) return undefined;
    const primary = sides.find((s) => s.internals.record.role === 'primary');
    const secondary = sides.find((s) => s.internals.record.role === 'secondary');
    return primary && secondary ? { primary, secondary } : undefined;
  }

  /** Promise 4. */
  private checkCoverage(p: Side, s: Side): void {
    const rp = p.internals.record;
    const spec = this.cluster.volumes.find((v) => v.name === rp.volume);
    if (!spec) return;
    const a = this.cluster.node(p.node).image(rp.volume, spec.sizeBytes);
    const b = this.cluster.node(s.node).image(rp.peerVolume, spec.sizeBytes);
    if (a.equals(b)) return;
    const covered = new Uint8Array(Math.ceil(spec.sizeBytes / sectorBytes));
    const mark = (offset: number, length: number): void => {
      for (let x = Math.floor(offset / sectorBytes); x < Math.ceil((offset + length) / sectorBytes) && x < covered.length; x++) covered[x] = 1;
    };
    for (const side of [p.internals, s.internals]) {
      for (let bit = 0; bit * side.regionBytes < spec.sizeBytes; bit++) {
        if ((side.bits[bit >> 3]! & (1 << (bit & 7))) !== 0) mark(bit * side.regionBytes, side.regionBytes);
      }
      for (const r of side.journalRanges) mark(r.offset, r.length);
      for (const r of side.activityRanges) mark(r.offset, r.length);
    }
    for (let x = 0; x < covered.length; x++) {
      if (covered[x]) continue;
      if (a.subarray(x * sectorBytes, (x + 1) * sectorBytes).equals(b.subarray(x * sectorBytes, (x + 1) * sectorBytes))) continue;
      const ids = [a, b].map((buf) => decodeVolume(buf.subarray(x * sectorBytes, (x + 1) * sectorBytes), spec.index, () => undefined, x)[0]);
      this.fail(`pair ${rp.name}: sector ${x} differs (${p.node} has ${ids[0] || 'zeroes'}, ${s.node} has ${ids[1] || 'zeroes'}; ` +
        `${p.node} ${rp.state}, ${s.node} ${s.internals.record.state}) and no differential record, journal or activity log covers it: a resync would leave it different`);
      return;
    }
  }

  /** The pairs of a consistency group as a node holds them. */
  private groupMembers(node: string, group: string | null): Array<{ name: string; volume: string }> {
    if (group === null) return [];
    const service = this.cluster.node(node).service;
    return (service?.pairRecords() ?? []).filter((r) => r.group === group).map((r) => ({ name: r.name, volume: r.volume }));
  }

  /** Promise 3: the secondary's copies of the group's volumes are a prefix of the primary's history since the epoch. */
  private checkPrefix(primaryNode: string, secondaryNode: string, group: string): void {
    const members = this.groupMembers(secondaryNode, group);
    const observed = new Map<string, Uint32Array>();
    const epoch = Math.max(...members.map((m) => this.epochStart.get(m.volume) ?? 0));
    for (const m of members) {
      const spec = this.cluster.volumes.find((v) => v.name === m.volume)!;
      observed.set(m.volume, decodeVolume(this.cluster.node(secondaryNode).image(m.volume, spec.sizeBytes), spec.index,
        (s, why) => this.fail(`${secondaryNode}/${m.volume} sector ${s}: ${why}`)));
    }
    const inEpoch = (w: HostWrite): boolean => w.node === primaryNode && w.issued > epoch && members.some((m) => m.volume === w.volume);
    let latestIssued = 0;
    let latest: HostWrite | undefined;
    for (const ids of observed.values()) {
      for (const id of ids) {
        const w = id ? this.history.write(id) : undefined;
        if (w && inEpoch(w) && w.issued > latestIssued) {
          latestIssued = w.issued;
          latest = w;
        }
      }
    }
    for (const w of this.history.writes) {
      if (!inEpoch(w) || w.ok !== true || w.completed >= latestIssued) continue;
      const ids = observed.get(w.volume)!;
      for (let s = w.firstSector; s < w.firstSector + w.sectors; s++) {
        const seen = ids[s]! ? this.history.write(ids[s]!) : undefined;
        if (seen === w || (seen && inEpoch(seen) && !History.before(seen, w))) continue;
        this.fail(`group ${group} at ${secondaryNode} is not a prefix of ${primaryNode}'s writes: ${w.volume} sector ${s} holds ` +
          `${seen ? describe(seen) : 'zeroes'} though ${describe(w)} came before ${latest ? `${latest.volume} ${describe(latest)}` : '?'}, which it holds`);
        return;
      }
    }
  }

  // --- the end of a run -------------------------------------------------------------------------

  /** Promise 5: every pair duplex, both ends agreeing, both copies equal. */
  final(): void {
    for (const name of this.pairNames()) {
      const sides = this.pairSides(name);
      const spec = { name };
      if (!sides) {
        this.fail(`pair ${spec.name} does not have a primary and a secondary on two running nodes at the end`);
        continue;
      }
      const p = sides.primary.internals.record;
      const s = sides.secondary.internals.record;
      if (p.state !== 'duplex' || s.state !== 'duplex') this.fail(`pair ${spec.name} did not converge: ${sides.primary.node} ${p.state}, ${sides.secondary.node} ${s.state}`);
      for (const field of ['state', 'mode', 'fence', 'fenceGroup', 'group', 'generation'] as const) {
        if (p[field] !== s[field]) this.fail(`pair ${spec.name}: the ends disagree on ${field} (${sides.primary.node} ${String(p[field])}, ${sides.secondary.node} ${String(s[field])})`);
      }
      const size = this.cluster.volumes.find((v) => v.name === p.volume)!.sizeBytes;
      const a = this.cluster.node(sides.primary.node).image(p.volume, size);
      const b = this.cluster.node(sides.secondary.node).image(p.peerVolume, size);
      if (!a.equals(b)) {
        let x = 0;
        while (a.subarray(x * sectorBytes, (x + 1) * sectorBytes).equals(b.subarray(x * sectorBytes, (x + 1) * sectorBytes))) x++;
        const spec2 = this.cluster.volumes.find((v) => v.name === p.volume)!;
        const ids = [a, b].map((buf) => decodeVolume(buf.subarray(x * sectorBytes, (x + 1) * sectorBytes), spec2.index, () => undefined, x)[0]!);
        const what = (id: number): string => (id ? describe(this.history.write(id)!) : 'zeroes');
        this.fail(`pair ${spec.name}: the copies differ after convergence (first at sector ${x}: ${sides.primary.node} has ${what(ids[0]!)}, ${sides.secondary.node} has ${what(ids[1]!)})`);
      }
    }
    for (const [volume, node] of this.cluster.active) this.checkMustHave(node, volume);
  }

  private volumeIndex(volume: string): number {
    return this.cluster.volumes.find((v) => v.name === volume)!.index;
  }
}

function describe(w: HostWrite): string {
  return `write ${w.id} (${w.node}, ${(w.atMs / 1000).toFixed(3)} s, ${w.ok === true ? 'acknowledged' : w.ok === false ? 'refused' : 'outcome unknown'})`;
}

interface Side {
  node: string;
  internals: PairInternals;
}
