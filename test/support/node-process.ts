// Starts real `tricopy node run` processes on loopback with port 0, for integration tests.
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { HttpNodeClient } from '../../src/node/api-client';
import type { NodeClient } from '../../src/contracts/node-client';
import type { NodePorts } from '../../src/contracts/node';

export const repoRoot = path.resolve(__dirname, '..', '..', '..');
export const cliPath = path.join(repoRoot, 'bin', 'tricopy');

export interface NodeSpec {
  name: string;
  dataDir: string;
  args?: string[];
  /** Reuse these ports (restart after a crash keeps URLs stable); 0 = any free port. */
  ports?: Partial<NodePorts>;
  /** Another build's `bin/tricopy` (a benchmark's baseline); this checkout's by default. */
  cli?: string;
  /** Node.js flags for the node process (a benchmark's --cpu-prof, say). */
  execArgv?: string[];
}

const running = new Set<ChildProcess>();
// A failed test must not leave node processes behind (they would keep the test runner alive).
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export class NodeProcess {
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly api: NodeClient;

  private constructor(readonly spec: NodeSpec, readonly child: ChildProcess, readonly ports: NodePorts, readonly logFile: string,
    exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>) {
    this.exit = exit;
    this.api = new HttpNodeClient(this.apiUrl);
  }

  static async start(spec: NodeSpec): Promise<NodeProcess> {
    await fsp.mkdir(spec.dataDir, { recursive: true });
    const logFile = path.join(path.dirname(spec.dataDir), `${spec.name}.log`);
    const log = createWriteStream(logFile, { flags: 'a' });
    const args = ['node', 'run', '--name', spec.name, '--data-dir', spec.dataDir, '--host', '127.0.0.1',
      '--nbd-port', String(spec.ports?.nbdPort ?? 0), '--api-port', String(spec.ports?.apiPort ?? 0),
      '--repl-port', String(spec.ports?.replPort ?? 0), '--log-level', 'debug', ...(spec.args ?? [])];
    const child = spawn(process.execPath, [...(spec.execArgv ?? []), spec.cli ?? cliPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    running.add(child);
    child.on('exit', () => running.delete(child));
    child.stderr!.pipe(log);
    const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.on('exit', (code, signal) => resolve({ code, signal })));
    const ports = await new Promise<NodePorts>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`node ${spec.name} did not announce its ports; see ${logFile}`)), 30_000);
      child.stdout!.on('data', (d: Buffer) => {
        out += d.toString();
        const line = out.split('\n')[0];
        if (out.includes('\n') && line) {
          clearTimeout(timer);
          try {
            resolve(JSON.parse(line) as NodePorts);
          } catch (err) {
            reject(err);
          }
        }
      });
      void exit.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`node ${spec.name} exited (${code ?? signal}) before listening; see ${logFile}`));
      });
    });
    return new NodeProcess(spec, child, ports, logFile, exit);
  }

  get apiUrl(): string {
    return `http://127.0.0.1:${this.ports.apiPort}`;
  }

  nbdUri(volume: string): string {
    return `nbd://127.0.0.1:${this.ports.nbdPort}/${volume}`;
  }

  /** SIGKILL: the crash every durability promise is tested against. */
  async kill(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exit;
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return this.exit;
    this.child.kill('SIGTERM');
    return this.exit;
  }

  /** Starts the same node again on the same ports and data directory. */
  restart(): Promise<NodeProcess> {
    return NodeProcess.start({ ...this.spec, ports: this.ports });
  }
}

/** SIGKILLs every node this test file started (use in `after`). */
export function killAllNodes(): void {
  for (const child of running) child.kill('SIGKILL');
}

/** Control-API requests a node answered, by route, except /metrics (which anyone may scrape). */
export async function apiRequests(url: string): Promise<Record<string, number>> {
  const text = await new HttpNodeClient(url).metricsText();
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^tricopy_api_requests_total\{([^}]*)\} (\d+)/gm)) {
    if (m[1]!.includes('route="/metrics"')) continue;
    out[m[1]!.replace(/,?node="[^"]*"/, '')] = Number(m[2]);
  }
  return out;
}

/** Runs the CLI against a node and returns exit code and output. */
export async function cli(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const { run } = await import('./tools');
  return run(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env } });
}

/** Starts the CLI like cli(), with its stderr readable while it runs (killed after 120 s, as cli() does). */
export function startCli(args: string[], env: NodeJS.ProcessEnv = {}): { stderr: () => string; done: Promise<{ code: number | null; stdout: string; stderr: string }> } {
  const child = spawn(process.execPath, [cliPath, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (d: Buffer) => void (stdout += d.toString()));
  child.stderr!.on('data', (d: Buffer) => void (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => child.on('close', (code) => {
    clearTimeout(timer);
    resolve({ code, stdout, stderr });
  }));
  return { stderr: () => stderr, done };
}
