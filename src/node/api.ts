// The node's HTTP control API (fastify). Every body and parameter is validated by a JSON schema at
// the edge; every failure is answered as a problem document (RFC 9457) with a hint for the operator.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AddressInfo } from 'node:net';
import { TricopyError } from '../common/errors';
import { answerErrorsAsProblems, bearerTokenValid, sendProblem } from '../common/http-problems';
import type { NodeEvent } from '../common/events';
import type { Logger } from '../common/log';
import { parseSize } from '../common/units';
import type { CreatePairRequest, PairState, VerifyRequest } from '../contracts/pairs';
import type { RelocateVolumeRequest } from '../contracts/node';
import { createPairInput } from '../replication/control/operator';
import { maxVerifyRateMiBPerSecond, minVerifyRateMiBPerSecond } from '../replication/limits';
import type { MonitorCommand, RegisterManagerRequest, ReportBatch } from '../contracts/monitor';
import { monitorCommandBody, registerManagerBody, reportBatchBody } from './monitor-schemas';
import { registerReplicaRoutes } from './replica-api';
import { registerCloneRoutes } from './clone-api';
import { registerHostGroupRoutes } from './host-group-api';
import type { NodeExtension, StorageNode } from './node';
import type { NetworkAttachment } from '../contracts/network';
import { networkAttachmentSchema } from './networks';

export const maxApiBodyBytes = 64 * 1024;
/** Longest a wait request holds the connection open. */
export const maxWaitMs = 600_000;

export const sseHeartbeatIntervalMs = 15_000;
/** Report batches from neighbours are larger than operator requests. */
export const maxReportBodyBytes = 1024 * 1024;


export interface ApiOptions {
  token: string | undefined;
  log: Logger;
  /** Modules above the node add their routes (after the node's own). */
  extensions?: NodeExtension[];
}

/** A tier name; whether the node has it is checked by the volume store (with the list of its tiers). */
const tierValue = { type: 'string', minLength: 1, maxLength: 32 } as const;

const nameParam = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 63 } },
} as const;

const sizeValue = { anyOf: [{ type: 'string', minLength: 1, maxLength: 32 }, { type: 'integer', minimum: 0 }] } as const;

const accessRuleBody = {
  type: 'object',
  additionalProperties: false,
  minProperties: 1,
  properties: {
    client: { type: 'string', minLength: 1, maxLength: 64 },
    identity: { type: 'string', minLength: 1, maxLength: 128 },
  },
} as const;

export type NodeApi = FastifyInstance & { listenOn(host: string, port: number): Promise<number> };

