// Starts real `tricopy manager run` processes on loopback (port 0, or a port kept across a restart),
// and Debian's etcd for the shared store, for integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HttpManagerClient } from '../../src/manager/client';
import type { Alert, ManagerEvent } from '../../src/contracts/manager';
import { cliPath } from './node-process';
import { freePort } from './tools';
import { waitFor } from './wait';

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface ManagerSpec {
  name: string;
  /** Directory for the log (and the embedded store, unless args choose etcd). */
  dir: string;
  args?: string[];
  port?: number;
}

export class ManagerProcess {
  readonly client: HttpManagerClient;

  private constructor(readonly spec: ManagerSpec, readonly child: ChildProcess, readonly port: number, readonly logFile: string,
    readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>) {
    this.client = new HttpManagerClient(this.url);
  }

  static async start(spec: ManagerSpec): Promise<ManagerProcess> {
    await fsp.mkdir(spec.dir, { recursive: true });
    const logFile = path.join(spec.dir, `${spec.name}.log`);
    const log = createWriteStream(logFile, { flags: 'a' });
    const usesEtcd = (spec.args ?? []).includes('etcd');
    const args = ['manager', 'run', '--api-port', String(spec.port ?? 0), '--log-level', 'debug',
      ...(usesEtcd ? [] : ['--data-dir', path.join(spec.dir, `${spec.name}-data`)]), ...(spec.args ?? [])];
    const child = spawn(process.execPath, [cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    child.on('exit', () => running.delete(child));
    child.stderr!.pipe(log);
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const port = await new Promise<number>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`manager ${spec.name} did not announce its port; see ${logFile}`)), 30_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (!out.includes('\n')) return;
        clearTimeout(timer);
        try {
          resolve((JSON.parse(out.split('\n')[0]!) as { apiPort: number }).apiPort);
        } catch (err) {
          reject(err);
        }
      });
      void exit.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`manager ${spec.name} exited (${code ?? signal}) before listening; see ${logFile}`));
      });
    });
    return new ManagerProcess(spec, child, port, logFile, exit);
  }

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exit;
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.child.kill('SIGTERM');
    await this.exit;
  }

  /** The same manager again, on the same port and store. */
  restart(): Promise<ManagerProcess> {
    return ManagerProcess.start({ ...this.spec, port: this.port });
  }

  /** Waits for an alert that matches, not closed. */
  waitAlert(what: string, match: (a: Alert) => boolean, timeoutMs = 20_000): Promise<Alert> {
    return waitFor(what, async () => (await this.client.listAlerts()).find(match), { timeoutMs, intervalMs: 100 });
  }

  waitEvent(what: string, match: (e: ManagerEvent) => boolean, timeoutMs = 20_000): Promise<ManagerEvent> {
    return waitFor(what, async () => (await this.client.listEvents({ limit: 10_000 })).find(match), { timeoutMs, intervalMs: 100 });
  }
}

export function killAllManagers(): void {
  for (const child of running) child.kill('SIGKILL');
}

/** A single-member etcd (Debian's etcd-server) on loopback, in its own data directory. */
export class EtcdProcess {
  private constructor(readonly child: ChildProcess, readonly url: string) {}

  static async start(dir: string): Promise<EtcdProcess> {
    await fsp.mkdir(dir, { recursive: true });
    const client = await freePort();
    const peer = await freePort();
    const log = createWriteStream(path.join(dir, 'etcd.log'), { flags: 'a' });
    const url = `http://127.0.0.1:${client}`;
    const child = spawn('etcd', ['--name', 'test', '--data-dir', path.join(dir, 'data'), '--listen-client-urls', url, '--advertise-client-urls', url,
      '--listen-peer-urls', `http://127.0.0.1:${peer}`, '--initial-advertise-peer-urls', `http://127.0.0.1:${peer}`,
      '--initial-cluster', `test=http://127.0.0.1:${peer}`, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCD_UNSUPPORTED_ARCH: process.arch === 'x64' ? '' : process.arch } });
    running.add(child);
    child.on('exit', () => running.delete(child));
    child.stdout!.pipe(log);
    child.stderr!.pipe(log);
    await waitFor('etcd to answer', async () => (await fetch(`${url}/health`).then((r) => r.json() as Promise<{ health: string }>).catch(() => undefined))?.health === 'true',
      { timeoutMs: 30_000, intervalMs: 100 });
    return new EtcdProcess(child, url);
  }

  async stop(): Promise<void> {
    if (this.child.exitCode !== null) return;
    this.child.kill('SIGTERM');
    await new Promise((resolve) => this.child.once('exit', resolve));
  }
}
