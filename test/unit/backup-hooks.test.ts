// Pre-split and post-split hooks without a node: the order around the split, the environment they
// get, a failing pre hook that prevents the split, a post hook that runs even when the split
// failed, a failing post hook that is only reported, and a hook that overstays its timeout.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { type HookContext, type JobEventKind, aroundSplit, runHook } from '../../src/backup/hooks';
import { tempDir } from '../support/tools';

const context: HookContext = { volume: 'db1', policy: 'nightly', job: 'J1', repo: 'tape1', source: 'snapshot', node: 'http://n' };

async function withLog(fn: (log: string, events: JobEventKind[], record: (k: JobEventKind) => Promise<void>) => Promise<void>): Promise<void> {
  const dir = await tempDir('hooks');
  const events: JobEventKind[] = [];
  try {
    await fn(path.join(dir, 'log'), events, async (k) => void events.push(k));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

const lines = async (file: string): Promise<string[]> => (await fsp.readFile(file, 'utf8')).trim().split('\n');

test('pre hook, split, post hook in order, with the job in their environment', () => withLog(async (log, events, record) => {
  const hooks = {
    pre: `echo "$TRICOPY_BACKUP_PHASE $TRICOPY_BACKUP_VOLUME $TRICOPY_BACKUP_POLICY $TRICOPY_BACKUP_JOB $TRICOPY_BACKUP_SOURCE" >> ${log}`,
    post: `echo "$TRICOPY_BACKUP_PHASE $TRICOPY_BACKUP_SPLIT_OK $TRICOPY_BACKUP_SPLIT_AT" >> ${log}`,
  };
  const result = await aroundSplit(hooks, context, record, async () => {
    await fsp.appendFile(log, 'split\n');
    return { splitAt: '2026-12-02T00:00:00.000Z' };
  });
  assert.equal(result.splitAt, '2026-12-02T00:00:00.000Z');
  assert.deepEqual(await lines(log), ['pre-split db1 nightly J1 snapshot', 'split', 'post-split yes 2026-12-02T00:00:00.000Z']);
  assert.deepEqual(events, ['PRE_SPLIT_HOOK_OK', 'SPLIT_DONE', 'POST_SPLIT_HOOK_OK']);
}));

test('a failing pre hook prevents the split and the post hook', () => withLog(async (log, events, record) => {
  let split = false;
  await assert.rejects(aroundSplit({ pre: 'echo busy >&2; exit 7', post: `echo post >> ${log}` }, context, record, async () => {
    split = true;
    return { splitAt: 'x' };
  }), /PRE_SPLIT_HOOK_FAILED: pre-split hook failed \(exit 7\); nothing was split, the job stops: busy/);
  assert.equal(split, false);
  await assert.rejects(fsp.readFile(log), /ENOENT/);
  assert.deepEqual(events, ['PRE_SPLIT_HOOK_FAILED']);
}));

test('the post hook runs when the split fails (the application resumes); a failing post hook is only reported', () => withLog(async (log, events, record) => {
  await assert.rejects(aroundSplit({ pre: null, post: `echo "post $TRICOPY_BACKUP_SPLIT_OK" >> ${log}` }, context, record, async () => {
    throw new Error('snapshot limit reached');
  }), /snapshot limit reached/);
  assert.deepEqual(await lines(log), ['post no']);
  assert.deepEqual(events, ['SPLIT_FAILED', 'POST_SPLIT_HOOK_OK']);
  events.length = 0;
  const result = await aroundSplit({ pre: null, post: 'exit 2' }, context, record, async () => ({ splitAt: 'y' }));
  assert.equal(result.splitAt, 'y');
  assert.deepEqual(events, ['SPLIT_DONE', 'POST_SPLIT_HOOK_FAILED']);
}));

test('a hook that overstays its timeout is killed and counts as failed', async () => {
  const started = Date.now();
  const outcome = await runHook('echo started; sleep 30', 'pre-split', context, {}, 300);
  assert.equal(outcome.ok, false);
  assert.match(outcome.how, /killed by SIGTERM after 0 s/);
  assert.equal(outcome.output, 'started');
  assert.ok(Date.now() - started < 10_000, 'the job does not wait for the hook to finish');
});
