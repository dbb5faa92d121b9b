// The fault-injecting proxy against a local echo server: forwarding and counters, cut, black hole,
// delay with ordering, FIN after delayed data, bandwidth limit, close, and a target that refuses connections.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { performance } from 'node:perf_hooks';
import { FaultProxy } from '../support/fault-proxy';
import { RawSocket } from '../support/raw-socket';
import { waitFor } from '../support/wait';

let echo: net.Server;
let echoPort = 0;
const echoSockets = new Set<net.Socket>();

before(async () => {
  echo = net.createServer((s) => {
    echoSockets.add(s);
    s.on('close', () => echoSockets.delete(s));
    s.on('error', () => undefined);
    s.pipe(s);
  });
  await new Promise<void>((resolve) => echo.listen(0, '127.0.0.1', resolve));
  echoPort = (echo.address() as net.AddressInfo).port;
});

after(async () => {
  for (const s of echoSockets) s.destroy();
  await new Promise<void>((resolve) => echo.close(() => resolve()));
});

async function withProxy(body: (proxy: FaultProxy) => Promise<void>): Promise<void> {
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: echoPort });
  try {
    await body(proxy);
  } finally {
    await proxy.close();
  }
}

async function roundTrip(socket: RawSocket, text: string): Promise<void> {
  socket.send(Buffer.from(text));
  assert.equal((await socket.read(text.length, 5_000)).toString(), text);
}