export async function buildApi(node: StorageNode, options: ApiOptions): Promise<NodeApi> {
  const app = Fastify({
    logger: false,
    bodyLimit: maxApiBodyBytes,
    ajv: { customOptions: { allErrors: false, coerceTypes: false, removeAdditional: false } },
  });

  app.addHook('onRequest', async (request, reply) => {
    if (options.token === undefined || request.url === '/healthz') return;
    if (!bearerTokenValid(request.headers.authorization, options.token)) {
      await sendProblem(reply, new TricopyError('unauthorized', 'missing or wrong API token',
        'pass --token or set TRICOPY_TOKEN to the token in the node\'s --api-token-file'));
    }
  });

  // Counted by route pattern (bounded label values), so anyone can see who asks this node what:
  // with autonomous monitoring, a healthy cluster's counters stand still (spec 000 §9.6).
  app.addHook('onResponse', async (request) => {
    node.metrics.apiRequest(request.routeOptions.url ?? 'unmatched', request.method);
  });

  answerErrorsAsProblems(app, (error, url) => options.log.error({ err: error, url }, 'API request failed'), 'see the node log for details');

  app.get('/healthz', async () => ({ ok: true }));

  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', node.metrics.registry.contentType);
    return node.metrics.registry.metrics();
  });

  app.get('/v1/node', async () => node.info());

  // Remote copy networks (spec 002): network apply tells the node its edge and its peers' edges.
  app.get('/v1/networks', async () => ({ networks: node.networks.list() }));
  app.get('/v1/networks/:name', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => node.networks.get(request.params.name));
  app.put('/v1/networks/:name', { schema: { params: nameParam, body: networkAttachmentSchema } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: NetworkAttachment }>) => {
      if (request.body.network !== request.params.name) throw new TricopyError('invalid-argument', `the attachment is for network ${request.body.network}, not ${request.params.name}`);
      return node.networks.put(request.body, node.config.name);
    });
  app.delete('/v1/networks/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<{ Params: { name: string } }>, reply) => {
    await node.networks.delete(request.params.name);
    reply.code(204);
  });

  // Host writes held for residual entries of a fast failover (spec 002 E-21); an operator releases
  // them when the edge that applies them is lost too, discarding what it had not applied.
  app.get('/v1/residual-holds', async () => ({ holds: node.replication.residual.list() }));
  app.post('/v1/residual-holds/:order/release', { schema: { params: { type: 'object', required: ['order'], properties: { order: { type: 'string', minLength: 1, maxLength: 63 } } } } },
    async (request: FastifyRequest<{ Params: { order: string } }>) => {
      const released = await node.replication.residual.release(request.params.order, undefined, 'released by the operator: residual entries not applied yet are discarded');
      if (released.length === 0) throw new TricopyError('not-found', `no host writes are held for residual entries of order ${request.params.order}`);
      return { holds: released };
    });

  app.get('/v1/volumes', async () => ({ volumes: node.listVolumes() }));

  app.post('/v1/volumes', {
    schema: {
      body: {
        type: 'object',
        required: ['name', 'size'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 200 },
          size: sizeValue,
          description: { type: 'string', maxLength: 1024 },
          thin: { type: 'boolean' },
          tier: tierValue,
        },
      },
    },
  }, async (request: FastifyRequest<{ Body: { name: string; size: string | number; description?: string; thin?: boolean; tier?: string } }>, reply) => {
    const body = request.body;
    const view = await node.createVolume({
      name: body.name, sizeBytes: parseSize(body.size), ...(body.description !== undefined ? { description: body.description } : {}),
      thin: body.thin === true, ...(body.tier !== undefined ? { tier: body.tier } : {}),
    });
    reply.code(201);
    return view;
  });

  app.get('/v1/volumes/:name', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => node.getVolume(request.params.name));

  app.post('/v1/volumes/:name/resize', {
    schema: {
      params: nameParam,
      body: { type: 'object', required: ['size'], additionalProperties: false, properties: { size: sizeValue } },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: { size: string | number } }>) =>
    node.resizeVolume(request.params.name, parseSize(request.body.size)));

  // Starts an online move to another data area; answers at once with the volume (its relocation shows progress).
  app.post('/v1/volumes/:name/relocate', {
    schema: { params: nameParam, body: { type: 'object', required: ['tier'], additionalProperties: false, properties: { tier: tierValue } } },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: RelocateVolumeRequest }>, reply) => {
    const view = await node.relocateVolume(request.params.name, request.body.tier);
    reply.code(202);
    return view;
  });

  app.post('/v1/volumes/:name/allow', { schema: { params: nameParam, body: accessRuleBody } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: { client?: string; identity?: string } }>) =>
      node.allow(request.params.name, request.body));

  app.post('/v1/volumes/:name/disallow', { schema: { params: nameParam, body: accessRuleBody } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: { client?: string; identity?: string } }>) =>
      node.disallow(request.params.name, request.body));

  app.post('/v1/volumes/:name/make-writable', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => {
      node.getVolume(request.params.name);
      await node.replication.makeWritable(request.params.name);
      return node.getVolume(request.params.name);
    });

  app.delete('/v1/volumes/:name', {
    schema: {
      params: nameParam,
      querystring: { type: 'object', additionalProperties: false, properties: { force: { type: 'string', enum: ['true', 'false'] } } },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Querystring: { force?: string } }>, reply) => {
    await node.deleteVolume(request.params.name, request.query.force === 'true');
    reply.code(204);
  });

  // --- pairs and consistency groups -----------------------------------------------------------
  const discardBody = {
    type: 'object', additionalProperties: false,
    properties: { discard: { type: 'string', minLength: 1, maxLength: 63 } },
  } as const;

  app.get('/v1/pairs', async () => ({ pairs: node.pairs() }));

  app.post('/v1/pairs', {
    schema: {
      body: {
        type: 'object',
        required: ['name', 'volume', 'peer', 'mode'],
        additionalProperties: false,
        properties: {
          name: { type: 'string', minLength: 1, maxLength: 63 },
          volume: { type: 'string', minLength: 1, maxLength: 63 },
          peerVolume: { type: 'string', minLength: 1, maxLength: 63 },
          peer: {
            type: 'object', required: ['node', 'host', 'replPort'], additionalProperties: false,
            properties: {
              node: { type: 'string', minLength: 1, maxLength: 63 },
              host: { type: 'string', minLength: 1, maxLength: 255 },
              replPort: { type: 'integer', minimum: 1, maximum: 65535 },
            },
          },
          mode: { type: 'string', enum: ['sync', 'async'] },
          purpose: { type: 'string', enum: ['data', 'quorum'] },
          fence: { type: 'string', enum: ['data', 'never'] },
          group: { type: 'string', minLength: 1, maxLength: 63 },
          noCopy: { type: 'boolean' },
          initialCopy: { type: 'string', enum: ['full', 'none', 'delta'] },
          fenceGroup: { type: 'string', minLength: 1, maxLength: 63 },
          returnAddress: {
            type: 'object', required: ['host', 'replPort'], additionalProperties: false,
            properties: { host: { type: 'string', minLength: 1, maxLength: 255 }, replPort: { type: 'integer', minimum: 1, maximum: 65535 } },
          },
          peerDataDirId: { type: 'string', minLength: 1, maxLength: 64 },
        },
      },
    },
  }, async (request: FastifyRequest<{ Body: CreatePairRequest }>, reply) => {
    const b = request.body;
    const status = await node.createPair(createPairInput(b), b.peerDataDirId);
    reply.code(201);
    return status;
  });

  app.get('/v1/pairs/:name', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => node.pairView(node.replication.get(request.params.name)));

  app.get('/v1/pairs/:name/wait', {
    schema: {
      params: nameParam,
      querystring: {
        type: 'object', required: ['state'], additionalProperties: false,
        properties: {
          state: { type: 'string', enum: ['simplex', 'initial-copying', 'duplex', 'duplex-pending', 'suspending', 'suspended', 'secondary-writable'] },
          timeoutMs: { type: 'string', pattern: '^[0-9]{1,8}$' },
        },
      },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Querystring: { state: PairState; timeoutMs?: string } }>) =>
    node.replication.waitFor(request.params.name, request.query.state, Math.min(Number(request.query.timeoutMs ?? 30_000), maxWaitMs)));

  app.post('/v1/pairs/:name/split', {
    schema: { params: nameParam, body: { type: 'object', additionalProperties: false, properties: { rw: { type: 'boolean' } } } },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: { rw?: boolean } }>) =>
    node.replication.split(request.params.name, { secondaryWritable: request.body?.rw === true }));

  app.post('/v1/pairs/:name/resync', { schema: { params: nameParam, body: discardBody } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: { discard?: string } }>) =>
      node.replication.resync(request.params.name, { discard: request.body?.discard }));

  app.post('/v1/pairs/:name/verify', {
    schema: {
      params: nameParam,
      body: {
        type: 'object', additionalProperties: false,
        properties: { rateMiBPerSecond: { type: 'integer', minimum: minVerifyRateMiBPerSecond, maximum: maxVerifyRateMiBPerSecond } },
      },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: VerifyRequest | undefined }>, reply) => {
    const status = await node.replication.verify(request.params.name, { rateMiBPerSecond: request.body?.rateMiBPerSecond });
    reply.code(202);
    return status;
  });

  app.delete('/v1/pairs/:name/verify', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => node.replication.cancelVerify(request.params.name));

  app.post('/v1/pairs/:name/protection', {
    schema: {
      params: nameParam,
      body: {
        type: 'object', required: ['fence'], additionalProperties: false,
        properties: { fence: { type: 'string', enum: ['data', 'never'] }, fenceGroup: { type: ['string', 'null'], minLength: 1, maxLength: 63 } },
      },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: { fence: 'data' | 'never'; fenceGroup?: string | null } }>) =>
    node.replication.setProtection(request.params.name, { fence: request.body.fence, fenceGroup: request.body.fenceGroup ?? null }));

  app.post('/v1/pairs/:name/takeover', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => ({ pairs: await node.replication.takeover(request.params.name) }));

  app.post('/v1/pairs/:name/swap', { schema: { params: nameParam, body: discardBody } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: { discard?: string } }>) =>
      ({ pairs: await node.replication.swap(request.params.name, { discard: request.body?.discard }) }));

  app.delete('/v1/pairs/:name', {
    schema: {
      params: nameParam,
      querystring: {
        type: 'object', additionalProperties: false,
        properties: { force: { type: 'string', enum: ['true', 'false'] }, keepReadOnly: { type: 'string', enum: ['true', 'false'] } },
      },
    },
  }, async (request: FastifyRequest<{ Params: { name: string }; Querystring: { force?: string; keepReadOnly?: string } }>, reply) => {
    await node.replication.deletePair(request.params.name, { force: request.query.force === 'true', keepReadOnly: request.query.keepReadOnly === 'true' });
    reply.code(204);
  });

  app.get('/v1/groups', async () => ({ groups: node.replication.groups().map((g) => node.replication.groupStatus(g)) }));

  app.get('/v1/groups/:name', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => node.replication.groupStatus(request.params.name));

  app.get('/v1/events', {
    schema: {
      querystring: {
        type: 'object',
        additionalProperties: false,
        properties: { after: { type: 'string', pattern: '^[0-9]{1,15}$' }, stream: { type: 'string', enum: ['true', 'false'] } },
      },
    },
  }, async (request: FastifyRequest<{ Querystring: { after?: string; stream?: string } }>, reply) => {
    // An SSE client reconnecting sends the last id it saw; it gets what it missed.
    const lastEventId = request.headers['last-event-id'];
    const after = Number(request.query.after ?? (typeof lastEventId === 'string' && /^\d{1,15}$/.test(lastEventId) ? lastEventId : '0'));
    const wantsStream = request.query.stream === 'true' || (request.headers.accept ?? '').includes('text/event-stream');
    if (!wantsStream) return { events: node.events.since(after) };
    streamEvents(node, after, request, reply);
    return reply;
  });

  registerReplicaRoutes(app, node);
  registerCloneRoutes(app, node);
  registerHostGroupRoutes(app, node);

  // --- autonomous monitoring (spec 000) ---------------------------------------------------------
  app.get('/v1/monitor', async () => node.monitor.status());

  app.post('/v1/monitor/manager', { schema: { body: registerManagerBody } },
    async (request: FastifyRequest<{ Body: RegisterManagerRequest }>) => node.monitor.registerManager(request.body));

  app.post('/v1/monitor/commands', { schema: { body: monitorCommandBody } },
    async (request: FastifyRequest<{ Body: MonitorCommand }>) => node.monitor.handleCommand(request.body));

  app.post('/v1/monitor/reports', { bodyLimit: maxReportBodyBytes, schema: { body: reportBatchBody } },
    async (request: FastifyRequest<{ Body: ReportBatch }>) => node.monitor.handleReports(request.body));

  for (const extension of options.extensions ?? []) extension.routes?.(app);

  const listenOn = async (host: string, port: number): Promise<number> => {
    await app.listen({ host, port });
    return (app.server.address() as AddressInfo).port;
  };
  return Object.assign(app as FastifyInstance, { listenOn });
}

function streamEvents(node: StorageNode, after: number, request: FastifyRequest, reply: FastifyReply): void {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const send = (event: NodeEvent): void => {
    raw.write(`id: ${event.id}\nevent: ${event.kind}\ndata: ${JSON.stringify(event)}\n\n`);
  };
  for (const event of node.events.since(after)) send(event);
  // Ids start at 1 when the node starts, so a live event can have an id at or below `after`
  // (a reader that saw a node before it restarted): the stream holds to `after` as the list does.
  const unsubscribe = node.events.subscribe((event) => {
    if (event.id > after) send(event);
  });
  const heartbeat = setInterval(() => raw.write(': heartbeat\n\n'), sseHeartbeatIntervalMs);
  heartbeat.unref();
  request.raw.on('close', () => {
    clearInterval(heartbeat);
    unsubscribe();
  });
}

