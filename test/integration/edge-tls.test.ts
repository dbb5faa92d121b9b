// Mutual TLS on every link of a remote copy network (real processes on loopback): two storage nodes
// with --repl-tls required, a source edge, a core and a target edge with --tls-mode required, all
// with certificates of one CA made here. A sync pair through the network ends byte-equal; a plain
// dialer is refused and harms nothing; a core restarted with another CA's certificate is refused by
// the edges (named in their status and logs) and the entries wait for it; back with its own
// certificate, they arrive.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { encodeFrame, FrameKind } from '../../src/replication/transport/frame';
import { MessageType, helloCodec } from '../../src/replication/transport/messages';
import { fileFingerprint, issueLinkCert, makePki, presentedFingerprint, type TestPki } from '../support/certs';
import { cli, killAllNodes } from '../support/node-process';
import { RawSocket } from '../support/raw-socket';
import { RelayProcess, killAllRelays } from '../support/relay-process';
import { Rcn } from '../support/rcn';
import { sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;
let pki: TestPki;
let other: TestPki;

before(async () => {
  dir = await tempDir('edge-tls');
  pki = await makePki(path.join(dir, 'pki'), []);
  other = await makePki(path.join(dir, 'other-ca'), []);
});

after(async () => {
  killAllRelays();
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function tlsArgs(ca: TestPki, name: string, modeFlag: '--tls-mode' | '--repl-tls', trust = pki): Promise<string[]> {
  const { cert, key } = await issueLinkCert(ca, name);
  return [modeFlag, 'required', '--tls-cert', cert, '--tls-key', key, '--tls-ca', trust.caCert];
}

test('mutual TLS on every link: a sync pair through edges and a core ends byte-equal; plain dialers and another CA\'s relay are refused', async () => {
  const relays = ['e-tokyo', 'c-1', 'e-sapporo'];
  const relayArgs: Record<string, string[]> = {};
  for (const r of relays) relayArgs[r] = await tlsArgs(pki, r, '--tls-mode');
  const rcn = await Rcn.create(path.join(dir, 'net'), {
    nodes: { tokyo: 'e-tokyo', sapporo: 'e-sapporo' }, cores: ['c-1'], links: [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo']],
    orders: { erp: { from: 'e-tokyo', to: 'e-sapporo', retransmit: { timeout: '500ms', max: '2s', giveUp: '60s' } } },
    relayArgs, nodeArgs: await tlsArgs(pki, 'storage', '--repl-tls'),
  });
  const equal = async (): Promise<void> => {
    await rcn.drained('erp');
    assert.equal(await sha256Export(rcn.cluster.node('sapporo').nbdUri('db1'), dir), await sha256Export(rcn.cluster.node('tokyo').nbdUri('db1'), dir));
  };
  try {
    await rcn.apply();
    await rcn.cluster.volume('tokyo', 'db1', 16 * MiB);
    const seed = await rcn.cluster.client('tokyo', 'db1');
    await seed.write(0, randomBytes(MiB));
    await seed.disconnect();
    await rcn.pairVia({ name: 'db1-far', primary: 'tokyo', secondary: 'sapporo', volume: 'db1', order: 'erp' });
    await rcn.cluster.waitState('tokyo', 'db1-far', 'duplex');
    const client = await rcn.cluster.client('tokyo', 'db1');
    for (let i = 0; i < 50; i++) await client.write(i * 65536 + 8192, randomBytes(4096));
    await client.flush();
    await client.disconnect();
    await equal();
    const status = await rcn.status('e-tokyo');
    const links = status.links.map((l) => `${l.peer} ${l.up ? 'up' : 'down'}${l.tls ? ' tls' : ''}`).sort();
    assert.ok(links.includes('c-1 up tls'), `links of e-tokyo: ${links.join(', ')}`);
    assert.ok(status.links.filter((l) => l.up).every((l) => l.tls), 'every link is encrypted, the attached node\'s too');
    assert.deepEqual({ ...status.tls, certificate: status.tls.certificate?.subject }, { mode: 'required', mutual: true, certificate: 'CN=e-tokyo' });
    const shown = await cli(['edge', 'status', rcn.relay('e-tokyo').apiUrl]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /c-1 up \(tls\)/);
    assert.match(shown.stdout, /tls: required, mutual \(peers' certificates checked against the CA\); presents CN=e-tokyo, valid until 20\d\d-/);

    // A plain dialer — here a well-formed link Hello of an attached node — is refused before the
    // link handshake, counted and named; nothing else changes.
    const port = rcn.relay('e-tokyo').ports.listenPort;
    const before = (await rcn.status('e-tokyo')).counters.refusedConnections;
    const raw = await RawSocket.connect(port);
    raw.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 },
      helloCodec.encode({ protocol: 1, node: 'tokyo', nonce: 'n'.repeat(64), expect: 'sapporo' })));
    assert.ok(await raw.closesWithin(10_000), 'the plain connection is closed');
    assert.equal(raw.buffered, 0, 'and told nothing');
    const plain = await rcn.status('e-tokyo');
    assert.equal(plain.counters.refusedConnections, before + 1);
    assert.equal(plain.lastRefusal?.reason, 'tls-required');
    assert.match(plain.lastRefusal?.detail ?? '', /a plain connection where TLS is required/);
    assert.match(await fsp.readFile(rcn.relay('e-tokyo').logFile, 'utf8'), /relay connection refused \(TLS\).*tls-required|tls-required.*relay connection refused \(TLS\)/);

    // The core comes back with a certificate from another CA (it trusts ours): the edges refuse it,
    // say why, and hold the writes in the source edge's log area meanwhile.
    await rcn.relay('c-1').stop();
    await rcn.restartRelay('c-1', await tlsArgs(other, 'c-1', '--tls-mode', pki));
    const named = await waitFor('e-tokyo refusing c-1', async () => {
      const r = (await rcn.status('e-tokyo')).lastRefusal;
      return r?.reason === 'tls-failed' ? r : undefined;
    }, { timeoutMs: 20_000, intervalMs: 100 });
    assert.match(named.detail, /the peer's certificate \(CN=c-1\) is not trusted: .* \(it must chain to --tls-ca\)/);
    const more = await rcn.cluster.client('tokyo', 'db1');
    await more.write(4 * MiB, randomBytes(256 * 1024));
    await more.flush();
    await more.disconnect();
    const held = await rcn.order('e-tokyo', 'erp', 'source');
    assert.ok(held.inFlight > 0, `the entries wait at the source edge (${held.inFlight} in flight)`);
    assert.ok((await rcn.status('e-tokyo')).links.some((l) => l.peer === 'c-1' && !l.up), 'no link to the untrusted core');

    // Its own certificate again: the entries arrive, the secondary equals the primary.
    await rcn.relay('c-1').stop();
    await rcn.restartRelay('c-1', relayArgs['c-1']);
    await equal();
    await rcn.cluster.waitState('sapporo', 'db1-far', 'duplex');
  } finally {
    await rcn.stopAll();
  }
});

test('a relay refuses to start with TLS files that do not fit, and says what to fix', async () => {
  const { cert } = await issueLinkCert(pki, 'mismatch-a');
  const { key } = await issueLinkCert(pki, 'mismatch-b');
  const { cli } = await import('../support/node-process');
  const secret = path.join(dir, 'secret');
  await fsp.writeFile(secret, 'test-cluster-secret-0123456789abcdef\n');
  const base = ['edge', 'run', '--name', 'e-x', '--role', 'edge', '--data-dir', path.join(dir, 'e-x'), '--listen', '127.0.0.1:0', '--api-port', '0', '--cluster-secret-file', secret];
  const mismatch = await cli([...base, '--tls-mode', 'required', '--tls-cert', cert, '--tls-key', key]);
  assert.equal(mismatch.code, 2, mismatch.stderr);
  assert.match(mismatch.stderr, /the key in .*link-mismatch-b-key\.pem does not belong to the certificate in .*link-mismatch-a-cert\.pem/);
  const missing = await cli([...base, '--tls-mode', 'required', '--tls-cert', cert]);
  assert.match(missing.stderr, /--tls-mode required needs --tls-cert and --tls-key/);
  const off = await cli([...base, '--tls-cert', cert, '--tls-key', key]);
  assert.match(off.stderr, /TLS files were given but --tls-mode is off/);
  const node = await cli(['node', 'run', '--name', 'n-x', '--data-dir', path.join(dir, 'n-x'), '--repl-tls', 'required', '--tls-psk-file', secret]);
  assert.match(node.stderr, /--repl-tls required needs --tls-cert and --tls-key/);
});

test('a relay takes rotated certificate files on SIGHUP without a restart, and keeps the ones it has when the new ones do not fit', async () => {
  const secret = path.join(dir, 'secret-rot');
  await fsp.writeFile(secret, 'test-cluster-secret-0123456789abcdef\n');
  const first = await issueLinkCert(pki, 'c-rot');
  const second = await issueLinkCert(pki, 'c-rot-next');
  const certFile = path.join(dir, 'rot-cert.pem');
  const keyFile = path.join(dir, 'rot-key.pem');
  await fsp.copyFile(first.cert, certFile);
  await fsp.copyFile(first.key, keyFile);
  const relay = await RelayProcess.start({
    name: 'c-rot', role: 'core', dataDir: path.join(dir, 'c-rot'), secretFile: secret,
    args: ['--tls-mode', 'required', '--tls-cert', certFile, '--tls-key', keyFile, '--tls-ca', pki.caCert],
  });
  try {
    const port = relay.ports.listenPort;
    assert.equal(await presentedFingerprint(port), await fileFingerprint(first.cert));
    const before = await relay.api.status();
    assert.equal(before.tls.certificate?.fingerprint256, await fileFingerprint(first.cert));
    assert.match(before.tls.certificate?.subject ?? '', /CN=c-rot$/);

    await fsp.copyFile(second.cert, certFile);
    await fsp.copyFile(second.key, keyFile);
    relay.child.kill('SIGHUP');
    await waitFor('the relay to present the new certificate', async () =>
      (await relay.api.status()).tls.certificate?.fingerprint256 === await fileFingerprint(second.cert), { timeoutMs: 10_000, intervalMs: 100 });
    assert.equal(await presentedFingerprint(port), await fileFingerprint(second.cert), 'new connections get the new certificate');
    const reloaded = (await relay.api.events()).find((e) => e.kind === 'tls-reloaded');
    assert.match(reloaded?.reason ?? '', /now presenting CN=c-rot-next, valid until /);

    // A key that is not the certificate's: refused, said why, the relay goes on with what it had.
    await fsp.copyFile(first.key, keyFile);
    relay.child.kill('SIGHUP');
    const failed = await waitFor('the refused reload', async () => (await relay.api.events()).find((e) => e.kind === 'tls-reload-failed'), { timeoutMs: 10_000, intervalMs: 100 });
    assert.match(failed.reason, /the key in .*rot-key\.pem does not belong to the certificate in .*rot-cert\.pem/);
    assert.equal(await presentedFingerprint(port), await fileFingerprint(second.cert));
    assert.equal(relay.child.exitCode, null, 'the relay runs on');
  } finally {
    await relay.stop();
  }
});
