// The transition engine: the only writer of a pair's state, role, generation, suspend cause and
// protection. Every change is decided by the state table, then persisted (the record file is the
// commit point), recorded as an event with its reason, told to the secondary, and handed to the
// listeners that carry its effects (fences, held journal entries, copies, automatic resync, …).
import { type Clock, isoTime } from '../../common/clock';
import type { EventJournal } from '../../common/events';
import { invariant } from '../../common/errors';
import type { Logger } from '../../common/log';
import type { FenceLevel, MutablePairRecord, PairRecord, PairRole, PairState, ShortCode, SuspendCause } from './pair-model';
import { shortCode } from './pair-model';
import type { PairStore } from './pair-store';
import type { PairRegistry } from './registry';
import type { PairRuntime } from './runtime';
import { type DecisionContext, type DecisionOverlay, type Outcome, type PairEvent, decide, noOverlay, validRoleState } from './state-table';
import type { PairPurpose } from './pair-model';

/** What a transition may set besides what the table decides. */
export interface TransitionArgs extends Omit<DecisionContext, 'mode' | 'cause'> {
  /** The record's new reason (default: the table's note). */
  reason?: string | undefined;
  /** The generation an 'adopt' outcome takes (the peer's decision). */
  generation?: number | undefined;
  secondaryWritable?: boolean | undefined;
  receivedSeqAtTakeover?: number | null | undefined;
  hostWritesRecorded?: boolean | undefined;
}

export interface Transition {
  pair: PairRuntime;
  event: PairEvent;
  from: PairState;
  fromRole: PairRole;
  fromCode: ShortCode;
  /** The transition the table decided. */
  outcome: Extract<Outcome, { kind: 'transition' }>;
}

export type TransitionListener = (t: Transition) => Promise<void> | void;
export type RemovalListener = (p: PairRuntime, reason: string) => Promise<void> | void;

export interface TransitionDeps {
  localNode: string;
  clock: Clock;
  store: PairStore;
  registry: PairRegistry;
  events: EventJournal;
  log: Logger;
  /** Primary → secondary: mirror this side's view of the pair (best effort; reconciled on link up). */
  tellPeer: (p: PairRuntime) => Promise<void>;
}

export class TransitionEngine {
  private readonly local: TransitionListener[] = [];
  private readonly after: TransitionListener[] = [];
  private readonly beforeRemoval: RemovalListener[] = [];
  private readonly afterRemoval: RemovalListener[] = [];
  private readonly protection: Array<(p: PairRuntime) => void> = [];
  private readonly newPrimaryActed: Array<(p: PairRuntime) => void> = [];
  private readonly overlays = new Map<PairPurpose, DecisionOverlay>();

  constructor(private readonly deps: TransitionDeps) {}

  /** Runs right after the record is persisted, before the peer hears of it (local effects). */
  onLocal(listener: TransitionListener): void {
    this.local.push(listener);
  }

  /** Runs after the secondary was told (effects that act on the new state: copies, resyncs). */
  onAfter(listener: TransitionListener): void {
    this.after.push(listener);
  }

  /** Runs before a pair is removed (it still exists) and after (it is gone). */
  onRemoval(before: RemovalListener | null, afterwards: RemovalListener | null): void {
    if (before) this.beforeRemoval.push(before);
    if (afterwards) this.afterRemoval.push(afterwards);
  }

  /** Runs after a pair's protection changed. */
  onProtection(listener: (p: PairRuntime) => void): void {
    this.protection.push(listener);
  }

  /** Runs when a side that stepped down in a swap stops awaiting its new primary (it acted, or a transition followed). */
  onNewPrimaryActed(listener: (p: PairRuntime) => void): void {
    this.newPrimaryActed.push(listener);
  }

  /** Pairs of `purpose` answer through `overlay` (quorum pairs: spec 004's Fig. 4, from src/quorum/). */
  setOverlay(purpose: Exclude<PairPurpose, 'data'>, overlay: DecisionOverlay): void {
    this.overlays.set(purpose, overlay);
  }

  /** What the table (and the overlay of the pair's purpose) says `event` would do to the pair now. */
  decide(p: PairRuntime, event: PairEvent, extra: Omit<DecisionContext, 'mode' | 'cause'> = {}): Outcome {
    const r = p.record;
    const base = decide(r.role, r.state, event, r.mode, r.suspendCause, { ...extra, awaitingNewPrimary: r.awaitingNewPrimary });
    if (r.purpose === 'data') return base;
    const overlay = this.overlays.get(r.purpose);
    if (!overlay) return noOverlay(r.purpose, event, base);
    return overlay({ role: r.role, state: r.state, event, mode: r.mode, cause: r.suspendCause, extra }, base);
  }

