// Request/response bodies of the manager's backup API (spec 003 §5.3–5.4 run by the manager):
// repositories and policies the manager keeps in its store, the jobs it runs (scheduled or started
// through the API) with their progress and result, and the images in a repository. Shared by the
// manager, its typed client, the CLI, the console's tests and the tests. Pure types; no behaviour.

export interface BackupRepoRecord {
  name: string;
  /** Absolute directory on the machine of the leading manager (shared storage when several managers run). */
  path: string;
  drives: number;
  addedAt: string;
}

export interface AddBackupRepoRequest {
  name: string;
  path: string;
  drives?: number;
}

export interface BackupPolicyRecord {
  name: string;
  volume: string;
  repo: string;
  /** The registered node (its name) that serves the volume. */
  node: string;
  /** Cron, 5 fields or 6 with seconds, in the manager's local time. */
  schedule: string;
  incremental: boolean;
  keep: number;
  /** `snapshot` or `replica:NAME`. */
  source: string;
  preSplitHook: string | null;
  postSplitHook: string | null;
  addedAt: string;
}

/** A policy as listed: with the next time it fires (null: its schedule names no further time). */
export interface BackupPolicyView extends BackupPolicyRecord {
  nextRunAt: string | null;
}

export interface AddBackupPolicyRequest {
  name: string;
  volume: string;
  repo: string;
  /** A registered node's name or API URL; absent: the node whose pushed state serves the volume. */
  node?: string;
  schedule: string;
  incremental?: boolean;
  keep?: number;
  source?: string;
  preSplitHook?: string;
  postSplitHook?: string;
}

export type BackupJobKind = 'backup' | 'restore';
export type BackupJobState = 'running' | 'succeeded' | 'failed' | 'interrupted';
export type BackupJobTrigger = 'schedule' | 'api';

/** Something that happened in a job: a hook, the split, a missing replica (NO_REPLICA_VOLUME …). */
export interface BackupJobNote {
  at: string;
  kind: string;
  message: string;
  hint?: string;
}

export interface BackupJobRecord {
  id: string;
  kind: BackupJobKind;
  policy: string | null;
  volume: string;
  /** The volume a restore writes. */
  target: string | null;
  repo: string;
  node: string;
  trigger: BackupJobTrigger;
  /** The cron time a scheduled job fired for. */
  scheduledAt: string | null;
  startedBy: string;
  /** The manager that ran it. */
  manager: string;
  state: BackupJobState;
  /** What was asked for; `image` is what was taken (full, or incremental) once the copy is done. */
  incremental: boolean;
  image: 'full' | 'incremental' | null;
  startedAt: string;
  endedAt: string | null;
  /** Bytes copied so far (backup: into the repository; restore: onto the volume). */
  bytesCopied: number;
  /** Bytes the copy will move in all, once known. */
  bytesTotal: number | null;
  /** Jobs that were ahead when it queued for a drive (0: it had one at once). */
  waitingBehind: number | null;
  backupId: string | null;
  /** Set when an incremental was asked for and a full one taken: why. */
  fellBackToFull: string | null;
  error: string | null;
  /** What to do about the error. */
  hint: string | null;
  notes: BackupJobNote[];
}

export interface BackupJobList {
  jobs: BackupJobRecord[];
}

export interface BackupRepoList {
  repos: BackupRepoRecord[];
}

export interface BackupPolicyList {
  policies: BackupPolicyView[];
}

export interface StartRestoreRequest {
  backupId: string;
  /** The repository holding it; absent: every repository is searched. */
  repo?: string;
  /** The volume to write (created with the backup's size when it does not exist). */
  target: string;
  force?: boolean;
  /** A registered node's name or API URL; absent: the node the backup was taken from. */
  node?: string;
}

export interface BackupImageView {
  id: string;
  repo: string;
  volume: string;
  kind: 'full' | 'incremental';
  snapshotAt: string;
  parentId: string | null;
  dataBytes: number;
  policy: string | null;
}

export interface BackupImageList {
  images: BackupImageView[];
}

/** One image's verification (`backup verify`): null fields when its manifest cannot be read. */
export interface BackupImageCheck {
  id: string;
  repo: string;
  volume: string | null;
  kind: 'full' | 'incremental' | null;
  snapshotAt: string | null;
  dataBytes: number | null;
  ok: boolean;
  /** Why it cannot be restored (its own data or manifest, or its chain), null when ok. */
  problem: string | null;
}

export interface VerifyBackupsRequest {
  /** Only this repository; absent: every repository. */
  repo?: string;
  /** Only these images and the images their restore needs; absent: every image. */
  ids?: string[];
  /** Only images of this volume (ignored with ids). */
  volume?: string;
}

export interface BackupImageCheckList {
  images: BackupImageCheck[];
}
