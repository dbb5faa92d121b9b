// The life of a backup or restore job, as a (state, event) → state table: the only way a job
// record's state changes. A job whose process died while queued or running is shown as
// `interrupted` (derived when read, see repository.ts); it is rerun as a new job.
import { type TransitionTable, nextState } from '../common/transition-table';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed';
export type JobEvent = 'drive-acquired' | 'copy-done' | 'error';

const table: TransitionTable<JobState, JobEvent> = {
  queued: { 'drive-acquired': 'running', error: 'failed' },
  running: { 'copy-done': 'succeeded', error: 'failed' },
  succeeded: {},
  failed: {},
};

export function nextJobState(state: JobState, event: JobEvent): JobState {
  return nextState('backup job', table, state, event);
}
