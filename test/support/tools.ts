// Running external programs (real NBD clients, fio, openssl) from tests, with deadlines and output.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  timeoutMs?: number;
  input?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Run as this user and group (from root), e.g. PostgreSQL's tools, which refuse root. */
  uid?: number;
  gid?: number;
}

export function run(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env: options.env ?? process.env, cwd: options.cwd, uid: options.uid, gid: options.gid,
      stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
    if (options.input !== undefined) child.stdin.end(options.input);
    else child.stdin.end();
  });
}

/** Runs a command and throws with its output if it does not exit 0. */
export async function runOk(command: string, args: string[], options: RunOptions = {}): Promise<RunResult> {
  const result = await run(command, args, options);
  if (result.code !== 0) {
    throw new Error(`${command} ${args.join(' ')} exited ${result.code ?? result.signal}\nstdout: ${result.stdout}\nstderr: ${result.stderr}`);
  }
  return result;
}

export async function tempDir(prefix: string): Promise<string> {
  return fsp.mkdtemp(path.join(os.tmpdir(), `tricopy-${prefix}-`));
}

export async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** sha256 of a whole NBD export, read with nbdcopy (a real client). */
export async function sha256Export(uri: string, scratchDir: string): Promise<string> {
  const file = path.join(scratchDir, `export-${Date.now()}-${Math.random().toString(16).slice(2)}.img`);
  await runOk('nbdcopy', [uri, file]);
  try {
    return await sha256File(file);
  } finally {
    await fsp.rm(file, { force: true });
  }
}

/** fio's JSON output, skipping the lines its nbd engine prints before it ("fio: connected to NBD server"). */
export function parseFioJson<T>(stdout: string): T {
  const start = stdout.indexOf('{');
  if (start < 0) throw new Error(`fio printed no JSON: ${stdout.slice(0, 500)}`);
  return JSON.parse(stdout.slice(start)) as T;
}

/** Sum of a Prometheus counter's samples whose labels include all of `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number {
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(`${name}{`) && !line.startsWith(`${name} `)) continue;
    const labelText = line.slice(name.length).split('}')[0] ?? '';
    if (Object.entries(labels).every(([k, v]) => labelText.includes(`${k}="${v}"`))) {
      total += Number(line.slice(line.lastIndexOf(' ') + 1));
    }
  }
  return total;
}

export async function fetchMetrics(apiUrl: string): Promise<string> {
  const response = await fetch(`${apiUrl}/metrics`);
  return response.text();
}

/**
 * From fio's completion log (`--write_lat_log=PREFIX --log_offset=1`), how many blocks from offset 0
 * were all acknowledged. Writes complete out of order, so "bytes fio counted" is not a prefix.
 */
export async function acknowledgedPrefixBlocks(logPrefix: string, blockBytes: number): Promise<number> {
  const text = await fsp.readFile(`${logPrefix}_clat.1.log`, 'utf8');
  const offsets = new Set(text.trim().split('\n').map((line) => Number(line.split(',')[4])));
  let blocks = 0;
  while (offsets.has(blocks * blockBytes)) blocks++;
  return blocks;
}

/** A free loopback port (for programs that cannot be given port 0, like etcd or nbdkit). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/**
 * A digest of an export's contents that does not depend on allocation: only non-zero 4 KiB
 * blocks are hashed, with their offsets, and holes are skipped without being read (block status).
 * Fast for large sparse volumes, where sha256Export would hash every zero.
 */
export async function contentDigest(port: number, exportName: string): Promise<string> {
  const { NbdClient } = await import('../../src/nbd/client');
  const c = await import('../../src/nbd/constants');
  const client = await NbdClient.connect({ host: '127.0.0.1', port, exportName, blockStatus: true });
  const hash = createHash('sha256');
  // Absolute 4 KiB blocks: every extent boundary the node reports is a multiple of it.
  const chunk = 4096;
  const zero = Buffer.alloc(chunk);
  try {
    const size = client.sizeBytes;
    let offset = 0;
    while (offset < size) {
      const descriptors = await client.blockStatus(offset, Math.min(size - offset, 1024 * 1024 * 1024));
      for (const d of descriptors) {
        const end = Math.min(size, offset + d.length);
        if ((d.flags & c.STATE_ZERO) === 0) {
          for (let at = offset; at < end; at += 4 * 1024 * 1024) {
            const length = Math.min(4 * 1024 * 1024, end - at);
            const data = await client.read(at, length);
            for (let i = 0; i < length; i += chunk) {
              const piece = data.subarray(i, Math.min(length, i + chunk));
              if (piece.equals(zero.subarray(0, piece.length))) continue;
              hash.update(`${at + i}:`).update(piece);
            }
          }
        }
        offset = end;
        if (offset >= size) break;
      }
    }
  } finally {
    await client.disconnect();
  }
  return hash.digest('hex');
}
