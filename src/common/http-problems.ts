// How the control APIs (node and manager) answer errors and check their bearer token: one
// problem-document shape (RFC 7807 with the error code and hint), one mapping of fastify's own
// errors, one constant-time token comparison.
import { timingSafeEqual } from 'node:crypto';
import type { FastifyError, FastifyInstance, FastifyReply } from 'fastify';
import type { Problem } from '../contracts/node';
import { TricopyError, httpStatusOf, isErrorCode } from './errors';

export async function sendProblem(reply: FastifyReply, error: TricopyError): Promise<FastifyReply> {
  const status = isErrorCode(error.code) ? httpStatusOf(error.code) : 500;
  const problem: Problem = {
    type: `https://tricopy.dev/problems/${error.code}`,
    title: error.code,
    status,
    detail: error.message,
    code: error.code,
  };
  if (error.hint !== undefined) problem.hint = error.hint;
  return reply.code(status).header('content-type', 'application/problem+json').send(problem);
}

/** True when the Authorization header carries `Bearer <token>` (compared in constant time). */
export function bearerTokenValid(header: string | undefined, token: string): boolean {
  const presented = Buffer.from(header?.startsWith('Bearer ') ? header.slice(7) : '');
  const expected = Buffer.from(token);
  return presented.length === expected.length && timingSafeEqual(presented, expected);
}

/**
 * Every error becomes a problem document: ours as they are, schema and other 4xx errors of fastify
 * as invalid arguments, the rest as internal errors after `logInternal` recorded them.
 */
export function answerErrorsAsProblems(app: FastifyInstance, logInternal: (error: Error, url: string) => void, internalHint: string): void {
  app.setErrorHandler(async (error: FastifyError | TricopyError | Error, request, reply) => {
    if (error instanceof TricopyError) return sendProblem(reply, error);
    const fe = error as FastifyError;
    if (fe.validation) return sendProblem(reply, new TricopyError('invalid-argument', `invalid request: ${fe.message}`));
    if (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500) {
      return sendProblem(reply, new TricopyError('invalid-argument', fe.message));
    }
    logInternal(error, request.url);
    return sendProblem(reply, new TricopyError('internal', `internal error: ${error.message}`, internalHint));
  });
  app.setNotFoundHandler(async (request, reply) =>
    sendProblem(reply, new TricopyError('not-found', `no API route ${request.method} ${request.url}`)));
}
