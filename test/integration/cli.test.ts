// The tricopy CLI end to end: every command, its --json output, and its errors for bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { run, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

let dir: string;
let node: NodeProcess;
let env: NodeJS.ProcessEnv;

before(async () => {
  dir = await tempDir('cli');
  node = await NodeProcess.start({ name: 'clinode', dataDir: path.join(dir, 'data'), args: ['--site', 'tokyo'] });
  env = { TRICOPY_NODE: node.apiUrl };
});

after(async () => {
  await node.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function ok(args: string[]): Promise<string> {
  const r = await cli(args, env);
  assert.equal(r.code, 0, `tricopy ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function fails(args: string[], code: number, pattern: RegExp, extraEnv: NodeJS.ProcessEnv = env): Promise<void> {
  const r = await cli(args, extraEnv);
  assert.equal(r.code, code, `tricopy ${args.join(' ')} exit code (stderr: ${r.stderr})`);
  assert.match(r.stderr, pattern);
}

test('help explains commands and units', async () => {
  const help = await ok(['--help']);
  for (const word of ['node', 'volume', 'events', '--node', '--json']) assert.ok(help.includes(word), word);
  const create = await ok(['volume', 'create', '--help']);
  assert.match(create, /GiB/);
  const runHelp = await ok(['node', 'run', '--help']);
  assert.match(runHelp, /--data-dir/);
  assert.match(runHelp, /SIGTERM/);
  assert.match(await ok(['--version']), /^\d+\.\d+\.\d+/);
});

/** The help of one option: from its flag to the next option. */
function optionHelp(help: string, flag: string): string {
  const start = help.indexOf(`  ${flag} `);
  assert.ok(start >= 0, `${flag} is in the help`);
  const next = help.indexOf('\n  -', start + 1);
  return help.slice(start, next < 0 ? undefined : next);
}

test('help marks the options that must be given', async () => {
  assert.match(optionHelp(await ok(['volume', 'create', '--help']), '--size'), /\(required\)/);
  const pairCreate = await ok(['pair', 'create', '--help']);
  for (const flag of ['--volume', '--to', '--mode']) assert.match(optionHelp(pairCreate, flag), /\(required\)/, flag);
  for (const flag of ['--peer-volume', '--fence', '--wait']) assert.doesNotMatch(optionHelp(pairCreate, flag), /\(required\)/, flag);
  assert.match(optionHelp(await ok(['pair', 'wait', '--help']), '--state'), /\(required\)/);
  assert.match(optionHelp(await ok(['topology', 'failover', '--help']), '--to'), /\(required\)/);
});

test('node info as table and JSON', async () => {
  assert.match(await ok(['node', 'info']), /site:\s+tokyo/);
  const info = JSON.parse(await ok(['node', 'info', '--json'])) as { name: string; ports: { nbdPort: number } };
  assert.equal(info.name, 'clinode');
  assert.equal(info.ports.nbdPort, node.ports.nbdPort);
});

test('volume create, list, show, resize with --json and human output', async () => {
  assert.match(await ok(['volume', 'create', 'db1', '--size', '64MiB', '--description', 'orders db']),
    new RegExp(`created volume db1 \\(64MiB\\), export nbd://127.0.0.1:${node.ports.nbdPort}/db1`));
  const created = JSON.parse(await ok(['volume', 'create', 'db2', '--size', '32M', '--json'])) as { name: string; sizeBytes: number };
  assert.deepEqual([created.name, created.sizeBytes], ['db2', 32 * 1024 * 1024]);
  const table = await ok(['volume', 'list']);
  assert.match(table, /^NAME\s+SIZE\s+ALLOCATED\s+CLIENTS\s+ACCESS\s+EXPORT/);
  assert.match(table, /db1\s+64MiB\s+0B\s+0/);
  const list = JSON.parse(await ok(['volume', 'list', '--json'])) as Array<{ name: string }>;
  assert.deepEqual(list.map((v) => v.name), ['db1', 'db2']);
  const shown = JSON.parse(await ok(['volume', 'show', 'db1', '--json'])) as { description: string; access: { clients: string[] } };
  assert.equal(shown.description, 'orders db');
  assert.deepEqual(shown.access.clients, ['127.0.0.0/8', '::1/128']);
  assert.match(await ok(['volume', 'show', 'db1']), /allowed clients:\s+127\.0\.0\.0\/8, ::1\/128/);
  assert.match(await ok(['volume', 'resize', 'db1', '--size', '128MiB']), /now 128MiB/);
  const resized = JSON.parse(await ok(['volume', 'resize', 'db1', '--size', '128MiB', '--json'])) as { sizeBytes: number };
  assert.equal(resized.sizeBytes, 128 * 1024 * 1024);
  // The NBD export has the new size for new connections.
  const info = await run('qemu-img', ['info', '--output=json', node.nbdUri('db1')]);
  assert.equal((JSON.parse(info.stdout) as { 'virtual-size': number })['virtual-size'], 128 * 1024 * 1024);
});

test('bad input gets clear errors and exit codes', async () => {
  await fails(['volume', 'create', 'x', '--size', '10Q'], 2, /unknown unit "Q"[\s\S]*hint: accepted units: .*GiB/);
  await fails(['volume', 'create', 'x', '--size', 'lots'], 2, /not a size/);
  await fails(['volume', 'create', 'x'], 2, /required option '--size/);
  await fails(['volume', 'create', 'bad/name', '--size', '1GiB'], 2, /not a valid volume name/);
  await fails(['volume', 'create', 'huge', '--size', '10TiB'], 1, /does not fit[\s\S]*--thin/);
  await fails(['volume', 'create', 'db1', '--size', '1GiB'], 1, /already exists/);
  await fails(['volume', 'resize', 'db1', '--size', '1MiB'], 2, /shrinking it to 1MiB is refused[\s\S]*hint: volumes only grow/);
  await fails(['volume', 'show', 'nope'], 1, /volume nope does not exist[\s\S]*hint: list volumes/);
  await fails(['volume', 'delete', 'nope'], 1, /does not exist/);
  await fails(['volume', 'allow', 'db1'], 2, /needs --client and\/or --identity/);
  await fails(['volume', 'allow', 'db1', '--client', '300.1.1.1'], 2, /not an IP address or CIDR/);
  await fails(['volume', 'disallow', 'db1', '--client', '10.9.9.9'], 1, /no access rule/);
  await fails(['volumes', 'list'], 2, /unknown command/);
  await fails(['node', 'info'], 1, /cannot reach node at http:\/\/127\.0\.0\.1:1[\s\S]*hint: is `tricopy node run` running/,
    { TRICOPY_NODE: 'http://127.0.0.1:1' });
  await fails(['node', 'info'], 2, /not a node URL/, { TRICOPY_NODE: 'not a url' });
});

test('access lists: a real client is denied once loopback is removed, admitted again when re-allowed', async () => {
  await ok(['volume', 'create', 'guarded', '--size', '8MiB']);
  const uri = node.nbdUri('guarded');
  assert.equal((await run('nbdinfo', [uri])).code, 0);
  await ok(['volume', 'disallow', 'guarded', '--client', '127.0.0.0/8']);
  const json = JSON.parse(await ok(['volume', 'disallow', 'guarded', '--client', '::1/128', '--json'])) as { access: { clients: string[] } };
  assert.deepEqual(json.access.clients, []);
  assert.notEqual((await run('nbdinfo', [uri])).code, 0, 'nbdinfo is refused');
  const denied = await run('qemu-img', ['info', uri]);
  assert.notEqual(denied.code, 0);
  assert.match(denied.stderr, /Denied by server[\s\S]*client 127\.0\.0\.1 is not on the access list of volume guarded/);
  const list = await run('nbdinfo', ['--list', `nbd://127.0.0.1:${node.ports.nbdPort}`]);
  assert.doesNotMatch(list.stdout, /guarded/, 'hidden from clients that may not attach it');
  assert.match(await ok(['volume', 'allow', 'guarded', '--client', '127.0.0.1']), /clients 127\.0\.0\.1\/32/);
  assert.equal((await run('nbdinfo', [uri])).code, 0);
  const events = await ok(['events']);
  assert.match(events, /access-denied\s+guarded/);
});

test('delete is refused while a client is attached unless --force, which disconnects it', async () => {
  await ok(['volume', 'create', 'busy', '--size', '8MiB']);
  const client = await NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName: 'busy' });
  await waitFor('client attached', async () => (JSON.parse(await ok(['volume', 'show', 'busy', '--json'])) as { clients: unknown[] }).clients.length === 1);
  await fails(['volume', 'delete', 'busy'], 1, /has 1 attached client[\s\S]*--force/);
  assert.match(await ok(['volume', 'delete', 'busy', '--force']), /deleted volume busy/);
  await waitFor('client disconnected', () => client.closed);
  assert.deepEqual(JSON.parse(await ok(['volume', 'delete', 'db2', '--json'])), { deleted: 'db2' });
  const names = (JSON.parse(await ok(['volume', 'list', '--json'])) as Array<{ name: string }>).map((v) => v.name);
  assert.ok(!names.includes('busy') && !names.includes('db2'));
});

test('events show state changes with reasons, as text and JSON lines', async () => {
  const text = await ok(['events']);
  assert.match(text, /volume-created\s+db1: created by operator/);
  assert.match(text, /volume-resized\s+db1/);
  const lines = (await ok(['events', '--json', '--after', '1'])).trim().split('\n').map((l) => JSON.parse(l) as { id: number; kind: string });
  assert.ok(lines.every((e) => e.id > 1));
  assert.ok(lines.some((e) => e.kind === 'volume-deleted'));
});

/** The id of the node's newest event. */
async function lastEventId(): Promise<number> {
  const lines = (await ok(['events', '--json'])).trim().split('\n');
  return (JSON.parse(lines[lines.length - 1]!) as { id: number }).id;
}

/** `tricopy events --follow --json` in the background; `lines()` are the complete lines it printed so far. */
async function follow(after: number): Promise<{ lines: () => string[]; stop: () => void }> {
  const { spawn } = await import('node:child_process');
  const { cliPath } = await import('../support/node-process');
  const follower = spawn(process.execPath, [cliPath, 'events', '--follow', '--json', '--after', String(after)], { env: { ...process.env, ...env } });
  let out = '';
  follower.stdout.on('data', (d: Buffer) => (out += d.toString()));
  return { lines: () => out.split('\n').slice(0, -1), stop: () => follower.kill('SIGINT') };
}

test('events --follow streams new events as they happen (server-sent events)', async () => {
  const follower = await follow(await lastEventId());
  try {
    await waitFor('the stream to be open', async () => {
      await ok(['volume', 'create', `followed-${Date.now()}`, '--size', '4MiB']);
      return follower.lines().some((l) => l.includes('volume-created'));
    }, { timeoutMs: 20_000, intervalMs: 500 });
    const event = JSON.parse(follower.lines().find((l) => l.includes('volume-created'))!) as { kind: string; subject: string };
    assert.equal(event.kind, 'volume-created');
    assert.match(event.subject, /^followed-/);
  } finally {
    follower.stop();
  }
});

test('events --after N --follow prints no event with an id up to N, also among those that happen later', async () => {
  // The node's ids are below `after` for the first events created while the stream is open.
  const after = (await lastEventId()) + 5;
  const follower = await follow(after);
  try {
    await waitFor('an event with a larger id', async () => {
      await ok(['volume', 'create', `after-${Date.now()}`, '--size', '4MiB']);
      return follower.lines().some((l) => (JSON.parse(l) as { id: number }).id > after);
    }, { timeoutMs: 20_000, intervalMs: 500 });
    const ids = follower.lines().map((l) => (JSON.parse(l) as { id: number }).id);
    assert.ok(ids.every((id) => id > after), `printed ids ${ids.join(', ')} with --after ${after}`);
  } finally {
    follower.stop();
  }
});

test('node run: missing settings, ports in use and a locked data directory are refused clearly', async () => {
  const r1 = await cli(['node', 'run', '--data-dir', path.join(dir, 'x')]);
  assert.equal(r1.code, 2);
  assert.match(r1.stderr, /setting "name" is required/);
  const blocker = net.createServer();
  await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
  const busyPort = (blocker.address() as net.AddressInfo).port;
  const r2 = await cli(['node', 'run', '--name', 'p', '--data-dir', path.join(dir, 'p'), '--nbd-port', String(busyPort), '--api-port', '0', '--repl-port', '0']);
  blocker.close();
  assert.equal(r2.code, 1);
  assert.match(r2.stderr, new RegExp(`port ${busyPort} is already in use`));
  const r3 = await cli(['node', 'run', '--name', 'q', '--data-dir', path.join(dir, 'data'), '--nbd-port', '0', '--api-port', '0', '--repl-port', '0']);
  assert.equal(r3.code, 1);
  assert.match(r3.stderr, /is in use by node process/);
  const r4 = await cli(['node', 'run', '--name', 'q', '--data-dir', path.join(dir, 'q'), '--tls', 'required']);
  assert.equal(r4.code, 2);
  assert.match(r4.stderr, /needs --tls-cert\/--tls-key or --tls-psk-file/);
});

test('node run with an address this machine does not have prints only its error', async () => {
  // 192.0.2.1 (TEST-NET-1) is assigned to no machine: binding to it fails here, nothing is sent.
  for (const flag of ['--host', '--api-host']) {
    const r = await cli(['node', 'run', '--name', 'nohost', '--data-dir', path.join(dir, 'nohost'), flag, '192.0.2.1', '--nbd-port', '0', '--api-port', '0', '--repl-port', '0']);
    assert.equal(r.code, 2, r.stderr);
    assert.equal(r.stderr, `error: the ${flag} address is not an address of this machine\n`);
  }
});

test('API token: requests without it are refused, with it accepted', async () => {
  const tokenFile = path.join(dir, 'token');
  await fsp.writeFile(tokenFile, 'a-very-secret-token-1234\n');
  const guarded = await NodeProcess.start({ name: 'tok', dataDir: path.join(dir, 'tok'), args: ['--api-token-file', tokenFile] });
  await fails(['node', 'info'], 1, /missing or wrong API token/, { TRICOPY_NODE: guarded.apiUrl });
  await fails(['node', 'info', '--token', 'wrong'], 1, /missing or wrong API token/, { TRICOPY_NODE: guarded.apiUrl });
  const r = await cli(['node', 'info', '--json'], { TRICOPY_NODE: guarded.apiUrl, TRICOPY_TOKEN: 'a-very-secret-token-1234' });
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await guarded.stop()).code, 0);
});
