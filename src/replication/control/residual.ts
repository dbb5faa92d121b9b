// Residual entries of a fast failover through a remote copy network (spec 002 §6.9 fast variant,
// ¶0087, §9.44, E-21). The node's edge told its secondaries at once that their primary is gone, so
// they can be taken over, and goes on applying what the network still held, in order, as plain
// writes ("SCSI WR") on a link of its own: after a takeover the pair accepts no replication writes.
// Until the edge says the residual entries are done (or an operator discards them), host writes to
// the pairs' volumes wait: older replicated data must never land over newer host data. The holds
// are kept in <dataDir>/residual-holds.json, so a restarted node does not let hosts write early.
import * as path from 'node:path';
import type { Disk } from '../../common/disk';
import { TricopyError, invariant } from '../../common/errors';
import type { EventJournal } from '../../common/events';
import { atomicWriteJson, readJsonIfExists } from '../../common/fsutil';
import type { Logger } from '../../common/log';
import type { ResidualHoldView } from '../../contracts/pairs';
import type { PairRegistry } from '../pairs/registry';
import { residualStateCodec } from '../transport/control-messages';
import { MessageType, decodeDataHeader, decodeResidualWrite, dataFlagFua } from '../transport/messages';

export const residualHoldsFile = 'residual-holds.json';

interface Hold {
  order: string;
  edge: string;
  pairs: string[];
  volumes: string[];
  remaining: number | null;
  since: string;
  reason: string;
}

/** A residual entry as the volume gets it: data (a write or a copy), zeroes, or a flush. */
export interface ResidualOp {
  kind: 'write' | 'zero' | 'flush';
  offset: number;
  length: number;
  data: Buffer;
  fua: boolean;
}

export interface ResidualParts {
  dataDir: string;
  disk: Disk;
  /**
   * Applies an entry to a volume as a write that came from replication: not a change of the
   * taken-over pair's own (the old primary has it), but forwarded by any pair the volume is the
   * primary of (a topology's next leg), like what a cascade intermediate receives.
   */
  apply(volume: string, op: ResidualOp): Promise<void>;
  registry: PairRegistry;
  events: EventJournal;
  log: Logger;
  now(): string;
}

export class ResidualHolds {
  private readonly holds = new Map<string, Hold>();
  private waiters: Array<() => void> = [];
  /** Host writes waiting for a hold, per volume (what `pair status` shows). */
  private readonly waiting = new Map<string, number>();
  /** Whether a peer is the edge of a network this node is attached to (set by the node). */
  isNetworkEdge: (peer: string) => boolean = () => false;

  constructor(private readonly parts: ResidualParts) {}

  private get file(): string {
    return path.join(this.parts.dataDir, residualHoldsFile);
  }

  /** The holds kept before a restart. A damaged file fails the start: a hold skipped would let hosts write early. */
  async load(): Promise<void> {
    const raw = await readJsonIfExists(this.file, this.parts.disk);
    if (raw === undefined) return;
    if (!Array.isArray(raw)) throw damaged(this.file);
    for (const value of raw) {
      const h = parseHold(value, this.file);
      this.holds.set(key(h.order, h.edge), h);
    }
  }

  /** A host write of `volume` waits for this; undefined when no hold covers it. */
  waitFor(volume: string): Promise<void> | undefined {
    if (!this.covering(volume)) return undefined;
    this.waiting.set(volume, (this.waiting.get(volume) ?? 0) + 1);
    return new Promise<void>((resolve) => {
      const check = (): void => {
        if (this.covering(volume)) {
          this.waiters.push(check);
          return;
        }
        this.waiting.set(volume, (this.waiting.get(volume) ?? 1) - 1);
        resolve();
      };
      this.waiters.push(check);
    });
  }

  /** The hold over a pair's volume, as `pair status` shows it. */
  viewOf(volume: string): ResidualHoldView | undefined {
    const h = this.covering(volume);
    return h && this.view(h, [volume]);
  }

  list(): ResidualHoldView[] {
    return [...this.holds.values()].map((h) => this.view(h));
  }

