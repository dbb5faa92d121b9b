// JSON schemas of what nodes push to the manager. The envelope is checked strictly; the node's own
// documents inside a snapshot (volumes, pairs, groups) are checked for shape only, since they come
// from a node that holds the manager's token and are stored, not acted upon.
const name = { type: 'string', minLength: 1, maxLength: 63 } as const;
const doc = { type: 'object' } as const;
const docOrNull = { anyOf: [{ type: 'object' }, { type: 'null' }] } as const;

export const maxEventsPerIngest = 1000;

export const nodeEventSchema = {
  type: 'object', required: ['id', 'time', 'kind', 'subject', 'reason'], additionalProperties: false,
  properties: {
    id: { type: 'integer', minimum: 1 }, time: { type: 'string', maxLength: 40 }, kind: { type: 'string', minLength: 1, maxLength: 64 },
    subject: { type: 'string', maxLength: 256 }, reason: { type: 'string', maxLength: 4096 }, details: doc,
  },
} as const;

export const ingestBatchBody = {
  type: 'object', required: ['node', 'incarnation', 'snapshot', 'events', 'droppedEvents'], additionalProperties: false,
  properties: {
    node: name,
    incarnation: { type: 'string', minLength: 1, maxLength: 200 },
    droppedEvents: { type: 'integer', minimum: 0 },
    snapshot: {
      anyOf: [{ type: 'null' }, {
        type: 'object', required: ['info', 'volumes', 'pairs', 'groups', 'table'], additionalProperties: false,
        properties: {
          info: doc, volumes: { type: 'array', items: doc }, pairs: { type: 'array', items: doc }, groups: { type: 'array', items: doc },
          table: { type: 'array', items: doc },
        },
      }],
    },
    events: {
      type: 'array', maxItems: maxEventsPerIngest,
      items: {
        type: 'object', required: ['event'], additionalProperties: false,
        properties: { event: nodeEventSchema, pair: docOrNull, volume: docOrNull, group: docOrNull, table: { type: 'array', items: doc } },
      },
    },
  },
} as const;

/** GET /v1/topologies/:name/arbiter: the name as topology files allow it. */
export const topologyNameParams = {
  type: 'object', required: ['name'], additionalProperties: false,
  properties: { name: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_-]{0,23}$' } },
} as const;

const strOrNull = { type: ['string', 'null'] } as const;
const intOrNull = { type: ['integer', 'null'] } as const;

/** Its answer (ArbiterBoard in contracts/manager.ts). */
export const arbiterBoardResponse = {
  type: 'object',
  required: ['topology', 'failover', 'arbiter', 'leaseMs', 'renewMs', 'fenceMarginMs', 'failback', 'failbackDelayMs', 'holder', 'sites', 'decisions', 'eventsRead'],
  properties: {
    topology: { type: 'string' }, failover: { type: 'string', enum: ['manual', 'automatic'] }, arbiter: strOrNull,
    leaseMs: intOrNull, renewMs: intOrNull, fenceMarginMs: intOrNull,
    failback: { type: 'string', enum: ['manual', 'automatic'] }, failbackDelayMs: intOrNull, holder: strOrNull,
    sites: {
      type: 'array',
      items: {
        type: 'object', required: ['site', 'role', 'node', 'state', 'failback', 'reason', 'at'],
        properties: { site: { type: 'string' }, role: { type: 'string' }, node: strOrNull, state: strOrNull, failback: strOrNull, reason: strOrNull, at: strOrNull },
      },
    },
    decisions: {
      type: 'array',
      items: {
        type: 'object', required: ['seq', 'at', 'site', 'node', 'kind', 'reason'],
        properties: { seq: { type: 'integer' }, at: { type: 'string' }, site: { type: 'string' }, node: strOrNull, kind: { type: 'string' }, reason: { type: 'string' } },
      },
    },
    eventsRead: { type: 'integer' },
  },
} as const;
