// TLS under replication links (link-tls.ts): the first-byte decision table, file checks with errors
// that say what to fix, and real loopback sockets: the sniffed first bytes are never lost (plain or
// TLS), plain dialers are refused where TLS is required, and untrusted or missing certificates are
// refused by name.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tls from 'node:tls';
import { LinkTlsAcceptor, LinkTlsRefused, dialLinkSocket, linkStartDecision, loadLinkTls, sniffLinkStart, type LinkTlsConfig } from '../../src/replication/transport/link-tls';
import { issueLinkCert, makePki, type TestPki } from '../support/certs';
import { tempDir } from '../support/tools';

let dir: string;
let pki: TestPki;
let other: TestPki;
let a: { cert: string; key: string };
let b: { cert: string; key: string };
let stranger: { cert: string; key: string };

before(async () => {
  dir = await tempDir('link-tls');
  pki = await makePki(path.join(dir, 'pki'), []);
  other = await makePki(path.join(dir, 'other'), []);
  a = await issueLinkCert(pki, 'relay-a');
  b = await issueLinkCert(pki, 'relay-b');
  stranger = await issueLinkCert(other, 'stranger');
});

after(async () => {
  await fsp.rm(dir, { recursive: true, force: true });
});

test('the first byte: 0x16 is a TLS ClientHello, anything else a plain link frame; each mode decides by a table', () => {
  assert.equal(sniffLinkStart(0x16), 'tls');
  assert.equal(sniffLinkStart(0x00), 'plain');
  assert.equal(sniffLinkStart(0x54), 'plain');
  assert.equal(linkStartDecision('required', 'plain'), 'refuse');
  assert.equal(linkStartDecision('required', 'tls'), 'tls');
  assert.equal(linkStartDecision('optional', 'plain'), 'plain');
  assert.equal(linkStartDecision('optional', 'tls'), 'tls');
  assert.equal(linkStartDecision('off', 'tls'), 'plain');
});

test('loading: flag combinations and files are checked, with what to fix', async () => {
  assert.equal(await loadLinkTls({ mode: 'off', cert: undefined, key: undefined, ca: undefined }), undefined);
  await assert.rejects(loadLinkTls({ mode: 'off', cert: a.cert, key: a.key, ca: undefined }), /TLS files were given but --tls-mode is off/);
  await assert.rejects(loadLinkTls({ mode: 'required', cert: a.cert, key: undefined, ca: undefined }), /--tls-mode required needs --tls-cert and --tls-key/);
  await assert.rejects(loadLinkTls({ mode: 'required', cert: path.join(dir, 'nope.pem'), key: a.key, ca: undefined }), /cannot read --tls-cert .*nope\.pem/);
  await assert.rejects(loadLinkTls({ mode: 'required', cert: a.cert, key: b.key, ca: undefined }), /the key in .*link-relay-b-key\.pem does not belong to the certificate in .*link-relay-a-cert\.pem/);
  await assert.rejects(loadLinkTls({ mode: 'required', cert: a.cert, key: a.key, ca: a.key }), /cannot use --tls-ca/);
  await assert.rejects(loadLinkTls({ mode: 'maybe' as 'off', cert: undefined, key: undefined, ca: undefined }), /--tls-mode "maybe" is not one of off, optional, required/);
  const ok = await loadLinkTls({ mode: 'required', cert: a.cert, key: a.key, ca: pki.caCert });
  assert.equal(ok?.mode, 'required');
  assert.ok(ok?.caPem);
});

