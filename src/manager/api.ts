// The manager's HTTP API (fastify) and the web console it serves. Every body and query is checked
// by a JSON schema at the edge; failures are problem documents (RFC 9457) with a hint, as on the
// node. Writes (POST, PUT, DELETE) need the leading manager: another manager forwards them to the leader it knows
// (nodes and operators may talk to any manager) or answers 'unavailable' while nobody leads.
// Event and procedure streams are server-sent events.
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { AddressInfo } from 'node:net';
import { TricopyError, errorMessage } from '../common/errors';
import { answerErrorsAsProblems, bearerTokenValid, sendProblem } from '../common/http-problems';
import type { AckRequest, AddNodeRequest, AddTopologyRequest, ManagerEvent, StartProcedureRequest } from '../contracts/manager';
import type { IngestBatch, ReportBatch } from '../contracts/monitor';
import { reportBatchBody } from '../node/monitor-schemas';
import { addBackupRoutes } from './backup-api';
import { addNetworkRoutes } from './network-api';
import { consoleAsset } from './console-assets';
import type { ManagerService } from './service';
import { arbiterBoardResponse, ingestBatchBody, topologyNameParams } from './schemas';

export const maxManagerBodyBytes = 64 * 1024;
/** A snapshot of a node with many pairs is large. */
export const maxIngestBodyBytes = 16 * 1024 * 1024;
const sseHeartbeatMs = 15_000;
/** A follower reads new events from the store this often for its streams. */
const followerStreamPollMs = 1000;

export type ManagerApi = FastifyInstance & { listenOn(host: string, port: number): Promise<number> };

const idParam = { type: 'object', required: ['id'], properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } as const;

export async function buildManagerApi(m: ManagerService, token: string | undefined): Promise<ManagerApi> {
  const app = Fastify({ logger: false, bodyLimit: maxManagerBodyBytes, ajv: { customOptions: { allErrors: false, coerceTypes: false } } });

  app.addHook('onRequest', async (request, reply) => {
    if (!m.ready && request.url.startsWith('/v1/')) {
      return sendProblem(reply, new TricopyError('unavailable', 'the manager is starting', 'retry in a moment'));
    }
    if (token === undefined || !request.url.startsWith('/v1/')) return;
    if (!bearerTokenValid(request.headers.authorization, token)) {
      await sendProblem(reply, new TricopyError('unauthorized', 'missing or wrong API token', 'pass --token or set TRICOPY_TOKEN to the manager\'s token'));
    }
  });

  // Writes go to the leader: forwarded when this manager follows.
  app.addHook('preHandler', async (request, reply) => {
    if ((request.method !== 'POST' && request.method !== 'PUT' && request.method !== 'DELETE') || m.isLeader()) return;
    const leader = m.leaderUrl();
    if (m.takingLead()) {
      return sendProblem(reply, new TricopyError('unavailable', 'this manager is taking the lead (loading its state)', 'retry in a few seconds'));
    }
    if (leader === null) {
      return sendProblem(reply, new TricopyError('unavailable', 'no manager leads right now (an election is under way)', 'retry in a few seconds'));
    }
    return forward(leader, request, reply);
  });

  answerErrorsAsProblems(app, (error, url) => m.log.error({ err: errorMessage(error), url }, 'manager API request failed'), 'see the manager log');
  addBasics(app, m);
  addRegistry(app, m);
  addHistory(app, m);
  addProcedures(app, m);
  addFromNodes(app, m);
  addBackupRoutes(app, m);
  addNetworkRoutes(app, m);

  const listenOn = async (host: string, port: number): Promise<number> => {
    await app.listen({ host, port });
    return (app.server.address() as AddressInfo).port;
  };
  return Object.assign(app as FastifyInstance, { listenOn });
}

/** Health, metrics, the console's files, the manager itself and the status document. */
function addBasics(app: FastifyInstance, m: ManagerService): void {
  app.get('/healthz', async () => ({ ok: true, leader: m.isLeader() }));
  app.get('/metrics', async (_request, reply) => {
    reply.header('content-type', m.metrics.registry.contentType);
    return m.metrics.registry.metrics();
  });

  // --- the web console: static files, no build step ---------------------------------------------
  for (const [route, file] of [['/', 'index.html'], ['/console/app.js', 'app.js'], ['/console/style.css', 'style.css']] as const) {
    app.get(route, async (_request, reply) => {
      const asset = await consoleAsset(file);
      reply.header('content-type', asset.contentType).header('cache-control', 'no-cache');
      return asset.body;
    });
  }

  // Browsers ask for it; the console has none.
  app.get('/favicon.ico', async (_request, reply) => reply.code(204).send());

  app.get('/v1/manager', async () => m.info());
  app.get('/v1/status', async () => m.status());

}

