// crc32c: the native (SSE4.2) implementation and @node-rs/crc32 agree on every length, alignment and
// split into pieces; the known check value holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { crc32c, crc32cOf } from '../../src/common/crc32c';
import { nativeIo } from '../../src/common/native-io';

test('crc32c of "123456789" is 0xe3069283', () => {
  assert.equal(crc32c(Buffer.from('123456789')), 0xe3069283);
  assert.equal(crc32cOf([Buffer.from('1234'), Buffer.from(''), Buffer.from('56789')]), 0xe3069283);
});

test('the native crc32c matches @node-rs/crc32 at every length, offset, split and starting value', { skip: !nativeIo?.crc32c && 'no native crc32c here' }, () => {
  const native = nativeIo!.crc32c!;
  for (let i = 0; i < 500; i++) {
    const all = randomBytes(1 + Math.floor(Math.random() * 9000));
    const data = all.subarray(Math.floor(Math.random() * Math.min(all.length, 9)));
    const previous = Math.floor(Math.random() * 2 ** 32);
    const expected = nodeRsCrc32c(data, previous) >>> 0;
    assert.equal(native(data, previous), expected);
    const cut = Math.floor(Math.random() * data.length);
    assert.equal(native([data.subarray(0, cut), data.subarray(cut)], previous), expected);
  }
});
