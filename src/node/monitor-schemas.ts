// JSON schemas of the monitor API's bodies (spec 000 commands and reports, manager registration),
// checked by fastify at the edge so the monitor works with trusted, typed values. Limits are
// generous for real use and small enough that a hostile body cannot cost much.
const name = { type: 'string', minLength: 1, maxLength: 63 } as const;
const url = { type: 'string', minLength: 8, maxLength: 512, pattern: '^https?://' } as const;
const iso = { type: 'string', minLength: 1, maxLength: 40 } as const;
const shortCode = { type: 'string', enum: ['SMPL', 'COPY', 'PAIR', 'PSUS', 'PSUE', 'SSUS', 'SSWS'] } as const;

export const maxPathHops = 16;
export const maxReportsPerBatch = 1000;

const copyDescriptor = {
  type: 'object',
  required: ['copyId', 'source', 'target', 'volume', 'mode', 'topology'],
  additionalProperties: false,
  properties: {
    copyId: { type: 'string', minLength: 1, maxLength: 200 },
    source: name,
    target: name,
    volume: name,
    mode: { type: 'string', enum: ['sync', 'async'] },
    topology: { anyOf: [name, { type: 'null' }] },
  },
} as const;

export const monitorCommandBody = {
  type: 'object',
  required: ['commandId', 'type', 'copy', 'issuer', 'path'],
  additionalProperties: false,
  properties: {
    commandId: { type: 'string', minLength: 1, maxLength: 100 },
    type: { type: 'string', enum: ['construct', 'release'] },
    copy: copyDescriptor,
    issuer: { type: 'string', minLength: 1, maxLength: 100 },
    path: {
      type: 'array', minItems: 1, maxItems: maxPathHops,
      items: { type: 'object', required: ['node', 'url'], additionalProperties: false, properties: { node: name, url } },
    },
    monitored: {
      type: 'object', required: ['codes', 'lagSeconds', 'journalPercent', 'linkDownSeconds'], additionalProperties: false,
      properties: {
        codes: { type: 'array', maxItems: 7, items: shortCode },
        lagSeconds: { anyOf: [{ type: 'number', minimum: 0, maximum: 86_400 }, { type: 'null' }] },
        journalPercent: { anyOf: [{ type: 'number', minimum: 0, maximum: 100 }, { type: 'null' }] },
        linkDownSeconds: { anyOf: [{ type: 'number', minimum: 0, maximum: 86_400 }, { type: 'null' }] },
      },
    },
  },
} as const;

export const copyReportSchema = {
  type: 'object',
  required: ['copy', 'status', 'origin', 'lastHop', 'reportId', 'detectedAt', 'hops'],
  additionalProperties: false,
  properties: {
    copy: copyDescriptor,
    status: {
      type: 'object', required: ['change', 'condition', 'code', 'state', 'reason', 'lagSeconds'], additionalProperties: false,
      properties: {
        change: { type: 'string', enum: ['entered', 'recovered'] },
        condition: { type: 'string', enum: ['SMPL', 'COPY', 'PAIR', 'PSUS', 'PSUE', 'SSUS', 'SSWS', 'lag-high', 'journal-high', 'link-down'] },
        code: { anyOf: [shortCode, { type: 'null' }] },
        state: { anyOf: [{ type: 'string', maxLength: 40 }, { type: 'null' }] },
        reason: { type: 'string', maxLength: 2000 },
        lagSeconds: { anyOf: [{ type: 'number' }, { type: 'null' }] },
      },
    },
    origin: name,
    lastHop: name,
    reportId: { type: 'string', minLength: 1, maxLength: 200 },
    detectedAt: iso,
    hops: { type: 'integer', minimum: 0, maximum: 1000 },
  },
} as const;

export const reportBatchBody = {
  type: 'object', required: ['reports'], additionalProperties: false,
  properties: { reports: { type: 'array', maxItems: maxReportsPerBatch, items: copyReportSchema } },
} as const;

export const registerManagerBody = {
  type: 'object', required: ['managerId', 'urls'], additionalProperties: false,
  properties: {
    managerId: { type: 'string', minLength: 1, maxLength: 100 },
    urls: { type: 'array', minItems: 1, maxItems: 16, items: url },
    token: { type: 'string', minLength: 16, maxLength: 512 },
  },
} as const;