/** An echo server behind a LinkTlsAcceptor; records refusals. */
async function echoServer(config: LinkTlsConfig | undefined): Promise<{ port: number; refusals: LinkTlsRefused[]; tlsSeen: boolean[]; close: () => Promise<void> }> {
  const acceptor = new LinkTlsAcceptor(config, 5000);
  const refusals: LinkTlsRefused[] = [];
  const tlsSeen: boolean[] = [];
  const server = net.createServer((raw) => {
    acceptor.accept(raw).then((socket) => {
      tlsSeen.push(socket instanceof tls.TLSSocket);
      socket.on('data', (d: Buffer) => socket.write(d));
      socket.on('error', () => undefined);
      socket.resume();
    }, (err: LinkTlsRefused) => refusals.push(err));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, refusals, tlsSeen, close: () => new Promise((r) => server.close(() => r())) };
}

/** Writes `message` at once (before any TLS handshake ends) and resolves with what comes back, or rejects when closed first. */
function roundTrip(socket: net.Socket, message: Buffer): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    let got = Buffer.alloc(0);
    socket.on('data', (d: Buffer) => {
      got = Buffer.concat([got, d]);
      if (got.length >= message.length) {
        socket.destroy();
        resolve(got);
      }
    });
    socket.on('error', (err) => reject(err));
    socket.on('close', () => reject(new Error(`closed after ${got.length} bytes`)));
    socket.write(message);
  });
}

function conf(files: { cert: string; key: string }, mode: 'optional' | 'required', ca: string | undefined): Promise<LinkTlsConfig | undefined> {
  return loadLinkTls({ mode, cert: files.cert, key: files.key, ca });
}

async function until<T>(what: string, get: () => T | undefined): Promise<T> {
  const deadline = Date.now() + 5000;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

test('mutual TLS: the first bytes survive the sniffing, both plain (optional) and TLS; a plain dialer is refused where TLS is required', async () => {
  const message = Buffer.concat([Buffer.from([0x00, 0x01]), Buffer.alloc(70_000, 7)]);
  const optional = await echoServer(await conf(a, 'optional', pki.caCert));
  try {
    assert.deepEqual(await roundTrip(dialLinkSocket('127.0.0.1', optional.port, await conf(b, 'optional', pki.caCert)), message), message);
    assert.deepEqual(await roundTrip(dialLinkSocket('127.0.0.1', optional.port, await conf(b, 'required', pki.caCert)), message), message);
    assert.deepEqual(optional.tlsSeen, [false, true], 'an optional end dials plain; a required end dials TLS');
  } finally {
    await optional.close();
  }
  const required = await echoServer(await conf(a, 'required', pki.caCert));
  try {
    assert.deepEqual(await roundTrip(dialLinkSocket('127.0.0.1', required.port, await conf(b, 'required', pki.caCert)), message), message);
    await assert.rejects(roundTrip(dialLinkSocket('127.0.0.1', required.port, undefined), message), /closed after 0 bytes|ECONNRESET/);
    const refused = await until('the refusal', () => required.refusals[0]);
    assert.equal(refused.reason, 'tls-required');
    assert.match(refused.message, /a plain connection where TLS is required/);
  } finally {
    await required.close();
  }
});

test('a certificate from another CA, or none, is refused and named; a dialer refuses a server from another CA', async () => {
  const server = await echoServer(await conf(a, 'required', pki.caCert));
  const message = Buffer.from('hello');
  try {
    await assert.rejects(roundTrip(dialLinkSocket('127.0.0.1', server.port, await conf(stranger, 'required', undefined)), message));
    const untrusted = await until('the refusal', () => server.refusals[0]);
    assert.equal(untrusted.reason, 'tls-failed');
    assert.match(untrusted.message, /the peer's certificate \(CN=stranger\) is not trusted: .* \(it must chain to --tls-ca\)/);
    await assert.rejects(roundTrip(tls.connect({ host: '127.0.0.1', port: server.port, rejectUnauthorized: false }), message));
    const none = await until('the second refusal', () => server.refusals[1]);
    assert.match(none.message, /the peer presented no certificate/);
    // The dialer checks the server too: a relay with another CA's certificate is not talked to.
    await assert.rejects(roundTrip(dialLinkSocket('127.0.0.1', server.port, await conf(b, 'required', other.caCert)), message), /certificate/);
  } finally {
    await server.close();
  }
});