  /**
   * Decides `event` for the pair and, when the table says transition, applies it. Refusals and
   * no-ops are returned unapplied for the caller to report.
   */
  async apply(p: PairRuntime, event: PairEvent, args: TransitionArgs = {}): Promise<Outcome> {
    // Deciding and committing a transition is one step per pair: two events raised at once (a
    // failed flush during a swap) are decided one after the other, each on the state the other left.
    const committed = await this.exclusively(p, () => this.commit(p, event, args));
    if (committed.kind !== 'transition' || committed.removed) return committed.outcome;
    const r = p.record;
    // The secondary must know before the primary acts on the new state (e.g. copies into it).
    if (r.role === 'primary') await this.deps.tellPeer(p);
    for (const l of this.after) await l(committed.transition);
    return committed.outcome;
  }

  private async commit(p: PairRuntime, event: PairEvent, args: TransitionArgs): Promise<
    { kind: 'transition'; outcome: Outcome; transition: Transition; removed: boolean } | { kind: 'none'; outcome: Outcome }> {
    // A runtime whose pair was deleted meanwhile (an event raised by work that began before): its
    // record must not be written again, or the pair would come back at the next start.
    if (this.deps.registry.get(p.record.name) !== p) return { kind: 'none', outcome: { kind: 'noop', note: `pair ${p.record.name} was deleted meanwhile` } };
    const outcome = this.decide(p, event, { clean: args.clean, peerState: args.peerState, peerCause: args.peerCause, secondaryWritable: args.secondaryWritable });
    if (outcome.kind !== 'transition') return { kind: 'none', outcome };
    const r = p.record as MutablePairRecord;
    const t: Transition = { pair: p, event, from: r.state, fromRole: r.role, fromCode: shortCode(r), outcome };
    if (outcome.to === 'simplex') {
      await this.remove(p, args.reason ?? outcome.note, event);
      return { kind: 'transition', outcome, transition: t, removed: true };
    }
    const wasAwaiting = r.awaitingNewPrimary;
    this.write(r, outcome, args);
    await this.deps.store.save(r);
    if (wasAwaiting && !r.awaitingNewPrimary) for (const l of this.newPrimaryActed) l(p);
    for (const l of this.local) await l(t);
    this.deps.events.emit('pair-state', r.name, r.reason, {
      event, role: r.role, from: t.from, to: r.state, fromCode: t.fromCode, code: shortCode(r), generation: r.generation,
      ...(t.fromRole !== r.role ? { fromRole: t.fromRole } : {}),
    });
    this.wake(p);
    return { kind: 'transition', outcome, transition: t, removed: false };
  }

  /** Runs `op` after every transition step of the pair begun before it. */
  private exclusively<T>(p: PairRuntime, op: () => Promise<T>): Promise<T> {
    const run = p.transitionChain.then(op, op);
    p.transitionChain = run.catch(() => undefined);
    return run;
  }

  /** Changes how the pair is protected (fence level, fence group) and tells the secondary. */
  async setProtection(p: PairRuntime, fence: FenceLevel, fenceGroup: string | null, reason: string): Promise<void> {
    const r = p.record as MutablePairRecord;
    r.fence = fence;
    r.fenceGroup = fenceGroup;
    r.updatedAt = isoTime(this.deps.clock);
    await this.deps.store.save(r);
    this.deps.events.emit('pair-protection', r.name, reason, { fence, fenceGroup });
    for (const l of this.protection) l(p);
    if (r.role === 'primary') await this.deps.tellPeer(p);
  }

  /** The secondary takes the protection its primary reports (so both ends agree, and a swap keeps it). */
  async followProtection(p: PairRuntime, fence: FenceLevel, fenceGroup: string | null, peer: string): Promise<void> {
    const r = p.record;
    invariant(r.role === 'secondary', 'only a secondary follows its primary\'s protection');
    if (r.fence === fence && r.fenceGroup === fenceGroup) return;
    await this.setProtection(p, fence, fenceGroup, `protection set by the primary ${peer}: fence ${fence}${fenceGroup ? `, fence group ${fenceGroup}` : ''}`);
  }

  /** A secondary takes the generation its primary decided (no state change). */
  async adoptGeneration(p: PairRuntime, generation: number): Promise<void> {
    const r = p.record as MutablePairRecord;
    if (r.generation === generation) return;
    invariant(generation > r.generation, `a pair's generation only grows (${r.generation} → ${generation})`);
    r.generation = generation;
    r.updatedAt = isoTime(this.deps.clock);
    await this.deps.store.save(r);
  }

