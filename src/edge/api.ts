// A relay's HTTP control API (fastify): what it is, the network it runs (PUT by network apply),
// its status (counters 732/733/734, log area use, delays, pairs), the virtual storages an edge
// presents and their configuration, pair assignments, failover at a target edge, its events and
// Prometheus metrics. Bodies are validated by JSON schemas; failures
// are answered as problem documents, as the node's API does.
import { maxCompressLevel, minCompressLevel, minLinkBandwidthBitsPerSecond } from './link-shaping';
import Fastify, { type FastifyInstance, type FastifyRequest } from 'fastify';
import type { AddressInfo } from 'node:net';
import { TricopyError } from '../common/errors';
import { answerErrorsAsProblems } from '../common/http-problems';
import type { Logger } from '../common/log';
import type { RelayNetworkConfig } from '../contracts/network';
import type { Relay } from './relay';
import { maxListedVolumes } from './virtual-storage';

const name = { type: 'string', minLength: 1, maxLength: 63 } as const;
const positive = { type: 'integer', minimum: 1 } as const;

const bytes = { type: 'integer', minimum: 0 } as const;
const shortText = { type: 'string', maxLength: 255 } as const;
const storageConfigurationSchema = {
  type: 'object', additionalProperties: false, required: ['product', 'version', 'site', 'emulation', 'volumeCount', 'capacityBytes', 'volumes'],
  properties: {
    product: shortText, version: shortText, site: shortText, emulation: shortText, volumeCount: bytes, capacityBytes: bytes,
    volumes: {
      type: 'array', maxItems: maxListedVolumes,
      items: { type: 'object', additionalProperties: false, required: ['name', 'sizeBytes', 'luns'], properties: {
        name: shortText, sizeBytes: bytes,
        luns: { type: 'array', maxItems: 1024, items: { type: 'object', additionalProperties: false, required: ['hostGroup', 'lun'], properties: { hostGroup: shortText, lun: bytes } } },
      } },
    },
  },
} as const;

export const networkConfigSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['network', 'version', 'relays', 'links', 'linkAddresses', 'routes', 'storages', 'orders', 'customers'],
  properties: {
    network: name,
    version: { type: 'string', minLength: 1, maxLength: 64 },
    relays: {
      type: 'object',
      maxProperties: 1024,
      additionalProperties: {
        type: 'object', additionalProperties: false, required: ['role', 'host', 'port', 'api'],
        properties: {
          role: { type: 'string', enum: ['edge', 'core'] }, host: { type: 'string', minLength: 1, maxLength: 255 },
          port: { type: 'integer', minimum: 1, maximum: 65535 }, api: { type: 'string', maxLength: 1024 },
          batch: {
            anyOf: [{ type: 'null' }, { type: 'object', additionalProperties: false, required: ['waitMs', 'maxBytes'], properties: { waitMs: positive, maxBytes: positive } }],
          },
        },
      },
    },
    links: { type: 'array', maxItems: 65536, items: { type: 'array', minItems: 2, maxItems: 2, items: name } },
    linkAddresses: {
      type: 'array', maxItems: 65536,
      items: { type: 'object', additionalProperties: false, required: ['from', 'to', 'host', 'port'], properties: {
        from: name, to: name, host: { type: 'string', minLength: 1, maxLength: 255 }, port: { type: 'integer', minimum: 1, maximum: 65535 },
      } },
    },
    linkShaping: {
      type: 'array', maxItems: 65536,
      items: { type: 'object', additionalProperties: false, required: ['between', 'compressLevel', 'bandwidthBitsPerSecond'], properties: {
        between: { type: 'array', minItems: 2, maxItems: 2, items: name },
        compressLevel: { anyOf: [{ type: 'null' }, { type: 'integer', minimum: minCompressLevel, maximum: maxCompressLevel }] },
        bandwidthBitsPerSecond: { anyOf: [{ type: 'null' }, { type: 'integer', minimum: minLinkBandwidthBitsPerSecond }] },
      } },
    },
    routes: {
      type: 'array', maxItems: 65536,
      items: { type: 'object', additionalProperties: false, required: ['from', 'to', 'hops'], properties: {
        from: name, to: name, hops: { type: 'array', minItems: 1, maxItems: 64, items: name },
        // One around each core and each link of a route of at most 64 relays.
        alternates: { type: 'array', maxItems: 128, items: { type: 'array', minItems: 1, maxItems: 64, items: name } },
      } },
    },
    storages: {
      type: 'object', maxProperties: 65536,
      additionalProperties: {
        type: 'object', additionalProperties: false, required: ['edge', 'customer', 'api', 'host', 'replPort'],
        properties: {
          edge: name, customer: name, api: { type: 'string', maxLength: 1024 }, host: { type: 'string', minLength: 1, maxLength: 255 }, replPort: { type: 'integer', minimum: 1, maximum: 65535 },
          configuration: storageConfigurationSchema,
        },
      },
    },
    orders: {
      type: 'object', maxProperties: 65536,
      additionalProperties: {
        type: 'object', additionalProperties: false,
        required: ['from', 'to', 'pairs', 'retransmitMs', 'retransmitMaxMs', 'giveUpMs', 'logBytes', 'fullTimeoutMs', 'failoverTimeoutMs'],
        properties: {
          from: name, to: name, pairs: { type: 'array', maxItems: 65536, items: name }, retransmitMs: positive, retransmitMaxMs: positive, giveUpMs: positive,
          logBytes: positive, fullTimeoutMs: positive, failoverTimeoutMs: positive,
        },
      },
    },
    customers: {
      type: 'object', maxProperties: 65536,
      additionalProperties: {
        type: 'object', additionalProperties: false, required: ['edges', 'maxStorages', 'maxOrders'],
        properties: {
          edges: { type: 'array', items: name }, maxStorages: { type: ['integer', 'null'], minimum: 0 }, maxOrders: { type: ['integer', 'null'], minimum: 0 },
        },
      },
    },
    virtualNames: {
      type: 'object', maxProperties: 65536,
      additionalProperties: { type: 'object', maxProperties: 65536, additionalProperties: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' } },
    },
  },
} as const;

