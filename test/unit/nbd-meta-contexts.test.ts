// Metadata contexts of the NBD server as pure functions and bytes: which contexts LIST and SET
// answer, their ids, descriptors from a device's runs, and a two-context block status reply.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as codec from '../../src/nbd/codec';
import * as c from '../../src/nbd/constants';
import { availableContexts, descriptorsFromRuns, matchContexts } from '../../src/nbd/meta-contexts';

const available = availableContexts(['qemu:dirty-bitmap:nightly', 'qemu:dirty-bitmap:weekly', 'qemu:dirty-bitmap:nightly', 'no-namespace']);

test('the export offers base:allocation and each device context once', () => {
  assert.deepEqual(available, ['base:allocation', 'qemu:dirty-bitmap:nightly', 'qemu:dirty-bitmap:weekly']);
  assert.deepEqual(availableContexts(undefined), ['base:allocation']);
});

test('LIST: no query lists all; a namespace or a prefix ending in ":" lists what it starts; ids are 0', () => {
  const names = (queries: string[]): string[] => {
    const r = matchContexts(available, queries, false);
    assert.ok(r.ok);
    assert.ok(r.contexts.every((x) => x.id === 0));
    return r.contexts.map((x) => x.name);
  };
  assert.deepEqual(names([]), available);
  assert.deepEqual(names(['base:']), ['base:allocation']);
  assert.deepEqual(names(['qemu:']), ['qemu:dirty-bitmap:nightly', 'qemu:dirty-bitmap:weekly']);
  assert.deepEqual(names(['qemu:dirty-bitmap:']), ['qemu:dirty-bitmap:nightly', 'qemu:dirty-bitmap:weekly']);
  assert.deepEqual(names(['qemu:dirty-bitmap:weekly', 'x-other:thing']), ['qemu:dirty-bitmap:weekly']);
});

test('SET: exact names only, unknown ones ignored, base:allocation keeps id 1 and the others get their own', () => {
  const r = matchContexts(available, ['qemu:dirty-bitmap:weekly', 'base:allocation', 'qemu:', 'qemu:dirty-bitmap:gone'], true);
  assert.ok(r.ok);
  assert.deepEqual(r.contexts, [{ id: 1, name: 'base:allocation' }, { id: 4, name: 'qemu:dirty-bitmap:weekly' }]);
  const none = matchContexts(available, [], true);
  assert.ok(none.ok && none.contexts.length === 0, 'no query selects nothing');
  const bad = matchContexts(available, ['nocolon'], true);
  assert.equal(bad.ok, false);
});

test('descriptors end at the request, merge equal flags and honour REQ_ONE', () => {
  const runs = [{ length: 100, flags: 1 }, { length: 50, flags: 1 }, { length: 200, flags: 0 }, { length: 10, flags: 1 }];
  assert.deepEqual(descriptorsFromRuns(runs, 300, false, 100), [{ length: 150, flags: 1 }, { length: 150, flags: 0 }]);
  assert.deepEqual(descriptorsFromRuns(runs, 300, true, 1), [{ length: 100, flags: 1 }]);
  assert.deepEqual(descriptorsFromRuns(runs, 40, true, 1), [{ length: 40, flags: 1 }]);
  assert.deepEqual(descriptorsFromRuns(runs, 1000, false, 2), [{ length: 150, flags: 1 }, { length: 200, flags: 0 }]);
});

test('a block status reply for two contexts is two chunks, only the last with DONE', () => {
  const cookie = 0x1122334455667788n;
  const first = codec.encodeBlockStatus(cookie, 1, [{ length: 65536, flags: c.STATE_HOLE | c.STATE_ZERO }], false);
  const second = codec.encodeBlockStatus(cookie, 2, [{ length: 4096, flags: 1 }, { length: 61440, flags: 0 }], true);
  const bytes = Buffer.concat([first, second]);
  const a = codec.decodeReply(bytes);
  assert.ok(a.ok && a.value && a.value.kind === 'structured');
  assert.equal(a.value.type, c.REPLY_TYPE_BLOCK_STATUS);
  assert.equal(a.value.flags & c.REPLY_FLAG_DONE, 0);
  assert.equal(a.value.cookie, cookie);
  assert.deepEqual([...a.value.payload], [0, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 3]);
  const b = codec.decodeReply(bytes.subarray(a.value.bytes));
  assert.ok(b.ok && b.value && b.value.kind === 'structured');
  assert.equal(b.value.flags & c.REPLY_FLAG_DONE, c.REPLY_FLAG_DONE);
  assert.deepEqual([...b.value.payload], [0, 0, 0, 2, 0, 0, 0x10, 0, 0, 0, 0, 1, 0, 0, 0xf0, 0, 0, 0, 0, 0]);
  assert.equal(a.value.bytes + b.value.bytes, bytes.length);
});

test('REP_META_CONTEXT carries the id and the name', () => {
  assert.deepEqual([...codec.encodeRepMetaContext(3, 'qemu:dirty-bitmap:a')].slice(0, 4), [0, 0, 0, 3]);
  assert.equal(codec.encodeRepMetaContext(3, 'qemu:dirty-bitmap:a').subarray(4).toString(), 'qemu:dirty-bitmap:a');
});
