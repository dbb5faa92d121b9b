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
