// An in-memory model of two storage nodes holding one quorum pair (spec 004), over the pure Fig. 4
// table: each node keeps its own view of the pair, the node holding the P-VOL is the one
// authority and decides every command atomically, the other node learns of a commit after a
// delay, and messages between them take random time. The host control software (src/quorum/
// host-control.ts) runs against it unchanged, so the arbitration can be raced thousands of times.
import type { AttributeView, CommandAnswer, QuorumCommand, QuorumPairState, QuorumVolumeStatus, ReservationAnswer } from '../../src/contracts/quorum';
import type { QuorumStorage } from '../../src/quorum/client';
import { attributeLabel, fig4 } from '../../src/quorum/fig4';
import { Reservations } from '../../src/quorum/reservations';
import { systemClock } from '../../src/common/clock';

export type ModelNodeName = 'A' | 'B';

interface PairView {
  state: QuorumPairState | 'simplex';
  pvol: ModelNodeName;
  epoch: number;
}

/** A small deterministic random source (mulberry32). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class QuorumModel {
  /** The authority's record: what the node holding the P-VOL has committed. */
  truth: PairView;
  readonly views: Record<ModelNodeName, PairView>;
  readonly reservations: Record<ModelNodeName, Reservations> = { A: new Reservations(systemClock), B: new Reservations(systemClock) };
  linkUp = true;
  /** Pair commands that reached each node (spec 004 §9 behaviours 5, 6, 9). */
  readonly sent: Array<{ node: ModelNodeName; command: QuorumCommand | 'split' }> = [];
  /** Committed normal ends, in order. */
  readonly commits: Array<{ node: ModelNodeName; command: QuorumCommand; epoch: number }> = [];

  constructor(readonly random: () => number = Math.random, readonly maxHops = 6, initial: Partial<PairView> = {}) {
    this.truth = { state: 'suspend-normal', pvol: 'A', epoch: 1, ...initial };
    this.views = { A: { ...this.truth }, B: { ...this.truth } };
  }

  node(name: ModelNodeName): ModelStorage {
    return new ModelStorage(this, name);
  }

  /** Puts the pair in `state` with the P-VOL at `pvol`, both views in step. */
  setState(state: PairView['state'], pvol: ModelNodeName = this.truth.pvol): void {
    this.truth = { state, pvol, epoch: this.truth.epoch + 1 };
    this.views.A = { ...this.truth };
    this.views.B = { ...this.truth };
  }

  /** The copy started by a normal end finishes: Copy → Pair at both nodes. */
  finishCopy(): void {
    if (this.truth.state !== 'copy') return;
    this.setState('pair');
  }

  /** A random number of event-loop turns: messages and processing take time. */
  async hop(): Promise<void> {
    const n = Math.floor(this.random() * this.maxHops);
    for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
  }

  other(node: ModelNodeName): ModelNodeName {
    return node === 'A' ? 'B' : 'A';
  }

  attributeAt(node: ModelNodeName): AttributeView {
    const v = this.views[node];
    const attribute = v.state === 'simplex' ? { role: 'simplex' as const } : { role: v.pvol === node ? 'pvol' as const : 'svol' as const, state: v.state };
    return { volume: 'qd', attribute, label: attributeLabel(attribute), pair: v.state === 'simplex' ? null : 'q', peer: this.other(node), epoch: v.epoch, reason: null };
  }

  /** The peer cannot be reached: the command ends abnormally and this node records Suspend(error). */
  suspendError(node: ModelNodeName): void {
    const v = this.views[node];
    if (v.state === 'suspend-normal') this.views[node] = { ...v, state: 'suspend-error' };
    if (this.truth.pvol === node && this.truth.state === 'suspend-normal') this.truth = { ...this.truth, state: 'suspend-error' };
  }
}

export class ModelStorage implements QuorumStorage {
  readonly address: string;

  constructor(private readonly m: QuorumModel, readonly name: ModelNodeName) {
    this.address = `model:${name}`;
  }

  async reserve(volume: string, host: string): Promise<ReservationAnswer> {
    await this.m.hop();
    const status = this.m.reservations[this.name].reserve(volume, host);
    return { volume, status, holder: this.m.reservations[this.name].holder(volume)?.holder ?? null, reason: status };
  }

