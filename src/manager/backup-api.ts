// The manager's backup routes: repositories and policies (list, add, remove), run a policy now,
// start a restore, the jobs and the images, and verify images. Every body, parameter and query is checked by a JSON
// schema here; the types are in contracts/backup.ts. Writes (POST, DELETE) reach the leader through
// the API's forwarding, like every write.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { TricopyError } from '../common/errors';
import type { AddBackupPolicyRequest, AddBackupRepoRequest, StartRestoreRequest, VerifyBackupsRequest } from '../contracts/backup';
import { maxVerifyIds, verifyAnswerTimeoutMs } from '../backup/limits';
import { maxBackupJobsKept } from './backup-rules';
import type { ManagerService } from './service';

const name = { type: 'string', minLength: 1, maxLength: 63, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' } as const;
const nameParam = { type: 'object', required: ['name'], additionalProperties: false, properties: { name } } as const;
const nodeRef = { type: 'string', minLength: 1, maxLength: 512 } as const;
const hook = { type: 'string', minLength: 1, maxLength: 4096 } as const;
const startedBy = { type: 'string', minLength: 1, maxLength: 100 } as const;

const addRepoBody = {
  type: 'object', required: ['name', 'path'], additionalProperties: false,
  properties: { name, path: { type: 'string', minLength: 1, maxLength: 4096 }, drives: { type: 'integer', minimum: 1, maximum: 64 } },
} as const;

const addPolicyBody = {
  type: 'object', required: ['name', 'volume', 'repo', 'schedule'], additionalProperties: false,
  properties: {
    name, volume: name, repo: name, node: nodeRef, schedule: { type: 'string', minLength: 1, maxLength: 200 }, incremental: { type: 'boolean' },
    keep: { type: 'integer', minimum: 1, maximum: 10_000 }, source: { type: 'string', minLength: 1, maxLength: 80 }, preSplitHook: hook, postSplitHook: hook,
  },
} as const;

const backupId = { type: 'string', minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9][A-Za-z0-9._-]*$' } as const;

const restoreBody = {
  type: 'object', required: ['backupId', 'target'], additionalProperties: false,
  properties: {
    backupId, repo: name, target: name, force: { type: 'boolean' },
    node: nodeRef, startedBy,
  },
} as const;

const verifyBody = {
  type: 'object', additionalProperties: false,
  properties: { repo: name, volume: name, ids: { type: 'array', maxItems: maxVerifyIds, items: backupId } },
} as const;

export function addBackupRoutes(app: FastifyInstance, m: ManagerService): void {
  app.get('/v1/backup/repos', async () => ({ repos: await m.backups.catalog.repos() }));
  app.post('/v1/backup/repos', { schema: { body: addRepoBody } }, async (request: FastifyRequest<{ Body: AddBackupRepoRequest }>, reply) => {
    reply.code(201);
    return m.backups.catalog.addRepo(request.body);
  });
  app.delete('/v1/backup/repos/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    await m.backups.catalog.removeRepo(request.params.name);
    return { removed: request.params.name };
  });

  app.get('/v1/backup/policies', async () => ({ policies: await m.backups.catalog.policyViews() }));
  app.post('/v1/backup/policies', { schema: { body: addPolicyBody } }, async (request: FastifyRequest<{ Body: AddBackupPolicyRequest }>, reply) => {
    reply.code(201);
    return m.backups.catalog.addPolicy(request.body);
  });
  app.delete('/v1/backup/policies/:name', { schema: { params: nameParam } }, async (request: FastifyRequest<{ Params: { name: string } }>) => {
    await m.backups.catalog.removePolicy(request.params.name);
    return { removed: request.params.name };
  });
  app.post('/v1/backup/policies/:name/run', {
    schema: { params: nameParam, body: { anyOf: [{ type: 'null' }, { type: 'object', additionalProperties: false, properties: { startedBy } }] } },
  }, async (request: FastifyRequest<{ Params: { name: string }; Body: { startedBy?: string } | null }>, reply) => {
    reply.code(201);
    return m.backups.runNow(request.params.name, request.body?.startedBy ?? 'api');
  });

  app.post('/v1/backup/restores', { schema: { body: restoreBody } }, async (request: FastifyRequest<{ Body: StartRestoreRequest & { startedBy?: string } }>, reply) => {
    const { startedBy: by, ...req } = request.body;
    reply.code(201);
    return m.backups.jobs.startRestore(req, by ?? 'api');
  });

  app.get('/v1/backup/jobs', {
    schema: { querystring: { type: 'object', additionalProperties: false, properties: { limit: { type: 'string', pattern: '^[0-9]{1,4}$' } } } },
  }, async (request: FastifyRequest<{ Querystring: { limit?: string } }>) =>
    ({ jobs: await m.backups.jobs.list(Math.min(Number(request.query.limit ?? maxBackupJobsKept), maxBackupJobsKept)) }));
  app.get('/v1/backup/jobs/:id', {
    schema: { params: { type: 'object', required: ['id'], additionalProperties: false, properties: { id: { type: 'string', minLength: 1, maxLength: 64 } } } },
  }, async (request: FastifyRequest<{ Params: { id: string } }>) => {
    const job = await m.backups.jobs.get(request.params.id);
    if (!job) throw new TricopyError('not-found', `no backup job ${request.params.id}`, 'list them: tricopy backup jobs --manager');
    return job;
  });

  // It changes nothing, but reads every data file asked for: a follower forwards it as any POST, and waits as long as the reading may take.
  app.post('/v1/backup/verify', { schema: { body: verifyBody }, config: { forwardTimeoutMs: verifyAnswerTimeoutMs } }, async (request: FastifyRequest<{ Body: VerifyBackupsRequest | null }>) =>
    ({ images: await m.backups.catalog.verify(request.body ?? {}) }));

  app.get('/v1/backup/images', {
    schema: { querystring: { type: 'object', additionalProperties: false, properties: { repo: name, volume: name } } },
  }, async (request: FastifyRequest<{ Querystring: { repo?: string; volume?: string } }>) =>
    ({ images: await m.backups.catalog.images(request.query) }));
}
