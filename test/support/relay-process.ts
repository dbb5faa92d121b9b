// Starts real `tricopy edge run` processes (edges and cores of a remote copy network) on loopback,
// and writes network files for them, for integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HttpRelayClient } from '../../src/edge/client';
import type { RelayPorts } from '../../src/contracts/network';
import { cliPath } from './node-process';

const running = new Set<ChildProcess>();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export interface RelaySpec {
  name: string;
  role: 'edge' | 'core';
  dataDir: string;
  secretFile: string;
  ports?: Partial<RelayPorts>;
  args?: string[];
}

export class RelayProcess {
  readonly api: HttpRelayClient;

  private constructor(readonly spec: RelaySpec, readonly child: ChildProcess, readonly ports: RelayPorts, readonly logFile: string,
    readonly exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>) {
    this.api = new HttpRelayClient(this.apiUrl);
  }

  static async start(spec: RelaySpec): Promise<RelayProcess> {
    await fsp.mkdir(spec.dataDir, { recursive: true });
    const logFile = path.join(path.dirname(spec.dataDir), `${spec.name}.log`);
    const log = createWriteStream(logFile, { flags: 'a' });
    const args = ['edge', 'run', '--name', spec.name, '--role', spec.role, '--data-dir', spec.dataDir,
      '--listen', `127.0.0.1:${spec.ports?.listenPort ?? 0}`, '--api-port', String(spec.ports?.apiPort ?? 0),
      '--cluster-secret-file', spec.secretFile, '--log-level', 'debug', '--peer-timeout', '3s', ...(spec.args ?? [])];
    const prof = process.env.RELAY_CPU_PROF === spec.name ? ['--cpu-prof', `--cpu-prof-dir=${path.dirname(spec.dataDir)}`] : [];
    const child = spawn(process.execPath, [...prof, cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    child.on('exit', () => running.delete(child));
    child.stderr!.pipe(log);
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    const ports = await new Promise<RelayPorts>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`relay ${spec.name} did not announce its ports; see ${logFile}`)), 30_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        if (!out.includes('\n')) return;
        clearTimeout(timer);
        try {
          resolve(JSON.parse(out.split('\n')[0]!) as RelayPorts);
        } catch (err) {
          reject(err);
        }
      });
      void exit.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`relay ${spec.name} exited (${code ?? signal}) before listening; see ${logFile}`));
      });
    });
    return new RelayProcess(spec, child, ports, logFile, exit);
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.ports.apiPort}`;
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

  /** The same relay again, on the same ports and data directory. */
  restart(): Promise<RelayProcess> {
    return RelayProcess.start({ ...this.spec, ports: this.ports });
  }
}

export function killAllRelays(): void {
  for (const child of running) child.kill('SIGKILL');
}
