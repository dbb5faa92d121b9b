// `make demo` as a new user runs it: start it (on free ports, small volumes), follow the disaster
// drill it prints (kill the primary, fail over to the sync site, bring the primary back, fail
// back), then Ctrl-C. The workload must follow the application from site to site, its log must
// stay small, and nothing the demo started may be left running. Leftovers of an earlier demo that
// was killed (a node, the workload, fio) are found from their pid files and ended at the start.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { promises as fsp, readdirSync, readFileSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { repoRoot } from '../support/node-process';
import { fetchMetrics, metricValue, run, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

let dir: string;
let demoDir: string;

before(async () => {
  dir = await tempDir('demo');
  demoDir = path.join(dir, 'var');
});

after(async () => {
  for (const pid of processesOf(demoDir)) process.kill(pid, 'SIGKILL');
  await fsp.rm(dir, { recursive: true, force: true });
});

/** Live processes (not zombies) whose command line mentions `marker`. */
function processesOf(marker: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').replaceAll('\0', ' ');
      const state = readFileSync(`/proc/${entry}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[0];
      if (cmdline.includes(marker) && state !== 'Z') found.push(Number(entry));
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

function isRunning(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen({ host: '127.0.0.1', port }, () => server.close(() => resolve(true)));
  });
}

/** A base port below the ephemeral range with base+{0,1,2}+{0,10,20} free: NBD, API, replication of three sites. */
async function freePortBase(): Promise<number> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = 20_000 + Math.floor(Math.random() * 1200) * 10;
    const ports = [0, 1, 2].flatMap((kind) => [0, 10, 20].map((step) => base + kind + step));
    if ((await Promise.all(ports.map(portFree))).every(Boolean)) return base;
  }
  throw new Error('no free ports for the demo');
}

class Demo {
  output = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(readonly child: ChildProcess) {
    child.stdout!.on('data', (d: Buffer) => (this.output += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  }

  static start(env: NodeJS.ProcessEnv): Demo {
    // Its own process group, like a job in a terminal, so Ctrl-C can be sent to all of it.
    return new Demo(spawn('bash', [path.join(repoRoot, 'scripts', 'demo.sh')], {
      cwd: repoRoot, env: { ...process.env, ...env }, detached: true, stdio: ['ignore', 'pipe', 'pipe'],
    }));
  }

  async ready(): Promise<void> {
    await waitFor('the demo to print its drill', () => this.output.includes('Press Ctrl-C to stop.') || this.child.exitCode !== null,
      { timeoutMs: 120_000, intervalMs: 200 });
    assert.equal(this.child.exitCode, null, `the demo ended early:\n${this.output}`);
  }

  /** Ctrl-C in the terminal: SIGINT to the whole foreground process group. */
  async interrupt(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    process.kill(-this.child.pid!, 'SIGINT');
    return this.exited;
  }

  /** The drill command of the printed instructions that matches `pattern` (comment removed). */
  drill(pattern: RegExp): string {
    const start = this.output.indexOf('Try a disaster');
    const lines = this.output.slice(start, this.output.indexOf('Press Ctrl-C', start)).split('\n');
    const line = lines.find((l) => pattern.test(l));
    assert.ok(line, `the demo prints a command matching ${pattern}:\n${lines.join('\n')}`);
    return line.replace(/\s+#.*$/, '').trim();
  }
}

async function shell(command: string): Promise<string> {
  const result = await run('bash', ['-c', command], { cwd: repoRoot, timeoutMs: 180_000 });
  assert.equal(result.code, 0, `${command}\n${result.stdout}\n${result.stderr}`);
  return result.stdout;
}

const writesAt = async (apiPort: number): Promise<number> =>
  metricValue(await fetchMetrics(`http://127.0.0.1:${apiPort}`), 'tricopy_nbd_requests_total', { volume: 'db1', op: 'write', result: 'ok' });

test('the demo: its drill with writes following the application, a small log, leftovers ended, nothing left behind', { timeout: 300_000 }, async (t) => {
  const base = await freePortBase();
  const api = { tokyo: base + 1, osaka: base + 11, sapporo: base + 21 };
  const env = {
    DEMO_DIR: demoDir, DEMO_NBD_PORT: String(base), DEMO_API_PORT: String(base + 1), DEMO_REPL_PORT: String(base + 2),
    DEMO_DB1_SIZE: '64MiB', DEMO_LOG1_SIZE: '16MiB', DEMO_WRITE_IOPS: '100', DEMO_STATUS_SECONDS: '30',
  };

  // What a killed demo leaves: its workload, fio, and a node, each with its pid file.
  await fsp.mkdir(path.join(demoDir, 'tokyo'), { recursive: true });
  const leftovers: Record<string, ChildProcess> = {
    workload: spawn(process.execPath, [path.join(repoRoot, 'scripts', 'demo-workload.mjs'), '--dir', demoDir, '--topology',
      path.join(demoDir, 'missing.yaml'), '--volume', 'db1', '--nbd', 'tokyo=1'], { stdio: 'ignore' }),
    fio: spawn('fio', ['--name=tricopy-demo', '--thread', '--ioengine=null', '--size=1g', '--rate_iops=10', '--time_based', '--runtime=600'],
      { stdio: 'ignore' }),
    tokyo: spawn(process.execPath, [path.join(repoRoot, 'bin', 'tricopy'), 'node', 'run', '--name', 'tokyo', '--data-dir', path.join(demoDir, 'tokyo'),
      '--nbd-port', '0', '--api-port', '0', '--repl-port', '0'], { stdio: 'ignore' }),
  };
  await fsp.writeFile(path.join(demoDir, 'fio.pid'), `${leftovers.fio!.pid}\n`);
  await fsp.writeFile(path.join(demoDir, 'tokyo.pid'), `${leftovers.tokyo!.pid}\n`);
  await waitFor('the leftover workload writes its pid file', () => fsp.readFile(path.join(demoDir, 'workload.pid'), 'utf8').catch(() => undefined));
  await waitFor('the leftover node holds its data directory', () => fsp.readFile(path.join(demoDir, 'tokyo', 'node.lock'), 'utf8').catch(() => undefined));

  const demo = Demo.start(env);
  await demo.ready();
  assert.match(demo.output, /ending the workload of an earlier demo \(pid \d+\)/);
  assert.match(demo.output, /ending the fio of an earlier demo \(pid \d+\)/);
  assert.match(demo.output, /stopping node tokyo of an earlier demo \(pid \d+\)/);
  for (const [what, child] of Object.entries(leftovers)) assert.ok(!isRunning(child.pid!), `the leftover ${what} was ended`);

  await waitFor('writes at tokyo', async () => (await writesAt(api.tokyo)) >= 50, { timeoutMs: 60_000, intervalMs: 500 });

  // The drill, exactly as printed.
  const tokyoPid = Number(await fsp.readFile(path.join(demoDir, 'tokyo.pid'), 'utf8'));
  await shell(demo.drill(/^\s+kill -9 .*tokyo\.pid/));
  await waitFor('tokyo is gone', () => !isRunning(tokyoPid));
  assert.equal(await writesAt(api.osaka), 0, 'nothing writes at osaka before it is active');
  await shell(demo.drill(/topology failover .* --to osaka --wait/));
  await waitFor('writes continue at osaka, the new active site', async () => (await writesAt(api.osaka)) >= 50, { timeoutMs: 60_000, intervalMs: 500 });
  await shell(demo.drill(/start-tokyo\.sh\s*$/));
  await waitFor('tokyo is back', () => fetchMetrics(`http://127.0.0.1:${api.tokyo}`).then(() => true, () => false), { timeoutMs: 30_000 });
  await shell(demo.drill(/topology failback .* --to tokyo --wait/));
  const atOsaka = await writesAt(api.osaka);
  await waitFor('writes continue at tokyo after the failback', async () => (await writesAt(api.tokyo)) >= 50, { timeoutMs: 60_000, intervalMs: 500 });
  assert.ok((await writesAt(api.osaka)) - atOsaka <= 1, 'osaka is a secondary again: no writes there');
  assert.match(demo.output, /workload: writing 100 IOPS of 4 KiB to db1 at osaka/);
  assert.match(demo.output, /workload: writing 100 IOPS of 4 KiB to db1 at tokyo[\s\S]*at osaka[\s\S]*at tokyo/);

  for (const line of demo.output.split('\n').filter((l) => l.startsWith('workload:'))) t.diagnostic(line);
  // Ctrl-C: everything the demo started ends.
  const pids = Object.fromEntries(await Promise.all(['tokyo', 'osaka', 'sapporo', 'workload', 'fio'].map(async (name) =>
    [name, Number(await fsp.readFile(path.join(demoDir, `${name}.pid`), 'utf8'))] as const)));
  const exit = await demo.interrupt();
  assert.equal(exit.code, 0, demo.output.slice(-2000));
  assert.match(demo.output, /stopped\. Data stays in/);
  for (const [name, pid] of Object.entries(pids)) assert.ok(!isRunning(pid), `${name} (pid ${pid}) was stopped`);
  assert.deepEqual(processesOf(demoDir), [], 'no process of the demo is left');
  for (const port of [base, base + 10, base + 20]) assert.deepEqual(processesOf(`nbd://127.0.0.1:${port}/db1`), [], 'no fio is left');
  await assert.rejects(fsp.access(path.join(demoDir, 'fio.pid')), 'the workload removed its pid files');

  // The workload's log is small: fio never looped on a dead connection.
  let logBytes = 0;
  for (const name of await fsp.readdir(demoDir)) if (name.startsWith('fio.log')) logBytes += (await fsp.stat(path.join(demoDir, name))).size;
  const log = await fsp.readFile(path.join(demoDir, 'fio.log'), 'utf8');
  assert.ok(logBytes < 64 * 1024, `fio logs are ${logBytes} bytes`);
  assert.ok((log.match(/in state DEAD/g) ?? []).length <= 2, 'fio reported the lost connection and ended, no loop');
  assert.doesNotMatch(log, /loops/);
});

test('the workload kills a fio that loops on a dead connection, backs off, keeps its log bounded, and leaves nothing behind', { timeout: 60_000 }, async () => {
  const work = path.join(dir, 'loop');
  const bin = path.join(work, 'bin');
  await fsp.mkdir(bin, { recursive: true });
  // fio as its nbd engine behaves with several writes in flight once the server is gone: the same
  // error line as fast as it can, deaf to SIGTERM.
  await fsp.writeFile(path.join(bin, 'fio'), `#!/usr/bin/env bash
trap '' TERM INT
echo "fio: connected to NBD server"
while :; do echo "fio: nbd_poll: nbd_poll: nothing to poll for in state DEAD: Invalid argument" >&2; done
`, { mode: 0o755 });
  const status = path.join(work, 'status.js');
  await fsp.writeFile(status, 'console.log(JSON.stringify({ activeSite: "tokyo" }));\n');
  const workload = spawn(process.execPath, [path.join(repoRoot, 'scripts', 'demo-workload.mjs'), '--dir', work, '--topology', 'unused.yaml',
    '--volume', 'db1', '--nbd', 'tokyo=1', '--tricopy', status], { env: { ...process.env, PATH: `${bin}:${process.env.PATH}` }, stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  workload.stdout!.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise((resolve) => workload.on('exit', resolve));
  await waitFor('fio killed twice, with a back-off between', () => (output.match(/fio lost its connection to tokyo and loops/g) ?? []).length >= 2,
    { timeoutMs: 30_000 });
  const fioPids = [...output.matchAll(/fio pid (\d+)/g)].map((m) => Number(m[1]));
  workload.kill('SIGTERM');
  await exited;
  for (const pid of fioPids) assert.ok(!isRunning(pid), `fio ${pid} does not outlive the workload`);
  const starts = [...output.matchAll(/^workload: writing/gm)].length;
  assert.ok(starts <= 3, `restarted with back-off, not in a loop (${starts} starts):\n${output}`);
  let logBytes = 0;
  for (const name of await fsp.readdir(work)) if (name.startsWith('fio.log')) logBytes += (await fsp.stat(path.join(work, name))).size;
  assert.ok(logBytes < 64 * 1024, `fio logs are ${logBytes} bytes`);
  await assert.rejects(fsp.access(path.join(work, 'workload.pid')));
});
