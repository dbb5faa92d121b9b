// Host groups and LUN security (spec 003 §5.6) on a real node, through the CLI: a volume mapped to a
// host group is listed to and opened by that group's hosts only (by TLS PSK identity or by source
// address; the test acts as several hosts from 127.0.0.2, 127.0.0.3 …); a change that narrows access
// closes the sessions of hosts that lost it and they cannot reconnect; unmapping the last group
// hands the volume back to its access list.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClient, NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import type { HostGroupChange, HostGroupView } from '../../src/contracts/host-groups';
import type { VolumeView } from '../../src/contracts/node';
import { NodeProcess, cli, killAllNodes } from '../support/node-process';
import { runOk, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

let dir: string;
let pskDir: string;
let node: NodeProcess;

before(async () => {
  dir = await tempDir('hostgroups');
  pskDir = path.join(dir, 'psk');
  await fsp.mkdir(pskDir);
  for (const user of ['alice', 'bob']) await runOk('psktool', ['-u', user, '-p', pskFile()]);
  // TLS optional: PSK users give identities; plain clients are told apart by their source address.
  node = await NodeProcess.start({ name: 'hg', dataDir: path.join(dir, 'data'), args: ['--tls', 'optional', '--tls-psk-file', pskFile()] });
});

after(async () => {
  await node.stop();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

function pskFile(): string {
  return path.join(pskDir, 'keys.psk');
}

async function ok(args: string[]): Promise<string> {
  const r = await cli(args, { TRICOPY_NODE: node.apiUrl });
  assert.equal(r.code, 0, `tricopy ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

async function fails(args: string[], code: number, pattern: RegExp): Promise<void> {
  const r = await cli(args, { TRICOPY_NODE: node.apiUrl });
  assert.equal(r.code, code, `tricopy ${args.join(' ')} exit code (stderr: ${r.stderr})`);
  assert.match(r.stderr, pattern);
}

/** The exports `nbdinfo --list` shows a PSK user (or a plain client from 127.0.0.1). */
async function listed(user?: string): Promise<string[]> {
  const uri = user === undefined ? `nbd://127.0.0.1:${node.ports.nbdPort}/` : `nbds://${user}@127.0.0.1:${node.ports.nbdPort}/?tls-psk-file=${pskFile()}`;
  const out = await runOk('nbdinfo', ['--list', '--json', uri]);
  return ((JSON.parse(out.stdout) as { exports: Array<{ 'export-name': string }> }).exports).map((e) => e['export-name']).sort();
}

/** A plain NBD session from a loopback source address, as a host at that address. */
function attach(from: string, exportName: string): Promise<NbdClient> {
  return NbdClient.connect({ host: '127.0.0.1', port: node.ports.nbdPort, exportName, localAddress: from });
}

async function refusedAs(from: string, exportName: string, replyType: number): Promise<void> {
  await assert.rejects(attach(from, exportName), (err: unknown) => err instanceof NbdClientError && err.errno === replyType,
    `${from} opening ${exportName} is answered 0x${replyType.toString(16)}`);
}

test('host groups: listing is filtered, a removed host\'s session is closed and it cannot reconnect, unmapping restores the access list', async () => {
  await ok(['volume', 'create', 'db1', '--size', '16MiB']);
  await ok(['volume', 'create', 'other', '--size', '16MiB']);
  await ok(['snapshot', 'create', 'db1', '--name', 's1']);
  assert.deepEqual(await listed('bob'), ['db1', 'db1@s1', 'other'], 'before mapping, the loopback access list admits everyone here');

  // A host at 127.0.0.3 is attached before the mapping; mapping narrows access and closes it.
  const early = await attach('127.0.0.3', 'db1');
  await early.write(0, Buffer.alloc(4096, 0x33));

  assert.match(await ok(['host-group', 'create', 'app', '--identity', 'alice', '--client', '127.0.0.2']),
    /created host group app: identities alice; clients 127\.0\.0\.2\/32/);
  const mapped = JSON.parse(await ok(['volume', 'map', 'db1', '--host-group', 'app', '--lun', '0', '--json'])) as HostGroupChange;
  assert.deepEqual(mapped.hostGroup.mappings, [{ volume: 'db1', lun: 0 }]);
  assert.deepEqual(mapped.closedSessions.map((s) => [s.address, s.export]), [['127.0.0.3', 'db1']], 'mapping closed the session of a host outside the group');
  await waitFor('the early session to be closed', () => early.closed);
  await assert.rejects(early.read(0, 4096));

  // Listing is filtered: the volume and its snapshot are invisible outside the group.
  assert.deepEqual(await listed('alice'), ['db1', 'db1@s1', 'other'], 'alice is in the group');
  assert.deepEqual(await listed('bob'), ['other'], 'bob is not');
  assert.deepEqual(await listed(), ['other'], 'a plain client at 127.0.0.1 is not');
  await refusedAs('127.0.0.1', 'db1', c.REP_ERR_UNKNOWN);
  await refusedAs('127.0.0.1', 'db1@s1', c.REP_ERR_UNKNOWN);
  await runOk('nbdinfo', [`nbds://alice@127.0.0.1:${node.ports.nbdPort}/db1?tls-psk-file=${pskFile()}`]);

  const show = await ok(['volume', 'show', 'db1']);
  assert.match(show, /host groups:\s+app \(LUN 0\)/);
  assert.match(await ok(['host-group', 'show', 'app']), /mapped volumes:\s+LUN 0: db1/);

  // A member by address opens the volume, then loses its membership: its session is closed at once.
  const member = await attach('127.0.0.2', 'db1');
  await member.write(0, Buffer.alloc(4096, 0x22));
  assert.deepEqual(await member.read(0, 4096), Buffer.alloc(4096, 0x22));
  const removed = JSON.parse(await ok(['host-group', 'remove', 'app', '--client', '127.0.0.2/32', '--json'])) as HostGroupChange;
  assert.deepEqual(removed.hostGroup.clients, []);
  assert.deepEqual(removed.closedSessions.map((s) => [s.address, s.export]), [['127.0.0.2', 'db1']]);
  await waitFor('the removed host\'s session to be closed', () => member.closed);
  await assert.rejects(member.read(0, 4096), 'no more requests on a closed session');
  await refusedAs('127.0.0.2', 'db1', c.REP_ERR_UNKNOWN);
  const revoked = await waitFor('an access-revoked event', async () =>
    (await node.api.listEvents(0)).find((e) => e.kind === 'access-revoked' && e.subject === 'db1' && /members removed from host group app/.test(e.reason)));
  assert.equal((revoked.details?.sessions as Array<{ address: string }>)[0]!.address, '127.0.0.2');

  // Errors an operator can make, with the CLI's exit codes (1: refused, 2: bad input).
  await fails(['volume', 'map', 'other', '--host-group', 'app', '--lun', '0'], 1, /LUN 0 of host group app is taken by volume db1[\s\S]*hint: LUN 1 is free/);
  await fails(['volume', 'map', 'other', '--host-group', 'nope', '--lun', '1'], 1, /no host group named nope/);
  await fails(['volume', 'map', 'missing', '--host-group', 'app', '--lun', '1'], 1, /missing/);
  await fails(['volume', 'map', 'other', '--host-group', 'app', '--lun', 'x'], 2, /not a LUN number/);
  await fails(['volume', 'map', 'other', '--host-group', 'app', '--lun', '256'], 2, /./);
  await fails(['host-group', 'create', 'app'], 1, /host group app exists/);
  await fails(['host-group', 'create', 'bad', '--client', '10.0.0.0/99'], 2, /not an IP address or CIDR range/);
  await fails(['host-group', 'delete', 'app'], 1, /still has 1 mapped volume\(s\): db1 \(LUN 0\)[\s\S]*hint: unmap them first/);
  await fails(['host-group', 'remove', 'app'], 2, /needs --identity and\/or --client/);

  // Mappings are durable: after a restart the volume is still invisible outside the group.
  await node.stop();
  node = await node.restart();
  assert.deepEqual(await listed('bob'), ['other']);
  assert.deepEqual(await listed('alice'), ['db1', 'db1@s1', 'other']);

  // Unmapping the last group hands the volume back to its access list (loopback here).
  const unmapped = JSON.parse(await ok(['volume', 'unmap', 'db1', '--host-group', 'app', '--json'])) as HostGroupChange;
  assert.deepEqual(unmapped.hostGroup.mappings, []);
  assert.deepEqual(unmapped.closedSessions, []);
  assert.deepEqual(await listed('bob'), ['db1', 'db1@s1', 'other']);
  const back = await attach('127.0.0.2', 'db1');
  assert.deepEqual(await back.read(0, 4096), Buffer.alloc(4096, 0x22));
  await back.disconnect();
  const view = JSON.parse(await ok(['volume', 'show', 'db1', '--json'])) as VolumeView;
  assert.deepEqual(view.hostGroups, []);

  await ok(['host-group', 'delete', 'app']);
  assert.deepEqual(JSON.parse(await ok(['host-group', 'list', '--json'])) as HostGroupView[], []);
  assert.match(await ok(['host-group', 'list']), /no host groups/);
});
