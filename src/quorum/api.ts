// The quorum routes of the node's control API (spec 004): the attribute query, reservations and
// the pair-volume control commands, per volume. Bodies and parameters are validated at the edge.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TricopyError } from '../common/errors';
import type { FailoverConfig } from '../contracts/failover';
import type { FailoverService } from './failover/service';
import type { QuorumVolumes } from './storage';

const volumeParam = {
  type: 'object',
  required: ['volume'],
  properties: { volume: { type: 'string', minLength: 1, maxLength: 200 } },
} as const;

const hostBody = {
  type: 'object',
  required: ['host'],
  additionalProperties: false,
  properties: { host: { type: 'string', minLength: 1, maxLength: 63 } },
} as const;

type VolumeRequest = FastifyRequest<{ Params: { volume: string } }>;
type HostRequest = FastifyRequest<{ Params: { volume: string }; Body: { host: string } }>;

export function quorumRoutes(app: FastifyInstance, quorum: () => QuorumVolumes): void {
  app.get('/v1/quorum/volumes', async () => ({ volumes: quorum().list() }));

  app.get('/v1/quorum/volumes/:volume', { schema: { params: volumeParam } },
    async (request: VolumeRequest) => quorum().status(request.params.volume));

  app.get('/v1/quorum/volumes/:volume/attribute', { schema: { params: volumeParam } },
    async (request: VolumeRequest) => quorum().attribute(request.params.volume));

  app.post('/v1/quorum/volumes/:volume/reserve', { schema: { params: volumeParam, body: hostBody } },
    async (request: HostRequest) => quorum().reserve(request.params.volume, request.body.host));

  app.post('/v1/quorum/volumes/:volume/release', { schema: { params: volumeParam, body: hostBody } },
    async (request: HostRequest) => quorum().release(request.params.volume, request.body.host));

  app.post('/v1/quorum/volumes/:volume/reset', { schema: { params: volumeParam, body: hostBody } },
    async (request: HostRequest) => quorum().reset(request.params.volume, request.body.host));

  app.post('/v1/quorum/volumes/:volume/resync', { schema: { params: volumeParam } },
    async (request: VolumeRequest) => quorum().resync(request.params.volume));

  app.post('/v1/quorum/volumes/:volume/swap-resync', { schema: { params: volumeParam } },
    async (request: VolumeRequest) => quorum().swapResync(request.params.volume));

  app.post('/v1/quorum/volumes/:volume/split', { schema: { params: volumeParam } },
    async (request: VolumeRequest) => quorum().split(request.params.volume));
}

const topologyParam = {
  type: 'object',
  required: ['name'],
  properties: { name: { type: 'string', minLength: 1, maxLength: 24 } },
} as const;

const failoverConfigBody = {
  type: 'object',
  required: ['topology', 'name', 'site', 'role'],
  additionalProperties: false,
  properties: {
    topology: { type: 'object' },
    name: { type: 'string', minLength: 1, maxLength: 24 },
    site: { type: 'string', minLength: 1, maxLength: 24 },
    role: { type: 'string', enum: ['primary', 'sync', 'async'] },
    apiToken: { type: 'string', minLength: 16, maxLength: 1024 },
  },
} as const;

/** Automatic failover: what topology apply gives the node, and where the node stands with each arbiter. */
export function failoverRoutes(app: FastifyInstance, failover: () => FailoverService): void {
  app.get('/v1/failover', async () => ({ topologies: failover().list() }));

  app.get('/v1/failover/:name', { schema: { params: topologyParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>) => failover().get(request.params.name));

  app.put('/v1/failover/:name', { schema: { params: topologyParam, body: failoverConfigBody } },
    async (request: FastifyRequest<{ Params: { name: string }; Body: FailoverConfig }>) => {
      if (request.body.name !== request.params.name) throw new TricopyError('invalid-argument', 'the body names another topology than the path');
      return failover().configure(request.body);
    });

  app.delete('/v1/failover/:name', { schema: { params: topologyParam } },
    async (request: FastifyRequest<{ Params: { name: string } }>, reply) => {
      await failover().remove(request.params.name);
      reply.code(204);
    });
}