export type RelayApi = FastifyInstance & { listenOn(host: string, port: number): Promise<number> };

export async function buildRelayApi(relay: Relay, log: Logger): Promise<RelayApi> {
  const app = Fastify({ logger: false, bodyLimit: 4 * 1024 * 1024, ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } } });
  answerErrorsAsProblems(app, (error, url) => log.error({ err: error, url }, 'API request failed'), 'see the relay log for details');

  app.get('/healthz', async () => ({ ok: true }));
  app.get('/v1/relay', async () => relay.info());
  app.get('/v1/status', async () => relay.status());
  app.get('/v1/network', async () => {
    if (!relay.config) throw new TricopyError('not-found', `relay ${relay.name} has no network yet`, 'run tricopy network apply');
    return relay.config;
  });
  app.put('/v1/network', { schema: { body: networkConfigSchema } }, async (request: FastifyRequest<{ Body: RelayNetworkConfig }>) => {
    await relay.apply(request.body);
    return relay.info();
  });
  app.get('/v1/virtual-storages', async () => relay.virtualStorages());
  app.get('/v1/virtual-storages/:wwn', { schema: { params: { type: 'object', required: ['wwn'], properties: { wwn: name } } } },
    async (request: FastifyRequest<{ Params: { wwn: string } }>) => relay.virtualStorage(request.params.wwn));
  app.post('/v1/pairs', {
    schema: { body: { type: 'object', additionalProperties: false, required: ['name', 'order'], properties: { name, order: name } } },
  }, async (request: FastifyRequest<{ Body: { name: string; order: string } }>) => {
    await relay.bind(request.body.name, request.body.order);
    return { name: request.body.name, order: request.body.order };
  });
  app.post('/v1/orders/:id/failover', {
    schema: {
      params: { type: 'object', required: ['id'], properties: { id: name } },
      body: { type: 'object', additionalProperties: false, properties: { timeoutMs: { type: 'integer', minimum: 1, maximum: 3_600_000 }, fast: { type: 'boolean' } } },
    },
  }, async (request: FastifyRequest<{ Params: { id: string }; Body: { timeoutMs?: number; fast?: boolean } }>) =>
    relay.failover(request.params.id, request.body?.timeoutMs, request.body?.fast === true));
  app.post('/v1/orders/:id/residual/discard', { schema: { params: { type: 'object', required: ['id'], properties: { id: name } } } },
    async (request: FastifyRequest<{ Params: { id: string } }>) => relay.discardResidual(request.params.id));
  app.post('/v1/orders/:id/failback', { schema: { params: { type: 'object', required: ['id'], properties: { id: name } } } },
    async (request: FastifyRequest<{ Params: { id: string } }>) => relay.failback(request.params.id));
  app.get('/v1/events', {
    // Query strings arrive as text (the API does not coerce types): a whole number, as on the node.
    schema: { querystring: { type: 'object', additionalProperties: false, properties: { after: { type: 'string', pattern: '^[0-9]{1,15}$' } } } },
  }, async (request: FastifyRequest<{ Querystring: { after?: string } }>) => ({ events: relay.events.since(Number(request.query.after ?? '0')) }));
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', 'text/plain; version=0.0.4');
    return metricsText(relay);
  });

  const listenOn = async (host: string, port: number): Promise<number> => {
    await app.listen({ host, port });
    return (app.server.address() as AddressInfo).port;
  };
  return Object.assign(app as FastifyInstance, { listenOn });
}

