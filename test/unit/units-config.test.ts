// Parsing of sizes, durations and node configuration at the edge.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { formatBytes, parseDurationMs, parseSize } from '../../src/common/units';
import { loadConfigFile, resolveNodeConfig } from '../../src/node/config';
import { isAdmitted } from '../../src/volume/access';
import { tempDir } from '../support/tools';

test('sizes: binary and decimal units, plain bytes; clear errors naming the accepted units', () => {
  assert.equal(parseSize('10GiB'), 10 * 1024 ** 3);
  assert.equal(parseSize('10G'), 10 * 1024 ** 3);
  assert.equal(parseSize('512m'), 512 * 1024 ** 2);
  assert.equal(parseSize('1.5KiB'), 1536);
  assert.equal(parseSize('4096'), 4096);
  assert.equal(parseSize('2GB'), 2e9);
  assert.equal(parseSize(77), 77);
  assert.throws(() => parseSize('10Q'), (e: Error & { hint?: string }) => /unknown unit "Q"/.test(e.message) && /GiB/.test(e.hint ?? ''));
  assert.throws(() => parseSize('ten'), /not a size/);
  assert.throws(() => parseSize('0.3B'), /whole number/);
  assert.throws(() => parseSize(-1), /non-negative/);
  assert.equal(formatBytes(10 * 1024 ** 3), '10GiB');
  assert.equal(formatBytes(1536), '1.50KiB');
});

test('durations', () => {
  assert.equal(parseDurationMs('250ms'), 250);
  assert.equal(parseDurationMs('5s'), 5000);
  assert.equal(parseDurationMs('2m'), 120000);
  assert.throws(() => parseDurationMs('soon'), /not a duration/);
});

test('node config: defaults, flags over file, and refusal of inconsistent settings', async () => {
  const base = { name: 'dc1', dataDir: '/tmp/x' };
  const c = resolveNodeConfig({}, base);
  assert.equal(c.site, 'dc1');
  assert.equal(c.nbdPort, 10809);
  assert.equal(c.tlsMode, 'off');
  assert.equal(resolveNodeConfig({ nbdPort: 1234 }, { ...base, nbdPort: '0' }).nbdPort, 0);
  assert.throws(() => resolveNodeConfig({}, { dataDir: '/x' }), /"name" is required/);
  assert.throws(() => resolveNodeConfig({}, { ...base, nbdPort: '70000' }), /nbdPort/);
  assert.equal(c.advertiseNbdPort, undefined, 'export URIs name the NBD port unless told otherwise');
  assert.equal(resolveNodeConfig({ advertiseNbdPort: 20809 }, base).advertiseNbdPort, 20809);
  assert.throws(() => resolveNodeConfig({}, { ...base, advertiseNbdPort: '0' }), /advertiseNbdPort/);
  assert.throws(() => resolveNodeConfig({}, { ...base, nbdPort: '5', apiPort: '5' }), /must differ/);
  assert.throws(() => resolveNodeConfig({}, { ...base, tlsMode: 'required' }), /needs --tls-cert/);
  assert.throws(() => resolveNodeConfig({}, { ...base, tlsMode: 'maybe' }), /not one of off, optional, required/);
  assert.throws(() => resolveNodeConfig({}, { ...base, tlsCert: '/a' }), /needs both/);
  assert.throws(() => resolveNodeConfig({}, { ...base, tlsMode: 'optional', tlsCert: '/a', tlsKey: '/b', tlsPskFile: '/c' }), /not both/);
  assert.throws(() => resolveNodeConfig({}, { ...base, tlsPskFile: '/c' }), /--tls is off/);
  assert.throws(() => resolveNodeConfig({}, { ...base, minBlockBytes: '1024' }), /not 1, 512 or 4096/);
  assert.equal(c.securityEventWindowMs, 60_000);
  assert.equal(resolveNodeConfig({ securityEventWindow: '10s' }, base).securityEventWindowMs, 10_000);
  assert.throws(() => resolveNodeConfig({ securityEventWindow: '500ms' }, base), /security event window must be between 1s and 1h/);
  const dir = await tempDir('config');
  try {
    const file = path.join(dir, 'node.yaml');
    await fsp.writeFile(file, 'name: dc9\ndataDir: ./data\nsite: osaka\n');
    const fromFile = await loadConfigFile(file);
    const resolved = resolveNodeConfig(fromFile, { site: 'tokyo' });
    assert.equal(resolved.dataDir, path.join(dir, 'data'), 'paths are relative to the config file');
    assert.equal(resolved.site, 'tokyo', 'flags win over the file');
    await fsp.writeFile(file, 'name: dc9\ndatadir: ./data\n');
    await assert.rejects(loadConfigFile(file), /unknown setting "datadir"/);
    await fsp.writeFile(file, '- a\n- b\n');
    await assert.rejects(loadConfigFile(file), /mapping/);
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('access lists admit by address range or TLS identity', () => {
  const list = { clients: ['10.0.0.0/8', '::1/128'], identities: ['alice'] };
  assert.ok(isAdmitted(list, { address: '10.1.2.3' }));
  assert.ok(isAdmitted(list, { address: '::ffff:10.1.2.3' }), 'IPv4-mapped IPv6 addresses match IPv4 rules');
  assert.ok(isAdmitted(list, { address: '::1' }));
  assert.ok(!isAdmitted(list, { address: '192.168.0.1' }));
  assert.ok(isAdmitted(list, { address: '192.168.0.1', tlsIdentity: 'alice' }));
  assert.ok(!isAdmitted(list, { address: '192.168.0.1', tlsIdentity: 'mallory' }));
  assert.ok(!isAdmitted(list, { address: 'garbage' }));
});
