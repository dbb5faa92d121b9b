// The simulated operator: sets the scenario's pairs up, issues random commands while faults happen
// (split, resync, takeover, swap, with --discard when a split brain is named), moves the
// application to where the volumes became writable, and at the end follows the runbook until every
// pair is duplex again.
import type { PairStatus } from '../src/contracts/pairs';
import { swapFinishesAt } from '../src/replication/pairs/interrupted-swap';
import type { PairInternals } from '../src/replication/status';
import type { Checker } from './checker';
import type { Cluster, PairSpec } from './cluster';
import type { Random } from './random';

interface Sides {
  primary?: { node: string; p: PairInternals };
  secondary?: { node: string; p: PairInternals };
  all: Array<{ node: string; p: PairInternals }>;
}

export class Operator {
  constructor(private readonly cluster: Cluster, private readonly checker: Checker, private readonly rng: Random) {}

  async setUp(): Promise<void> {
    const c = this.cluster;
    for (const v of c.volumes) {
      const from = c.pairs.find((p) => p.volume === v.name)!.from;
      await c.command(from, `volume create ${v.name}`, () => c.node(from).store!.create({ name: v.name, sizeBytes: v.sizeBytes }));
      c.active.set(v.name, from);
      this.checker.activeChanged(v.name, undefined, from, false);
    }
    for (const p of c.pairs) {
      await c.command(p.from, `pair create ${p.name} → ${p.to} (${p.mode}, fence ${p.fence}${p.group ? `, group ${p.group}` : ''})`, (s) => s.createPair({
        name: p.name, volume: p.volume, peer: { node: p.to, host: p.to, replPort: 7000 }, mode: p.mode, fence: p.fence, group: p.group,
      }));
    }
    const deadline = c.scheduler.now + 120_000;
    await c.scheduler.runUntilTrue(() => c.pairs.every((p) => this.sides(p).primary?.p.record.state === 'duplex'), deadline);
    for (const p of c.pairs) if (this.sides(p).primary?.p.record.state !== 'duplex') c.fail(`pair ${p.name} did not reach duplex after creation`);
  }

  sides(spec: PairSpec): Sides {
    const all: Sides['all'] = [];
    for (const node of this.cluster.nodes.values()) {
      if (!node.up) continue;
      const p = node.service!.internals().find((x) => x.record.name === spec.name);
      if (p) all.push({ node: node.name, p });
    }
    return { all, primary: all.find((x) => x.p.record.role === 'primary'), secondary: all.find((x) => x.p.record.role === 'secondary') };
  }

  /** One random command on one random pair, as an operator might issue during trouble. */
  async randomCommand(): Promise<void> {
    const spec = this.rng.pick(this.cluster.pairs);
    const { primary, secondary } = this.sides(spec);
    const choices: Array<() => Promise<void>> = [];
    if (primary) {
      choices.push(() => this.split(primary.node, spec));
      choices.push(() => this.resync(primary.node, spec, secondary?.node));
    }
    if (secondary) {
      choices.push(() => this.takeover(secondary.node, spec));
      choices.push(() => this.swap(secondary.node, spec, primary?.node));
    }
    if (choices.length > 0) await this.rng.pick(choices)();
  }

  private async split(node: string, spec: PairSpec): Promise<void> {
    await this.cluster.command(node, `pair split ${spec.name}`, (s) => s.split(spec.name, { secondaryWritable: false }));
  }

  private async resync(node: string, spec: PairSpec, peer: string | undefined): Promise<void> {
    const r = await this.cluster.command(node, `pair resync ${spec.name}`, (s) => s.resync(spec.name, {}));
    if (!r.ok && /split brain/.test(r.error) && peer) {
      const again = await this.cluster.command(node, `pair resync ${spec.name} --discard ${peer}`, (s) => s.resync(spec.name, { discard: peer }));
      if (again.ok) for (const v of this.volumesOf(spec)) this.checker.discarded(peer, v);
    }
  }

