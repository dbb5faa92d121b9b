// A PostgreSQL 15 cluster for tests and benchmarks, run as the `postgres` user (the server refuses
// root): initdb, start with crash-safe settings on a unix socket only, SQL through psql, a clean
// stop, and a crash: SIGKILL of the postmaster and every process under it at once.
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fsp, readdirSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { run, runOk } from './tools';
import { waitFor } from './wait';

export const pgBin = '/usr/lib/postgresql/15/bin';
const port = 5432; // only names the socket file, which lives in a directory of our own

export interface PgUser {
  uid: number;
  gid: number;
}

let cachedUser: PgUser | undefined;

/** The uid and gid of the `postgres` account the Debian packages create. */
export async function postgresUser(): Promise<PgUser> {
  if (!cachedUser) {
    const uid = Number((await runOk('id', ['-u', 'postgres'])).stdout.trim());
    const gid = Number((await runOk('id', ['-g', 'postgres'])).stdout.trim());
    cachedUser = { uid, gid };
  }
  return cachedUser;
}

/** Creates `dir` owned by postgres with the given mode (the data directory must be 0700). */
export async function postgresDir(dir: string, mode = 0o700): Promise<void> {
  const u = await postgresUser();
  await fsp.mkdir(dir, { recursive: true });
  await fsp.chown(dir, u.uid, u.gid);
  await fsp.chmod(dir, mode);
}

const env = { PATH: `${pgBin}:/usr/bin:/bin`, LANG: 'C', LC_ALL: 'C' };

export async function initdb(dataDir: string): Promise<void> {
  await postgresDir(dataDir);
  const u = await postgresUser();
  await runOk(path.join(pgBin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--locale=C'],
    { ...u, env, cwd: '/', timeoutMs: 120_000 });
}

/** Settings that make a commit durable: a COMMIT returns only after its WAL reached stable storage. */
export const durableSettings: Record<string, string> = {
  fsync: 'on',
  synchronous_commit: 'on',
  full_page_writes: 'on',
};

export interface StartOptions {
  dataDir: string;
  /** Holds the server's unix socket; created and given to postgres. Keep the path short (≤ 100 bytes). */
  socketDir: string;
  logFile: string;
  settings?: Record<string, string>;
}

export class PostgresServer {
  private exited = false;
  private readonly exit: Promise<void>;

  private constructor(readonly opts: StartOptions, readonly postmaster: ChildProcess) {
    this.exit = new Promise((resolve) => postmaster.once('exit', () => {
      this.exited = true;
      resolve();
    }));
  }

  /** Starts the server and waits until it accepts connections (after any crash recovery). */
  static async start(opts: StartOptions): Promise<PostgresServer> {
    await postgresDir(opts.socketDir, 0o755);
    const u = await postgresUser();
    const settings = { listen_addresses: '', unix_socket_directories: opts.socketDir, port: String(port), shared_buffers: '32MB',
      max_connections: '30', logging_collector: 'off', log_checkpoints: 'on', ...durableSettings, ...opts.settings };
    const args = ['-D', opts.dataDir, ...Object.entries(settings).flatMap(([k, v]) => ['-c', `${k}=${v}`])];
    // The postmaster's stderr goes straight to the log file, so it never waits on this process.
    const log = openSync(opts.logFile, 'a');
    const child = spawn(path.join(pgBin, 'postgres'), args, { ...u, env, cwd: '/', stdio: ['ignore', log, log] });
    closeSync(log);
    const server = new PostgresServer(opts, child);
    running.add(server);
    try {
      await waitFor(`postgres in ${opts.dataDir} to accept connections`, async () => {
        if (server.exited) throw new Error(`postgres exited; its log:\n${await server.logText()}`);
        const r = await run(path.join(pgBin, 'pg_isready'), ['-q', '-h', opts.socketDir, '-p', String(port)], { env });
        return r.code === 0;
      }, { timeoutMs: 120_000, intervalMs: 100 });
    } catch (err) {
      server.kill();
      throw err;
    }
    return server;
  }

  get socketDir(): string {
    return this.opts.socketDir;
  }

  /** Connection arguments for psql and pgbench. */
  connectArgs(): string[] {
    return ['-h', this.opts.socketDir, '-p', String(port), '-U', 'postgres'];
  }

  logText(): Promise<string> {
    return fsp.readFile(this.opts.logFile, 'utf8').catch(() => '');
  }

  /** Runs SQL and returns the rows, each a list of column values (unaligned, tab-separated). */
  async query(sql: string): Promise<string[][]> {
    const r = await runOk(path.join(pgBin, 'psql'), [...this.connectArgs(), '-d', 'postgres', '-X', '-q', '-A', '-t', '-F', '\t',
      '-v', 'ON_ERROR_STOP=1', '-c', sql], { env, timeoutMs: 120_000 });
    return r.stdout.split('\n').filter((line) => line !== '').map((line) => line.split('\t'));
  }

  /** Fast shutdown (SIGINT): running transactions roll back, a checkpoint is written. */
  async stop(): Promise<void> {
    running.delete(this);
    if (this.exited) return;
    this.postmaster.kill('SIGINT');
    const done = await Promise.race([this.exit.then(() => true), new Promise<false>((r) => setTimeout(() => r(false), 60_000).unref())]);
    if (!done) await this.kill();
  }

  /**
   * A crash: every process of the server dies at once by SIGKILL. Backends make themselves group
   * leaders (setsid), so a process group does not reach them; the postmaster is stopped first so
   * that it forks nothing new while its children are collected. Returns the pids killed.
   */
  kill(): number[] {
    running.delete(this);
    const pid = this.postmaster.pid;
    if (this.exited || pid === undefined) return [];
    process.kill(pid, 'SIGSTOP');
    const pids = [pid, ...descendants(pid)];
    for (const p of pids) {
      try {
        process.kill(p, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    return pids;
  }

  /** Waits until every given process is gone (after kill()). */
  static async waitGone(pids: number[], timeoutMs = 30_000): Promise<void> {
    await waitFor(`postgres processes ${pids.join(' ')} to exit`, () => pids.every((p) => !alive(p)), { timeoutMs });
  }
}

const running = new Set<PostgresServer>();

/** Kills every server this process started and did not stop (for `after` hooks). */
export async function killAllPostgres(): Promise<void> {
  const pids = [...running].flatMap((s) => s.kill());
  await PostgresServer.waitGone(pids);
}

process.on('exit', () => {
  for (const s of running) s.kill();
});

function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Every process below `root`, from the parent pids in /proc. */
export function descendants(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      // Fields after the command name (which may hold spaces and parentheses): state, ppid, …
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      children.set(ppid, [...(children.get(ppid) ?? []), Number(name)]);
    } catch {
      // exited while we looked
    }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    for (const child of children.get(queue.shift()!) ?? []) {
      out.push(child);
      queue.push(child);
    }
  }
  return out;
}
