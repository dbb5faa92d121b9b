// The node's control API for clone sets: writable throwaway clones of volumes at one instant (a DR
// drill at this site). Bodies and parameters are validated by JSON schemas at the edge, as in api.ts.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { type CreateCloneSetRequest, type DeleteCloneSetRequest, drillResults } from '../contracts/clones';
import type { StorageNode } from './node';

const name = { type: 'string', minLength: 1, maxLength: 63 } as const;
const nameParam = { type: 'object', required: ['name'], properties: { name } } as const;
const drill = {
  type: 'object', required: ['topology', 'site', 'pairs'], additionalProperties: false,
  properties: {
    topology: name, site: name,
    pairs: {
      type: 'array', maxItems: 256,
      items: { type: 'object', required: ['name', 'code'], additionalProperties: false, properties: { name: { type: 'string', maxLength: 200 }, code: { type: 'string', maxLength: 16 } } },
    },
  },
} as const;

type Named = { Params: { name: string } };

export function registerCloneRoutes(app: FastifyInstance, node: StorageNode): void {
  app.get('/v1/clones', async () => ({ cloneSets: node.clones.list() }));

  app.get('/v1/clones/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<Named>) => node.clones.get(request.params.name));

  app.post('/v1/clones', {
    schema: {
      body: {
        type: 'object', required: ['name', 'volumes'], additionalProperties: false,
        properties: { name, volumes: { type: 'array', minItems: 1, maxItems: 256, items: name }, snapshot: name, drill },
      },
    },
  }, async (request: FastifyRequest<{ Body: CreateCloneSetRequest }>, reply) => {
    const view = await node.clones.create(request.body);
    reply.code(201);
    return view;
  });

  // Ending is a POST: it carries the drill's result and note in its body.
  app.post('/v1/clones/:name/end', {
    schema: {
      params: nameParam,
      body: {
        type: 'object', additionalProperties: false,
        properties: { force: { type: 'boolean' }, result: { type: 'string', enum: [...drillResults] }, note: { type: 'string', maxLength: 500 } },
      },
    },
  }, async (request: FastifyRequest<Named & { Body: DeleteCloneSetRequest | undefined }>) => node.clones.delete(request.params.name, request.body ?? {}));
}
