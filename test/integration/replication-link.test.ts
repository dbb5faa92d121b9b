// The node-to-node link in process: mutual authentication, requests, heartbeats through a
// black-holed link, reconnection, and hostile bytes on the replication port.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { silentLogger } from '../../src/common/log';
import { TricopyError } from '../../src/common/errors';
import { FrameKind, encodeFrame, frameHeaderBytes } from '../../src/replication/transport/frame';
import type { LinkTimings } from '../../src/replication/transport/link';
import { MessageType, helloCodec } from '../../src/replication/transport/messages';
import { PeerManager } from '../../src/replication/transport/peers';
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

async function manager(node: string, key: Buffer | undefined = secret): Promise<{ m: PeerManager; port: number; ups: string[]; downs: string[] }> {
  const m = new PeerManager(node, key, timings, silentLogger());
  managers.push(m);
  const ups: string[] = [];
  const downs: string[] = [];
  m.on('peer-up', (n: string) => ups.push(n));
  m.on('peer-down', (n: string) => downs.push(n));
  m.requestHandler = async (type, payload) => {
    if (type === MessageType.Flush) throw new TricopyError('conflict', 'refused on purpose', 'a hint');
    return Buffer.concat([Buffer.from(`${node}:`), payload]);
  };
  const port = await m.listen('127.0.0.1', 0);
  return { m, port, ups, downs };
}

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

test('garbage, truncated and unauthenticated frames on the replication port are refused without harm', async () => {
  const a = await manager('rx-a');
  const b = await manager('rx-b');
  a.m.want({ node: 'rx-b', host: '127.0.0.1', replPort: b.port });
  await waitFor('link up', () => a.m.isUp('rx-b'));
  const attempts: Array<(s: RawSocket) => void> = [
    (s) => s.send(randomBytes(200)),
    (s) => s.send(encodeFrame({ kind: FrameKind.Request, type: MessageType.Write, requestId: 1, status: 0 }, Buffer.from('data'))),
    (s) => s.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 }, Buffer.from('{"bad":'))),
    (s) => {
      const f = encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 },
        helloCodec.encode({ protocol: 1, node: 'intruder', nonce: 'n' }));
      f[f.length - 1] ^= 0xff;
      s.send(f);
    },
    (s) => {
      // A well-formed hello, then an authentication proof computed with the wrong secret.
      s.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0 },
        helloCodec.encode({ protocol: 1, node: 'intruder', nonce: 'n' })));
      s.send(encodeFrame({ kind: FrameKind.Message, type: MessageType.Auth, requestId: 0, status: 0 }, Buffer.from('{"proof":"00"}')));
    },
    (s) => s.send(Buffer.alloc(frameHeaderBytes - 3)), // truncated header, then silence: handshake timeout
  ];
  for (const attempt of attempts) {
    const s = await RawSocket.connect(b.port);
    attempt(s);
    assert.ok(await s.closesWithin(3000), 'the connection is closed');
  }
  assert.ok(!b.ups.includes('intruder'));
  assert.equal((await a.m.request('rx-b', MessageType.Write, Buffer.from('still'))).toString(), 'rx-b:still', 'the real peer is unaffected');
});

test('a node without a cluster secret refuses replication connections', async () => {
  const lone = await manager('lone', undefined);
  const s = await RawSocket.connect(lone.port);
  assert.ok(await s.closesWithin(3000));
});