  private async takeover(node: string, spec: PairSpec): Promise<void> {
    const before = this.sides(spec).secondary?.p.record.state;
    const r = await this.cluster.command(node, `pair takeover ${spec.name}`, (s) => s.takeover(spec.name));
    if (r.ok) this.moved(node, r.value, before === 'duplex');
  }

  private async swap(node: string, spec: PairSpec, peer: string | undefined): Promise<void> {
    const before = this.sides(spec).secondary?.p.record.state;
    let r = await this.cluster.command(node, `pair swap ${spec.name}`, (s) => s.swap(spec.name, {}));
    if (!r.ok && /split brain/.test(r.error) && peer) {
      r = await this.cluster.command(node, `pair swap ${spec.name} --discard ${peer}`, (s) => s.swap(spec.name, { discard: peer }));
      if (r.ok) for (const v of this.volumesOf(spec)) this.checker.discarded(peer, v);
    }
    if (r.ok) this.moved(node, r.value, before === 'duplex');
  }

  /** The volumes of the pair, or of its whole group (takeover and swap act on the group). */
  private volumesOf(spec: PairSpec): string[] {
    return spec.group ? this.cluster.pairs.filter((p) => p.group === spec.group).map((p) => p.volume) : [spec.volume];
  }

  /** After a takeover or swap at `node`: the application moves there. */
  private moved(node: string, statuses: PairStatus[], planned: boolean): void {
    for (const st of statuses) {
      const from = this.cluster.active.get(st.volume);
      if (from === node) continue;
      this.cluster.active.set(st.volume, node);
      this.cluster.trace.add(`application of ${st.volume} moves to ${node} (${planned ? 'planned swap' : 'takeover'})`);
      this.checker.activeChanged(st.volume, from, node, planned && st.code === 'PAIR');
    }
  }

  /** The runbook, until every pair is duplex and every async group drained (or the deadline). */
  async converge(deadlineMs: number): Promise<boolean> {
    const c = this.cluster;
    while (c.scheduler.now < deadlineMs) {
      let settled = true;
      for (const spec of c.pairs) {
        const done = await this.convergeStep(spec);
        settled &&= done;
      }
      if (settled && this.drained()) return true;
      await c.run(1000 + this.rng.int(1000));
    }
    return false;
  }

  /** One runbook step for a pair; true when it is duplex on both ends. */
  private async convergeStep(spec: PairSpec): Promise<boolean> {
    const { primary, secondary, all } = this.sides(spec);
    if (all.length === 2 && !primary) {
      // Both ends are secondaries: a swap did not finish. It is finished where the node advises.
      const [a, b] = all as [Sides['all'][number], Sides['all'][number]];
      const at = swapFinishesAt({ ...a.p.record, end: a }, { ...b.p.record, end: b }).end;
      await this.swap(at.node, spec, (at === a ? b : a).node);
      return false;
    }
    if (!primary || !secondary) return false;
    const p = primary.p.record;
    const s = secondary.p.record;
    if (p.state === 'duplex' && s.state === 'duplex') return true;
    if (s.state === 'secondary-writable') {
      await this.swap(secondary.node, spec, primary.node);
    } else if (p.state === 'suspended' && p.suspendCause === 'takeover-by-peer') {
      // The peer took over and is no longer writable: make it the primary again.
      await this.swap(secondary.node, spec, primary.node);
    } else if (p.state === 'suspended') {
      await this.resync(primary.node, spec, secondary.node);
    }
    return false;
  }

  /** Every async group's journal is empty and applied at its secondary. */
  private drained(): boolean {
    for (const spec of this.cluster.pairs.filter((p) => p.mode === 'async')) {
      const { primary } = this.sides(spec);
      const node = primary ? this.cluster.node(primary.node) : undefined;
      if (!node?.service || !spec.group) return false;
      const g = node.service.groupStatus(spec.group);
      if (g.lag.entries > 0 || g.appliedSeq < g.lastSeq) return false;
    }
    return true;
  }
}
