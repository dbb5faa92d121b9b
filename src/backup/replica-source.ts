// A backup from the split of an in-node replica pair (spec 003 Figs. 4, 7; §5.4): the pair is
// resynchronised if it was split, the job waits until it is duplex, splits it at the backup time
// between the pre-split and post-split hooks, copies the whole split image from the replica's
// export, and resyncs the pair again so it is ready for the next backup. The volume's own
// changed-block chain (snapshot backups) is left as it was: a replica backup is always full.
import { type ErrorCode, TricopyError } from '../common/errors';
import type { ReplicaStatus } from '../contracts/replicas';
import { type HookContext, type RecordEvent, type SplitHooks, aroundSplit } from './hooks';
import { type ImageTarget, writeImage } from './image-writer';
import { type BackupManifest, manifestFormat } from './manifest';
import { maxReplicaWaitPerCallMs, replicaSyncTimeoutMs } from './limits';
import type { JobRecord } from './repository';
import type { BackupNode } from './engine';

export interface ReplicaJob extends ImageTarget {
  node: BackupNode;
  nodeUrl: string;
  record: RecordEvent;
  hooks: SplitHooks;
  hookContext: HookContext;
  job: JobRecord;
}

function hasCode(err: unknown, code: ErrorCode): boolean {
  return err instanceof TricopyError && err.code === code;
}

/** The pair, or a NO_REPLICA_VOLUME event and an error that says what to do. */
async function replicaOf(job: ReplicaJob, volume: string, name: string): Promise<ReplicaStatus> {
  let status: ReplicaStatus;
  try {
    status = await job.node.getReplica(name);
  } catch (err) {
    if (!hasCode(err, 'not-found')) throw err;
    const message = `replica ${name} does not exist on node ${job.nodeUrl}; nothing was split`;
    const hint = `create it once (it copies ${volume} in full): tricopy replica create ${name} --volume ${volume} --wait; or back up from a snapshot (--source snapshot)`;
    await job.record('NO_REPLICA_VOLUME', message, hint);
    throw new TricopyError('not-found', `NO_REPLICA_VOLUME: ${message}`, hint);
  }
  if (status.volume !== volume) {
    const message = `replica ${name} is the replica of ${status.volume}, not of ${volume}`;
    const hint = `name a replica of ${volume} (tricopy replica status), or create one: tricopy replica create ${volume}-r1 --volume ${volume} --wait`;
    await job.record('NO_REPLICA_VOLUME', message, hint);
    throw new TricopyError('conflict', `NO_REPLICA_VOLUME: ${message}`, hint);
  }
  return status;
}

/** Brings the pair to duplex: a split or suspended pair is resynchronised (only the changed regions are copied). */
async function toDuplex(job: ReplicaJob, status: ReplicaStatus): Promise<void> {
  const name = status.name;
  if (status.state === 'restoring') {
    throw new TricopyError('conflict', `replica ${name} is restoring its primary`, `wait until it is duplex (tricopy replica wait ${name} --state duplex), then back up`);
  }
  if (status.state === 'split' || status.state === 'split-pending' || status.state === 'suspended') {
    await job.node.resyncReplica(name, { force: true });
    await job.record('REPLICA_RESYNC', `replica ${name} was ${status.state}: resynchronising it before the split`);
  }
  const deadline = Date.now() + replicaSyncTimeoutMs;
  for (;;) {
    try {
      await job.node.waitReplica(name, 'duplex', Math.min(maxReplicaWaitPerCallMs, Math.max(1, deadline - Date.now())));
      break;
    } catch (err) {
      if (!hasCode(err, 'unavailable') || Date.now() >= deadline) throw err;
    }
  }
  await job.record('REPLICA_DUPLEX', `replica ${name} is duplex`);
}

export async function backupFromReplica(job: ReplicaJob, volume: string, name: string, policy: string | null): Promise<BackupManifest> {
  const status = await replicaOf(job, volume, name);
  await toDuplex(job, status);
  const split = await aroundSplit(job.hooks, job.hookContext, job.record, async () => {
    const s = await job.node.splitReplica(name, { quick: false });
    if (!s.splitAt || !s.exportUri) throw new TricopyError('internal', `replica ${name} split without an instant or an export`);
    return { ...s, splitAt: s.splitAt, exportUri: s.exportUri };
  });
  try {
    const size = (await job.node.getVolume(volume)).sizeBytes;
    return await writeImage(job, {
      format: manifestFormat, id: job.job.id, kind: 'full', volume, node: job.nodeUrl, sizeBytes: size, snapshotAt: split.splitAt,
      parentId: null, chainId: job.job.id, policy, extents: [], dataBytes: 0, startedAt: job.job.startedAt ?? split.splitAt,
    }, split.exportUri, null);
  } finally {
    // Ready for the next backup: only what changed since the split is copied back.
    await job.node.resyncReplica(name, { force: true });
    await job.record('REPLICA_RESYNC', `replica ${name} resynchronising after the copy`);
  }
}
