// An NBD export as a Linux block device without the kernel nbd module: nbdfuse presents the export
// as a file under a FUSE mount and a loop device on that file is the block device; then ext4 on it.
// Detaching works when the NBD server is already dead (a lost site): lazy unmount, loop detach,
// FUSE unmount, nbdfuse killed if it does not exit. Everything attached is also detached on exit.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { closeSync, openSync, promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { run, runOk } from './tools';
import { waitFor } from './wait';

export interface FsckResult {
  /** e2fsck's exit code: 0 clean, 1 errors corrected, ≥ 4 errors left or an operational error. */
  code: number;
  output: string;
}

const attached = new Set<NbdBlockDevice>();

/** Whether `dir` is a mount point now (from /proc/self/mountinfo; our paths hold no spaces). */
export function isMountPoint(dir: string): boolean {
  const target = path.resolve(dir);
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').some((line) => line.split(' ')[4] === target);
}

export class NbdBlockDevice {
  private mountDir: string | undefined;
  private detached = false;

  private constructor(readonly uri: string, readonly fuseDir: string, readonly loopDevice: string, readonly logFile: string,
    private readonly nbdfuse: ChildProcess, private readonly nbdfuseExit: Promise<void>) {}

  /** Attaches `uri` under `workDir` (which must exist): `workDir/fuse/nbd` is the file, the result a loop device on it. */
  static async attach(uri: string, workDir: string): Promise<NbdBlockDevice> {
    const fuseDir = path.join(workDir, 'fuse');
    const pidFile = path.join(workDir, 'nbdfuse.pid');
    const logFile = path.join(workDir, 'nbdfuse.log');
    await fsp.mkdir(fuseDir, { recursive: true });
    await fsp.rm(pidFile, { force: true });
    const log = openSync(logFile, 'a');
    const child = spawn('nbdfuse', ['-P', pidFile, fuseDir, uri], { stdio: ['ignore', log, log] });
    closeSync(log);
    let exited = false;
    const exit = new Promise<void>((resolve) => child.once('exit', () => {
      exited = true;
      resolve();
    }));
    const cleanupFuse = async (): Promise<void> => {
      if (isMountPoint(fuseDir)) await run('umount', ['-l', fuseDir]);
      if (!exited) child.kill('SIGKILL');
      await exit;
    };
    try {
      // nbdfuse writes its pid file once the FUSE file serves requests.
      await waitFor(`nbdfuse to serve ${uri}`, async () => {
        if (exited) throw new Error(`nbdfuse exited: ${await fsp.readFile(logFile, 'utf8')}`);
        return (await fsp.stat(pidFile).catch(() => undefined)) !== undefined;
      }, { timeoutMs: 20_000 });
      const loop = (await runOk('losetup', ['--find', '--show', path.join(fuseDir, 'nbd')], { timeoutMs: 20_000 })).stdout.trim();
      const device = new NbdBlockDevice(uri, fuseDir, loop, logFile, child, exit);
      attached.add(device);
      return device;
    } catch (err) {
      await cleanupFuse();
      throw err;
    }
  }

  get mountedAt(): string | undefined {
    return this.mountDir;
  }

  /** A fresh ext4 filesystem (no discard: the thin volume reads as zeros already). */
  async mkfsExt4(): Promise<void> {
    await runOk('mkfs.ext4', ['-q', '-F', '-E', 'nodiscard', this.loopDevice], { timeoutMs: 60_000 });
  }

  /** `e2fsck -f -p`: replays the journal and checks everything, fixing only what is safe to fix unattended. */
  async fsck(): Promise<FsckResult> {
    const r = await run('e2fsck', ['-f', '-p', this.loopDevice], { timeoutMs: 60_000 });
    return { code: r.code ?? -1, output: `${r.stdout}${r.stderr}`.trim() };
  }

  async mount(dir: string): Promise<void> {
    await fsp.mkdir(dir, { recursive: true });
    await runOk('mount', ['-t', 'ext4', this.loopDevice, dir], { timeoutMs: 60_000 });
    this.mountDir = dir;
  }

  /**
   * Unmounts and detaches everything. `lazy` is for a device whose NBD server is gone: the
   * filesystem is detached from the tree at once and released when the kernel gives up on it.
   */
  async detach(opts: { lazy?: boolean } = {}): Promise<void> {
    if (this.detached) return;
    this.detached = true;
    attached.delete(this);
    const errors: string[] = [];
    if (this.mountDir && isMountPoint(this.mountDir)) {
      const r = opts.lazy ? await run('umount', ['-l', this.mountDir]) : await run('umount', [this.mountDir], { timeoutMs: 60_000 });
      if (r.code !== 0 && !opts.lazy) await run('umount', ['-l', this.mountDir]);
      if (isMountPoint(this.mountDir)) errors.push(`umount ${this.mountDir}: ${r.stderr.trim()}`);
    }
    // A loop device still held by a lazily unmounted filesystem is detached when that lets go.
    const lo = await run('losetup', ['-d', this.loopDevice], { timeoutMs: 30_000 });
    if (lo.code !== 0 && !/No such device/.test(lo.stderr)) errors.push(`losetup -d ${this.loopDevice}: ${lo.stderr.trim()}`);
    if (isMountPoint(this.fuseDir)) {
      const r = await run('umount', [this.fuseDir], { timeoutMs: 30_000 });
      if (r.code !== 0) await run('umount', ['-l', this.fuseDir]);
    }
    // Unmounting ends nbdfuse; one that hangs on a dead server is killed.
    const ended = await Promise.race([this.nbdfuseExit.then(() => true), deadline(10_000)]);
    if (!ended) {
      this.nbdfuse.kill('SIGKILL');
      await this.nbdfuseExit;
    }
    if (isMountPoint(this.fuseDir)) errors.push(`FUSE mount ${this.fuseDir} is still there`);
    if (errors.length > 0) throw new Error(`detaching ${this.uri}: ${errors.join('; ')}`);
  }
}

function deadline(ms: number): Promise<false> {
  return new Promise((resolve) => setTimeout(() => resolve(false), ms).unref());
}

/** Detaches every device this process attached (for `after` hooks); lazily, since their servers may be dead. */
export async function detachAllDevices(): Promise<void> {
  const errors: unknown[] = [];
  for (const device of [...attached]) await device.detach({ lazy: true }).catch((err: unknown) => errors.push(err));
  if (errors.length > 0) throw new AggregateError(errors, 'some NBD block devices did not detach');
}

// A test process that ends without its hooks must not leave mounts or loop devices behind.
process.on('exit', () => {
  for (const device of attached) {
    if (device.mountedAt) spawnSync('umount', ['-l', device.mountedAt]);
    spawnSync('losetup', ['-d', device.loopDevice]);
    spawnSync('umount', ['-l', device.fuseDir]);
  }
});
