// What a relay reads from the storage nodes' messages it carries (the RIOs, spec 002 §4.12): which
// pair a message is about, which volume range a write covers (for 727 and for ordering), and the
// pair-state changes control messages announce (725). Relays never change a RIO, except the
// differential record the target storage answers with, which the source edge ORs with 727 (§6.8).
import { TricopyError } from '../common/errors';
import { bitmapReplyCodec, pairCreateCodec, pairUpdateCodec, swapPrepareCodec, swapPreparedCodec } from '../replication/transport/control-messages';
import { MessageType, dataFlagFua, decodeDataHeader } from '../replication/transport/messages';
import { diffChunkBytes } from '../replication/limits';
import type { RegionRun } from './state';
import type { EdgePairEvent } from './states';

export type RioClass = 'data' | 'flush' | 'pair-control' | 'node-control';

/** data: numbered and acknowledged by the source edge; pair-control: numbered, answered end to end. */
export function classify(type: number): RioClass {
  switch (type) {
    case MessageType.Write:
    case MessageType.Zero:
    case MessageType.Copy:
      return 'data';
    case MessageType.Flush:
      return 'flush';
    case MessageType.PairCreate:
    case MessageType.PairUpdate:
    case MessageType.PairDelete:
    case MessageType.PairBitmap:
    case MessageType.PairBitmapClear:
    case MessageType.SwapPrepare:
    case MessageType.RegionHashes:
      return 'pair-control';
    default:
      // PairsSync (node-level), async journal batches and progress (already ordered by the storage).
      return 'node-control';
  }
}

export interface DataRange {
  pair: string;
  offset: number;
  length: number;
}

/** The volume range a data message covers (undefined for other messages). */
export function dataRange(type: number, payload: Buffer): DataRange | undefined {
  if (classify(type) !== 'data') return undefined;
  const { header } = decodeDataHeader(payload);
  return { pair: header.name, offset: header.offset, length: header.length };
}

/** A write the storage asked to be durable before it is answered (FUA). */
export function isFua(payload: Buffer): boolean {
  return (decodeDataHeader(payload).header.flags & dataFlagFua) !== 0;
}

/** The pair a message is about: a data header's name, or a control message's "name" ('' when none). */
export function pairOf(type: number, payload: Buffer): string {
  const c = classify(type);
  if (c === 'data' || c === 'flush') return decodeDataHeader(payload).header.name;
  if (c === 'pair-control') {
    let value: unknown;
    try {
      value = JSON.parse(payload.toString('utf8'));
    } catch {
      throw new TricopyError('invalid-argument', 'control message is not JSON');
    }
    const name = (value as { name?: unknown } | null)?.name;
    if (typeof name !== 'string' || name.length === 0) throw new TricopyError('invalid-argument', 'control message names no pair');
    return name;
  }
  return '';
}

/** The 64 KiB regions (the bitmaps' granularity) a range touches, as a run [first, end). */
export function regionsOf(r: DataRange): RegionRun[] {
  if (r.length === 0) return [];
  return [[Math.floor(r.offset / diffChunkBytes), Math.floor((r.offset + r.length - 1) / diffChunkBytes) + 1]];
}

export function rangesOverlap(a: DataRange, b: DataRange): boolean {
  return a.pair === b.pair && a.offset < b.offset + b.length && b.offset < a.offset + a.length;
}

/** A PairBitmap answer with `regions` set as well (1209 = 1213 ∪ 727). */
export function withRegions(payload: Buffer, regions: RegionRun[]): Buffer {
  const reply = bitmapReplyCodec.decode(payload);
  return bitmapReplyCodec.encode({ ...reply, bitmap: markRegions(reply.bitmap, regions) });
}

/** A base64 differential record (a bit per 64 KiB region) with `regions` set. */
function markRegions(bitmap: string, regions: RegionRun[]): string {
  const bits = Buffer.from(bitmap, 'base64');
  for (const [first, end] of regions) {
    for (let r = first; r < end && r >>> 3 < bits.length; r++) bits[r >>> 3]! |= 1 << (r & 7);
  }
  return bits.toString('base64');
}

/** The pairs a SwapPrepare names (one, or a group's members); none when it does not decode. */
export function swapPairs(request: Buffer): { pairs: string[]; discard: boolean } {
  try {
    const req = swapPrepareCodec.decode(request);
    return { pairs: req.members ? req.members.map((m) => m.name) : [req.name], discard: req.discardReceiverChanges };
  } catch {
    return { pairs: [], discard: false }; // the storage judges what it cannot read
  }
}

/**
 * A SwapPrepared answer with regions the network lost marked in the named pairs' bitmaps (E-22):
 * the old primary holds data there the new primary never received, so those regions are copied
 * and the pair is not clean.
 */
export function swapAnswerWithRegions(payload: Buffer, lost: Map<string, RegionRun[]>): Buffer {
  const reply = swapPreparedCodec.decode(payload);
  if (reply.members) {
    const members = reply.members.map((m) => (lost.has(m.name) ? { ...m, bitmap: markRegions(m.bitmap, lost.get(m.name)!), clean: false } : m));
    return swapPreparedCodec.encode({ ...reply, bitmap: members[0]!.bitmap, clean: members[0]!.clean, members });
  }
  const only = [...lost.values()][0];
  return only ? swapPreparedCodec.encode({ ...reply, bitmap: markRegions(reply.bitmap, only), clean: false }) : payload;
}

/** The event for 725 a control exchange that succeeded announces (undefined: none). */
export function controlOutcome(type: number, request: Buffer): EdgePairEvent | undefined {
  try {
    if (type === MessageType.PairCreate) return { kind: 'created', copy: pairCreateCodec.decode(request).initialCopy !== 'none' };
    if (type === MessageType.PairUpdate) return { kind: 'announced', state: pairUpdateCodec.decode(request).state };
    if (type === MessageType.PairDelete) return { kind: 'deleted' };
  } catch {
    // Not ours to judge: the storage answered it.
  }
  return undefined;
}
