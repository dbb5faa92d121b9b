// The node's control API for host groups and LUN mappings (spec 003 §5.6). Bodies and parameters
// are validated by JSON schemas at the edge, as in api.ts; the rules (names, CIDR ranges, LUN
// uniqueness) are checked once, by the host-group book.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { CreateHostGroupRequest, HostGroupMembersRequest, MapVolumeRequest, UnmapVolumeRequest } from '../contracts/host-groups';
import { maxHostGroupMembers, maxHostGroupNameChars, maxLunNumber } from '../volume/host-groups';
import type { StorageNode } from './node';

const groupName = { type: 'string', minLength: 1, maxLength: maxHostGroupNameChars } as const;
const nameParam = { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: 63 } } } as const;
const members = {
  identities: { type: 'array', maxItems: maxHostGroupMembers, items: { type: 'string', minLength: 1, maxLength: 128 } },
  clients: { type: 'array', maxItems: maxHostGroupMembers, items: { type: 'string', minLength: 1, maxLength: 64 } },
} as const;
const membersBody = { type: 'object', additionalProperties: false, minProperties: 1, properties: members } as const;

type Named = { Params: { name: string } };

export function registerHostGroupRoutes(app: FastifyInstance, node: StorageNode): void {
  app.get('/v1/host-groups', async () => ({ hostGroups: node.hostGroups.list() }));

  app.post('/v1/host-groups', {
    schema: { body: { type: 'object', required: ['name'], additionalProperties: false, properties: { name: groupName, ...members } } },
  }, async (request: FastifyRequest<{ Body: CreateHostGroupRequest }>, reply) => {
    const { name, ...rest } = request.body;
    const view = await node.hostGroups.create(name, rest);
    reply.code(201);
    return view;
  });

  app.get('/v1/host-groups/:name', { schema: { params: nameParam } },
    async (request: FastifyRequest<Named>) => node.hostGroups.get(request.params.name));

  app.post('/v1/host-groups/:name/add', { schema: { params: nameParam, body: membersBody } },
    async (request: FastifyRequest<Named & { Body: HostGroupMembersRequest }>) => node.hostGroups.addMembers(request.params.name, request.body));

  app.post('/v1/host-groups/:name/remove', { schema: { params: nameParam, body: membersBody } },
    async (request: FastifyRequest<Named & { Body: HostGroupMembersRequest }>) => node.hostGroups.removeMembers(request.params.name, request.body));

  app.delete('/v1/host-groups/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<Named>, reply) => {
    await node.hostGroups.delete(request.params.name);
    reply.code(204);
  });

  app.post('/v1/volumes/:name/map', {
    schema: {
      params: nameParam,
      body: {
        type: 'object', required: ['hostGroup', 'lun'], additionalProperties: false,
        properties: { hostGroup: groupName, lun: { type: 'integer', minimum: 0, maximum: maxLunNumber } },
      },
    },
  }, async (request: FastifyRequest<Named & { Body: MapVolumeRequest }>) =>
    node.hostGroups.map(request.params.name, request.body.hostGroup, request.body.lun));

  app.post('/v1/volumes/:name/unmap', {
    schema: { params: nameParam, body: { type: 'object', required: ['hostGroup'], additionalProperties: false, properties: { hostGroup: groupName } } },
  }, async (request: FastifyRequest<Named & { Body: UnmapVolumeRequest }>) =>
    node.hostGroups.unmap(request.params.name, request.body.hostGroup));
}
