// Managed backup at the manager: the catalog of repositories and policies in the store, the jobs,
// and the scheduler (backup/schedule.ts, on the manager's clock) that fires every policy at its
// cron times — only while this manager leads: it starts when the lead is taken and stops when it is
// lost, so one manager fires; and each fired time is stored with its job (backup-jobs.ts), so a new
// leader does not fire a time the old one fired.
import { TricopyError, errorMessage } from '../common/errors';
import { BackupScheduler } from '../backup/schedule';
import type { BackupJobRecord, BackupPolicyRecord } from '../contracts/backup';
import { ManagerBackupCatalog } from './backup-catalog';
import { BackupJobs } from './backup-jobs';
import type { ManagerContext } from './context';

export class ManagerBackups {
  readonly catalog: ManagerBackupCatalog;
  readonly jobs: BackupJobs;
  private scheduler: BackupScheduler<BackupPolicyRecord> | null = null;

  constructor(private readonly ctx: ManagerContext) {
    this.catalog = new ManagerBackupCatalog(ctx, () => this.scheduler?.poke());
    this.jobs = new BackupJobs(ctx, this.catalog);
  }

  /** Told by the leadership: the scheduler runs exactly while this manager leads. */
  onLeadership(leading: boolean): void {
    if (leading && this.scheduler === null) {
      this.scheduler = new BackupScheduler<BackupPolicyRecord>({
        clock: this.ctx.clock,
        loadPolicies: () => this.catalog.policies(),
        run: async (policy, scheduledAt) => {
          const job = await this.jobs.startPolicy(policy, { trigger: 'schedule', startedBy: 'schedule', scheduledAt });
          if (job === null) this.ctx.log.info({ policy: policy.name, scheduledAt }, 'this scheduled time was fired before; not again');
        },
        onError: (policy, err) => this.ctx.log.error({ policy: policy.name, err: errorMessage(err) }, 'a scheduled backup did not start'),
      });
      this.scheduler.start();
      this.ctx.log.info('backup schedules run here (this manager leads)');
    } else if (!leading && this.scheduler !== null) {
      this.stopScheduler();
      this.ctx.log.info('backup schedules stopped here (this manager no longer leads)');
    }
  }

  /** Runs a policy now (the API's "run now"). */
  async runNow(policyName: string, startedBy: string): Promise<BackupJobRecord> {
    const policy = await this.catalog.policy(policyName);
    const job = await this.jobs.startPolicy(policy, { trigger: 'api', startedBy, scheduledAt: null });
    // Only a scheduled time can have been fired before.
    if (job === null) throw new TricopyError('internal', `policy ${policyName}: a job started now was taken for a scheduled time`);
    return job;
  }

  /** Stops the schedules; jobs still copying are cut short when the process ends (the next leader marks them interrupted). */
  stop(): void {
    this.stopScheduler();
    const cut = this.jobs.runningCount();
    if (cut > 0) this.ctx.log.warn({ jobs: cut }, 'stopping with backup jobs running: they end with this process and are shown interrupted; run them again');
  }

  private stopScheduler(): void {
    // Jobs already started go on; their records are stored while this manager can still write.
    void this.scheduler?.stop();
    this.scheduler = null;
  }
}
