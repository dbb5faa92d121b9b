// Errors that cross a boundary (API, CLI, NBD). Each carries a stable code, an HTTP status and a
// hint a human can act on, so the control API can answer with a problem document and the CLI can
// print it without knowing every failure.

export type ErrorCode =
  | 'invalid-argument'
  | 'not-found'
  | 'already-exists'
  | 'conflict'
  | 'busy'
  | 'no-space'
  | 'unauthorized'
  | 'forbidden'
  | 'unavailable'
  | 'io-error'
  | 'internal';

const httpStatusByCode: Record<ErrorCode, number> = {
  'invalid-argument': 400,
  'not-found': 404,
  'already-exists': 409,
  conflict: 409,
  busy: 409,
  'no-space': 507,
  unauthorized: 401,
  forbidden: 403,
  unavailable: 503,
  'io-error': 500,
  internal: 500,
};

export class TricopyError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, hint?: string) {
    super(message);
    this.name = 'TricopyError';
    this.code = code;
    this.hint = hint;
  }

  get httpStatus(): number {
    return httpStatusByCode[this.code];
  }
}

export function httpStatusOf(code: ErrorCode): number {
  return httpStatusByCode[code];
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && value in httpStatusByCode;
}

/**
 * Told of every violated invariant as it is detected, wherever the error is caught later (a request
 * answered with an error, a background task that logs it): the node logs it as fatal, the
 * simulator fails the run.
 */
export const invariantObservers = new Set<(err: InvariantError) => void>();

/** A violated invariant: a bug, never an expected condition. It is thrown, never swallowed. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(`invariant violated: ${message}`);
    this.name = 'InvariantError';
    for (const observe of invariantObservers) observe(this);
  }
}

export function invariant(condition: unknown, message: string): asserts condition {
  if (!condition) throw new InvariantError(message);
}

/** Node's system errors carry a string code (ENOSPC, ENOENT …). */
export function errnoCode(err: unknown): string | undefined {
  if (typeof err === 'object' && err !== null && 'code' in err) {
    const code = (err as { code: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

export function errorMessage(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