/** Like RawSocket.closesWithin, but clears its timer so the test process can exit promptly. */
async function closesWithin(socket: RawSocket, timeoutMs: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), timeoutMs)));
  try {
    return await Promise.race([socket.closed.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A connection made while cut: refused at connect, or accepted and closed soon after. */
async function closedQuickly(port: number, timeoutMs: number): Promise<boolean> {
  let socket: RawSocket;
  try {
    socket = await RawSocket.connect(port);
  } catch {
    return true;
  }
  return closesWithin(socket, timeoutMs);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

test('bytes flow both ways and are counted', () => withProxy(async (proxy) => {
  const c = await RawSocket.connect(proxy.port);
  await roundTrip(c, 'hello');
  await roundTrip(c, 'world!');
  assert.equal(proxy.connectionCount, 1);
  assert.deepEqual(proxy.bytesForwarded, { toTarget: 11, toClient: 11 });
  c.destroy();
  await waitFor('the proxied connection to go away', () => proxy.connectionCount === 0, { timeoutMs: 5_000 });
}));

test('cut() resets live connections and new ones until restore()', () => withProxy(async (proxy) => {
  const c = await RawSocket.connect(proxy.port);
  await roundTrip(c, 'before cut');
  proxy.cut();
  assert.equal(await closesWithin(c, 2_000), true, 'live connection severed');
  await waitFor('no live connections', () => proxy.connectionCount === 0, { timeoutMs: 5_000 });
  assert.equal(await closedQuickly(proxy.port, 2_000), true, 'new connection while cut is closed');
  assert.equal(proxy.connectionCount, 0);
  proxy.restore();
  const d = await RawSocket.connect(proxy.port);
  await roundTrip(d, 'after restore');
  d.destroy();
}));

test('blackhole() drops bytes without closing; restore() resumes the same connection', () => withProxy(async (proxy) => {
  const c = await RawSocket.connect(proxy.port);
  await roundTrip(c, 'ping');
  proxy.blackhole();
  c.send(Buffer.from('lost'));
  const late = await RawSocket.connect(proxy.port); // accepted, but black-holed too
  late.send(Buffer.from('late'));
  await sleep(300); // nothing may arrive within this window
  assert.equal(c.buffered, 0);
  assert.equal(late.buffered, 0);
  assert.equal(await closesWithin(c, 0), false);
  assert.deepEqual(proxy.bytesForwarded, { toTarget: 4, toClient: 4 });
  proxy.restore();
  // The dropped bytes are gone: the first thing echoed is what was sent after restore().
  await roundTrip(c, 'pong');
  await roundTrip(late, 'resumed');
  assert.equal(proxy.connectionCount, 2);
  c.destroy();
  late.destroy();
}));

test('stallAfterToClient() delivers to clients up to a byte count, holds the rest, and restore() delivers it in order', () => withProxy(async (proxy) => {
  const c = await RawSocket.connect(proxy.port);
  await roundTrip(c, 'ab');
  proxy.stallAfterToClient(proxy.bytesForwarded.toClient + 4);
  c.send(Buffer.from('0123456789'));
  await waitFor('the first 4 bytes back', () => c.buffered >= 4, { timeoutMs: 5_000 });
  await waitFor('all 10 bytes to the target', () => proxy.bytesForwarded.toTarget === 12, { timeoutMs: 5_000 });
  assert.equal(proxy.bytesForwarded.toClient, 2 + 4, 'never past the count');
  assert.equal(await closesWithin(c, 0), false, 'the connection stays open');
  proxy.restore();
  assert.equal((await c.read(10, 5_000)).toString(), '0123456789', 'the held bytes follow, in order');
  c.destroy();
}));

test('setDelay() delays each direction and keeps order across many small writes', () => withProxy(async (proxy) => {
  const delayMs = 200;
  const c = await RawSocket.connect(proxy.port);
  proxy.setDelay(delayMs);
  const startMs = performance.now();
  await roundTrip(c, 'x');
  const elapsedMs = performance.now() - startMs;
  assert.ok(elapsedMs >= 2 * delayMs - 5, `round trip took ${elapsedMs.toFixed(0)} ms, expected >= ${2 * delayMs}`);
  // Shrinking the delay while writing: later chunks are due earlier but must not overtake.
  let expected = '';
  for (let i = 0; i < 100; i++) {
    proxy.setDelay(delayMs - 2 * i);
    const part = `${i};`;
    expected += part;
    c.send(Buffer.from(part));
    await sleep(1); // spread the writes over separate chunks
  }
  assert.equal((await c.read(expected.length, 10_000)).toString(), expected);
  proxy.setDelay(0);
  await roundTrip(c, 'fast again');
  c.destroy();
}));

test('a FIN is passed on after the delayed data before it', () => withProxy(async (proxy) => {
  proxy.setDelay(150);
  const c = await RawSocket.connect(proxy.port);
  c.send(Buffer.from('last words'));
  c.socket.end(); // the echo server ends its side once it has echoed everything
  assert.equal((await c.read(10, 5_000)).toString(), 'last words');
  assert.equal(await closesWithin(c, 5_000), true);
  await waitFor('the proxied connection to go away', () => proxy.connectionCount === 0, { timeoutMs: 5_000 });
}));

test('setBandwidth() paces throughput', () => withProxy(async (proxy) => {
  const bytesPerSecond = 100_000;
  const payloadBytes = 50_000;
  proxy.setBandwidth(bytesPerSecond);
  const payload = Buffer.alloc(payloadBytes);
  for (let i = 0; i < payloadBytes; i++) payload[i] = (i * 7 + (i >> 8)) & 0xff;
  const c = await RawSocket.connect(proxy.port);
  const startMs = performance.now();
  c.send(payload);
  const echoed = await c.read(payloadBytes, 20_000);
  const elapsedMs = performance.now() - startMs;
  assert.ok(echoed.equals(payload), 'payload echoed intact and in order');
  assert.ok(elapsedMs >= 400, `50 KB at 100 KB/s took ${elapsedMs.toFixed(0)} ms`);
  assert.deepEqual(proxy.bytesForwarded, { toTarget: payloadBytes, toClient: payloadBytes });
  c.destroy();
}));

test('close() closes connections and releases the port', async () => {
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: echoPort });
  const port = proxy.port;
  const c = await RawSocket.connect(port);
  await roundTrip(c, 'hi');
  await proxy.close();
  assert.equal(await closesWithin(c, 2_000), true);
  const again = net.createServer();
  await new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.listen(port, '127.0.0.1', resolve);
  });
  await new Promise<void>((resolve) => again.close(() => resolve()));
});

test('a target that refuses connections closes the client', async () => {
  const unused = net.createServer();
  await new Promise<void>((resolve) => unused.listen(0, '127.0.0.1', resolve));
  const deadPort = (unused.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => unused.close(() => resolve()));
  const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: deadPort });
  try {
    const c = await RawSocket.connect(proxy.port);
    c.send(Buffer.from('anyone?'));
    assert.equal(await closesWithin(c, 5_000), true);
    await waitFor('no live connections', () => proxy.connectionCount === 0, { timeoutMs: 5_000 });
  } finally {
    await proxy.close();
  }
});
