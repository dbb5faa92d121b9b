// The node's control API for in-node replicas, snapshots and changed-block bitmaps (spec 003 §5.1).
// Bodies and parameters are validated by JSON schemas at the edge, as in api.ts.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type {
  CreateReplicaRequest, CreateSnapshotRequest, ReplicaWaitState, RollbackRequest, SplitReplicaRequest,
} from '../contracts/replicas';
import { replicaStates } from '../contracts/replicas';
import { maxReplicaWaitMs } from '../replica/limits';
import type { StorageNode } from './node';

const name = { type: 'string', minLength: 1, maxLength: 63 } as const;
const nameParam = { type: 'object', required: ['name'], properties: { name } } as const;
// The volume is :name, as in api.ts's volume routes (one parameter name per path segment).
const volumeAndItem = { type: 'object', required: ['name', 'item'], properties: { name, item: name } } as const;
const volumeParam = nameParam;
const forceBody = { type: 'object', additionalProperties: false, properties: { force: { type: 'boolean' } } } as const;
const boolQuery = { type: 'string', enum: ['true', 'false'] } as const;

type Named = { Params: { name: string } };
type VolumeItem = { Params: { name: string; item: string } };

export function registerReplicaRoutes(app: FastifyInstance, node: StorageNode): void {
  const replicas = node.replicas;

  // --- replica pairs -------------------------------------------------------------------------------
  app.get('/v1/replicas', async () => ({ replicas: replicas.listReplicas() }));

  app.post('/v1/replicas', {
    schema: {
      body: {
        type: 'object', required: ['name', 'volume'], additionalProperties: false,
        properties: {
          name, volume: name, existing: { type: 'boolean' }, thin: { type: 'boolean' },
          readMissPolicy: { type: 'string', enum: ['copy-on-read', 'pass-through'] },
        },
      },
    },
  }, async (request: FastifyRequest<{ Body: CreateReplicaRequest }>, reply) => {
    const status = await replicas.createReplica(request.body);
    reply.code(201);
    return status;
  });

  app.get('/v1/replicas/:name', { schema: { params: nameParam } },
    async (request: FastifyRequest<Named>) => replicas.getReplica(request.params.name));

  app.get('/v1/replicas/:name/wait', {
    schema: {
      params: nameParam,
      querystring: {
        type: 'object', required: ['state'], additionalProperties: false,
        properties: { state: { type: 'string', enum: [...replicaStates, 'simplex'] }, timeoutMs: { type: 'string', pattern: '^[0-9]{1,8}$' } },
      },
    },
  }, async (request: FastifyRequest<Named & { Querystring: { state: ReplicaWaitState; timeoutMs?: string } }>) =>
    replicas.waitReplica(request.params.name, request.query.state, Math.min(Number(request.query.timeoutMs ?? 30_000), maxReplicaWaitMs)));

  app.post('/v1/replicas/:name/split', {
    schema: { params: nameParam, body: { type: 'object', additionalProperties: false, properties: { quick: { type: 'boolean' } } } },
  }, async (request: FastifyRequest<Named & { Body: SplitReplicaRequest | undefined }>) =>
    replicas.split(request.params.name, request.body?.quick === true));

  app.post('/v1/replicas/:name/resync', { schema: { params: nameParam, body: forceBody } },
    async (request: FastifyRequest<Named & { Body: { force?: boolean } | undefined }>) => replicas.resync(request.params.name, request.body?.force === true));

  app.post('/v1/replicas/:name/restore', { schema: { params: nameParam, body: forceBody } },
    async (request: FastifyRequest<Named & { Body: { force?: boolean } | undefined }>) => replicas.restore(request.params.name, request.body?.force === true));

  app.delete('/v1/replicas/:name', {
    schema: { params: nameParam, querystring: { type: 'object', additionalProperties: false, properties: { deleteVolume: boolQuery, force: boolQuery } } },
  }, async (request: FastifyRequest<Named & { Querystring: { deleteVolume?: string; force?: string } }>, reply) => {
    await replicas.deleteReplica(request.params.name, { deleteVolume: request.query.deleteVolume === 'true', force: request.query.force === 'true' });
    reply.code(204);
  });

  // --- snapshots -----------------------------------------------------------------------------------
  app.get('/v1/snapshots', async () => ({ snapshots: replicas.listSnapshots() }));

  app.post('/v1/snapshots', {
    schema: {
      body: {
        type: 'object', required: ['name'], additionalProperties: false,
        properties: {
          name, group: name,
          volumes: { type: 'array', maxItems: 256, items: name },
          bitmaps: { type: 'array', maxItems: 16, items: name },
        },
      },
    },
  }, async (request: FastifyRequest<{ Body: CreateSnapshotRequest }>, reply) => {
    const snapshots = await replicas.createSnapshot(request.body);
    reply.code(201);
    return { snapshots };
  });

  app.get('/v1/volumes/:name/snapshots', { schema: { params: volumeParam } },
    async (request: FastifyRequest<Named>) => ({ snapshots: replicas.listSnapshots(request.params.name) }));

  app.delete('/v1/volumes/:name/snapshots/:item', { schema: { params: volumeAndItem } },
    async (request: FastifyRequest<VolumeItem>, reply) => {
      await replicas.deleteSnapshot(request.params.name, request.params.item);
      reply.code(204);
    });

  app.post('/v1/volumes/:name/rollback', {
    schema: {
      params: volumeParam,
      body: { type: 'object', required: ['to'], additionalProperties: false, properties: { to: name, force: { type: 'boolean' } } },
    },
  }, async (request: FastifyRequest<Named & { Body: RollbackRequest }>) =>
    replicas.rollback(request.params.name, request.body.to, request.body.force === true));

  // --- changed-block bitmaps -------------------------------------------------------------------------
  app.get('/v1/volumes/:name/bitmaps', { schema: { params: volumeParam } },
    async (request: FastifyRequest<Named>) => ({ bitmaps: replicas.listBitmaps(request.params.name) }));

  app.post('/v1/volumes/:name/bitmaps', {
    schema: { params: volumeParam, body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name } } },
  }, async (request: FastifyRequest<Named & { Body: { name: string } }>, reply) => {
    const view = await replicas.addBitmap(request.params.name, request.body.name);
    reply.code(201);
    return view;
  });

  app.post('/v1/volumes/:name/bitmaps/:item/clear', { schema: { params: volumeAndItem } },
    async (request: FastifyRequest<VolumeItem>) => replicas.clearBitmap(request.params.name, request.params.item));

  app.delete('/v1/volumes/:name/bitmaps/:item', { schema: { params: volumeAndItem } },
    async (request: FastifyRequest<VolumeItem>, reply) => {
      await replicas.deleteBitmap(request.params.name, request.params.item);
      reply.code(204);
    });
}
