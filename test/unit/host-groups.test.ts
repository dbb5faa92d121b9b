// Host groups and LUN security (spec 003 §5.6): the access decision for a connecting host, and the
// durable book's rules and validation of what it reads back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError } from '../../src/common/errors';
import { nodeDisk } from '../../src/common/disk';
import { defaultAccessList } from '../../src/volume/access';
import { type HostGroup, maxHostGroupMembers, maxLunNumber, parseHostGroups, volumeAccess } from '../../src/volume/host-groups';
import { HostGroupBook, hostGroupsFile } from '../../src/node/host-group-book';
import { HostGroupAccess } from '../../src/node/host-group-access';
import { tempDir } from '../support/tools';

const app: HostGroup = { name: 'app', identities: ['app1'], clients: ['10.1.0.0/24'], mappings: [{ volume: 'db1', lun: 0 }] };
const backup: HostGroup = { name: 'backup', identities: ['bk'], clients: [], mappings: [{ volume: 'db1', lun: 3 }, { volume: 'logs', lun: 0 }] };
const loopback = defaultAccessList();

test('an unmapped volume is decided by its access list: open or refused by policy, never invisible', () => {
  assert.equal(volumeAccess('scratch', loopback, [app], { address: '127.0.0.1' }), 'open');
  assert.equal(volumeAccess('scratch', loopback, [app], { address: '10.1.0.7', tlsIdentity: 'app1' }), 'denied');
  assert.equal(volumeAccess('scratch', { clients: [], identities: ['app1'] }, [app], { address: '10.9.9.9', tlsIdentity: 'app1' }), 'open');
});

test('a mapped volume is open to members of its mapped groups only, by identity or by address', () => {
  assert.equal(volumeAccess('db1', loopback, [app], { address: '10.1.0.7' }), 'open', 'address in the group range');
  assert.equal(volumeAccess('db1', loopback, [app], { address: '192.168.5.5', tlsIdentity: 'app1' }), 'open', 'identity of the group');
  assert.equal(volumeAccess('db1', loopback, [app], { address: '::ffff:10.1.0.9' }), 'open', 'an IPv4-mapped IPv6 address matches its IPv4 range');
  assert.equal(volumeAccess('db1', loopback, [app], { address: '127.0.0.1' }), 'invisible', 'the access list no longer applies');
  assert.equal(volumeAccess('db1', loopback, [app], { address: '10.1.1.7', tlsIdentity: 'app2' }), 'invisible');
  assert.equal(volumeAccess('db1', loopback, [app, backup], { address: '10.2.0.1', tlsIdentity: 'bk' }), 'open', 'any mapped group admits');
  assert.equal(volumeAccess('logs', loopback, [app, backup], { address: '10.1.0.7', tlsIdentity: 'app1' }), 'invisible', 'a group admits only to what is mapped to it');
  assert.equal(volumeAccess('db1', loopback, [app], { address: 'not an address' }), 'invisible');
});

