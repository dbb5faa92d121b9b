// The quorum routes of the node's control API (spec 004): the attribute query, reservations and
// the pair-volume control commands, per volume. Bodies and parameters are validated at the edge.
import type { FastifyInstance, FastifyRequest } from 'fastify';
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
