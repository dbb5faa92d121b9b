// Sockets that read into a fixed buffer or straight into the owner's payload buffer (fast-socket.ts),
// over real loopback TCP: every byte arrives where it should, and the receive low-water mark raised
// while a payload is awaited never leaves the socket waiting for bytes that are not coming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { randomBytes } from 'node:crypto';
import { adoptWithReceiveBuffer } from '../../src/common/fast-socket';
import { waitFor } from '../support/wait';

interface Receiver {
  payload: Buffer;
  fill: number;
  /** Bytes that came through the fixed buffer (after the payload). */
  rest: Buffer[];
}

async function connectedPair(payloadBytes: number): Promise<{ receiver: Receiver; client: net.Socket; close: () => void }> {
  const receiver: Receiver = { payload: Buffer.alloc(payloadBytes), fill: 0, rest: [] };
  let adopted: net.Socket | undefined;
  const server = net.createServer({ pauseOnConnect: true }, (socket) => {
    adopted = adoptWithReceiveBuffer(socket, (view) => receiver.rest.push(Buffer.from(view)), 64 * 1024, {
      next: () => (receiver.fill < payloadBytes ? receiver.payload.subarray(receiver.fill) : undefined),
      filled: (n) => void (receiver.fill += n),
      awaiting: () => payloadBytes - receiver.fill,
    });
    assert.ok(adopted, 'the accepted socket is adopted');
    adopted.resume();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  await new Promise<void>((resolve) => client.once('connect', resolve));
  await waitFor('the server side is adopted', () => adopted !== undefined);
  return { receiver, client, close: () => {
    client.destroy();
    adopted?.destroy();
    server.close();
  } };
}

test('a payload read straight into its buffer arrives whole, and what follows it is still read', async () => {
  const payload = randomBytes(768 * 1024);
  const { receiver, client, close } = await connectedPair(payload.length);
  try {
    // Reading has begun before the rest is sent: the mark set then must be what is still missing,
    // not what was missing before that read (the socket would never wake again).
    client.write(payload.subarray(0, 100 * 1024));
    await waitFor('reading begins', () => receiver.fill > 0, { timeoutMs: 10_000, intervalMs: 5 });
    for (let at = 100 * 1024; at < payload.length; at += 200 * 1024) client.write(payload.subarray(at, Math.min(payload.length, at + 200 * 1024)));
    await waitFor('the whole payload is read', () => receiver.fill === payload.length, { timeoutMs: 10_000, intervalMs: 5 });
    assert.ok(receiver.payload.equals(payload));
    // Nothing is awaited any more: a few bytes alone must wake the reader.
    client.write(Buffer.from('tail'));
    await waitFor('bytes after the payload are read', () => Buffer.concat(receiver.rest).toString() === 'tail', { timeoutMs: 10_000, intervalMs: 5 });
  } finally {
    close();
  }
});
