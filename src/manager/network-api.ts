// The manager's routes for remote copy networks (networks.ts): keep a network file (PUT, validated
// like `network apply` before anything is stored, then applied), list, read, forget, and the
// status the leading manager collected from the relays, its history of samples, and a failover
// at an order's target edge (§6.9). Writes (PUT, DELETE) reach the leader
// through the API's forwarding, like every write.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type NetworkFailoverRequest, type PutNetworkRequest, maxNetworkFailoverTimeoutMs } from '../contracts/managed-network';
import { relayNamePattern } from '../edge/network-file';
import { maxNetworkTextChars } from './networks';
import type { ManagerService } from './service';

const nameParam = {
  type: 'object', required: ['name'], additionalProperties: false,
  properties: { name: { type: 'string', minLength: 1, maxLength: 63, pattern: relayNamePattern.source } },
} as const;

export const putNetworkBody = {
  type: 'object', required: ['text'], additionalProperties: false,
  properties: { text: { type: 'string', minLength: 1, maxLength: maxNetworkTextChars } },
} as const;

const orderParams = {
  type: 'object', required: ['name', 'order'], additionalProperties: false,
  properties: { name: nameParam.properties.name, order: { type: 'string', minLength: 1, maxLength: 63, pattern: relayNamePattern.source } },
} as const;

export const networkFailoverBody = {
  type: 'object', additionalProperties: false,
  properties: { timeoutMs: { type: 'integer', minimum: 1, maximum: maxNetworkFailoverTimeoutMs }, fast: { type: 'boolean' } },
} as const;

/** JSON escaping can double the text; the body may be that large. */
const maxNetworkBodyBytes = 2 * maxNetworkTextChars + 1024;

export function addNetworkRoutes(app: FastifyInstance, m: ManagerService): void {
  app.get('/v1/networks', async () => ({ networks: await m.networks.list() }));
  app.get('/v1/networks/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<{ Params: { name: string } }>) => m.networks.get(request.params.name));
  app.put('/v1/networks/:name', { bodyLimit: maxNetworkBodyBytes, schema: { params: nameParam, body: putNetworkBody } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: PutNetworkRequest }>) => m.networks.put(request.params.name, request.body));
  app.delete('/v1/networks/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    await m.networks.remove(request.params.name);
    return { removed: request.params.name };
  });
  // The target edge may wait its whole timeout: a follower forwarding this waits as long.
  app.post('/v1/networks/:name/orders/:order/failover', {
    schema: { params: orderParams, body: networkFailoverBody }, config: { forwardTimeoutMs: maxNetworkFailoverTimeoutMs + 60_000 },
  }, async (request: FastifyRequest<{ Params: { name: string; order: string }; Body: NetworkFailoverRequest | undefined }>) =>
    m.networks.failover(request.params.name, request.params.order, request.body?.timeoutMs, request.body?.fast === true));
  app.post('/v1/networks/:name/orders/:order/failback', { schema: { params: orderParams } },
    async (request: FastifyRequest<{ Params: { name: string; order: string } }>) => m.networks.failback(request.params.name, request.params.order));
  app.get('/v1/networks/:name/samples', {
    schema: { params: nameParam, querystring: { type: 'object', additionalProperties: false, properties: {
      order: orderParams.properties.order, since: { type: 'string', pattern: '^[0-9]{1,15}$' } } } },
  }, async (request: FastifyRequest<{ Params: { name: string }; Querystring: { order?: string; since?: string } }>) =>
    ({ samples: await m.networks.samples(request.params.name, request.query.order, Number(request.query.since ?? '0')) }));
  app.get('/v1/networks/:name/status', { schema: { params: nameParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => m.networks.status(request.params.name));
}
