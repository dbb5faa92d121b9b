// The node-to-node link in process: mutual authentication, requests, heartbeats through a
// black-holed link, reconnection, hostile bytes on the replication port, and mutual TLS.
import { test, before, after } from 'node:test';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '../../src/common/log';
import { TricopyError } from '../../src/common/errors';
import {
  FrameKind, encodeFrame, encodeFrameHeader, frameHeaderBytes, maxFramePayloadBytes, maxHandshakePayloadBytes,
} from '../../src/replication/transport/frame';
import type { LinkRefusal, LinkTimings } from '../../src/replication/transport/link';
import { MessageType, helloCodec } from '../../src/replication/transport/messages';
import { PeerManager, maxUnauthenticatedLinks } from '../../src/replication/transport/peers';
import { loadLinkTls, type LinkTlsConfig } from '../../src/replication/transport/link-tls';
import { issueLinkCert, makePki } from '../support/certs';
import { tempDir } from '../support/tools';
import { FaultProxy } from '../support/fault-proxy';
import { RawSocket } from '../support/raw-socket';
import { waitFor } from '../support/wait';

const timings: LinkTimings = { heartbeatIntervalMs: 100, peerTimeoutMs: 600, handshakeTimeoutMs: 1000, requestTimeoutMs: 3000 };
const secret = Buffer.from('a-shared-cluster-secret-of-some-length');
const managers: PeerManager[] = [];
const proxies: FaultProxy[] = [];

after(async () => {
  for (const p of proxies) await p.close();
  for (const m of managers) await m.close();
});

interface Managed {
  m: PeerManager;
  port: number;
  ups: string[];
  downs: string[];
  refusals: LinkRefusal[];
}

/** `key` null: a node without a cluster secret. */
async function manager(node: string, key: Buffer | null = secret, tls?: LinkTlsConfig): Promise<Managed> {
  const m = new PeerManager(node, key ?? undefined, timings, silentLogger(), tls);
  managers.push(m);
  const ups: string[] = [];
  const downs: string[] = [];
  const refusals: LinkRefusal[] = [];
  m.on('peer-up', (n: string) => ups.push(n));
  m.on('peer-down', (n: string) => downs.push(n));
  m.refusalObserver = (r) => refusals.push(r);
  m.requestHandler = async (type, payload) => {
    if (type === MessageType.Flush) throw new TricopyError('conflict', 'refused on purpose', 'a hint');
    return Buffer.concat([Buffer.from(`${node}:`), payload]);
  };
  const port = await m.listen('127.0.0.1', 0);
  return { m, port, ups, downs, refusals };
}

const hello = (node = 'intruder'): Buffer =>
  encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 }, helloCodec.encode({ protocol: 1, node, nonce: 'n' }));

test('peers authenticate each other, exchange requests and errors', async () => {
  const a = await manager('alpha');
  const b = await manager('beta');
  a.m.want({ node: 'beta', host: '127.0.0.1', replPort: b.port });
  await waitFor('link up on both sides', () => a.m.isUp('beta') && b.m.isUp('alpha'));
  assert.equal((await a.m.request('beta', MessageType.Write, Buffer.from('ping'))).toString(), 'beta:ping');
  assert.equal((await b.m.request('alpha', MessageType.Write, [Buffer.from('po'), Buffer.from('ng')])).toString(), 'alpha:pong');
  await assert.rejects(a.m.request('beta', MessageType.Flush, Buffer.alloc(0)),
    (e: TricopyError) => e.code === 'conflict' && /node beta: refused on purpose/.test(e.message) && e.hint === 'a hint');
  const big = randomBytes(8 * 1024 * 1024);
  assert.ok((await a.m.request('beta', MessageType.Write, big)).subarray(5).equals(big), 'large payloads arrive intact');
});