  /** A new reason for the pair's current state (no transition: the state is what it was). */
  async annotate(p: PairRuntime, reason: string, eventKind: string): Promise<void> {
    const r = p.record as MutablePairRecord;
    if (r.reason === reason) return;
    r.reason = reason;
    r.updatedAt = isoTime(this.deps.clock);
    await this.deps.store.save(r);
    this.deps.events.emit(eventKind, r.name, reason);
  }

  /**
   * The new primary of a swap acted (told its state, sent a write or journal entries): this volume
   * no longer holds only the image it had as the primary, and a sender exists.
   */
  async noteNewPrimaryActed(p: PairRuntime): Promise<void> {
    if (!p.record.awaitingNewPrimary) return;
    (p.record as MutablePairRecord).awaitingNewPrimary = false;
    await this.deps.store.save(p.record);
    for (const l of this.newPrimaryActed) l(p);
  }

  /** Records that this side was written while the other side could not be (split-brain detection). */
  async noteHostWrites(p: PairRuntime, recorded: boolean): Promise<void> {
    if (p.record.hostWritesRecorded === recorded) return;
    p.record.hostWritesRecorded = recorded;
    await this.deps.store.save(p.record);
  }

  private write(r: MutablePairRecord, outcome: Extract<Outcome, { kind: 'transition' }>, args: TransitionArgs): void {
    // Set only by stepping down in a swap into a copy; any later transition means a primary acted.
    r.awaitingNewPrimary = r.role === 'primary' && outcome.role === 'secondary' && outcome.to === 'duplex-pending';
    r.state = outcome.to;
    if (outcome.role !== undefined) r.role = outcome.role;
    const suspendedLike = outcome.to === 'suspended' || outcome.to === 'suspending';
    if (!suspendedLike) r.suspendCause = null;
    else if (outcome.cause !== undefined && outcome.cause !== null) r.suspendCause = outcome.cause;
    if (outcome.generation === 'bump') r.generation = args.generation ?? r.generation + 1;
    if (outcome.generation === 'adopt') {
      invariant(args.generation !== undefined, `an adopted generation is given (${r.name})`);
      r.generation = args.generation;
    }
    r.secondaryWritable = suspendedLike ? (args.secondaryWritable ?? r.secondaryWritable) : false;
    if (args.receivedSeqAtTakeover !== undefined) r.receivedSeqAtTakeover = args.receivedSeqAtTakeover;
    else if (outcome.role !== undefined) r.receivedSeqAtTakeover = null;
    if (args.hostWritesRecorded !== undefined) r.hostWritesRecorded = args.hostWritesRecorded;
    r.reason = args.reason ?? outcome.note;
    r.updatedAt = isoTime(this.deps.clock);
    if (outcome.to === 'duplex') r.copy = null;
    invariant(validRoleState(r.role, r.state), `a ${r.role} cannot be ${r.state} (${r.name})`);
    invariant(suspendedLike === (r.suspendCause !== null), `a suspend cause is kept exactly while suspended (${r.name}: ${r.state}, ${r.suspendCause ?? 'no cause'})`);
  }

  private async remove(p: PairRuntime, reason: string, event: PairEvent): Promise<void> {
    const r = p.record;
    for (const l of this.beforeRemoval) await l(p, reason);
    this.deps.registry.remove(p);
    await p.bitmap.close();
    await this.deps.store.remove(r.name);
    for (const l of this.afterRemoval) await l(p, reason);
    this.deps.events.emit('pair-deleted', r.name, reason, { role: r.role, volume: r.volume });
    this.deps.events.emit('pair-state', r.name, reason, { event, role: r.role, from: r.state, to: 'simplex', code: 'SMPL' });
    this.wake(p);
  }

  private wake(p: PairRuntime): void {
    for (const w of [...p.stateWaiters]) w();
  }
}

/** A record as it is at creation, before any transition (the one place records are built). */
export function newRecord(fields: Omit<PairRecord, 'createdAt' | 'updatedAt' | 'copy' | 'hostWritesRecorded' | 'receivedSeqAtTakeover' |
  'secondaryWritable' | 'suspendCause' | 'purpose' | 'awaitingNewPrimary'> & { purpose?: PairRecord['purpose'] }, clock: Clock): PairRecord {
  const now = isoTime(clock);
  return {
    ...fields, purpose: fields.purpose ?? 'data', suspendCause: null, secondaryWritable: false, createdAt: now, updatedAt: now, copy: null, hostWritesRecorded: false,
    receivedSeqAtTakeover: null, awaitingNewPrimary: false,
  };
}

export type { SuspendCause };