/** Nodes and topologies the manager looks after. */
function addRegistry(app: FastifyInstance, m: ManagerService): void {
  app.get('/v1/nodes', async () => ({ nodes: await m.nodes() }));
  app.post('/v1/nodes', {
    schema: { body: { type: 'object', required: ['url'], additionalProperties: false, properties: {
      url: { type: 'string', minLength: 8, maxLength: 512, pattern: '^https?://' }, token: { type: 'string', minLength: 16, maxLength: 512 } } } },
  }, async (request: FastifyRequest<{ Body: AddNodeRequest }>, reply) => {
    reply.code(201);
    return m.registry.addNode(request.body.url, request.body.token);
  });

  app.get('/v1/topologies', async () => ({ topologies: await m.topologyRecords() }));
  app.post('/v1/topologies', {
    schema: { body: { type: 'object', required: ['text'], additionalProperties: false, properties: { text: { type: 'string', minLength: 1, maxLength: 32_768 } } } },
  }, async (request: FastifyRequest<{ Body: AddTopologyRequest }>, reply) => {
    reply.code(201);
    return m.registry.addTopology(request.body.text);
  });
  app.get('/v1/topologies/:name/arbiter', { schema: { params: topologyNameParams, response: { 200: arbiterBoardResponse } } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => m.arbiterBoard(request.params.name));

}

/** Events, alerts and samples from the store. */
function addHistory(app: FastifyInstance, m: ManagerService): void {
  app.get('/v1/events', {
    schema: { querystring: { type: 'object', additionalProperties: false, properties: {
      since: { type: 'string', pattern: '^[0-9]{1,15}$' }, afterSeq: { type: 'string', pattern: '^[0-9]{1,15}$' },
      limit: { type: 'string', pattern: '^[0-9]{1,6}$' }, stream: { type: 'string', enum: ['true', 'false'] } } } },
  }, async (request: FastifyRequest<{ Querystring: { since?: string; afterSeq?: string; limit?: string; stream?: string } }>, reply) => {
    const q = request.query;
    const query = {
      ...(q.since !== undefined ? { sinceMs: Number(q.since) } : {}),
      ...(q.afterSeq !== undefined ? { afterSeq: Number(q.afterSeq) } : {}),
      ...(q.limit !== undefined ? { limit: Number(q.limit) } : {}),
    };
    if (q.stream !== 'true') return { events: await m.history.query(query) };
    await streamEvents(m, query, request, reply);
    return reply;
  });

  app.get('/v1/alerts', {
    schema: { querystring: { type: 'object', additionalProperties: false, properties: { all: { type: 'string', enum: ['true', 'false'] } } } },
  }, async (request: FastifyRequest<{ Querystring: { all?: string } }>) => ({ alerts: await m.alertList(request.query.all === 'true') }));
  app.post('/v1/alerts/:id/ack', {
    schema: { params: idParam, body: { anyOf: [{ type: 'null' }, { type: 'object', additionalProperties: false, properties: { by: { type: 'string', minLength: 1, maxLength: 100 } } }] } },
  }, async (request: FastifyRequest<{ Params: { id: string }; Body: AckRequest | null }>) => m.ack(request.params.id, request.body?.by ?? 'operator'));

  app.get('/v1/samples', {
    schema: { querystring: { type: 'object', additionalProperties: false, properties: {
      subject: { type: 'string', maxLength: 200 }, since: { type: 'string', pattern: '^[0-9]{1,15}$' } } } },
  }, async (request: FastifyRequest<{ Querystring: { subject?: string; since?: string } }>) =>
    ({ samples: await m.samples(request.query.subject, Number(request.query.since ?? '0')) }));
}

/** Procedure runs: start one, read them, follow one's output. */
function addProcedures(app: FastifyInstance, m: ManagerService): void {
  app.get('/v1/procedures', async () => ({ runs: await m.procedures.list() }));
  app.post('/v1/procedures', {
    schema: { body: { type: 'object', required: ['topology', 'procedure'], additionalProperties: false, properties: {
      topology: { type: 'string', minLength: 1, maxLength: 24 }, procedure: { type: 'string', enum: ['apply', 'failover', 'failback', 'repair'] },
      to: { type: 'string', minLength: 1, maxLength: 24 }, newestFrom: { type: 'string', minLength: 1, maxLength: 24 }, wait: { type: 'boolean' },
      timeoutSeconds: { type: 'integer', minimum: 1, maximum: 86_400 }, startedBy: { type: 'string', maxLength: 100 } } } },
  }, async (request: FastifyRequest<{ Body: StartProcedureRequest & { startedBy?: string } }>, reply) => {
    const { startedBy, ...req } = request.body;
    reply.code(201);
    return m.procedures.start(req, startedBy ?? 'api');
  });
  app.get('/v1/procedures/:id', { schema: { params: idParam } }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const run = await m.procedures.get(request.params.id);
    if (!run) throw new TricopyError('not-found', `no procedure run ${request.params.id}`, 'list them: tricopy manager procedures');
    return run;
  });
  app.get('/v1/procedures/:id/output', {
    schema: { params: idParam, querystring: { type: 'object', additionalProperties: false, properties: { from: { type: 'string', pattern: '^[0-9]{1,6}$' } } } },
  }, async (request: FastifyRequest<{ Params: { id: string }; Querystring: { from?: string } }>, reply) => {
    if (!(await m.procedures.get(request.params.id))) throw new TricopyError('not-found', `no procedure run ${request.params.id}`);
    const raw = openStream(request, reply);
    try {
      for await (const line of m.procedures.follow(request.params.id, Number(request.query.from ?? '0'))) {
        if (raw.destroyed) return reply;
        raw.write(`event: line\ndata: ${JSON.stringify(line)}\n\n`);
      }
      const run = await m.procedures.get(request.params.id);
      raw.write(`event: end\ndata: ${JSON.stringify({ state: run?.state ?? 'unknown', error: run?.error ?? null })}\n\n`);
    } finally {
      raw.end();
    }
    return reply;
  });

}