/** Prometheus text: the counters of every order-guarantee id (732/733/734), log use, delays, links. */
export function metricsText(relay: Relay): string {
  const s = relay.status();
  const lines: string[] = [];
  const metric = (n: string, help: string, type: 'gauge' | 'counter', rows: Array<[Record<string, string>, number | null]>): void => {
    lines.push(`# HELP ${n} ${help}`, `# TYPE ${n} ${type}`);
    for (const [labels, value] of rows) {
      if (value === null) continue;
      const l = Object.entries({ relay: s.name, ...labels }).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',');
      lines.push(`${n}{${l}} ${value}`);
    }
  };
  const o = (side: 'source' | 'target'): typeof s.orders => s.orders.filter((x) => x.side === side);
  metric('tricopy_rcn_generated', 'last sequential number assigned (732)', 'counter', o('source').map((x) => [{ order: x.id }, x.generated]));
  metric('tricopy_rcn_deleted', 'numbers acknowledged and deleted (734)', 'counter', o('source').map((x) => [{ order: x.id }, x.deleted]));
  metric('tricopy_rcn_reflected', 'last number reflected to the target storage (733)', 'counter', o('target').map((x) => [{ order: x.id }, x.reflected]));
  metric('tricopy_rcn_log_bytes', 'bytes held in the log area', 'gauge', s.orders.map((x) => [{ order: x.id, side: x.side }, x.log.bytes]));
  metric('tricopy_rcn_log_entries', 'entries held in the log area', 'gauge', s.orders.map((x) => [{ order: x.id, side: x.side }, x.log.entries]));
  metric('tricopy_rcn_ack_delay_ms', 'last acknowledgement delay at the source edge', 'gauge', o('source').map((x) => [{ order: x.id }, x.ackDelayMs]));
  metric('tricopy_rcn_reflection_delay_ms', 'last reflection delay at the target edge (735)', 'gauge', o('target').map((x) => [{ order: x.id }, x.reflectionDelayMs]));
  metric('tricopy_rcn_retransmissions_total', 'times unacknowledged entries were sent again', 'counter', o('source').map((x) => [{ order: x.id }, x.retransmissions]));
  metric('tricopy_rcn_failure_suspended', '1 while the order is in Failure Suspend', 'gauge', s.orders.map((x) => [{ order: x.id, side: x.side }, x.state === 'failure-suspend' ? 1 : 0]));
  metric('tricopy_rcn_entries_forwarded_total', 'entries sent to another relay', 'counter', [[{}, s.counters.entriesForwarded]]);
  metric('tricopy_rcn_bytes_forwarded_total', 'bytes of entries sent to another relay', 'counter', [[{}, s.counters.bytesForwarded]]);
  metric('tricopy_rcn_bytes_sent_total', 'bytes sent to other relays after compression', 'counter', [[{}, s.counters.bytesSent]]);
  metric('tricopy_rcn_entries_dropped_total', 'entries dropped here (sent again by the source edge)', 'counter', [[{}, s.counters.entriesDropped]]);
  metric('tricopy_rcn_path_down_notices_total', 'entries this relay could not forward on their carried path, reported to the edge they left', 'counter', [[{}, s.counters.pathDownNotices]]);
  metric('tricopy_rcn_reroutes_total', 'changes of the path this edge sends on (around a dead link, or back)', 'counter', [[{}, s.counters.reroutes]]);
  metric('tricopy_rcn_refused_connections_total', 'connections refused', 'counter', [[{}, s.counters.refusedConnections]]);
  metric('tricopy_rcn_link_up', '1 while a link is up', 'gauge', s.links.map((l) => [{ peer: l.peer, kind: l.kind, as: l.as }, l.up ? 1 : 0]));
  return `${lines.join('\n')}\n`;
}
