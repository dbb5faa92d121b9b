// Pre-split and post-split hooks of a backup (spec 003 §5.4): a command that quiesces the
// application before the split (or snapshot) and one that resumes it after. A failing pre hook
// aborts the job before anything is split; the post hook runs whenever the pre hook ran (the
// application must resume even when the split failed), and its failure is reported, not fatal:
// the image is already taken.
import { spawn } from 'node:child_process';
import { TricopyError } from '../common/errors';
import { hookKillGraceMs, hookOutputBytes, hookTimeoutMs } from './limits';

export interface SplitHooks {
  pre: string | null;
  post: string | null;
}

/** What a hook is told about the job, as TRICOPY_BACKUP_* environment variables. */
export interface HookContext {
  volume: string;
  policy: string | null;
  job: string;
  repo: string;
  /** `snapshot` or `replica:NAME`. */
  source: string;
  node: string;
}

export type JobEventKind =
  | 'PRE_SPLIT_HOOK_OK' | 'PRE_SPLIT_HOOK_FAILED' | 'SPLIT_DONE' | 'SPLIT_FAILED' | 'POST_SPLIT_HOOK_OK' | 'POST_SPLIT_HOOK_FAILED'
  | 'NO_REPLICA_VOLUME' | 'REPLICA_RESYNC' | 'REPLICA_DUPLEX';

/** Records an event of the job (its record in the repository, and the operator's terminal). */
export type RecordEvent = (kind: JobEventKind, message: string, hint?: string) => Promise<void>;

export interface HookOutcome {
  ok: boolean;
  /** "exit 3", "killed by SIGTERM after 300 s", "could not start: …" */
  how: string;
  output: string;
}

export function runHook(command: string, phase: 'pre-split' | 'post-split', ctx: HookContext, extra: Record<string, string> = {}, timeoutMs = hookTimeoutMs): Promise<HookOutcome> {
  return new Promise((resolve) => {
    const env = {
      ...process.env, TRICOPY_BACKUP_PHASE: phase, TRICOPY_BACKUP_VOLUME: ctx.volume, TRICOPY_BACKUP_POLICY: ctx.policy ?? '',
      TRICOPY_BACKUP_JOB: ctx.job, TRICOPY_BACKUP_REPO: ctx.repo, TRICOPY_BACKUP_SOURCE: ctx.source, TRICOPY_NODE: ctx.node, ...extra,
    };
    const child = spawn('/bin/sh', ['-c', command], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const keep = (d: Buffer): void => {
      output = (output + d.toString()).slice(-hookOutputBytes);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    let timedOut = false;
    let killer: NodeJS.Timeout | undefined;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGTERM');
      // A hook that ignores SIGTERM must not hold the job forever.
      killer = setTimeout(() => child.kill('SIGKILL'), hookKillGraceMs);
    }, timeoutMs);
    child.once('error', (err) => {
      clearTimeout(timer);
      clearTimeout(killer);
      resolve({ ok: false, how: `could not start: ${err.message}`, output });
    });
    // 'exit', not 'close': a process the hook left running in the background may hold its output open.
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      clearTimeout(killer);
      const how = timedOut ? `killed by SIGTERM after ${Math.round(timeoutMs / 1000)} s` : signal ? `killed by ${signal}` : `exit ${code ?? '?'}`;
      resolve({ ok: !timedOut && code === 0, how, output: output.trim() });
    });
  });
}

/**
 * Runs `split` between the hooks. A failing pre hook throws (nothing was split); the post hook
 * runs after the split whether it succeeded or not, and its failure is recorded only.
 */
export async function aroundSplit<T extends { splitAt: string }>(hooks: SplitHooks, ctx: HookContext, record: RecordEvent, split: () => Promise<T>): Promise<T> {
  if (hooks.pre) {
    const pre = await runHook(hooks.pre, 'pre-split', ctx);
    if (!pre.ok) {
      const message = `pre-split hook failed (${pre.how}); nothing was split, the job stops${pre.output ? `: ${pre.output}` : ''}`;
      const hint = `fix the hook and run the backup again; the hook was: ${hooks.pre}`;
      await record('PRE_SPLIT_HOOK_FAILED', message, hint);
      throw new TricopyError('io-error', `PRE_SPLIT_HOOK_FAILED: ${message}`, hint);
    }
    await record('PRE_SPLIT_HOOK_OK', `pre-split hook done (${pre.how})`);
  }
  let result: T | undefined;
  let failure: unknown;
  try {
    result = await split();
    await record('SPLIT_DONE', `image taken at ${result.splitAt}`);
  } catch (err) {
    failure = err;
    await record('SPLIT_FAILED', `the split failed: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (hooks.post) {
    const post = await runHook(hooks.post, 'post-split', ctx, { TRICOPY_BACKUP_SPLIT_AT: result?.splitAt ?? '', TRICOPY_BACKUP_SPLIT_OK: result ? 'yes' : 'no' });
    if (post.ok) await record('POST_SPLIT_HOOK_OK', `post-split hook done (${post.how})`);
    else {
      await record('POST_SPLIT_HOOK_FAILED', `post-split hook failed (${post.how}); the backup goes on, but the application may still be quiesced${post.output ? `: ${post.output}` : ''}`,
        `resume the application by hand; the hook was: ${hooks.post}`);
    }
  }
  if (!result) throw failure;
  return result;
}
