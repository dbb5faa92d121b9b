// Limits of managed backup, in one place with their units.

/** Most bytes one NBD read of a backup or a restore moves. */
export const copyChunkBytes = 4 * 1024 * 1024;
/** NBD reads a backup keeps in flight: small extents (an incremental's 64 KiB regions) cost a round trip each when read one by one. */
export const copyReadsInFlight = 8;
/** Most bytes one NBD block-status request asks about (the protocol's length is 32 bits). */
export const blockStatusSpanBytes = 1024 * 1024 * 1024;
/** How often a job waiting for a drive looks at the queue again. */
export const drivePollMs = 100;
/** Most drives (concurrent jobs) a repository may have. */
export const maxDrives = 64;
/** Most backup chains a policy may keep. */
export const maxKeepChains = 10_000;
/** Names of repositories, policies and volumes: what the node accepts for volume names. */
export const namePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
/** Longest a pre-split or post-split hook may run before it is killed (and counts as failed). */
export const hookTimeoutMs = 300_000;
/** Bytes of a hook's output kept for its event (the end of it). */
export const hookOutputBytes = 2048;
/** Longest a backup from a replica waits for the pair to become duplex before it splits it. */
export const replicaSyncTimeoutMs = 3_600_000;
/** One wait call for a replica pair's state (the node caps a wait at 600 s). */
export const maxReplicaWaitPerCallMs = 600_000;
/** Longest hook command line kept in a policy. */
export const maxHookCommandBytes = 4096;
/** After a hook's timeout, how long SIGTERM has before SIGKILL. */
export const hookKillGraceMs = 5_000;
/** Longest `backup verify --manager` waits for the manager's answer (it reads every data file asked for, about 1 GiB/s at best). */
export const verifyAnswerTimeoutMs = 2 * 3_600_000;
/** Most backup ids one verification may name. */
export const maxVerifyIds = 1000;
