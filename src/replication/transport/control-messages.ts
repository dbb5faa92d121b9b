// JSON payloads of the pair-control messages between nodes, each with its schema.
import type { JSONSchemaType } from 'ajv';
import { jsonCodec } from './messages';
import type { AppliedMark } from '../delta/delta-record';
import type { CopyMode, FenceLevel, PairRole, PairState, SuspendCause } from '../pairs/pair-model';

const nameSchema = { type: 'string', minLength: 1, maxLength: 63 } as const;
const stateSchema = { type: 'string', enum: ['simplex', 'initial-copying', 'duplex', 'duplex-pending', 'suspending', 'suspended', 'secondary-writable'] } as const;
const causeSchema = { type: 'string', nullable: true, enum: ['operator', 'failure', 'journal-full', 'crash-recovery', 'takeover-by-peer', null] } as const;

export interface PairSummary {
  name: string;
  role: PairRole;
  state: PairState;
  suspendCause: SuspendCause | null;
  generation: number;
  mode: CopyMode;
  group: string | null;
  volume: string;
  peerVolume: string;
  hostWritesRecorded: boolean;
  fence?: FenceLevel;
  fenceGroup?: string | null;
  /** The sender stepped down in a swap whose requester never became the primary (absent from older nodes). */
  awaitingNewPrimary?: boolean;
}

const pairSummarySchema: JSONSchemaType<PairSummary> = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'role', 'state', 'suspendCause', 'generation', 'mode', 'group', 'volume', 'peerVolume', 'hostWritesRecorded'],
  properties: {
    name: nameSchema,
    role: { type: 'string', enum: ['primary', 'secondary'] },
    state: stateSchema as never,
    suspendCause: causeSchema as never,
    generation: { type: 'integer', minimum: 0 },
    mode: { type: 'string', enum: ['sync', 'async'] },
    group: { type: 'string', nullable: true, maxLength: 63 } as never,
    volume: nameSchema,
    peerVolume: nameSchema,
    hostWritesRecorded: { type: 'boolean' },
    fence: { type: 'string', enum: ['data', 'never'], nullable: true } as never,
    fenceGroup: { type: 'string', nullable: true, maxLength: 63 } as never,
    awaitingNewPrimary: { type: 'boolean', nullable: true } as never,
  },
};

export interface GroupPosition {
  group: string;
  receivedSeq: number;
  appliedSeq: number;
}

const groupPositionSchema: JSONSchemaType<GroupPosition> = {
  type: 'object',
  additionalProperties: false,
  required: ['group', 'receivedSeq', 'appliedSeq'],
  properties: { group: nameSchema, receivedSeq: { type: 'integer', minimum: 0 }, appliedSeq: { type: 'integer', minimum: 0 } },
};

export interface PairsSync {
  node: string;
  pairs: PairSummary[];
  /** Groups for which the sender is the secondary, with its journal positions. */
  groups: GroupPosition[];
  /**
   * In an answer: volumes the asking node pairs with here that have neither the pair nor the volume
   * here (this node lost its data), as opposed to a pair taken over and dissolved here.
   */
  absentVolumes: string[];
}

export const pairsSyncCodec = jsonCodec<PairsSync>({
  type: 'object',
  additionalProperties: false,
  required: ['node', 'pairs', 'groups', 'absentVolumes'],
  properties: {
    node: nameSchema,
    pairs: { type: 'array', maxItems: 4096, items: pairSummarySchema },
    groups: { type: 'array', maxItems: 4096, items: groupPositionSchema },
    absentVolumes: { type: 'array', maxItems: 4096, items: nameSchema },
  },
});

export const groupPositionCodec = jsonCodec<GroupPosition>(groupPositionSchema);

export interface PairCreateRequest {
  name: string;
  /** The volume on the receiving (secondary) node. */
  volume: string;
  /** The volume on the sending (primary) node. */
  peerVolume: string;
  primary: { node: string; host: string; replPort: number };
  mode: CopyMode;
  fence: FenceLevel;
  group: string | null;
  sizeBytes: number;
  generation: number;
  fenceGroup: string | null;
  initialCopy: 'full' | 'none' | 'delta';
  createVolume: boolean;
  /** Absent for data pairs (and from nodes that predate quorum pairs). */
  purpose?: 'data' | 'quorum' | null;
}

