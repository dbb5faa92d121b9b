// Differential records on the wire: a pair's bitmap as base64 in JSON control messages, checked
// against this side's geometry when it arrives.
import { TricopyError } from '../../common/errors';
import type { PersistentBitmap } from '../../volume/bitmap';

export function encodeBitmap(b: PersistentBitmap | Uint8Array): string {
  const bytes = b instanceof Uint8Array ? b : b.snapshot();
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export function decodeBitmap(text: string, like: PersistentBitmap): Uint8Array {
  const bytes = Buffer.from(text, 'base64');
  const expected = like.snapshot().length;
  if (bytes.length !== expected) {
    throw new TricopyError('conflict', `the peer's differential record has ${bytes.length} bytes, this one ${expected}: the volumes differ in size`);
  }
  return new Uint8Array(bytes);
}
