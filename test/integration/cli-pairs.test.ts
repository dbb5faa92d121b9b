// The pair and group commands of the CLI: human and JSON output, and errors for bad input.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { Cluster } from '../support/cluster';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { tempDir } from '../support/tools';

let dir: string;
let cluster: Cluster;
let dc1: string;
let dc2: string;

before(async () => {
  dir = await tempDir('cli-pairs');
  cluster = await Cluster.create(path.join(dir, 'c'), ['dc1', 'dc2']);
  dc1 = cluster.node('dc1').apiUrl;
  dc2 = cluster.node('dc2').apiUrl;
  await cluster.volume('dc1', 'db1', 32 * 1024 * 1024);
  await cluster.volume('dc1', 'log1', 32 * 1024 * 1024);
});

after(async () => {
  await cluster.stopAll();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function ok(args: string[]): Promise<string> {
  const r = await cli(args);
  assert.equal(r.code, 0, `tricopy ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

async function fails(args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await cli(args);
  assert.equal(r.code, code, `tricopy ${args.join(' ')} (stderr: ${r.stderr})`);
  assert.match(r.stderr, pattern);
}

test('pair create (sync and async with a group), status table and JSON, group status', async () => {
  assert.match(await ok(['--node', dc1, 'pair', 'create', 'db1-dc2', '--volume', 'db1', '--to', dc2, '--mode', 'sync', '--fence', 'data', '--wait']),
    /pair db1-dc2 is duplex \(PAIR\)/);
  const created = JSON.parse(await ok(['--node', dc1, 'pair', 'create', 'log1-dc2', '--volume', 'log1', '--to', dc2, '--mode', 'async', '--group', 'erp', '--json'])) as
    { mode: string; group: string; fence: string };
  assert.deepEqual([created.mode, created.group, created.fence], ['async', 'erp', 'never']);
  assert.match(await ok(['--node', dc1, 'pair', 'wait', 'log1-dc2', '--state', 'duplex', '--timeout', '60']), /is duplex \(PAIR\)/);
  const table = await ok(['--node', dc1, 'pair', 'status']);
  assert.match(table, /^NAME\s+ROLE\s+VOLUME\s+PEER\s+MODE\s+FENCE\s+STATE\s+CODE\s+COPY\s+GROUP\s+JOURNAL\s+LAG/);
  assert.match(table, /db1-dc2\s+P\s+db1\s+dc2:db1\s+sync\s+data\s+duplex\s+PAIR/);
  assert.match(table, /log1-dc2\s+P\s+log1\s+dc2:log1\s+async\s+never\s+duplex\s+PAIR\s+-\s+erp\s+\S+\/1GiB/);
  assert.match(await ok(['--node', dc2, 'pair', 'status']), /db1-dc2\s+S\s+db1\s+dc1:db1\s+sync/);
  const one = JSON.parse(await ok(['--node', dc2, 'pair', 'status', 'log1-dc2', '--json'])) as { role: string; code: string };
  assert.deepEqual([one.role, one.code], ['secondary', 'PAIR']);
  assert.match(await ok(['--node', dc1, 'group', 'status', 'erp']), /erp\s+primary\s+dc2\s+log1-dc2/);
  const g = JSON.parse(await ok(['--node', dc2, 'group', 'status', '--json'])) as Array<{ group: string; role: string }>;
  assert.deepEqual(g.map((x) => [x.group, x.role]), [['erp', 'secondary']]);
});

test('split and resync show PSUS/SSUS and back to PAIR; events record every transition with a reason', async () => {
  assert.match(await ok(['--node', dc1, 'pair', 'split', 'db1-dc2']), /suspended \(PSUS\)/);
  assert.match(await ok(['--node', dc2, 'pair', 'status']), /db1-dc2\s+S.*suspended\s+SSUS/);
  assert.match(await ok(['--node', dc1, 'pair', 'split', 'db1-dc2']), /already suspended|suspended \(PSUS\)/);
  assert.match(await ok(['--node', dc1, 'pair', 'resync', 'db1-dc2', '--wait']), /duplex \(PAIR\)/);
  const events = await ok(['--node', dc1, 'events', '--json']);
  const kinds = events.trim().split('\n').map((l) => JSON.parse(l) as { kind: string; subject: string; details?: { from?: string; to?: string } });
  const transitions = kinds.filter((e) => e.kind === 'pair-state' && e.subject === 'db1-dc2').map((e) => `${e.details?.from}->${e.details?.to}`);
  for (const t of ['initial-copying->duplex', 'duplex->suspended', 'suspended->duplex-pending', 'duplex-pending->duplex']) {
    assert.ok(transitions.includes(t), `event for ${t} (have ${transitions.join(', ')})`);
  }
});

test('pair commands refuse bad input with clear errors', async () => {
  await fails(['--node', dc1, 'pair', 'status', 'nope'], 1, /pair nope does not exist/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'db1', '--to', dc2], 2, /required option '--mode/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'db1', '--to', dc2, '--mode', 'sideways'], 2, /Allowed choices are sync, async/);
  await fails(['--node', dc1, 'pair', 'create', 'db1-dc2', '--volume', 'db1', '--to', dc2, '--mode', 'sync'], 1, /already exists/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'nope', '--to', dc2, '--mode', 'sync'], 1, /volume nope does not exist/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'db1', '--to', dc2, '--mode', 'sync', '--group', 'g'], 2, /consistency groups are for async pairs/);
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'db1', '--to', 'http://127.0.0.1:1', '--mode', 'sync'], 1, /cannot reach node/);
  await fails(['--node', dc1, 'pair', 'takeover', 'db1-dc2'], 2, /takeover is run at the secondary node[\s\S]*hint: run the command at dc2/);
  // At the secondary, resync is the wrong node whatever the state (docs/cli.md): even of a duplex pair.
  await fails(['--node', dc2, 'pair', 'resync', 'db1-dc2'], 2, /resync is run at the primary node \(dc1\)[\s\S]*hint: run the command at dc1/);
  assert.match(await ok(['--node', dc1, 'pair', 'resync', 'db1-dc2']), /duplex \(PAIR\)/, 'at the primary, resync of a duplex pair changes nothing');
  await fails(['--node', dc1, 'pair', 'wait', 'db1-dc2', '--state', 'suspended', '--timeout', '1'], 1, /did not reach suspended within 1000 ms; it is duplex \(PAIR\)/);
  await fails(['--node', dc1, 'volume', 'delete', 'db1'], 1, /volume db1 is in pair db1-dc2[\s\S]*tricopy pair delete db1-dc2/);
  await fails(['--node', dc1, 'volume', 'resize', 'db1', '--size', '64MiB'], 1, /cannot be resized while paired/);
  await fails(['--node', dc1, 'group', 'status', 'nope'], 1, /consistency group nope has no pairs/);
  // A node without a cluster secret cannot pair.
  const lone = await NodeProcess.start({ name: 'lone', dataDir: path.join(dir, 'lone') });
  await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'db1', '--to', lone.apiUrl, '--mode', 'sync'], 2, /has no cluster secret/);
  await lone.stop();
});

test('the same "wrong node" mistake exits 2 for split, swap, resync and takeover', async () => {
  const codes: Record<string, number | null> = {};
  const attempt = async (what: string, args: string[], pattern: RegExp): Promise<void> => {
    const r = await cli(args);
    assert.match(r.stderr, pattern, what);
    codes[what] = r.code;
  };
  await attempt('split at the secondary', ['--node', dc2, 'pair', 'split', 'db1-dc2'], /at its primary node dc1/);
  await attempt('swap at the primary', ['--node', dc1, 'pair', 'swap', 'db1-dc2'], /run swap at dc2/);
  await attempt('takeover at the primary', ['--node', dc1, 'pair', 'takeover', 'db1-dc2'], /takeover is run at the secondary node/);
  await ok(['--node', dc1, 'pair', 'split', 'db1-dc2']);
  try {
    await attempt('resync at the secondary', ['--node', dc2, 'pair', 'resync', 'db1-dc2'], /resync is run at the primary node/);
  } finally {
    await ok(['--node', dc1, 'pair', 'resync', 'db1-dc2', '--wait']);
  }
  assert.deepEqual(codes, { 'split at the secondary': 2, 'swap at the primary': 2, 'takeover at the primary': 2, 'resync at the secondary': 2 });
});

test('pair create towards a node with another cluster secret fails at once and says the secrets differ', async () => {
  const otherSecret = path.join(dir, 'other.secret');
  await fsp.writeFile(otherSecret, 'another-cluster-secret-0123456789\n');
  const stranger = await NodeProcess.start({ name: 'stranger', dataDir: path.join(dir, 'stranger'), args: ['--cluster-secret-file', otherSecret] });
  try {
    const started = Date.now();
    await fails(['--node', dc1, 'pair', 'create', 'x', '--volume', 'db1', '--to', stranger.apiUrl, '--mode', 'sync'], 1,
      /node stranger answered at [\d.:]+, but the link was refused: peer stranger does not know the cluster secret[\s\S]*hint: the two nodes use different cluster secrets/);
    assert.ok(Date.now() - started < 8000, `refused without waiting for the 10 s connect timeout (${Date.now() - started} ms)`);
  } finally {
    await stranger.stop();
  }
});

test('pair delete ends the pair on both nodes and frees the volumes', async () => {
  assert.match(await ok(['--node', dc1, 'pair', 'delete', 'log1-dc2']), /deleted pair log1-dc2/);
  const left = JSON.parse(await ok(['--node', dc2, 'pair', 'status', '--json'])) as Array<{ name: string }>;
  assert.deepEqual(left.map((p) => p.name), ['db1-dc2']);
  // The former secondary volume is writable again.
  const client = await cluster.client('dc2', 'log1');
  await client.write(0, Buffer.alloc(512, 1));
  await client.disconnect();
});

test('pair delete --keep-read-only: the former secondary keeps the primary\'s image, read-only across a SIGKILL, until volume make-writable', async () => {
  const data = Buffer.alloc(64 * 1024, 0x5a);
  const p = await cluster.client('dc1', 'db1');
  await p.write(4096, data);
  await p.flush();
  await p.disconnect();
  await fails(['--node', dc1, 'pair', 'delete', 'db1-dc2', '--keep-read-only'], 1, /--keep-read-only is for the secondary of a pair: this node is the primary of pair db1-dc2/);
  assert.match(await ok(['--node', dc2, 'pair', 'delete', 'db1-dc2', '--keep-read-only']), /deleted pair db1-dc2/);
  assert.deepEqual(JSON.parse(await ok(['--node', dc1, 'pair', 'status', '--json'])), []);

  const readOnly = async (): Promise<void> => {
    const v = JSON.parse(await ok(['--node', dc2, 'volume', 'show', 'db1', '--json'])) as
      { hostWrites: { state: string; reason: string }; detachedSecondary: { pair: string; primary: string } };
    assert.equal(v.hostWrites.state, 'read-only', v.hostWrites.reason);
    assert.match(v.hostWrites.reason, /left read-only with the image of dc1 when pair db1-dc2 was dissolved[\s\S]*tricopy volume make-writable db1/);
    assert.deepEqual([v.detachedSecondary.pair, v.detachedSecondary.primary], ['db1-dc2', 'dc1']);
    const s = await cluster.client('dc2', 'db1');
    assert.ok(s.transmissionFlags & c.TFLAG_READ_ONLY, 'the export says read-only');
    await assert.rejects(s.write(0, Buffer.alloc(512, 1)), (e: NbdClientError) => e.errno === c.NBD_EPERM);
    assert.deepEqual(await s.read(4096, data.length), data, 'the image of the primary is there to read');
    await s.disconnect();
  };
  await readOnly();
  assert.match(await ok(['--node', dc2, 'volume', 'show', 'db1']), /former secondary:\s+holds dc1's image since pair db1-dc2 was dissolved .*; left read-only/);
  await cluster.kill('dc2');
  await cluster.restart('dc2');
  await readOnly();

  assert.match(await ok(['--node', dc2, 'volume', 'make-writable', 'db1']), /volume db1: host writes accepted/);
  const s = await cluster.client('dc2', 'db1');
  await s.write(0, Buffer.alloc(512, 1));
  await s.disconnect();
  const after = JSON.parse(await ok(['--node', dc2, 'volume', 'show', 'db1', '--json'])) as { detachedSecondary: unknown };
  assert.equal(after.detachedSecondary, null, 'make-writable drops the mark: the volume no longer counts as dc1\'s image');
  await fails(['--node', dc2, 'volume', 'make-writable', 'db1'], 2, /was not left read-only by a dissolved pair/);
});