test('frames of every size arrive whole and in order both ways, read straight into their buffers or not', async () => {
  // The acceptor's socket is moved onto a fixed receive buffer and the dialer's made with one
  // (common/fast-socket.ts); payloads of 64 KiB or more are read straight into their own buffers.
  // Sizes around that threshold and the receive buffer, many in flight at once, both directions,
  // once directly and once through the fault proxy (which passes the bytes on in other chunks).
  const a = await manager('dr-a');
  const b = await manager('dr-b');
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: a.port });
  proxies.push(proxy);
  const c = await manager('dr-c');
  b.m.want({ node: 'dr-a', host: '127.0.0.1', replPort: a.port });
  c.m.want({ node: 'dr-a', host: '127.0.0.1', replPort: proxy.port });
  await waitFor('links up', () => b.m.isUp('dr-a') && a.m.isUp('dr-b') && c.m.isUp('dr-a') && a.m.isUp('dr-c'));
  const sizes = [0, 3, 64 * 1024 - 1, 64 * 1024, 64 * 1024 + 1, 70_000, 256 * 1024, 256 * 1024 + 7, 1024 * 1024, 5 * 1024 * 1024 + 3];
  const pairs: Array<[PeerManager, string, string]> = [[b.m, 'dr-a', 'dr-a'], [a.m, 'dr-b', 'dr-b'], [c.m, 'dr-a', 'dr-a'], [a.m, 'dr-c', 'dr-c']];
  for (const [from, to, answerer] of pairs) {
    const payloads = [...sizes, ...sizes.slice().reverse()].map((n) => randomBytes(n));
    const answers = await Promise.all(payloads.map((p) => from.request(to, MessageType.Write, p)));
    answers.forEach((answer, i) => {
      assert.equal(answer.subarray(0, answerer.length + 1).toString(), `${answerer}:`);
      assert.ok(answer.subarray(answerer.length + 1).equals(payloads[i]!), `${payloads[i]!.length} bytes to ${to} came back whole`);
    });
  }
});

test('a peer with the wrong cluster secret is refused, in both directions', async () => {
  const good = await manager('good');
  const evil = await manager('evil', Buffer.from('not-the-cluster-secret-at-all!!'));
  evil.m.want({ node: 'good', host: '127.0.0.1', replPort: good.port });
  good.m.want({ node: 'evil', host: '127.0.0.1', replPort: evil.port });
  // Give both several dial attempts.
  await new Promise((r) => setTimeout(r, 1500));
  assert.ok(!good.m.isUp('evil') && !evil.m.isUp('good'));
  assert.deepEqual(good.ups, []);
  assert.deepEqual(evil.ups, []);
  // Each side refuses the other's proof when it dials, and names the node it reached.
  assert.ok(good.refusals.some((r) => r.reason === 'wrong-secret' && r.side === 'dialer' && r.claimedNode === 'evil' && r.remoteAddress === '127.0.0.1'),
    JSON.stringify(good.refusals));
  assert.ok(evil.refusals.some((r) => r.reason === 'wrong-secret' && r.side === 'dialer'));
  good.m.release('evil');
  evil.m.release('good');
});

test('a black-holed link is declared dead by heartbeats and comes back by itself', async () => {
  const a = await manager('hb-a');
  const b = await manager('hb-b');
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: b.port });
  proxies.push(proxy);
  a.m.want({ node: 'hb-b', host: '127.0.0.1', replPort: proxy.port });
  await waitFor('link up', () => a.m.isUp('hb-b'));
  const started = Date.now();
  proxy.blackhole();
  await waitFor('peer declared down', () => a.downs.includes('hb-b'), { timeoutMs: 5000 });
  const detectedMs = Date.now() - started;
  assert.ok(detectedMs >= timings.peerTimeoutMs - 150, `not before the timeout (${detectedMs} ms)`);
  await assert.rejects(a.m.request('hb-b', MessageType.Write, Buffer.alloc(1)), /not connected/);
  proxy.restore();
  await waitFor('link back after restore', () => a.m.isUp('hb-b'), { timeoutMs: 10_000 });
  assert.equal((await a.m.request('hb-b', MessageType.Write, Buffer.from('x'))).toString(), 'hb-b:x');
});

