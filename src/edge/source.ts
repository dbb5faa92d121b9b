// One order-guarantee id at its source edge (spec 002 §5.2, §5.4, §5.6, §5.8, §5.9, §6.4, §6.6):
// numbers the requests of the attached primary storage, stores each in the log area before the
// storage is told its write is done (the local WROK), forwards the entries toward the target edge
// after that, keeps them until a response acknowledges them, resends what is unacknowledged, and
// enters Failure Suspend when retransmission is exhausted or the log area stays full, folding the
// writes it still held into the pairs' differential bitmaps (727).
import type { Clock } from '../common/clock';
import type { Disk } from '../common/disk';
import { TricopyError, errorMessage } from '../common/errors';
import type { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import type { OrderConfig, OrderState, RelayOrderStatus } from '../contracts/network';
import { MessageType, responseOk } from '../replication/transport/messages';
import { EntryKind, type Endpoint, type RelayEntry, type Rio, decodeEntry, entryFlagRealign, encodeEntryBytes } from './entry';
import { LogArea, type LoggedEntry } from './log-area';
import { type DataRange, controlOutcome, dataRange, regionsOf, withRegions } from './rio';
import { type RegionRun, type RelayState, addRegions } from './state';
import { applyOrderEvent, applyPairEvent } from './states';

/** Bytes sent and not yet acknowledged, per order: beyond this the source waits for acknowledgements. */
export const sendWindowBytes = 32 * 1024 * 1024;
/**
 * After a timeout the source sends only this much again and waits for an answer before it sends
 * more (the path may still be broken beyond the next hop: resending the whole window into it every
 * time would only load the network). A next hop that comes back gets the whole window at once.
 */
export const probeWindowBytes = 256 * 1024;
/** The sender gives the event loop back after this many entries (heartbeats and answers go on). */
const entriesPerTurn = 64;

export interface SourceEnv {
  edge: string;
  dataDir: string;
  disk: Disk;
  clock: Clock;
  state: RelayState;
  log: Logger;
  events: EventJournal;
  /** Sends an entry toward its target edge; false when the next hop cannot take it now. */
  send(entry: RelayEntry): boolean;
  /** Sends a logged entry's bytes toward the edge `to`. */
  sendLogged(to: string, bytes: Buffer): boolean;
  /** Whether the next hop toward `edge` is up and not backed up. */
  canSend(edge: string): boolean;
  /** Closes the attached storage's links that answer as `as` (its sync pairs fail, §6.10 (2)). */
  dropStorageLinks(node: string, as: string, reason: string): void;
}

interface Retained {
  logged: LoggedEntry;
  kind: 'data' | 'control';
  pair: string;
  type: number;
  range: DataRange | undefined;
  /** A control request's answer goes back to the storage that waits for it. */
  reply?: { resolve: (rio: Rio) => void; reject: (err: Error) => void; requestPayload: Buffer } | undefined;
}

export interface SourceRequest {
  kind: 'data' | 'control';
  source: Endpoint;
  target: Endpoint;
  type: number;
  payload: Buffer;
  fua: boolean;
}

export class OrderSource {
  private area!: LogArea;
  private readonly retained = new Map<number, Retained>();
  private lastSeq = 0;
  private retainedBytes = 0;
  private unsentBytes = 0;
  private sendCursor = 1;
  private pumping = false;
  private pumpAgain = false;
  private spaceWaiters: Array<{ bytes: number; resolve: () => void; reject: (err: Error) => void; since: number }> = [];
  private stallSinceMs = 0;
  private retransmitAtMs = 0;
  private retransmitDelayMs: number;
  private resetting: Promise<void> = Promise.resolve();
  private closed = false;
  /** After a timeout: send a little and wait for an answer (see probeWindowBytes). */
  private probing = false;
  private saveTimer: NodeJS.Timeout | undefined;
  retransmissions = 0;
  delayedAcks = 0;
  ackDelayMs: number | null = null;

  constructor(readonly id: string, public cfg: OrderConfig, private readonly env: SourceEnv) {
    this.retransmitDelayMs = cfg.retransmitMs;
  }

  private get counters(): ReturnType<RelayState['source']> {
    return this.env.state.source(this.id);
  }

  get state(): OrderState {
    return this.counters.state;
  }

  /** 732 */
  get generated(): number {
    return this.lastSeq;
  }

  /** Recovers the log area: entries not acknowledged before the restart are sent again (E-12). */
  async open(): Promise<void> {
    const { area, entries } = await LogArea.open(this.env.dataDir, this.id, this.env.disk, this.env.clock, this.env.log);
    this.area = area;
    const c = this.counters;
    this.lastSeq = Math.max(c.lastAssigned, c.acked, entries.at(-1)?.seq ?? 0);
    for (const e of entries) {
      if (e.seq <= c.acked) continue;
      const { entry } = decodeEntry(e.encoded);
      const logged: LoggedEntry = { seq: e.seq, ioTimeMs: e.ioTimeMs, bytes: e.bytes, stored: e.stored, cached: undefined };
      this.area.cache(logged, e.encoded);
      const range = dataRange(entry.rio.type, entry.rio.payload);
      this.keep({ logged, kind: range ? 'data' : 'control', pair: entry.source.pair, type: entry.rio.type, range });
    }
    this.sendCursor = c.acked + 1;
    if (this.retained.size > 0) {
      this.env.log.info({ order: this.id, entries: this.retained.size, from: c.acked + 1, to: this.lastSeq }, 'log area recovered: unacknowledged entries will be sent again');
      this.stalled();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.saveTimer);
    for (const w of this.spaceWaiters.splice(0)) w.reject(new TricopyError('unavailable', 'relay shutting down'));
    for (const r of this.retained.values()) r.reply?.reject(new TricopyError('unavailable', 'relay shutting down'));
    await this.resetting.catch(() => undefined);
    await this.area?.close();
  }

  /**
   * A request of the attached primary storage (1901–1906, 1701–1706): numbered under this id and
   * stored. A write resolves (the local WROK) once its entry is in the log file (and synced for
   * FUA); a control request resolves with the target storage's answer.
   */
  async request(r: SourceRequest): Promise<Rio | undefined> {
    if (this.closed) throw new TricopyError('unavailable', 'relay shutting down');
    const c = this.counters;
    if (c.state === 'failure-suspend' && r.kind === 'data') {
      throw new TricopyError('unavailable', `order-guarantee id ${this.id} is in Failure Suspend (${c.reason}); writes are refused until the pair resyncs`,
        'the pair resyncs by itself once the network carries the order again, or run: tricopy pair resync');
    }
    const range = r.kind === 'data' ? dataRange(r.type, r.payload) : undefined;
    const headerGuess = 64 + r.source.node.length + r.target.node.length + 2 * r.source.pair.length + this.id.length;
    await this.space(r.payload.length + headerGuess);
    await this.resetting;
    let flags = 0;
    if (c.realignNext) {
      if (r.kind === 'data') {
        throw new TricopyError('unavailable', `order-guarantee id ${this.id} left Failure Suspend; the pair must resync before it writes`, 'run: tricopy pair resync');
      }
      flags |= entryFlagRealign;
      c.realignNext = false;
      applyOrderEvent(this.env.events, this.id, 'source', c, 'resume', `resumed by a ${MessageType[r.type] ?? r.type} of pair ${r.source.pair} (a resynchronisation point)`);
    }
    const seq = ++this.lastSeq; // 732 first, then the stamp (§10 I-1): numbers start at 1
    const ioTimeMs = this.env.clock.now();
    const entry: RelayEntry = { kind: EntryKind.Request, flags, target: r.target, source: r.source, order: this.id, ioTimeMs, seq, corr: 0, rio: { type: r.type, status: 0, payload: r.payload } };
    const encoded = encodeEntryBytes(entry);
    const { logged, written } = this.area.append(seq, ioTimeMs, encoded);
    const kept: Retained = { logged, kind: r.kind, pair: r.source.pair, type: r.type, range };
    let answer: Promise<Rio> | undefined;
    if (r.kind === 'control') {
      answer = new Promise<Rio>((resolve, reject) => {
        kept.reply = { resolve, reject, requestPayload: r.payload };
      });
      // A Failure Suspend can reject it while this request still waits for its log write, before
      // the await below: unhandled then, the rejection killed the relay (seen under load). The
      // await below still throws it to the storage.
      answer.catch(() => undefined);
    }
    if (this.retained.size === 0) this.stalled();
    this.keep(kept);
    await written;
    if (r.fua) await this.area.sync();
    // Sent only after the storage has its answer (claims 1 and 11): the pump runs on a later turn.
    this.env.clock.defer(() => this.pump());
    return answer ? await answer : undefined;
  }

  /** FLUSH of the attached storage: every entry it was answered for is on stable storage. */
  async sync(): Promise<void> {
    await this.resetting;
    await this.area.sync();
  }

  /** A response entry (1907–1909): it acknowledges its number and every number before it. */
  onResponse(e: RelayEntry): void {
    const r = this.retained.get(e.seq);
    if (r?.reply && e.kind === EntryKind.Response && e.rio.type === r.type) {
      const reply = r.reply;
      r.reply = undefined;
      reply.resolve(this.adjustAnswer(r, e.rio, reply.requestPayload));
    }
    this.acknowledge(Math.min(e.seq, this.lastSeq), e.ioTimeMs);
  }

  private acknowledge(seq: number, ioTimeMs: number): void {
    const c = this.counters;
    if (seq <= c.acked) return;
    for (let s = c.acked + 1; s <= seq; s++) {
      const r = this.retained.get(s);
      if (!r) continue;
      this.retained.delete(s);
      this.retainedBytes -= r.logged.bytes;
      if (s >= this.sendCursor) this.unsentBytes -= r.logged.bytes;
      this.area.forget(r.logged);
      r.reply?.reject(new TricopyError('unavailable', `the answer of the target storage to request ${s} of order ${this.id} was lost in the network`, 'retry the command'));
    }
    c.acked = seq; // 734
    this.probing = false;
    this.sendCursor = Math.max(this.sendCursor, seq + 1);
    this.ackDelayMs = Math.max(0, this.env.clock.now() - ioTimeMs);
    this.saveSoon();
    void this.area.trimThrough(seq).catch((err: unknown) => this.env.log.warn({ order: this.id, err: errorMessage(err) }, 'trimming the log area failed'));
    this.stalled();
    this.retransmitDelayMs = this.cfg.retransmitMs;
    this.wakeSpaceWaiters();
    this.pump();
  }

  /**
   * 734 reaches the state file within a second: a restarted edge that finds an older value sends
   * those entries again, and the target answers them as duplicates.
   */
  private saveSoon(): void {
    if (this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = undefined;
      void this.env.state.save().catch((err: unknown) => this.env.log.error({ err: errorMessage(err) }, 'saving relay state failed'));
    }, 1000);
    this.saveTimer.unref();
  }

  /** The clock of retransmission starts again (something moved, or the first entry is waiting). */
  private stalled(): void {
    const now = this.env.clock.now();
    this.stallSinceMs = now;
    this.retransmitAtMs = now + this.retransmitDelayMs;
  }

  /**
   * Resends what is unacknowledged from the oldest: all of it when a next hop came back, a probe's
   * worth after a timeout (the rest follows once an answer shows the path works).
   */
  retransmitNow(reason: string, probe = false): void {
    if (this.retained.size === 0 || this.closed) return;
    this.probing = probe;
    if (this.sendCursor > this.counters.acked + 1) {
      this.retransmissions++;
      this.env.log.debug({ order: this.id, from: this.counters.acked + 1, to: this.sendCursor - 1, reason }, 'resending unacknowledged entries');
    }
    this.sendCursor = this.counters.acked + 1;
    this.unsentBytes = this.retainedBytes;
    this.pump();
  }

  /** Called periodically: retransmission on timeout (§5.8) and its exhaustion (§6.10), a full log area (E-6). */
  tick(): void {
    if (this.closed) return;
    const now = this.env.clock.now();
    const w = this.spaceWaiters[0];
    if (w && now - w.since > this.cfg.fullTimeoutMs) {
      void this.failureSuspend(`the log area stayed full for ${Math.round((now - w.since) / 1000)} s`, true);
      return;
    }
    if (this.retained.size === 0 || this.counters.state === 'failure-suspend') return;
    if (now - this.stallSinceMs > this.cfg.giveUpMs) {
      void this.failureSuspend(`no acknowledgement from ${this.cfg.to} for ${Math.round((now - this.stallSinceMs) / 1000)} s: retransmission exhausted`, true);
      return;
    }
    if (now >= this.retransmitAtMs) {
      this.retransmitNow('no acknowledgement in time', true);
      this.retransmitDelayMs = Math.min(this.cfg.retransmitMaxMs, this.retransmitDelayMs * 2);
      this.retransmitAtMs = now + this.retransmitDelayMs;
    }
  }

  /** Sends entries in number order while the window and the next hop allow. */
  pump(): void {
    if (this.pumping) {
      this.pumpAgain = true;
      return;
    }
    this.pumping = true;
    void this.pumpLoop().catch((err: unknown) => this.env.log.error({ order: this.id, err: errorMessage(err) }, 'sending entries failed'))
      .finally(() => {
        this.pumping = false;
        if (this.pumpAgain) {
          this.pumpAgain = false;
          this.pump();
        }
      });
  }

  private async pumpLoop(): Promise<void> {
    let sent = 0;
    while (!this.closed && this.sendCursor <= this.lastSeq) {
      if (this.retainedBytes - this.unsentBytes >= (this.probing ? probeWindowBytes : sendWindowBytes)) return;
      if (!this.env.canSend(this.cfg.to)) return;
      if (++sent % entriesPerTurn === 0) await new Promise<void>((resolve) => setImmediate(resolve));
      const seq = this.sendCursor;
      const r = this.retained.get(seq);
      if (!r) {
        this.sendCursor++;
        continue;
      }
      const bytes = r.logged.cached ?? await this.area.read(r.logged);
      if (this.sendCursor !== seq || !this.retained.has(seq)) continue; // acknowledged or restarted meanwhile
      this.env.sendLogged(this.cfg.to, bytes);
      this.sendCursor = seq + 1;
      this.unsentBytes -= r.logged.bytes;
    }
  }

  private keep(r: Retained): void {
    this.retained.set(r.logged.seq, r);
    this.retainedBytes += r.logged.bytes;
    if (r.logged.seq >= this.sendCursor) this.unsentBytes += r.logged.bytes;
  }

  /** Back-pressure (§5.6, E-6): the local answer waits while the log area is full. */
  private space(bytes: number): Promise<void> {
    if (this.spaceWaiters.length === 0 && this.retainedBytes + bytes <= this.cfg.logBytes) return Promise.resolve();
    this.delayedAcks++;
    return new Promise((resolve, reject) => this.spaceWaiters.push({ bytes, resolve, reject, since: this.env.clock.now() }));
  }

  private wakeSpaceWaiters(): void {
    let reserved = this.retainedBytes;
    while (this.spaceWaiters.length > 0 && reserved + this.spaceWaiters[0]!.bytes <= this.cfg.logBytes) {
      const w = this.spaceWaiters.shift()!;
      reserved += w.bytes;
      w.resolve();
    }
  }

  /** The answer the primary gets: a differential record from the target also carries 727 (§6.8 1209). */
  private adjustAnswer(r: Retained, rio: Rio, request: Buffer): Rio {
    const row = this.env.state.data.pairs[r.pair];
    const outcome = rio.status === responseOk ? controlOutcome(r.type, request) : undefined;
    if (row && outcome && applyPairEvent(this.env.events, r.pair, row, outcome, `${MessageType[r.type]} answered by ${row.target}`)) void this.env.state.save();
    if (!row || rio.status !== responseOk) return rio;
    if (r.type === MessageType.PairBitmap && row.diff.length > 0) {
      const payload = withRegions(rio.payload, row.diff);
      this.env.log.info({ pair: r.pair, regions: row.diff.length }, 'merged the regions the network lost into the differential record (1209 = 1213 ∪ 727)');
      return { ...rio, payload };
    }
    // Host writes the network lost stay named until the pair is duplex again this way: the old
    // primary's record holds them only as regions to copy, not as its own writes (E-22).
    if (row.written && row.state === 'duplex') {
      delete row.written;
      void this.env.state.save();
    }
    if (r.type === MessageType.PairBitmapClear && row.diff.length > 0) {
      row.diff = [];
      void this.env.state.save();
    }
    return rio;
  }

  /**
   * Failure Suspend (§5.9.2, §6.10): every pair of the id is suspended; the writes still held become
   * bits of their pairs' 727 (durable before anything else), the log area is emptied and 734 := 732.
   * The attached primary's links are closed so that its sync pairs fail and record from now on.
   */
  async failureSuspend(reason: string, notify: boolean): Promise<void> {
    const c = this.counters;
    if (this.closed || !applyOrderEvent(this.env.events, this.id, 'source', c, 'failure', reason)) return;
    const regions = new Map<string, RegionRun[]>();
    // Host writes of duplex pairs: a copy (a resync's or a returning primary's recovery) also sends
    // zeroes as Zero, but only while the pair is not duplex.
    const written = new Map<string, RegionRun[]>();
    for (const r of this.retained.values()) {
      if (r.range) regions.set(r.pair, [...(regions.get(r.pair) ?? []), ...regionsOf(r.range)]);
      if (r.range && r.type !== MessageType.Copy && this.env.state.data.pairs[r.pair]?.state === 'duplex') {
        written.set(r.pair, [...(written.get(r.pair) ?? []), ...regionsOf(r.range)]);
      }
      r.reply?.reject(new TricopyError('unavailable', `order-guarantee id ${this.id} entered Failure Suspend: ${reason}`));
    }
    const pairs = Object.entries(this.env.state.data.pairs).filter(([, row]) => row.order === this.id && row.side === 'source');
    for (const [name, row] of pairs) {
      row.diff = addRegions(row.diff, regions.get(name) ?? []);
      if (written.has(name)) row.written = addRegions(row.written ?? [], written.get(name)!);
      applyPairEvent(this.env.events, name, row, { kind: 'failure' }, `order-guarantee id ${this.id} entered Failure Suspend: ${reason}`);
    }
    const held = this.retained.size;
    this.retained.clear();
    this.retainedBytes = 0;
    this.unsentBytes = 0;
    c.lastAssigned = this.lastSeq;
    c.acked = this.lastSeq; // 734 := 732
    c.realignNext = true;
    this.sendCursor = this.lastSeq + 1;
    await this.env.state.save();
    this.resetting = this.area.reset(this.lastSeq + 1);
    await this.resetting;
    for (const w of this.spaceWaiters.splice(0)) w.reject(new TricopyError('unavailable', `order-guarantee id ${this.id} entered Failure Suspend: ${reason}`));
    this.env.log.warn({ order: this.id, heldEntries: held, pairs: pairs.map(([n]) => n), reason }, 'Failure Suspend: the held writes are in the pairs\' differential bitmaps');
    const someone = pairs[0]?.[1];
    if (notify && someone) {
      this.env.send({
        kind: EntryKind.FailNotice, flags: 0, target: { node: someone.target, pair: '' }, source: { node: someone.source, pair: '' }, order: this.id,
        ioTimeMs: this.env.clock.now(), seq: this.lastSeq, corr: 0, rio: { type: 0, status: 0, payload: Buffer.from(reason) },
      });
    }
    for (const [, row] of pairs) this.env.dropStorageLinks(row.source, row.target, `order-guarantee id ${this.id} entered Failure Suspend: ${reason}`);
  }

  /**
   * Failover (§6.9 1304, SE5): the target edge asks this edge to stop. Every retained entry goes out
   * again in number order, then the SOK with the high-water mark (732); then Failure Suspend.
   */
  async onSuspend(e: RelayEntry): Promise<void> {
    const hwm = this.lastSeq;
    this.sendCursor = this.counters.acked + 1;
    this.unsentBytes = this.retainedBytes;
    for (let s = this.sendCursor; s <= this.lastSeq; s++) {
      const r = this.retained.get(s);
      if (r) this.env.sendLogged(this.cfg.to, r.logged.cached ?? await this.area.read(r.logged));
    }
    this.sendCursor = this.lastSeq + 1;
    this.unsentBytes = 0;
    this.env.send({
      kind: EntryKind.SuspendOk, flags: 0, target: e.source, source: e.target, order: this.id, ioTimeMs: this.env.clock.now(), seq: hwm, corr: 0,
      rio: { type: 0, status: 0, payload: Buffer.alloc(0) },
    });
    this.env.events.emit('order-suspend-instruction', this.id, `the target edge ${this.cfg.to} asked for a failover: flushed, high-water mark ${hwm}`);
    await this.failureSuspend(`failover asked by the target edge ${this.cfg.to} (high-water mark ${hwm})`, false);
  }

  status(): RelayOrderStatus {
    const c = this.counters;
    return {
      id: this.id, side: 'source', from: this.cfg.from, to: this.cfg.to, state: c.state, generated: this.lastSeq, reflected: 0, deleted: c.acked,
      inFlight: this.lastSeq - c.acked, log: { entries: this.retained.size, bytes: this.retainedBytes, capacityBytes: this.cfg.logBytes },
      ackDelayMs: this.ackDelayMs, reflectionDelayMs: null, retransmissions: this.retransmissions, delayedAcks: this.delayedAcks, reason: c.reason,
    };
  }
}
