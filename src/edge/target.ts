// One order-guarantee id at its target edge (spec 002 §5.5, §5.6, §6.5, §6.7, §6.9): stores the
// entries that arrive, reflects only number 733 + 1 to the attached secondary storage, one request
// at a time, and answers the source edge.
//
// 733 is made durable before a write is reflected that overlaps one reflected since it was last
// made durable (a checkpoint), so what a restarted edge reflects again never holds two writes to
// the same bytes: reflecting them again changes nothing and the secondary never goes back. Writes
// are acknowledged in batches: a batch ends with a FLUSH at the storage and a checkpoint, then one
// response acknowledges it, so the source deletes an entry only once the secondary holds it on
// stable storage.
import type { Clock } from '../common/clock';
import { TricopyError, errorMessage } from '../common/errors';
import type { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import { formatBytes } from '../common/units';
import type { OrderConfig, OrderState, RelayOrderStatus, SuspendResult } from '../contracts/network';
import { diffChunkBytes } from '../replication/limits';
import { residualStateCodec } from '../replication/transport/control-messages';
import { MessageType, encodeDataHeader, encodeErrorPayload, encodeResidualWrite, responseError, responseOk } from '../replication/transport/messages';
import { EntryKind, type RelayEntry, type Rio, entryFlagRealign, responseTo } from './entry';
import { type DataRange, classify, controlOutcome, dataRange, rangesOverlap, swapAnswerWithRegions, swapPairs } from './rio';
import type { PositionFile } from './position';
import { type RegionRun, type RelayState, addRegions, regionCount } from './state';
import { type EdgePairEvent, applyOrderEvent, applyPairEvent } from './states';

/** Failover: how often the Suspend instruction is sent again while the source edge has not answered. */
const suspendResendMs = 2000;

/** A batch of reflected writes ends after this many entries, bytes or milliseconds. */
export const batchMaxEntries = 1024;
export const batchMaxBytes = 16 * 1024 * 1024;
export const batchMaxMs = 50;
/** Entries buffered beyond 733 + 1 are dropped past these bounds (the source sends them again). */
export const maxBufferedEntries = 16_384;
export const maxBufferedBytes = 256 * 1024 * 1024;
/** How long a request to the attached storage may take. */
export const reflectTimeoutMs = 60_000;
/** A storage that refuses writes this many times in a row: the order enters Failure Suspend. */
export const maxRefusals = 5;
const retryDelayMs = 500;
/** The RIO type of a response that only acknowledges (a batch of writes): no storage message has it. */
export const ackType = 0;
const keptAnswers = 64;

export interface TargetEnv {
  edge: string;
  clock: Clock;
  state: RelayState;
  log: Logger;
  events: EventJournal;
  send(entry: RelayEntry): boolean;
  /** Sends a request to the attached storage `node` on the link that answers as `as`. */
  deliver(node: string, as: string, type: number, payload: Buffer, timeoutMs: number): Promise<Buffer>;
  /** The storage's links that answer as its pairs' sources go down (it enters Failure Suspend); `hold`: and stay down. */
  dropStorageLinks(node: string, as: string, reason: string, hold: boolean): void;
  /** The link to the storage `node` under the name `as` is no longer wanted (a fast failover's own link, once done). */
  releaseStorageLink(node: string, as: string): void;
}

/** The storage refused the request (as opposed to: it could not be reached). */
class Refused extends Error {
  constructor(readonly error: unknown) {
    super(errorMessage(error));
  }
}

export class OrderTarget {
  private readonly buffer = new Map<number, RelayEntry>();
  private bufferedBytes = 0;
  /** 733 in memory (reflected); the counters hold the durable value (the last checkpoint). */
  private reflected: number;
  /** Reflected and flushed at the storage: what may be acknowledged. */
  private flushed = 0;
  private batch: { entries: RelayEntry[]; pairs: Set<string>; bytes: number; startedAt: number } | undefined;
  /** Writes reflected since the last checkpoint. */
  private sinceCheckpoint: DataRange[] = [];
  private running = false;
  private runAgain = false;
  private retryTimer: NodeJS.Timeout | undefined;
  private refusals = 0;
  private readonly answers = new Map<number, RelayEntry>();
  private suspend: { hwm: number | null; waiters: Array<() => void> } | undefined;
  /** A fast failover applying residual entries: the target storages' pairs, and the background work. */
  private residual: { pairsByNode: Map<string, string[]>; discarded: boolean; done: Promise<void> | undefined } | undefined;
  private closed = false;
  /** Reflected entries were not flushed at the storage since this edge started: flush, then acknowledge. */
  private flushPending = false;
  /** Changes when the order starts over (resynchronisation point, Failure Suspend): work of an older epoch stops. */
  private epoch = 0;
  reflectionDelayMs: number | null = null;

  constructor(readonly id: string, public cfg: OrderConfig, private readonly env: TargetEnv, private readonly position: PositionFile) {
    const c = this.counters;
    c.reflected = Math.max(c.reflected, position.stored);
    this.reflected = c.reflected;
  }

  private get counters(): ReturnType<RelayState['target']> {
    return this.env.state.target(this.id);
  }

  get state(): OrderState {
    return this.counters.state;
  }

  close(): void {
    this.closed = true;
    void this.position.close().catch(() => undefined);
    clearTimeout(this.retryTimer);
    for (const w of this.suspend?.waiters.splice(0) ?? []) w();
  }

  /** A numbered request entry arrived (2001–2002). */
  onRequest(e: RelayEntry): void {
    const c = this.counters;
    if (e.flags & entryFlagRealign && e.seq > c.reflected) this.realign(e.seq);
    if (c.state === 'failure-suspend') {
      // The source has not heard yet: tell it again (it stops and records, §6.10 (b)).
      this.notifyFailure(e, c.reason);
      return;
    }
    this.noteRow(e);
    if (e.seq <= c.reflected) {
      // Reflected before and made durable: its answer was lost. Answer again, never reflect twice (§5.5(7)).
      const kept = this.answers.get(e.seq);
      if (kept) this.env.send(kept);
      if (e.seq <= this.flushed) this.env.send(this.ackOf(e, this.flushed));
      else {
        // Reflected before this edge restarted: the storage flushes before it is acknowledged.
        this.flushPending = true;
        this.run();
      }
      return;
    }
    if (e.seq <= this.reflected || this.buffer.has(e.seq)) return; // in the open batch, or a copy of one buffered
    if (e.seq - this.reflected > maxBufferedEntries || this.bufferedBytes + e.rio.payload.length > maxBufferedBytes) return;
    this.buffer.set(e.seq, e);
    this.bufferedBytes += e.rio.payload.length;
    this.run();
  }

  /** The source edge declared Failure Suspend (§6.10): unreflected entries of the id are discarded. */
  onFailNotice(e: RelayEntry): void {
    const c = this.counters;
    this.epoch++;
    this.batch = undefined;
    this.reflected = c.reflected;
    this.clearBuffer();
    const reason = `the source edge ${this.cfg.from} declared Failure Suspend: ${e.rio.payload.toString('utf8')}`;
    if (!applyOrderEvent(this.env.events, this.id, 'target', c, 'failure', reason)) return;
    this.pairsEvent({ kind: 'failure' }, reason);
    void this.env.state.save();
    this.dropLinks(reason, false);
  }

  /** SOK from the source edge (§6.9 1307–1308): its last assigned number. */
  onSuspendOk(e: RelayEntry): void {
    if (!this.suspend) return;
    this.suspend.hwm = e.seq;
    this.env.log.info({ order: this.id, highWaterMark: e.seq, reflected: this.reflected }, 'failover: the source edge answered');
    // The storages holding their hosts' writes learn how many entries are left.
    for (const [node, pairs] of this.residual?.pairsByNode ?? []) {
      void this.tellResidual(node, pairs, this.residualEntries(), false, `high-water mark ${e.seq}`).catch((err: unknown) =>
        this.env.log.warn({ order: this.id, node, err: errorMessage(err) }, 'fast failover: could not report the residual count'));
    }
    this.wakeSuspend();
  }

  /**
   * Failover after a source-site failure (§6.9 1303–1310, TE5–TE7): asks the source edge to flush
   * and stop, keeps reflecting in order until every number up to its high-water mark is reflected
   * or the timeout passes, then stops the order. Resolves with what the target holds. `fast`: the
   * variant of ¶0087 (TE8), below.
   */
  async failover(timeoutMs: number, fast = false): Promise<SuspendResult> {
    const c = this.counters;
    const row = Object.values(this.env.state.data.pairs).find((p) => p.order === this.id && p.side === 'target');
    if (!row) throw new TricopyError('not-found', `no pair of order-guarantee id ${this.id} goes through edge ${this.env.edge}`);
    if (fast) return this.fastFailover(timeoutMs, row);
    if (applyOrderEvent(this.env.events, this.id, 'target', c, 'suspend-instruction', `failover: asked the source edge ${this.cfg.from} to flush and stop`)) {
      this.pairsEvent({ kind: 'suspend-instruction' }, 'failover: the Suspend instruction went to the source edge');
      await this.awaitHighWaterMark(timeoutMs, this.startSuspend(row));
      await this.endFailover(timeoutMs);
    }
    return this.stopped();
  }

  /** Sends the Suspend instruction (1304); returns how to send it again. */
  private startSuspend(row: { source: string; target: string }): () => void {
    this.suspend = { hwm: null, waiters: [] };
    const askSource = (): void => {
      this.env.send({
        kind: EntryKind.Suspend, flags: 0, target: { node: row.source, pair: '' }, source: { node: row.target, pair: '' }, order: this.id,
        ioTimeMs: this.env.clock.now(), seq: 0, corr: 0, rio: { type: 0, status: 0, payload: Buffer.alloc(0) },
      });
    };
    askSource();
    return askSource;
  }

  /** 1305–1309: reflects in order until every number up to the high-water mark is reflected, or the timeout. */
  private async awaitHighWaterMark(timeoutMs: number, askSource: () => void): Promise<void> {
    const deadline = this.env.clock.now() + timeoutMs;
    let askedAt = this.env.clock.now();
    while (!this.closed && !this.drainedToHighWaterMark() && !this.residual?.discarded && this.env.clock.now() < deadline) {
      // The instruction travels like any entry and is lost with a link that is down (the source
      // site's links come back after a cut): ask again until the source edge answers.
      if (this.suspend!.hwm === null && this.env.clock.now() - askedAt >= suspendResendMs) {
        askedAt = this.env.clock.now();
        askSource();
      }
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.max(1, Math.min(200, deadline - this.env.clock.now())));
        this.suspend!.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }

  /** 1310: the order stops here, and the target storage sees its primary gone (RIO(SOK)). */
  private async endFailover(timeoutMs: number): Promise<void> {
    const c = this.counters;
    if (!this.running) await this.finishBatch().catch((err: unknown) => this.env.log.warn({ order: this.id, err: errorMessage(err) }, 'failover: the last batch could not be flushed'));
    this.epoch++;
    const hwm = this.suspend?.hwm ?? null;
    this.suspend = undefined;
    const reason = this.residual?.discarded ? `fast failover: the residual entries after ${c.reflected} were discarded by the operator`
      : hwm === null ? `failover: the source edge did not answer within ${timeoutMs} ms; reflected through ${c.reflected}`
        : `failover: high-water mark ${hwm}, reflected through ${c.reflected}`;
    applyOrderEvent(this.env.events, this.id, 'target', c, 'failover-done', reason);
    c.failedOver = true;
    this.clearBuffer();
    this.pairsEvent({ kind: 'failure' }, reason);
    await this.env.state.save();
    // RIO(SOK) (1310): the target storage sees its primary gone, so it takes over on its own.
    this.dropLinks(reason, true);
    this.lastFailover = { order: this.id, highWaterMark: hwm, reflected: c.reflected, missing: hwm === null ? 0 : Math.max(0, hwm - c.reflected), reason: c.reason };
  }

  /**
   * The fast variant (¶0087, TE8, E-21): the target storages get RIO(SOK) at once, so their pairs
   * can be taken over now, while the Suspend instruction still has the source edge flush. What
   * arrives after is applied in order as plain writes on a link of this edge's own (the storage
   * refuses replication writes once taken over), and the storages hold their hosts' writes to the
   * pairs' volumes until this edge says it is done (or an operator discards the rest): otherwise
   * older replicated data could land over newer host data.
   */
  private async fastFailover(timeoutMs: number, row: { source: string; target: string }): Promise<SuspendResult> {
    const c = this.counters;
    if (this.residual) return this.residualResult('fast failover running: residual entries are being applied');
    if (c.state === 'suspend-waiting') {
      throw new TricopyError('conflict', `order ${this.id} is failing over already at ${this.env.edge}`,
        `wait for it (network status); a fast failover this edge no longer runs (it restarted) ends with: network failover FILE --order ${this.id} --discard-residual`);
    }
    if (c.state === 'failure-suspend') return this.stopped();
    const pairsByNode = this.targetPairsByNode();
    // The hosts' hold comes first, on the link the residual entries take: if a storage cannot be
    // reached or refuses, nothing has changed yet.
    for (const [node, pairs] of pairsByNode) await this.tellResidual(node, pairs, null, false, `fast failover of order ${this.id} at ${this.env.edge}`);
    this.residual = { pairsByNode, discarded: false, done: undefined };
    applyOrderEvent(this.env.events, this.id, 'target', c, 'suspend-instruction', `fast failover: asked the source edge ${this.cfg.from} to flush and stop`);
    this.pairsEvent({ kind: 'suspend-instruction' }, 'fast failover: the Suspend instruction went to the source edge');
    const askSource = this.startSuspend(row);
    c.failedOver = true;
    await this.env.state.save();
    const reason = 'fast failover: the target storages see their primary gone now; residual entries are applied as plain writes while their hosts\' writes wait';
    this.dropLinks(reason, true);
    this.env.events.emit('order-fast-failover', this.id, reason, { edge: this.env.edge });
    this.residual.done = this.drainResidual(timeoutMs, askSource).catch((err: unknown) =>
      this.env.log.error({ order: this.id, err: errorMessage(err) }, 'fast failover: applying the residual entries failed'));
    return this.residualResult(reason);
  }

  /** In the background of a fast failover: 1305–1310 through the residual link, then the storages' holds end. */
  private async drainResidual(timeoutMs: number, askSource: () => void): Promise<void> {
    await this.awaitHighWaterMark(timeoutMs, askSource);
    await this.endFailover(timeoutMs);
    const r = this.residual!;
    const last = this.lastFailover!;
    const why = r.discarded ? last.reason
      : `residual entries applied through ${last.reflected}` + (last.highWaterMark === null ? ` (the source edge did not answer within ${timeoutMs} ms)` : `, high-water mark ${last.highWaterMark}, ${last.missing} missing`);
    this.residual = undefined;
    await this.releaseHolds(r.pairsByNode, why);
    this.env.events.emit('order-residual-done', this.id, why, { edge: this.env.edge, reflected: last.reflected, missing: last.missing });
  }

  /**
   * The operator discards what a fast failover has not applied yet: the storages' hosts write at
   * once. Also after this edge restarted (the holds outlive it at the storages).
   */
  async discardResidual(): Promise<SuspendResult> {
    const r = this.residual;
    if (r) {
      r.discarded = true;
      this.wakeSuspend();
      await r.done;
      return this.lastFailover!;
    }
    const c = this.counters;
    if (!c.failedOver) throw new TricopyError('conflict', `order ${this.id} did not fail over at ${this.env.edge}: no residual entries to discard`);
    if (c.state === 'suspend-waiting') await this.endFailover(0);
    await this.releaseHolds(this.targetPairsByNode(), `the residual entries after ${c.reflected} were discarded by the operator`);
    return this.stopped();
  }

  /** §9.44: entries a fast failover still has to apply (0 when none runs); positive until the high-water mark is known. */
  residualEntries(): number {
    if (!this.residual) return 0;
    const hwm = this.suspend?.hwm;
    return hwm === null || hwm === undefined ? Math.max(1, this.buffer.size) : Math.max(0, hwm - this.reflected);
  }

  /** Where the order stopped: the last failover's outcome, or (after a restart) the counters'. */
  private stopped(): SuspendResult {
    const c = this.counters;
    return this.lastFailover ?? { order: this.id, highWaterMark: null, reflected: c.reflected, missing: 0, reason: c.reason };
  }

  private residualResult(reason: string): SuspendResult {
    return { order: this.id, highWaterMark: this.suspend?.hwm ?? null, reflected: this.reflected, missing: 0, reason, residual: this.residualEntries() };
  }

  private targetPairsByNode(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    for (const [name, row] of Object.entries(this.env.state.data.pairs)) {
      if (row.order !== this.id || row.side !== 'target' || row.state === 'deleted') continue;
      out.set(row.target, [...(out.get(row.target) ?? []), name]);
    }
    return out;
  }

  private async releaseHolds(pairsByNode: Map<string, string[]>, why: string): Promise<void> {
    for (const [node, pairs] of pairsByNode) {
      await this.tellResidual(node, pairs, 0, true, why).catch((err: unknown) => this.env.log.warn({ order: this.id, node, err: errorMessage(err) },
        'fast failover: could not tell the storage its residual entries are done; its hosts\' writes wait until: tricopy pair release-residual'));
      this.env.releaseStorageLink(node, this.env.edge);
    }
  }

  /** ResidualState to an attached storage, on the link this edge dials under its own name. */
  private async tellResidual(node: string, pairs: string[], remaining: number | null, done: boolean, reason: string): Promise<void> {
    try {
      await this.env.deliver(node, this.env.edge, MessageType.ResidualState, residualStateCodec.encode({ order: this.id, pairs, remaining, done, reason }), reflectTimeoutMs);
    } catch (err) {
      throw new TricopyError(err instanceof TricopyError && err.code !== 'unavailable' ? err.code : 'unavailable',
        `fast failover of order ${this.id}: storage node ${node} could not be told about the residual entries: ${errorMessage(err)}`,
        'the node must be up and reachable from this edge (its replication address); or fail over without --fast');
    }
  }

  private lastFailover: SuspendResult | undefined;

  /**
   * After a failover, the old source storage is back and the storages are to reach each other
   * again (a failback, E-22): the links held down come back up. The order stays stopped until a
   * resynchronisation point resumes it. Returns the pairs of the order; false when it had not failed over.
   */
  async failback(): Promise<string[] | false> {
    const c = this.counters;
    if (!c.failedOver) return false;
    c.failedOver = false;
    const pairs = Object.entries(this.env.state.data.pairs).filter(([, row]) => row.order === this.id && row.side === 'target').map(([name]) => name);
    const reason = `failback: the storages behind ${this.env.edge} reach those behind ${this.cfg.from} again`;
    this.env.events.emit('order-failback', this.id, reason);
    await this.env.state.save();
    this.dropLinks(reason, false);
    return pairs;
  }

  private drainedToHighWaterMark(): boolean {
    const hwm = this.suspend?.hwm;
    return hwm !== null && hwm !== undefined && this.reflected >= hwm && !this.running;
  }

  private wakeSuspend(): void {
    for (const w of this.suspend?.waiters.splice(0) ?? []) w();
  }

  status(): RelayOrderStatus {
    const c = this.counters;
    return {
      id: this.id, side: 'target', from: this.cfg.from, to: this.cfg.to, state: c.state, generated: 0, reflected: this.reflected, deleted: 0,
      inFlight: this.buffer.size, log: { entries: this.buffer.size, bytes: this.bufferedBytes, capacityBytes: maxBufferedBytes },
      ackDelayMs: null, reflectionDelayMs: this.reflectionDelayMs, retransmissions: 0, delayedAcks: 0, reason: c.reason, residual: this.residualEntries(),
    };
  }

  /** The attached storage is back: go on reflecting. */
  resume(): void {
    this.run();
  }

  private realign(seq: number): void {
    const c = this.counters;
    this.epoch++;
    this.batch = undefined;
    this.clearBuffer();
    this.sinceCheckpoint = [];
    this.reflected = seq - 1;
    this.flushed = seq - 1;
    c.reflected = seq - 1;
    void this.position.reset(seq - 1);
    applyOrderEvent(this.env.events, this.id, 'target', c, 'resume', `resynchronisation point at ${seq}`);
    if (c.failedOver) {
      c.failedOver = false;
      this.dropLinks('the order resumed', false);
    }
    this.answers.clear();
    this.refusals = 0;
    void this.env.state.save();
  }

  private clearBuffer(): void {
    this.buffer.clear();
    this.bufferedBytes = 0;
  }

  /** The links of the order's target storages that answer as its source storages (see TargetEnv). */
  private dropLinks(reason: string, hold: boolean): void {
    const seen = new Set<string>();
    for (const row of Object.values(this.env.state.data.pairs)) {
      if (row.order !== this.id || row.side !== 'target' || seen.has(`${row.target}>${row.source}`)) continue;
      seen.add(`${row.target}>${row.source}`);
      this.env.dropStorageLinks(row.target, row.source, reason, hold);
    }
  }

  private pairsEvent(e: EdgePairEvent, reason: string): void {
    for (const [name, row] of Object.entries(this.env.state.data.pairs)) if (row.order === this.id && row.side === 'target') applyPairEvent(this.env.events, name, row, e, reason);
  }

  private noteRow(e: RelayEntry): void {
    const name = e.target.pair;
    if (!name) return;
    const pairs = this.env.state.data.pairs;
    const row = pairs[name];
    if (row && row.order === this.id && row.side === 'target') return;
    // A pair whose direction reversed (E-22) keeps its state and the regions the network lost the other way.
    const reversed = row !== undefined && row.state !== 'deleted';
    pairs[name] = { order: this.id, side: 'target', source: e.source.node, target: e.target.node, state: reversed ? row.state : 'simplex', diff: reversed ? row.diff : [],
      ...(reversed && row.written ? { written: row.written } : {}) };
    void this.env.state.save();
  }

  private notifyFailure(e: RelayEntry, reason: string): void {
    this.env.send({ ...responseTo(e, EntryKind.FailNotice, { type: 0, status: 0, payload: Buffer.from(reason) }), seq: this.counters.reflected });
  }

  private ackOf(e: RelayEntry, seq: number): RelayEntry {
    return { ...responseTo(e, EntryKind.Response, { type: ackType, status: responseOk, payload: Buffer.alloc(0) }), seq };
  }

  private run(): void {
    if (this.closed) return;
    if (this.running) {
      this.runAgain = true;
      return;
    }
    this.running = true;
    void this.reflectLoop().catch((err: unknown) => this.failed(err)).finally(() => {
      this.running = false;
      if (this.runAgain) {
        this.runAgain = false;
        this.run();
      } else this.wakeSuspend();
    });
  }

  /** 2003–2011: the next number only, one request at a time. */
  private async reflectLoop(): Promise<void> {
    const epoch = this.epoch;
    while (!this.closed && this.counters.state !== 'failure-suspend' && epoch === this.epoch) {
      const next = this.buffer.get(this.reflected + 1);
      if (!next) {
        await this.finishBatch();
        if (this.flushPending && !this.batch) await this.flushReflected();
        return;
      }
      const range = dataRange(next.rio.type, next.rio.payload);
      if (!range) {
        await this.finishBatch();
        await this.reflectControl(next);
        continue;
      }
      if (this.sinceCheckpoint.some((r) => rangesOverlap(r, range))) await this.checkpoint();
      if (epoch !== this.epoch) return;
      await this.deliver(next);
      if (epoch !== this.epoch) return;
      this.refusals = 0;
      this.reflected = next.seq;
      this.reflectionDelayMs = Math.max(0, this.env.clock.now() - next.ioTimeMs);
      this.sinceCheckpoint.push(range);
      const b = (this.batch ??= { entries: [], pairs: new Set(), bytes: 0, startedAt: this.env.clock.now() });
      b.entries.push(next);
      b.pairs.add(range.pair);
      b.bytes += range.length;
      if (b.entries.length >= batchMaxEntries || b.bytes >= batchMaxBytes || this.env.clock.now() - b.startedAt >= batchMaxMs) await this.finishBatch();
    }
  }

  /** A control request is reflected alone, made durable at once, and answered with the storage's answer. */
  private async reflectControl(e: RelayEntry): Promise<void> {
    const epoch = this.epoch;
    let rio: Rio;
    try {
      const lost = e.rio.type === MessageType.SwapPrepare ? this.lostBeforeSwap(e) : new Map<string, RegionRun[]>();
      const payload = await this.deliver(e);
      rio = { type: e.rio.type, status: responseOk, payload: lost.size > 0 ? this.swapAnswer(e, payload, lost) : payload };
    } catch (err) {
      if (!(err instanceof Refused)) throw err;
      rio = { type: e.rio.type, status: responseError, payload: encodeErrorPayload(unprefixed(err.error, e.target.node)) };
    }
    if (epoch !== this.epoch) return;
    const c = this.counters;
    this.reflected = e.seq;
    await this.position.store(e.seq);
    c.reflected = e.seq;
    this.flushed = e.seq;
    this.sinceCheckpoint = [];
    this.reflectionDelayMs = Math.max(0, this.env.clock.now() - e.ioTimeMs);
    const row = this.env.state.data.pairs[e.target.pair];
    const outcome = rio.status === responseOk ? controlOutcome(e.rio.type, e.rio.payload) : undefined;
    if (row && outcome) applyPairEvent(this.env.events, e.target.pair, row, outcome, `${MessageType[e.rio.type]} answered by ${e.target.node}`);
    if (e.rio.type === MessageType.PairDelete && rio.status === responseOk) delete this.env.state.data.pairs[e.target.pair];
    await this.env.state.save();
    const answer = responseTo(e, EntryKind.Response, rio);
    this.answers.set(e.seq, answer);
    if (this.answers.size > keptAnswers) this.answers.delete(this.answers.keys().next().value!);
    this.drop(e.seq);
    this.env.send(answer);
  }

  /**
   * A pair reversing through this edge (E-22): writes its old primary, attached here, had
   * acknowledged by this edge but that the network lost (727, kept from when this edge was the
   * pair's source) are in the old primary only. A swap that does not discard them is a split brain.
   */
  private lostBeforeSwap(e: RelayEntry): Map<string, RegionRun[]> {
    const { pairs, discard } = swapPairs(e.rio.payload);
    const lost = new Map<string, RegionRun[]>();
    let splitBrain: [string, RegionRun[]] | undefined;
    for (const name of pairs) {
      const row = this.env.state.data.pairs[name];
      const regions = row ? addRegions(row.diff, row.written ?? []) : [];
      if (regions.length > 0) lost.set(name, regions);
      if (row?.written?.length) splitBrain ??= [name, row.written];
    }
    if (splitBrain && !discard) {
      const [pair, regions] = splitBrain;
      throw new Refused(new TricopyError('conflict',
        `split brain: ${formatBytes(regionCount(regions) * diffChunkBytes)} of writes to pair ${pair} that ${e.target.node} had acknowledged never reached ` +
        `${e.source.node} (edge ${this.env.edge} held them when the network stopped the order)`,
        `to make ${e.source.node} the primary and discard them, run at ${e.source.node}: tricopy pair swap ${pair} --discard ${e.target.node}`));
    }
    return lost;
  }

  /** The old primary's answer with the lost regions marked; once it stepped down they are the swap's to copy. */
  private swapAnswer(e: RelayEntry, payload: Buffer, lost: Map<string, RegionRun[]>): Buffer {
    const answer = swapAnswerWithRegions(payload, lost);
    for (const [name, regions] of lost) {
      const row = this.env.state.data.pairs[name];
      const written = row?.written;
      if (row) {
        row.diff = [];
        delete row.written;
      }
      this.env.log.info({ pair: name, regions: regionCount(regions) }, 'swap: merged the regions the network lost into the old primary\'s differential record');
      if (written?.length) {
        this.env.events.emit('split-brain-resolved', name,
          `${e.source.node} became the primary: ${formatBytes(regionCount(written) * diffChunkBytes)} of writes ${e.target.node} had acknowledged through edge ${this.env.edge} are discarded and copied over`);
      }
    }
    return answer;
  }

  /** FLUSH at the storage for every pair written, 733 made durable, one response for the batch. */
  private async finishBatch(): Promise<void> {
    const b = this.batch;
    if (!b) return;
    const epoch = this.epoch;
    for (const pair of b.pairs) {
      const last = b.entries.at(-1)!;
      await this.deliver({ ...last, rio: { type: MessageType.Flush, status: 0, payload: encodeDataHeader({ name: pair, offset: 0, length: 0, flags: 0 }) } });
    }
    if (epoch !== this.epoch || this.batch !== b) return;
    await this.checkpoint();
    if (epoch !== this.epoch || this.batch !== b) return;
    this.batch = undefined;
    this.flushed = this.reflected;
    for (const e of b.entries) this.drop(e.seq);
    this.env.send(this.ackOf(b.entries.at(-1)!, this.flushed));
  }

  /** 733 made durable: what was reflected since is never reflected again. */
  private async checkpoint(): Promise<void> {
    const seq = this.reflected;
    await this.position.store(seq);
    this.counters.reflected = Math.max(this.counters.reflected, seq);
    this.sinceCheckpoint = [];
  }

  /** After a restart: everything reflected before is flushed at the storage, then acknowledged. */
  private async flushReflected(): Promise<void> {
    const epoch = this.epoch;
    const pairs = Object.entries(this.env.state.data.pairs).filter(([, r]) => r.order === this.id && r.side === 'target');
    const last = this.counters.reflected;
    for (const [name, row] of pairs) {
      await this.env.deliver(row.target, row.source, MessageType.Flush, encodeDataHeader({ name, offset: 0, length: 0, flags: 0 }), reflectTimeoutMs);
    }
    if (epoch !== this.epoch) return;
    this.flushPending = false;
    this.flushed = Math.max(this.flushed, last);
    const row = pairs[0]?.[1];
    if (row) {
      this.env.send({
        kind: EntryKind.Response, flags: 0, target: { node: row.source, pair: '' }, source: { node: row.target, pair: '' }, order: this.id,
        ioTimeMs: this.env.clock.now(), seq: this.flushed, corr: 0, rio: { type: ackType, status: responseOk, payload: Buffer.alloc(0) },
      });
    }
  }

  private drop(seq: number): void {
    const e = this.buffer.get(seq);
    if (!e) return;
    this.buffer.delete(seq);
    this.bufferedBytes -= e.rio.payload.length;
  }

  private async deliver(e: RelayEntry): Promise<Buffer> {
    try {
      if (this.residual) return await this.deliverResidual(e);
      return await this.env.deliver(e.target.node, e.source.node, e.rio.type, e.rio.payload, reflectTimeoutMs);
    } catch (err) {
      // Unreachable or not ready: try again later. Anything else is the storage's refusal.
      if (err instanceof TricopyError && err.code === 'unavailable') throw err;
      throw new Refused(err);
    }
  }

  /**
   * During a fast failover, an entry as a plain write ("SCSI WR", ¶0087) on this edge's own link:
   * the storage's pair no longer takes replication writes. A control request is refused: the
   * pair failed over.
   */
  private async deliverResidual(e: RelayEntry): Promise<Buffer> {
    const c = classify(e.rio.type);
    if (c !== 'data' && c !== 'flush') {
      throw new Refused(new TricopyError('conflict', `pair ${e.target.pair} failed over at ${e.target.node}: ${MessageType[e.rio.type] ?? e.rio.type} is not applied`));
    }
    return this.env.deliver(e.target.node, this.env.edge, MessageType.ResidualWrite, Buffer.concat(encodeResidualWrite(e.rio.type, e.rio.payload)), reflectTimeoutMs);
  }

  /** Reflection stopped: the open batch is reflected again later (it holds no overlapping writes). */
  private failed(err: unknown): void {
    if (this.counters.state === 'failure-suspend') return;
    // Back to the last checkpoint: what follows it holds no overlapping writes, so it is reflected again.
    this.reflected = this.counters.reflected;
    this.sinceCheckpoint = [];
    this.batch = undefined;
    if (err instanceof Refused) {
      this.refusals++;
      this.env.log.warn({ order: this.id, err: errorMessage(err.error), refusals: this.refusals }, 'the target storage refused a write');
      if (this.refusals >= maxRefusals) {
        void this.declareFailure(`the target storage refused writes ${this.refusals} times: ${errorMessage(err.error)}`);
        return;
      }
    } else {
      this.env.log.debug({ order: this.id, err: errorMessage(err) }, 'reflection paused: the target storage is not reachable');
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.run(), retryDelayMs);
    this.retryTimer.unref();
  }

  /** This edge declares Failure Suspend of the id (§6.10 (b)) and tells the source edge. */
  private async declareFailure(reason: string): Promise<void> {
    const c = this.counters;
    const first = this.buffer.get(this.reflected + 1);
    this.epoch++;
    if (!applyOrderEvent(this.env.events, this.id, 'target', c, 'failure', reason)) return;
    this.clearBuffer();
    this.pairsEvent({ kind: 'failure' }, reason);
    await this.env.state.save();
    this.dropLinks(reason, false);
    if (first) this.notifyFailure(first, reason);
  }
}

/** The storage's error as it said it (the link prefixed the node's name; the requester's link will again). */
function unprefixed(err: unknown, node: string): unknown {
  if (err instanceof TricopyError && err.message.startsWith(`node ${node}: `)) return new TricopyError(err.code, err.message.slice(`node ${node}: `.length), err.hint);
  return err;
}