/** What nodes send: copy reports (spec 000 §6.3 step 6) and their pushed state and events. */
function addFromNodes(app: FastifyInstance, m: ManagerService): void {
  app.post('/v1/reports', { bodyLimit: maxIngestBodyBytes, schema: { body: reportBatchBody } },
    async (request: FastifyRequest<{ Body: ReportBatch }>) => m.ingest.reports(request.body));
  app.post('/v1/ingest', { bodyLimit: maxIngestBodyBytes, schema: { body: ingestBatchBody } },
    async (request: FastifyRequest<{ Body: IngestBatch }>) => m.ingest.ingest(request.body));
}

function openStream(request: FastifyRequest, reply: FastifyReply): FastifyReply['raw'] {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const heartbeat = setInterval(() => raw.write(': heartbeat\n\n'), sseHeartbeatMs);
  heartbeat.unref();
  request.raw.on('close', () => clearInterval(heartbeat));
  return raw;
}

/** Stored events after the cursor, then each new one: pushed by the history at the leader, read from the store elsewhere. */
async function streamEvents(m: ManagerService, query: { sinceMs?: number; afterSeq?: number }, request: FastifyRequest, reply: FastifyReply): Promise<void> {
  const raw = openStream(request, reply);
  let last = 0;
  const send = (e: ManagerEvent): void => {
    if (e.seq <= last) return;
    last = e.seq;
    raw.write(`id: ${e.seq}\ndata: ${JSON.stringify(e)}\n\n`); // one event type: browsers get every kind through onmessage
  };
  // Events stored while the backlog is read wait, so none is lost or sent twice.
  let replaying = true;
  const held: ManagerEvent[] = [];
  const unsubscribe = m.history.subscribe((e) => (replaying ? held.push(e) : send(e)));
  if (query.afterSeq !== undefined) last = query.afterSeq;
  for (const e of await m.history.query(query)) send(e);
  for (const e of held.splice(0)) send(e);
  replaying = false;
  const poll = setInterval(() => {
    if (m.isLeader()) return;
    void m.history.query({ afterSeq: last }).then((events) => events.forEach(send), () => undefined);
  }, followerStreamPollMs);
  request.raw.on('close', () => {
    unsubscribe();
    clearInterval(poll);
  });
}

/** How long a follower waits for the leader to answer a forwarded write (a route may set `config.forwardTimeoutMs`). */
const defaultForwardTimeoutMs = 30_000;

async function forward(leader: string, request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply> {
  const withBody = request.method === 'POST' || request.method === 'PUT';
  const headers: Record<string, string> = { 'x-tricopy-forwarded': '1', ...(withBody ? { 'content-type': 'application/json' } : {}) };
  if (request.headers.authorization) headers.authorization = request.headers.authorization;
  if (request.headers['x-tricopy-forwarded']) {
    return sendProblem(reply, new TricopyError('unavailable', 'the leadership is changing hands', 'retry in a few seconds'));
  }
  try {
    const { forwardTimeoutMs } = request.routeOptions.config as { forwardTimeoutMs?: number };
    const response = await fetch(`${leader}${request.url}`, {
      method: request.method, headers, body: withBody ? JSON.stringify(request.body ?? {}) : null, signal: AbortSignal.timeout(forwardTimeoutMs ?? defaultForwardTimeoutMs),
    });
    const text = await response.text();
    return reply.code(response.status).header('content-type', response.headers.get('content-type') ?? 'application/json').send(text);
  } catch (err) {
    return sendProblem(reply, new TricopyError('unavailable', `the leading manager ${leader} does not answer (${errorMessage(err)})`, 'retry in a few seconds'));
  }
}