export const pairCreateCodec = jsonCodec<PairCreateRequest>({
  type: 'object',
  additionalProperties: false,
  required: ['name', 'volume', 'peerVolume', 'primary', 'mode', 'fence', 'group', 'sizeBytes', 'generation', 'fenceGroup', 'initialCopy', 'createVolume'],
  properties: {
    name: nameSchema,
    volume: nameSchema,
    peerVolume: nameSchema,
    primary: {
      type: 'object',
      additionalProperties: false,
      required: ['node', 'host', 'replPort'],
      properties: { node: nameSchema, host: { type: 'string', maxLength: 255 }, replPort: { type: 'integer', minimum: 1, maximum: 65535 } },
    },
    mode: { type: 'string', enum: ['sync', 'async'] },
    fence: { type: 'string', enum: ['data', 'never'] },
    group: { type: 'string', nullable: true, maxLength: 63 } as never,
    sizeBytes: { type: 'integer', minimum: 0 },
    generation: { type: 'integer', minimum: 0 },
    fenceGroup: { type: 'string', nullable: true, maxLength: 63 } as never,
    initialCopy: { type: 'string', enum: ['full', 'none', 'delta'] },
    createVolume: { type: 'boolean' },
    purpose: { type: 'string', nullable: true, enum: ['data', 'quorum', null] } as never,
  },
});

export interface BitmapReply {
  /** base64 of the bitmap bytes (64 KiB regions). */
  bitmap: string;
  hostWritesRecorded: boolean;
  /** A new secondary: how far its volume had applied the async stream it was detached from. */
  mark?: AppliedMark | null;
  /**
   * A new async secondary: the highest entry its group's received journal holds (0 when new). A
   * group that is new at the primary numbers its stream after it, since the secondary would skip
   * numbers it holds as duplicates (an earlier stream's members may still be leaving the group).
   */
  receivedSeq?: number;
}

export const bitmapReplyCodec = jsonCodec<BitmapReply>({
  type: 'object',
  additionalProperties: false,
  required: ['bitmap', 'hostWritesRecorded'],
  properties: {
    bitmap: { type: 'string' },
    hostWritesRecorded: { type: 'boolean' },
    mark: {
      type: 'object', nullable: true, additionalProperties: false, required: ['origin', 'group', 'appliedSeq'],
      properties: { origin: nameSchema, group: { type: 'string', maxLength: 63 }, appliedSeq: { type: 'integer', minimum: 0 } },
    },
    receivedSeq: { type: 'integer', minimum: 0, nullable: true },
  },
});

export interface PairUpdate {
  name: string;
  role: PairRole;
  state: PairState;
  suspendCause: SuspendCause | null;
  reason: string;
  generation: number;
  secondaryWritable: boolean;
  copyTotal: number;
  copyDone: number;
  /**
   * Sync pair in duplex while the volume's async pair is duplex too: every write up to this entry
   * of the async stream is on both copies, so the secondary's delta record may start here.
   */
  deltaBase?: { group: string; seq: number } | null;
  /** How the primary protects the pair: the secondary keeps the same, for status and a later swap. */
  fence?: FenceLevel;
  fenceGroup?: string | null;
}

export const pairUpdateCodec = jsonCodec<PairUpdate>({
  type: 'object',
  additionalProperties: false,
  required: ['name', 'role', 'state', 'suspendCause', 'reason', 'generation', 'secondaryWritable', 'copyTotal', 'copyDone'],
  properties: {
    name: nameSchema,
    role: { type: 'string', enum: ['primary', 'secondary'] },
    state: stateSchema as never,
    suspendCause: causeSchema as never,
    reason: { type: 'string', maxLength: 1000 },
    generation: { type: 'integer', minimum: 0 },
    secondaryWritable: { type: 'boolean' },
    copyTotal: { type: 'integer', minimum: 0 },
    copyDone: { type: 'integer', minimum: 0 },
    deltaBase: {
      type: 'object', nullable: true, additionalProperties: false, required: ['group', 'seq'],
      properties: { group: { type: 'string', minLength: 1, maxLength: 63 }, seq: { type: 'integer', minimum: 0 } },
    },
    fence: { type: 'string', enum: ['data', 'never'], nullable: true } as never,
    fenceGroup: { type: 'string', nullable: true, maxLength: 63 } as never,
  },
});

export interface PairNameMessage {
  name: string;
}

export const pairNameCodec = jsonCodec<PairNameMessage>({
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  properties: { name: nameSchema },
});