test('garbage, truncated and unauthenticated frames on the replication port are refused without harm, each with its reason', async () => {
  const a = await manager('rx-a');
  const b = await manager('rx-b');
  a.m.want({ node: 'rx-b', host: '127.0.0.1', replPort: b.port });
  await waitFor('link up', () => a.m.isUp('rx-b'));
  const attempts: Array<[string, (s: RawSocket) => void]> = [
    ['bad-frame', (s) => s.send(Buffer.concat([Buffer.from('XXXX'), randomBytes(200)]))],
    ['unauthenticated-message', (s) => s.send(encodeFrame({ kind: FrameKind.Request, type: MessageType.Write, requestId: 1, status: 0 }, Buffer.from('data')))],
    ['unauthenticated-message', (s) => s.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Auth, requestId: 0, status: 0 }, Buffer.from('{"proof":"00"}')))],
    ['malformed-handshake', (s) => s.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 }, Buffer.from('{"bad":')))],
    ['bad-checksum', (s) => {
      const f = hello();
      f[f.length - 1] ^= 0xff;
      s.send(f);
    }],
    // A well-formed hello, then an authentication proof computed with the wrong secret.
    ['wrong-secret', (s) => s.send(hello(), encodeFrame({ kind: FrameKind.Message, type: MessageType.Auth, requestId: 0, status: 0 }, Buffer.from('{"proof":"00"}')))],
    // Before authentication, a frame is refused on its header: the node does not wait for 34 MiB.
    ['oversized-frame', (s) => s.send(encodeFrameHeader({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0,
      payloadLength: maxFramePayloadBytes }, Buffer.alloc(0)), Buffer.alloc(1000))],
    ['oversized-frame', (s) => s.send(encodeFrameHeader({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0,
      payloadLength: maxHandshakePayloadBytes + 1 }, Buffer.alloc(0)))],
    ['handshake-timeout', (s) => s.send(Buffer.alloc(frameHeaderBytes - 3))], // truncated header, then silence
    ['closed-before-auth', (s) => s.socket.end()],
  ];
  for (const [reason, attempt] of attempts) {
    const s = await RawSocket.connect(b.port);
    const localPort = s.socket.localPort;
    const before = b.refusals.length;
    attempt(s);
    // Refusals on the header need no deadline: only the handshake timeout waits.
    assert.ok(await s.closesWithin(reason === 'handshake-timeout' ? 3000 : 500), `the connection is closed (${reason})`);
    await waitFor(`refusal ${reason} reported`, () => b.refusals.length > before);
    assert.equal(b.refusals.length, before + 1, 'one refusal per connection');
    const refusal = b.refusals.at(-1)!;
    assert.equal(refusal.reason, reason, refusal.detail);
    assert.equal(refusal.side, 'acceptor');
    assert.equal(refusal.remoteAddress, '127.0.0.1');
    assert.equal(refusal.remotePort, localPort);
  }
  assert.equal(b.refusals.find((r) => r.reason === 'wrong-secret')!.claimedNode, 'intruder', 'the refusal names the node the peer claimed to be');
  assert.ok(!b.ups.includes('intruder'));
  assert.equal((await a.m.request('rx-b', MessageType.Write, Buffer.from('still'))).toString(), 'rx-b:still', 'the real peer is unaffected');
  assert.deepEqual(a.refusals, [], 'the real peer saw nothing to refuse');
});

test('connections in their handshake are limited apart from authenticated links', async () => {
  const a = await manager('lim-a');
  const b = await manager('lim-b');
  a.m.want({ node: 'lim-b', host: '127.0.0.1', replPort: b.port });
  await waitFor('link up', () => a.m.isUp('lim-b'));
  const silent = await Promise.all(Array.from({ length: maxUnauthenticatedLinks }, () => RawSocket.connect(b.port)));
  await waitFor('every silent connection accepted', () => b.m.connectedPeers().length === 1 && silent.every((s) => !s.socket.destroyed));
  const extra = await RawSocket.connect(b.port);
  assert.ok(await extra.closesWithin(timings.handshakeTimeoutMs / 3), 'a connection over the handshake limit is closed at once, not at its deadline');
  await waitFor('refused as one too many', () => b.refusals.some((r) => r.reason === 'too-many-connections'));
  assert.ok(!silent.some((s) => s.socket.destroyed), 'the connections within the limit stay (until their handshake deadline)');
  assert.equal((await a.m.request('lim-b', MessageType.Write, Buffer.from('up'))).toString(), 'lim-b:up', 'the authenticated link is not affected');
  // The handshake deadline frees the places: a new peer gets in.
  for (const s of silent) assert.ok(await s.closesWithin(3000));
  const c = await manager('lim-c');
  c.m.want({ node: 'lim-b', host: '127.0.0.1', replPort: b.port });
  await waitFor('a new peer authenticates once the places are free', () => c.m.isUp('lim-b'), { timeoutMs: 5000 });
  assert.equal(b.refusals.filter((r) => r.reason === 'handshake-timeout').length, maxUnauthenticatedLinks);
  c.m.release('lim-b');
});

