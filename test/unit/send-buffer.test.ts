// The per-turn send buffer: whatever mix of reserved headers, copied pieces and large pieces written
// as they are, the socket receives exactly the bytes in the order they were queued, across buffer
// roll-overs; pieces are released once nothing refers to them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import type * as net from 'node:net';
import { SendBuffer, copyMaxBytes } from '../../src/common/send-buffer';

class FakeSocket {
  destroyed = false;
  readonly chunks: Buffer[] = [];
  write(chunk: Buffer, cb?: () => void): boolean {
    this.chunks.push(Buffer.from(chunk)); // what the socket would send now
    if (cb) setImmediate(cb);
    return true;
  }
}

test('bytes leave in queue order across buffer roll-overs, reserved headers included', async () => {
  const socket = new FakeSocket();
  const out = new SendBuffer(socket as unknown as net.Socket);
  const expected: Buffer[] = [];
  let released = 0;
  let appended = 0;
  for (let i = 0; i < 400; i++) {
    const header = randomBytes(32);
    const at = out.reserve(header.length);
    header.copy(out.slab, at);
    expected.push(header);
    const size = i % 50 === 0 ? copyMaxBytes + 1 + i : i % 7 === 0 ? 0 : 1 + ((i * 7919) % 9000);
    const piece = randomBytes(size);
    expected.push(piece);
    appended++;
    out.append(piece, () => released++);
    if (i % 97 === 0) await new Promise((r) => setImmediate(r)); // a turn ends now and then
  }
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
  assert.ok(Buffer.concat(socket.chunks).equals(Buffer.concat(expected)), 'the socket got exactly the queued bytes, in order');
  assert.equal(released, appended, 'every piece was released');
  assert.ok(socket.chunks.length < 60, `few socket writes (${socket.chunks.length})`);
});
