// The decisions of the manager's backup service that need no I/O: which registered node serves a
// volume, the life of a job record (as a table), whether a scheduled time was already fired, when a
// running job's progress is stored again, job ids that sort by start time, and which old job
// records to forget. Kept apart so they are tested on their own.
import { TricopyError } from '../common/errors';
import { type TransitionTable, nextState } from '../common/transition-table';
import type { BackupJobState } from '../contracts/backup';
import type { NodeState, StoredNode } from './store/collections';
import { normalizeUrl } from './stored-node-client';

/** Job records kept in the store; the oldest are deleted past this. */
export const maxBackupJobsKept = 1000;
/** A running job's progress is stored (and an event recorded) at most this often. */
export const progressStoreIntervalMs = 1000;

/** A registered node given by name or by its API URL. */
export function registeredNode(nodes: readonly StoredNode[], given: string): StoredNode {
  const byName = nodes.find((n) => n.name === given);
  if (byName) return byName;
  const byUrl = nodes.find((n) => normalizeUrl(n.url) === normalizeUrl(given));
  if (byUrl) return byUrl;
  throw new TricopyError('not-found', `node ${given} is not registered at the manager`, 'register it: tricopy manager node add URL (or name a registered node: tricopy manager node list)');
}

/**
 * The node that serves `volume`, from what the nodes pushed: the one node that has it, or, where a
 * remote pair gives several nodes a volume of that name, the one where it is not a pair's secondary.
 */
export function nodeServingVolume(states: readonly NodeState[], volume: string): string {
  const having = states.filter((s) => s.volumes.some((v) => v.name === volume));
  if (having.length === 0) {
    throw new TricopyError('not-found', `no registered node has a volume ${volume}`, 'create it first, or name its node: --node URL (the manager learns volumes from what nodes push)');
  }
  if (having.length === 1) return having[0]!.name;
  const primaries = having.filter((s) => !s.pairs.some((p) => p.volume === volume && p.role === 'secondary'));
  if (primaries.length === 1) return primaries[0]!.name;
  throw new TricopyError('conflict', `volume ${volume} is on nodes ${having.map((s) => s.name).join(', ')}`, 'say which one serves it: --node URL');
}

export type BackupJobEvent = 'copy-done' | 'error' | 'manager-gone';

const jobTable: TransitionTable<BackupJobState, BackupJobEvent> = {
  running: { 'copy-done': 'succeeded', error: 'failed', 'manager-gone': 'interrupted' },
  succeeded: {},
  failed: {},
  interrupted: {},
};

export function nextBackupJobState(state: BackupJobState, event: BackupJobEvent): BackupJobState {
  return nextState('backup job', jobTable, state, event);
}

/** Whether a policy's scheduled time is new: each time is fired once, even across a change of leader. */
export function isNewScheduledTime(lastFiredAt: string | undefined, scheduledAt: Date): boolean {
  return lastFiredAt === undefined || Date.parse(lastFiredAt) < scheduledAt.getTime();
}

/** Says when a running job's progress is worth storing: the first time, then every interval. */
export class ProgressGate {
  private lastMs: number | null = null;

  constructor(private readonly intervalMs: number = progressStoreIntervalMs) {}

  due(nowMs: number): boolean {
    if (this.lastMs !== null && nowMs - this.lastMs < this.intervalMs) return false;
    this.lastMs = nowMs;
    return true;
  }
}

/** "b" + start time (ms, 14 digits) + random: ids sort by start time, so the store lists them in order. */
export function backupJobId(startMs: number, randomHex: string): string {
  return `b${String(startMs).padStart(14, '0')}-${randomHex}`;
}

/** The ids to delete so that at most `keep` records remain (ids sort oldest first). */
export function jobIdsToForget(idsNewestFirst: readonly string[], keep: number = maxBackupJobsKept): string[] {
  return idsNewestFirst.slice(keep);
}

/** A job note's kind (NO_REPLICA_VOLUME) as an event kind of the manager's history (backup-no-replica-volume). */
export function noteEventKind(noteKind: string): string {
  return `backup-${noteKind.toLowerCase().replace(/_/g, '-')}`;
}

/** Whole percent of the copy done; null while the total is not known. */
export function percentDone(doneBytes: number, totalBytes: number | null): number | null {
  if (totalBytes === null) return null;
  return totalBytes === 0 ? 100 : Math.min(100, Math.floor((doneBytes / totalBytes) * 100));
}