  /** ResidualState from the edge: a hold begins, changes or ends. */
  async onState(payload: Buffer, peer: string): Promise<void> {
    this.requireEdge(peer);
    const s = residualStateCodec.decode(payload);
    if (s.done) {
      await this.release(s.order, peer, s.reason);
      return;
    }
    const volumes = s.pairs.map((name) => this.receivingPair(name).record.volume);
    const k = key(s.order, peer);
    const known = this.holds.get(k);
    this.holds.set(k, { order: s.order, edge: peer, pairs: s.pairs, volumes: [...new Set(volumes)], remaining: s.remaining, since: known?.since ?? this.parts.now(), reason: s.reason });
    await this.persist();
    if (!known) {
      this.parts.events.emit('residual-hold', s.order,
        `fast failover through edge ${peer}: host writes to ${volumes.join(', ')} wait until the residual entries are applied (${s.reason})`, { edge: peer, pairs: s.pairs });
    }
  }

  /** A residual entry, applied as a plain write to the pair's volume (never recorded: the old primary has it). */
  async onWrite(payload: Buffer, peer: string): Promise<void> {
    this.requireEdge(peer);
    const { type, payload: rio } = decodeResidualWrite(payload);
    const { header, data } = decodeDataHeader(rio);
    const p = this.receivingPair(header.name);
    const hold = [...this.holds.values()].find((h) => h.edge === peer && h.pairs.includes(header.name));
    if (!hold) {
      throw new TricopyError('conflict', `pair ${header.name} on this node awaits no residual entries from ${peer}`, 'only a fast failover (network failover --fast) sends them');
    }
    const kind = type === MessageType.Flush ? 'flush' : type === MessageType.Zero ? 'zero' : 'write';
    if (kind === 'write') invariant(data.length === header.length, `a residual write of pair ${header.name} carries ${data.length} bytes for ${header.length}`);
    return this.parts.apply(p.record.volume, { kind, offset: header.offset, length: header.length, data, fua: (header.flags & dataFlagFua) !== 0 });
  }

  /** Ends the hold of `order` from `edge` (every edge when undefined): the edge is done, or an operator discards what is left. */
  async release(order: string, edge: string | undefined, reason: string): Promise<ResidualHoldView[]> {
    const ended = [...this.holds.values()].filter((h) => h.order === order && (edge === undefined || h.edge === edge));
    if (ended.length === 0) return [];
    for (const h of ended) this.holds.delete(key(h.order, h.edge));
    await this.persist();
    for (const h of ended) {
      this.parts.events.emit('residual-released', h.order, `host writes to ${h.volumes.join(', ')} go on: ${reason}`, { edge: h.edge, pairs: h.pairs });
    }
    const views = ended.map((h) => this.view(h));
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
    return views;
  }

  /** A hold as shown: with the host writes waiting now on `volumes` (all of its own by default). */
  private view(h: Hold, volumes = h.volumes): ResidualHoldView {
    const waitingWrites = volumes.reduce((n, v) => n + (this.waiting.get(v) ?? 0), 0);
    return { order: h.order, edge: h.edge, remaining: h.remaining, since: h.since, waitingWrites };
  }

  private covering(volume: string): Hold | undefined {
    for (const h of this.holds.values()) if (h.volumes.includes(volume)) return h;
    return undefined;
  }

  private receivingPair(name: string): ReturnType<PairRegistry['require']> {
    const p = this.parts.registry.get(name);
    if (!p || p.record.role !== 'secondary') throw new TricopyError('not-found', `pair ${name} has no secondary on this node`);
    return p;
  }

  private requireEdge(peer: string): void {
    if (!this.isNetworkEdge(peer)) {
      throw new TricopyError('forbidden', `${peer} is not the edge of a network this node is attached to: residual entries come only from there`);
    }
  }

  private persist(): Promise<void> {
    return atomicWriteJson(this.file, [...this.holds.values()], this.parts.disk);
  }
}

function parseHold(value: unknown, file: string): Hold {
  const h = (value ?? {}) as Partial<Hold>;
  const names = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  const ok = typeof h.order === 'string' && typeof h.edge === 'string' && names(h.pairs) && names(h.volumes) &&
    (h.remaining === null || Number.isSafeInteger(h.remaining)) && typeof h.since === 'string' && typeof h.reason === 'string';
  if (!ok) throw damaged(file);
  return h as Hold;
}

function damaged(file: string): TricopyError {
  return new TricopyError('internal', `residual holds file ${file} is malformed; the data directory is damaged`,
    'restore it from a backup of the data directory; without it, host writes held for a fast failover would no longer wait');
}

function key(order: string, edge: string): string {
  return `${order}@${edge}`;
}