test('a node without a cluster secret refuses replication connections', async () => {
  const lone = await manager('lone', null);
  const s = await RawSocket.connect(lone.port);
  assert.ok(await s.closesWithin(3000));
  await waitFor('refusal reported', () => lone.refusals.length === 1);
  assert.equal(lone.refusals[0]!.reason, 'no-secret');
});

/** TLS configurations by name, made before any link is up (openssl runs would slow the heartbeats of live links). */
const tlsConfs = new Map<string, LinkTlsConfig>();
let tlsDir = '';

before(async () => {
  tlsDir = await tempDir('repl-tls');
  const pki = await makePki(path.join(tlsDir, 'ca'), []);
  const other = await makePki(path.join(tlsDir, 'other'), []);
  const conf = async (ca: typeof pki, name: string, trust = pki): Promise<void> => {
    const { cert, key } = await issueLinkCert(ca, name);
    tlsConfs.set(name, (await loadLinkTls({ mode: 'required', cert, key, ca: trust.caCert }))!);
  };
  await conf(pki, 'tls-a');
  await conf(pki, 'tls-b');
  await conf(other, 'stranger', pki); // another CA signed it; it trusts ours
  await conf(pki, 'wary', other); // ours signed it; it trusts another CA
});

after(async () => {
  await fsp.rm(tlsDir, { recursive: true, force: true });
});

test('mutual TLS between nodes: links come up inside TLS; plain and foreign-CA peers are refused, and a waiting dialer is told why', async () => {
  const conf = (name: string): LinkTlsConfig => tlsConfs.get(name)!;
  const a = await manager('tls-a', secret, conf('tls-a'));
  const b = await manager('tls-b', secret, conf('tls-b'));
  await a.m.connectNow({ node: 'tls-b', host: '127.0.0.1', replPort: b.port }, 5000);
  assert.equal((await a.m.request('tls-b', MessageType.Write, Buffer.from('secret data'))).toString(), 'tls-b:secret data');
  // A plain node is refused before the link handshake.
  const plain = await manager('plain');
  await assert.rejects(plain.m.connectNow({ node: 'tls-b', host: '127.0.0.1', replPort: b.port }, 1500), /not reachable/);
  await waitFor('tls-required refusal', () => b.refusals.some((r) => r.reason === 'tls-required'));
  // A node whose certificate another CA signed (it trusts ours) is refused by name.
  const stranger = await manager('stranger', secret, conf('stranger'));
  await assert.rejects(stranger.m.connectNow({ node: 'tls-b', host: '127.0.0.1', replPort: b.port }, 1500));
  await waitFor('tls-failed refusal', () => b.refusals.some((r) => r.reason === 'tls-failed' && /CN=stranger\) is not trusted/.test(r.detail)));
  // A node that trusts another CA refuses our server at once, with a hint, instead of timing out.
  const wary = await manager('wary', secret, conf('wary'));
  await assert.rejects(wary.m.connectNow({ node: 'tls-b', host: '127.0.0.1', replPort: b.port }, 10_000),
    (e: TricopyError) => /the link was refused: TLS handshake with the peer failed/.test(e.message) && /same CA/.test(e.hint ?? ''));
  assert.ok(a.m.isUp('tls-b'), 'the TLS link is untouched');
});