test('parseHostGroups accepts what the book writes and refuses damaged files with the file named', () => {
  const groups = parseHostGroups({ groups: [app, backup] }, 'hg.json');
  assert.deepEqual(groups.map((g) => g.name), ['app', 'backup']);
  assert.deepEqual(parseHostGroups({ groups: [{ ...app, clients: ['10.1.0.9'] }] }, 'hg.json')[0]!.clients, ['10.1.0.9/32'], 'an address becomes its range');
  const bad: Array<[unknown, RegExp]> = [
    [[], /expected \{"groups"/],
    [{ groups: [{ identities: [], clients: [], mappings: [] }] }, /without a name/],
    [{ groups: [app, app] }, /appears twice/],
    [{ groups: [{ ...app, name: 'bad name' }] }, /not a valid host group name/],
    [{ groups: [{ ...app, clients: ['10.1.0.0/99'] }] }, /not an IP address or CIDR range/],
    [{ groups: [{ ...app, identities: ['no spaces'] }] }, /not a valid TLS identity/],
    [{ groups: [{ ...app, mappings: [{ volume: 'a', lun: 1 }, { volume: 'b', lun: 1 }] }] }, /maps LUN 1 twice/],
    [{ groups: [{ ...app, mappings: [{ volume: 'a', lun: 1 }, { volume: 'a', lun: 2 }] }] }, /maps volume a twice/],
    [{ groups: [{ ...app, mappings: [{ volume: 'a', lun: maxLunNumber + 1 }] }] }, /out of range/],
    [{ groups: [{ ...app, mappings: 'x' }] }, /malformed/],
    [{ groups: [{ ...app, clients: Array.from({ length: maxHostGroupMembers }, (_, i) => `10.0.${i >> 8}.${i & 255}`) }] }, /the limit is/],
  ];
  for (const [value, pattern] of bad) {
    assert.throws(() => parseHostGroups(value, 'hg.json'), (err: unknown) => err instanceof TricopyError && /^hg\.json: /.test(err.message) && pattern.test(err.message),
      `${JSON.stringify(value).slice(0, 80)} → ${pattern}`);
  }
});

async function withBook(fn: (book: HostGroupBook, dir: string) => Promise<void>): Promise<void> {
  const dir = await tempDir('hostgroups');
  try {
    await fn(await HostGroupBook.open(dir, nodeDisk), dir);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

const code = (c: string) => (err: unknown): boolean => err instanceof TricopyError && err.code === c;

test('the book keeps groups and mappings across a reopen, with LUNs unique per group', () => withBook(async (book, dir) => {
  await book.create('app', { identities: ['app1', 'app2'], clients: ['10.1.0.0/24'] });
  await book.create('backup', { identities: ['bk'] });
  await assert.rejects(book.create('app', {}), code('already-exists'));
  await book.map('db1', 'app', 0);
  await book.map('db1', 'backup', 0);
  await assert.rejects(book.map('db2', 'app', 0), (err: unknown) => code('conflict')(err) && /LUN 0 of host group app is taken by volume db1/.test((err as Error).message));
  await assert.rejects(book.map('db1', 'app', 1), code('conflict'), 'one LUN per volume in a group');
  await assert.rejects(book.map('db2', 'nope', 1), code('not-found'));
  await book.map('db2', 'app', 1);
  assert.deepEqual(book.mappingsOf('db1'), [{ hostGroup: 'app', lun: 0 }, { hostGroup: 'backup', lun: 0 }]);
  await book.removeMembers('app', { identities: ['app2'] });
  await assert.rejects(book.removeMembers('app', { identities: ['app2'] }), code('not-found'));
  await book.addMembers('app', { clients: ['10.2.0.5'] });
  await assert.rejects(book.delete('app'), (err: unknown) => code('conflict')(err) && /still has 2 mapped volume/.test((err as Error).message));
  await book.unmap('db2', 'app');
  await assert.rejects(book.unmap('db2', 'app'), code('not-found'));
  await book.forgetVolume('db1');
  assert.deepEqual(book.mappingsOf('db1'), []);
  await book.delete('app');

  const reopened = await HostGroupBook.open(dir, nodeDisk);
  assert.deepEqual(reopened.list(), [{ name: 'backup', identities: ['bk'], clients: [], mappings: [] }]);
}));

test('a change that cannot be written leaves memory as it was; a damaged file fails the open', () => withBook(async (book, dir) => {
  await book.create('app', { clients: ['10.1.0.0/24'] });
  await fsp.chmod(dir, 0o500);
  try {
    if (process.getuid?.() !== 0) await assert.rejects(book.map('db1', 'app', 0));
  } finally {
    await fsp.chmod(dir, 0o700);
  }
  if (process.getuid?.() !== 0) assert.deepEqual(book.mappingsOf('db1'), [], 'not applied in memory');
  await fsp.writeFile(path.join(dir, hostGroupsFile), JSON.stringify({ groups: [{ name: 'x', identities: [], clients: ['nope'], mappings: [] }] }));
  await assert.rejects(HostGroupBook.open(dir, nodeDisk), (err: unknown) => code('invalid-argument')(err) && /host-groups\.json: .*nope/.test((err as Error).message));
}));

test('a narrowing change closes exactly the sessions whose host lost access, snapshots with their volume, one event per volume', () => withBook(async (book) => {
  const sessions = [
    { exportName: 'db1', client: { id: 1, address: '10.1.0.7', port: 1001, tls: false } },
    { exportName: 'db1@s1', client: { id: 2, address: '10.1.0.8', port: 1002, tls: false } },
    { exportName: 'db1', client: { id: 3, address: '10.9.0.1', port: 1003, tls: true, tlsIdentity: 'app1' } },
    { exportName: 'other', client: { id: 4, address: '127.0.0.1', port: 1004, tls: false } },
  ];
  const events: Array<{ kind: string; subject: string; details?: Record<string, unknown> }> = [];
  const access = new HostGroupAccess(book, {
    accessListOf: (volume) => {
      if (volume !== 'db1' && volume !== 'other') throw new TricopyError('not-found', `volume ${volume} does not exist`);
      return loopback;
    },
    volumeOfExport: (name) => name.split('@')[0]!,
    disconnectWhere: (refuse) => {
      const closed = sessions.filter((s) => refuse(s.exportName, s.client));
      for (const s of closed) sessions.splice(sessions.indexOf(s), 1);
      return closed;
    },
    identityRefusal: () => undefined,
    emit: (kind, subject, _reason, details) => void events.push({ kind, subject, ...(details ? { details } : {}) }),
  });
  await access.create('app', { identities: ['app1'], clients: ['10.1.0.0/24'] });
  const mapped = await access.map('db1', 'app', 0);
  assert.deepEqual(mapped.closedSessions, [], 'every session on db1 is of a member; other is not mapped');
  await assert.rejects(access.map('nope', 'app', 1), code('not-found'), 'the volume must exist');

  const removed = await access.removeMembers('app', { clients: ['10.1.0.0/24'] });
  assert.deepEqual(removed.closedSessions.map((s) => s.export), ['db1', 'db1@s1'], 'address members lost db1 and its snapshot');
  assert.deepEqual(sessions.map((s) => s.client.id), [3, 4], 'the identity member and the unmapped volume keep theirs');
  const revoked = events.filter((e) => e.kind === 'access-revoked');
  assert.equal(revoked.length, 1);
  assert.equal(revoked[0]!.subject, 'db1');
  assert.equal((revoked[0]!.details?.sessions as unknown[]).length, 2);

  // The last unmap hands db1 back to its loopback-only access list: the identity member at 10.9.0.1 goes too.
  const unmapped = await access.unmap('db1', 'app');
  assert.deepEqual(unmapped.closedSessions.map((s) => [s.export, s.address]), [['db1', '10.9.0.1']]);
  assert.equal(access.decide('db1', { id: 9, address: '127.0.0.1', port: 1, tls: false }), 'open');
}));