export interface SwapPrepare {
  name: string;
  /** The node that becomes the primary (the sender). */
  newPrimary: string;
  generation: number;
  /** The sender recorded host writes the receiver lacks. */
  senderHasChanges: boolean;
  /** Async: the last entry the sender had received when it took over (null for a planned swap). */
  receivedSeqAtTakeover: number | null;
  /** Operator accepted discarding the receiver's changes. */
  discardReceiverChanges: boolean;
  /**
   * A consistency group swaps as one: every member here (the first is `name` above), prepared and
   * switched together, so the group's journal never runs in both directions.
   */
  members?: SwapMember[];
}

export interface SwapMember {
  name: string;
  generation: number;
  senderHasChanges: boolean;
  receivedSeqAtTakeover: number | null;
}

const swapMemberSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['name', 'generation', 'senderHasChanges', 'receivedSeqAtTakeover'],
  properties: {
    name: nameSchema,
    generation: { type: 'integer', minimum: 0 },
    senderHasChanges: { type: 'boolean' },
    receivedSeqAtTakeover: { type: 'integer', nullable: true, minimum: 0 },
  },
} as const;

export const swapPrepareCodec = jsonCodec<SwapPrepare>({
  type: 'object',
  additionalProperties: false,
  required: ['name', 'newPrimary', 'generation', 'senderHasChanges', 'receivedSeqAtTakeover', 'discardReceiverChanges'],
  properties: {
    name: nameSchema,
    newPrimary: nameSchema,
    generation: { type: 'integer', minimum: 0 },
    senderHasChanges: { type: 'boolean' },
    receivedSeqAtTakeover: { type: 'integer', nullable: true, minimum: 0 } as never,
    discardReceiverChanges: { type: 'boolean' },
    members: { type: 'array', nullable: true, maxItems: 4096, items: swapMemberSchema } as never,
  },
});

export interface SwapPrepared {
  /** base64 bitmap of the regions the receiver (old primary) changed that the sender lacks. */
  bitmap: string;
  /** True when the old primary was duplex and quiesced with nothing to copy. */
  clean: boolean;
  /** For a group swap: each member's bitmap and cleanliness (the first repeats the fields above). */
  members?: Array<{ name: string; bitmap: string; clean: boolean }>;
}

export const swapPreparedCodec = jsonCodec<SwapPrepared>({
  type: 'object',
  additionalProperties: false,
  required: ['bitmap', 'clean'],
  properties: {
    bitmap: { type: 'string' },
    clean: { type: 'boolean' },
    members: {
      type: 'array', nullable: true, maxItems: 4096,
      items: { type: 'object', additionalProperties: false, required: ['name', 'bitmap', 'clean'], properties: { name: nameSchema, bitmap: { type: 'string' }, clean: { type: 'boolean' } } },
    } as never,
  },
});

export interface JournalAck {
  receivedSeq: number;
  appliedSeq: number;
}

export const journalAckCodec = jsonCodec<JournalAck>({
  type: 'object',
  additionalProperties: false,
  required: ['receivedSeq', 'appliedSeq'],
  properties: { receivedSeq: { type: 'integer', minimum: 0 }, appliedSeq: { type: 'integer', minimum: 0 } },
});

export interface RegionHashesRequest {
  name: string;
  offset: number;
  length: number;
  /** Bytes per checksum (the last piece may be shorter). */
  grainBytes: number;
}

export const regionHashesCodec = jsonCodec<RegionHashesRequest>({
  type: 'object',
  additionalProperties: false,
  required: ['name', 'offset', 'length', 'grainBytes'],
  properties: {
    name: nameSchema,
    offset: { type: 'integer', minimum: 0 },
    length: { type: 'integer', minimum: 1, maximum: 256 * 1024 * 1024 },
    grainBytes: { type: 'integer', minimum: 512, maximum: 16 * 1024 * 1024 },
  },
});

/**
 * The edge of a fast failover tells the node where residual entries stand (spec 002 §6.9, E-21):
 * while not done, host writes to the pairs' volumes wait; `remaining` is null until the source
 * edge reported its high-water mark.
 */
export interface ResidualState {
  order: string;
  pairs: string[];
  remaining: number | null;
  done: boolean;
  reason: string;
}

export const residualStateCodec = jsonCodec<ResidualState>({
  type: 'object',
  additionalProperties: false,
  required: ['order', 'pairs', 'remaining', 'done', 'reason'],
  properties: {
    order: nameSchema,
    pairs: { type: 'array', maxItems: 65536, items: nameSchema },
    remaining: { type: 'integer', minimum: 0, nullable: true } as never,
    done: { type: 'boolean' },
    reason: { type: 'string', maxLength: 4096 },
  },
});
