// NBD over TLS with real clients: PSK (nbdinfo, qemu-img) and X.509 with client certificates
// (nbdinfo, qemu-img); required and optional modes; identities in access lists; certificates rotated
// on SIGHUP, for NBD and replication links alike.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { fileFingerprint, issueLinkCert, makePki, presentedFingerprint, type TestPki } from '../support/certs';
import { NodeProcess, killAllNodes } from '../support/node-process';
import type { NodeEvent } from '../../src/contracts/node';
import { fetchMetrics, metricValue, run, runOk, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

let dir: string;
let pki: TestPki;
let pskDir: string;

before(async () => {
  dir = await tempDir('tls');
  pki = await makePki(path.join(dir, 'pki'), ['client1', 'client2']);
  pskDir = path.join(dir, 'psk');
  await fsp.mkdir(pskDir);
  // qemu reads <dir>/keys.psk; libnbd takes the file. Two users with their own keys.
  await runOk('psktool', ['-u', 'alice', '-p', path.join(pskDir, 'keys.psk')]);
  await runOk('psktool', ['-u', 'bob', '-p', path.join(pskDir, 'keys.psk')]);
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

const pskFile = (): string => path.join(pskDir, 'keys.psk');

test('TLS PSK required: nbdinfo and qemu-img connect with a key; plain clients are refused', async () => {
  const node = await NodeProcess.start({ name: 'psk', dataDir: path.join(dir, 'psk-data'), args: ['--tls', 'required', '--tls-psk-file', pskFile()] });
  await node.api.createVolume({ name: 'v', size: 16 * 1024 * 1024 });
  const port = node.ports.nbdPort;
  const info = await runOk('nbdinfo', ['--json', `nbds://alice@127.0.0.1:${port}/v?tls-psk-file=${pskFile()}`]);
  assert.match(info.stdout, /"TLS": true/);
  await runOk('qemu-io', ['--object', `tls-creds-psk,id=tls0,endpoint=client,dir=${pskDir},username=alice`, '--image-opts',
    `driver=nbd,host=127.0.0.1,port=${port},export=v,tls-creds=tls0`, '-c', 'write -P 0x42 4096 8192', '-c', 'read -P 0x42 4096 8192']);
  const plain = await run('nbdinfo', [`nbd://127.0.0.1:${port}/v`]);
  assert.notEqual(plain.code, 0, 'a client without TLS is refused');
  const wrongKey = path.join(dir, 'wrong.psk');
  await fsp.writeFile(wrongKey, 'alice:00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n');
  const bad = await run('nbdinfo', [`nbds://alice@127.0.0.1:${port}/v?tls-psk-file=${wrongKey}`]);
  assert.notEqual(bad.code, 0, 'a wrong key fails the TLS handshake');
  // Identity-based access: only bob's identity, and no loopback addresses.
  await node.api.disallow('v', { client: '127.0.0.0/8' });
  await node.api.disallow('v', { client: '::1/128' });
  await node.api.allow('v', { identity: 'bob' });
  const alice = await run('nbdinfo', [`nbds://alice@127.0.0.1:${port}/v?tls-psk-file=${pskFile()}`]);
  assert.notEqual(alice.code, 0, 'alice is not on the access list');
  await runOk('nbdinfo', [`nbds://bob@127.0.0.1:${port}/v?tls-psk-file=${pskFile()}`]);
  // Every refusal is an event naming the client and the reason, and counted in /metrics.
  const events = await waitFor('refusal events', async () => {
    const list = (await node.api.listEvents(0));
    return list.some((e) => e.kind === 'access-denied') ? list : undefined;
  });
  const refusal = (reason: string): NodeEvent | undefined => events.find((e) => e.kind === 'nbd-refused' && e.details?.refusal === reason);
  assert.equal(refusal('tls-required')?.subject, '127.0.0.1', 'the plain client is an event');
  assert.match(refusal('tls-failed')?.reason ?? '', /^tls-failed: TLS handshake failed/, 'the wrong key is an event');
  assert.ok(events.some((e) => e.kind === 'access-denied' && e.subject === 'v' && e.reason === 'client 127.0.0.1 (alice) is not on the access list'));
  const metrics = await fetchMetrics(node.apiUrl);
  for (const reason of ['tls-required', 'tls-failed', 'access-denied']) {
    assert.ok(metricValue(metrics, 'tricopy_nbd_refused_total', { reason }) >= 1, `${reason} counted`);
  }
  assert.equal(metricValue(metrics, 'tricopy_nbd_refused_total', { reason: 'bad-request' }), 0, 'every reason has a series from the start');
  assert.match(metrics, /tricopy_nbd_refused_total\{reason="bad-request",node="psk"\} 0/);
  assert.equal((await node.stop()).code, 0);
});

test('TLS X.509 with client certificates: verified clients connect, identities from the certificate CN', async () => {
  const node = await NodeProcess.start({ name: 'x509', dataDir: path.join(dir, 'x509-data'),
    args: ['--tls', 'required', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey, '--tls-ca', pki.caCert] });
  await node.api.createVolume({ name: 'v', size: 16 * 1024 * 1024 });
  const port = node.ports.nbdPort;
  const uri = (client: string): string => `nbds://127.0.0.1:${port}/v?tls-certificates=${pki.clientDir(client)}`;
  const info = await runOk('nbdinfo', ['--json', uri('client1')]);
  assert.match(info.stdout, /"TLS": true/);
  await runOk('qemu-img', ['info', '--object', `tls-creds-x509,id=tls0,endpoint=client,dir=${pki.clientDir('client1')}`,
    '--image-opts', `driver=nbd,host=127.0.0.1,port=${port},export=v,tls-creds=tls0`]);
  // A client that trusts the server but holds a certificate from another CA is refused by the server.
  const roguePki = await makePki(path.join(dir, 'rogue'), ['client1']);
  await fsp.copyFile(pki.caCert, path.join(roguePki.clientDir('client1'), 'ca-cert.pem'));
  const rogue = await run('nbdinfo', [`nbds://127.0.0.1:${port}/v?tls-certificates=${roguePki.clientDir('client1')}`]);
  assert.notEqual(rogue.code, 0, 'a certificate from another CA is refused');
  // And one with no client certificate at all.
  const noCert = path.join(dir, 'nocert');
  await fsp.mkdir(noCert, { recursive: true });
  await fsp.copyFile(pki.caCert, path.join(noCert, 'ca-cert.pem'));
  assert.notEqual((await run('nbdinfo', [`nbds://127.0.0.1:${port}/v?tls-certificates=${noCert}`])).code, 0, 'no client certificate is refused');
  // Access by certificate identity.
  await node.api.disallow('v', { client: '127.0.0.0/8' });
  await node.api.disallow('v', { client: '::1/128' });
  await node.api.allow('v', { identity: 'client2' });
  assert.notEqual((await run('nbdinfo', [uri('client1')])).code, 0, 'client1 is not allowed');
  await runOk('nbdinfo', [uri('client2')]);
  assert.equal((await node.stop()).code, 0);
});

test('TLS optional: plain and TLS clients both work', async () => {
  const node = await NodeProcess.start({ name: 'opt', dataDir: path.join(dir, 'opt-data'),
    args: ['--tls', 'optional', '--tls-cert', pki.serverCert, '--tls-key', pki.serverKey] });
  await node.api.createVolume({ name: 'v', size: 16 * 1024 * 1024 });
  const port = node.ports.nbdPort;
  const plain = await runOk('nbdinfo', ['--json', `nbd://127.0.0.1:${port}/v`]);
  assert.match(plain.stdout, /"TLS": false/);
  const secure = await runOk('nbdinfo', ['--json', `nbds://127.0.0.1:${port}/v?tls-certificates=${pki.clientDir('client1')}`]);
  assert.match(secure.stdout, /"TLS": true/);
  assert.equal((await node.stop()).code, 0);
});


test('SIGHUP rotates the node\'s certificate for NBD and replication links without a restart; files that do not fit change nothing', async () => {
  const first = await issueLinkCert(pki, 'n-rot');
  const nextPki = await makePki(path.join(dir, 'next-ca'), []);
  const second = await issueLinkCert(nextPki, 'n-rot');
  const certFile = path.join(dir, 'rot-cert.pem');
  const keyFile = path.join(dir, 'rot-key.pem');
  await fsp.copyFile(first.cert, certFile);
  await fsp.copyFile(first.key, keyFile);
  // client1's certificate and key, trusting the CA of the rotated server certificate.
  const trustsNext = path.join(dir, 'trusts-next');
  await fsp.mkdir(trustsNext, { recursive: true });
  await fsp.copyFile(nextPki.caCert, path.join(trustsNext, 'ca-cert.pem'));
  for (const f of ['client-cert.pem', 'client-key.pem']) await fsp.copyFile(path.join(pki.clientDir('client1'), f), path.join(trustsNext, f));
  const secret = path.join(dir, 'rot-secret');
  await fsp.writeFile(secret, 'test-cluster-secret-0123456789abcdef\n');
  const node = await NodeProcess.start({ name: 'rot', dataDir: path.join(dir, 'rot-data'),
    args: ['--tls', 'required', '--tls-cert', certFile, '--tls-key', keyFile, '--tls-ca', pki.caCert, '--repl-tls', 'required', '--cluster-secret-file', secret] });
  await node.api.createVolume({ name: 'v', size: 16 * 1024 * 1024 });
  const uri = (certDir: string): string => `nbds://127.0.0.1:${node.ports.nbdPort}/v?tls-certificates=${certDir}`;
  await runOk('nbdinfo', [uri(pki.clientDir('client1'))]);
  assert.notEqual((await run('nbdinfo', [uri(trustsNext)])).code, 0, 'the next CA\'s certificate is not presented yet');
  assert.equal(await presentedFingerprint(node.ports.replPort), await fileFingerprint(first.cert));

  await fsp.copyFile(second.cert, certFile);
  await fsp.copyFile(second.key, keyFile);
  node.child.kill('SIGHUP');
  const reloaded = await waitFor('the reload event', async () => (await node.api.listEvents(0)).find((e) => e.kind === 'tls-reloaded'));
  assert.match(reloaded.reason, /^NBD \(x509\) and replication links use the files as they are now: CN=n-rot, valid until /);
  await runOk('nbdinfo', [uri(trustsNext)]);
  assert.notEqual((await run('nbdinfo', [uri(pki.clientDir('client1'))])).code, 0, 'the old certificate is no longer presented');
  assert.equal(await presentedFingerprint(node.ports.replPort), await fileFingerprint(second.cert));

  // A key that is not the certificate's: an event says why; NBD and the links go on as they were.
  await fsp.copyFile(first.key, keyFile);
  node.child.kill('SIGHUP');
  const failed = await waitFor('the refused reload', async () => (await node.api.listEvents(0)).find((e) => e.kind === 'tls-reload-failed'));
  assert.match(failed.reason, /the key in .*rot-key\.pem does not belong to the certificate in .*rot-cert\.pem; the node goes on with the TLS files it had/);
  await runOk('nbdinfo', [uri(trustsNext)]);
  assert.equal(await presentedFingerprint(node.ports.replPort), await fileFingerprint(second.cert));
  assert.equal((await node.stop()).code, 0);
});