  async release(volume: string, host: string): Promise<ReservationAnswer> {
    await this.m.hop();
    this.m.reservations[this.name].release(volume, host);
    return { volume, status: 'GOOD', holder: this.m.reservations[this.name].holder(volume)?.holder ?? null, reason: 'released' };
  }

  async reset(volume: string): Promise<ReservationAnswer> {
    await this.m.hop();
    this.m.reservations[this.name].reset(volume);
    return { volume, status: 'GOOD', holder: null, reason: 'reset' };
  }

  async attribute(): Promise<AttributeView> {
    await this.m.hop();
    return this.m.attributeAt(this.name);
  }

  async pairResync(): Promise<CommandAnswer> {
    this.m.sent.push({ node: this.name, command: 'resync' });
    await this.m.hop();
    const m = this.m;
    const before = m.attributeAt(this.name);
    const row = fig4('resync', before.attribute);
    if (row.result === 'ABNORMAL_END') return this.answer('resync', before, row.row, 'ABNORMAL_END', row.reason);
    // Row 4 by this node's view: this node holds the P-VOL, so it decides, in one step.
    if (!m.linkUp) {
      m.suspendError(this.name);
      return this.answer('resync', before, row.row, 'ABNORMAL_END', 'the peer could not be reached');
    }
    const t = m.truth;
    if (!(t.pvol === this.name && t.state === 'suspend-normal')) {
      return this.answer('resync', before, fig4('resync', m.attributeAt(this.name).attribute).row, 'ABNORMAL_END', 'the pair left Suspend(normal) first');
    }
    m.truth = { state: 'copy', pvol: this.name, epoch: t.epoch + 1 };
    m.views[this.name] = { ...m.truth };
    m.commits.push({ node: this.name, command: 'resync', epoch: m.truth.epoch });
    // NORMAL_END once the S-VOL's node has the new state too.
    await m.hop();
    m.views[m.other(this.name)] = { ...m.truth };
    return this.answer('resync', before, row.row, 'NORMAL_END', row.reason);
  }

  async pairSwapResync(): Promise<CommandAnswer> {
    this.m.sent.push({ node: this.name, command: 'swap-resync' });
    await this.m.hop();
    const m = this.m;
    const before = m.attributeAt(this.name);
    const row = fig4('swap-resync', before.attribute);
    if (row.result === 'ABNORMAL_END') return this.answer('swap-resync', before, row.row, 'ABNORMAL_END', row.reason);
    if (!m.linkUp) {
      m.suspendError(this.name);
      return this.answer('swap-resync', before, row.row, 'ABNORMAL_END', 'the P-VOL node could not be reached');
    }
    // Forwarded to the P-VOL's node, which decides in one step.
    await m.hop();
    const authority = m.other(this.name);
    const t = m.truth;
    if (!(t.pvol === authority && t.state === 'suspend-normal')) {
      return this.answer('swap-resync', before, row.row, 'ABNORMAL_END', 'the P-VOL node found the pair out of Suspend(normal)');
    }
    m.truth = { state: 'copy', pvol: this.name, epoch: t.epoch + 1 };
    m.views[authority] = { ...m.truth };
    m.commits.push({ node: this.name, command: 'swap-resync', epoch: m.truth.epoch });
    await m.hop();
    m.views[this.name] = { ...m.truth };
    return this.answer('swap-resync', before, row.row, 'NORMAL_END', row.reason);
  }

  async pairSplit(): Promise<AttributeView> {
    this.m.sent.push({ node: this.name, command: 'split' });
    await this.m.hop();
    if (this.m.truth.state === 'pair' || this.m.truth.state === 'suspend-error') this.m.setState('suspend-normal');
    return this.m.attributeAt(this.name);
  }

  async quorumStatus(volume: string): Promise<QuorumVolumeStatus> {
    return { ...this.m.attributeAt(this.name), volume, reservation: this.m.reservations[this.name].holder(volume) };
  }

  async quorumVolumes(): Promise<QuorumVolumeStatus[]> {
    return [await this.quorumStatus('qd')];
  }

  private answer(command: QuorumCommand, before: AttributeView, row: number, result: CommandAnswer['result'], reason: string): CommandAnswer {
    return { volume: before.volume, command, result, row, before, after: this.m.attributeAt(this.name), reason };
  }
}
