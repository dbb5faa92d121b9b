// fio as the proof that no acknowledged write is lost across a failover: one job writes a region of
// a volume sequentially with crc32c verify headers at one site until that site dies; the same job
// with --verify_only then reads back, at the site that took over, every block fio saw acknowledged.
// fio's own checks decide; the test only chooses how far to look: the unbroken run of completed
// writes from the region's start. Writes complete out of order, so fio's byte count is not a prefix,
// but with at most `iodepth` writes in flight every write before the last `iodepth` issued has
// completed: fio's periodic status (taken before the site is killed) minus iodepth blocks is a
// lower bound. When fio exits cleanly its completion log gives the exact run. (fio's nbd engine can
// spin without end once the server is gone; then fio is killed and the status bound is used.)
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { parseFioJson, run } from './tools';

export interface FioRegion {
  /** Where the region starts in the volume, bytes (a multiple of blockBytes). */
  offsetBytes: number;
  /** How much fio may write; large enough that it is still writing when the site dies. */
  sizeBytes: number;
  blockBytes: number;
  /** Paces the writes (bytes per second), so the nodes keep the machine's CPU. */
  writeBytesPerSecond: number;
}

/** What is kept of fio's output: its JSON report is small, but a failing nbd engine can print without end. */
const keptOutputChars = 1 << 20;
/** Writes fio keeps in flight. */
const iodepth = 8;

function keepTail(text: string): string {
  return text.length > keptOutputChars ? text.slice(-keptOutputChars) : text;
}

export class FioVerifyWriter {
  private child: ChildProcess | undefined;
  private exited: Promise<number | null> | undefined;
  private stdout = '';
  private stderr = '';
  private readonly logPrefix: string;

  constructor(private readonly dir: string, private readonly name: string, private readonly region: FioRegion) {
    this.logPrefix = path.join(dir, `${name}-writes`);
  }

  /** The job both runs share: same name, region, block size and pattern, so verify_only checks what was written. */
  private job(sizeBytes: number): string[] {
    const r = this.region;
    // --thread: the job runs as a thread of the fio process, so killing fio ends it (a forked job
    // process outlived its parent's SIGKILL and kept writing, spinning, for minutes).
    return [`--name=${this.name}`, '--ioengine=nbd', '--thread', '--rw=write', `--bs=${r.blockBytes}`, `--iodepth=${iodepth}`, `--offset=${r.offsetBytes}`,
      `--size=${sizeBytes}`, '--verify=crc32c', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'];
  }

  /** Starts writing at `uri` (fio's nbd engine); fio runs until the region is written or the site fails it. */
  start(uri: string): void {
    const r = this.region;
    this.child = spawn('fio', [...this.job(r.sizeBytes), `--uri=${uri}`, '--do_verify=0', `--rate=,${r.writeBytesPerSecond}`,
      `--write_lat_log=${this.logPrefix}`, '--log_offset=1', '--status-interval=1'], { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout!.on('data', (d: Buffer) => (this.stdout = keepTail(this.stdout + d.toString())));
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = keepTail(this.stderr + d.toString())));
    this.exited = new Promise((resolve) => this.child!.on('exit', (code) => resolve(code)));
  }

  /**
   * Waits for fio to end. It usually ends by itself when the site it writes to dies; when its nbd
   * engine spins instead (it then ignores SIGINT too), it is killed after `graceMs`. Its exit code,
   * what it wrote (its last report), whether it was killed.
   */
  async ended(graceMs = 10_000): Promise<{ code: number | null; writtenBytes: number; output: string; interrupted: boolean }> {
    if (!this.exited) throw new Error('fio was not started');
    let interrupted = false;
    const timer = setTimeout(() => {
      interrupted = true;
      this.stop();
    }, graceMs);
    const code = await this.exited.finally(() => clearTimeout(timer));
    const writtenBytes = this.writtenBytes();
    return { code, writtenBytes, output: `${this.stdout.slice(-2000)}\n${this.stderr.slice(-2000)}`, interrupted };
  }

  /** Kills fio if it still runs (a test that failed half-way). */
  stop(): void {
    if (this.child && this.child.exitCode === null) this.child.kill('SIGKILL');
  }

  /**
   * From fio's latest periodic status: bytes from the region's start that were surely acknowledged
   * (all but the last `iodepth` writes counted complete). Read it before the site dies.
   */
  acknowledgedNowBytes(): number {
    const blocks = Math.floor(this.writtenBytes() / this.region.blockBytes) - iodepth;
    return Math.max(0, blocks) * this.region.blockBytes;
  }

  /** Bytes written as fio's latest report says (it prints one a second, and one when it ends). */
  private writtenBytes(): number {
    let written = 0;
    for (const piece of this.stdout.split(/^(?=\{$)/m)) {
      try {
        written = (JSON.parse(piece.slice(0, piece.lastIndexOf('}') + 1)) as { jobs: Array<{ write: { io_bytes: number } }> }).jobs[0]!.write.io_bytes;
      } catch {
        // a report fio is still printing, or not JSON
      }
    }
    return written;
  }

  /** Bytes from the region's start that fio saw acknowledged without a gap (from its completion log, written when it exits). */
  async acknowledgedPrefixBytes(): Promise<number> {
    const text = await fsp.readFile(`${this.logPrefix}_clat.1.log`, 'utf8').catch(() => '');
    const offsets = new Set(text.trim().split('\n').filter((l) => l.length > 0).map((line) => Number(line.split(',')[4])));
    let blocks = 0;
    while (offsets.has(this.region.offsetBytes + blocks * this.region.blockBytes)) blocks++;
    return blocks * this.region.blockBytes;
  }

  /** The same job with --verify_only over the first `bytes` of the region at `uri`: fio's exit code, bytes it read, output. */
  async verifyOnly(uri: string, bytes: number): Promise<{ code: number | null; readBytes: number; output: string }> {
    const r = await run('fio', [...this.job(bytes), `--uri=${uri}`, '--verify_only=1'], { cwd: this.dir, timeoutMs: 120_000 });
    let readBytes = 0;
    try {
      readBytes = parseFioJson<{ jobs: Array<{ read: { io_bytes: number } }> }>(r.stdout).jobs[0]!.read.io_bytes;
    } catch {
      // fio printed no JSON
    }
    return { code: r.code, readBytes, output: `${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}` };
  }
}
