// pgbench as the application: `pgbench -i`, runs in the background with progress, and a TPC-B-like
// script that also records each transaction as (client, n), n counting the client's transactions.
// pgbench's per-transaction log (written only after COMMIT returned) then names exactly the
// transactions the client saw commit, to compare with what a recovered copy of the database holds.
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { pgBin, type PostgresServer } from './postgres';
import { runOk } from './tools';

/** pgbench's built-in tpcb-like transaction plus one row naming the transaction. */
const recordedScript = `\\set aid random(1, 100000 * :scale)
\\set bid random(1, 1 * :scale)
\\set tid random(1, 10 * :scale)
\\set delta random(-5000, 5000)
\\set n :n + 1
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
INSERT INTO tricopy_commits (client, n) VALUES (:client_id, :n);
END;
`;

/** `pgbench -i` at `scale` (100,000 accounts each); with `record`, also the table of recorded transactions. */
export async function pgbenchInit(server: PostgresServer, scale: number, opts: { record?: boolean } = {}): Promise<void> {
  await runOk(path.join(pgBin, 'pgbench'), [...server.connectArgs(), '-i', '-q', '-s', String(scale), 'postgres'], { timeoutMs: 600_000 });
  if (opts.record) await server.query('CREATE TABLE tricopy_commits (client int, n int, PRIMARY KEY (client, n))');
}

export interface PgbenchOptions {
  clients: number;
  seconds: number;
  /** Directory for the script and the per-transaction log; with it, transactions are recorded (see above; needs pgbenchInit's `record`). */
  recordDir?: string;
}

export interface PgbenchOutcome {
  code: number | null;
  output: string;
  /** Transactions pgbench counted as processed. */
  transactions: number;
  /** "tps = … (without initial connection time)"; 0 if pgbench printed none. */
  tps: number;
}

/** A pgbench run in the background, with its progress (`-P 1`) readable while it runs. */
export class PgbenchRun {
  private output = '';
  readonly done: Promise<PgbenchOutcome>;

  private constructor(readonly child: ChildProcess, readonly opts: PgbenchOptions) {
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.done = new Promise((resolve) => child.once('close', (code) => resolve({
      code, output: this.output,
      transactions: Number(/number of transactions actually processed: (\d+)/.exec(this.output)?.[1] ?? 0),
      tps: Number(/tps = ([\d.]+) \(without initial connection time\)/.exec(this.output)?.[1] ?? 0),
    })));
  }

  static async start(server: PostgresServer, opts: PgbenchOptions): Promise<PgbenchRun> {
    const args = [...server.connectArgs(), '-n', '-c', String(opts.clients), '-j', '1', '-T', String(opts.seconds), '-P', '1'];
    if (opts.recordDir) {
      const script = path.join(opts.recordDir, 'recorded-tpcb.sql');
      await fsp.writeFile(script, recordedScript);
      args.push('-f', script, '-D', 'n=0', '-l', `--log-prefix=${logPrefix(opts.recordDir)}`);
    }
    const child = spawn(path.join(pgBin, 'pgbench'), [...args, 'postgres'], { stdio: ['ignore', 'pipe', 'pipe'] });
    return new PgbenchRun(child, opts);
  }

  /** The last progress report: seconds into the run and transactions per second in the last second. */
  progress(): { seconds: number; tps: number } | undefined {
    const all = [...this.output.matchAll(/progress: ([\d.]+) s, ([\d.]+) tps/g)];
    const last = all[all.length - 1];
    return last ? { seconds: Number(last[1]), tps: Number(last[2]) } : undefined;
  }

  kill(): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
  }
}

function logPrefix(dir: string): string {
  return path.join(dir, 'txlog');
}

export interface ClientRecord {
  /** client → the n of each transaction the client saw commit. */
  committed: Map<number, number[]>;
  /** client → how many transactions it ended (committed or failed); its next n was in flight, if any. */
  ended: Map<number, number>;
}

/**
 * What each client saw, from pgbench's per-transaction log. A line is written after a transaction
 * ended; its latency field is a number for a commit and a word ("failed", …) otherwise. The log is
 * complete once pgbench has exited (it buffers lines until then).
 */
export async function clientRecord(recordDir: string): Promise<ClientRecord> {
  const prefix = path.basename(logPrefix(recordDir));
  const files = (await fsp.readdir(recordDir)).filter((f) => f.startsWith(`${prefix}.`));
  const committed = new Map<number, number[]>();
  const ended = new Map<number, number>();
  for (const file of files) {
    for (const line of (await fsp.readFile(path.join(recordDir, file), 'utf8')).split('\n')) {
      const [clientText, , latency] = line.split(' ');
      if (clientText === undefined || latency === undefined) continue;
      const client = Number(clientText);
      // The script's n counts every run of it by this client, committed or not, in log order.
      const n = (ended.get(client) ?? 0) + 1;
      ended.set(client, n);
      if (/^\d+$/.test(latency)) committed.set(client, [...(committed.get(client) ?? []), n]);
    }
  }
  return { committed, ended };
}

export interface BankState {
  accounts: bigint;
  branches: bigint;
  tellers: bigint;
  history: bigint;
  historyRows: number;
  /** client → the n of every recorded transaction the database holds. */
  recorded: Map<number, Set<number>>;
}

/** The balances pgbench's invariants relate, and the recorded transactions, as the database holds them. */
export async function bankState(server: PostgresServer): Promise<BankState> {
  const [sums] = await server.query(`SELECT (SELECT coalesce(sum(abalance), 0) FROM pgbench_accounts), (SELECT coalesce(sum(bbalance), 0) FROM pgbench_branches),
    (SELECT coalesce(sum(tbalance), 0) FROM pgbench_tellers), (SELECT coalesce(sum(delta), 0) FROM pgbench_history), (SELECT count(*) FROM pgbench_history)`);
  const recorded = new Map<number, Set<number>>();
  for (const [client, n] of await server.query('SELECT client, n FROM tricopy_commits')) {
    const set = recorded.get(Number(client)) ?? new Set<number>();
    set.add(Number(n));
    recorded.set(Number(client), set);
  }
  const [accounts, branches, tellers, history, historyRows] = sums!;
  return { accounts: BigInt(accounts!), branches: BigInt(branches!), tellers: BigInt(tellers!), history: BigInt(history!),
    historyRows: Number(historyRows), recorded };
}
