// crc32c (Castagnoli), the checksum of every replication frame and journal entry. One place wraps
// the implementations so callers never depend on one directly: the native addon's (the CPU's crc32
// instruction, several pieces per call) when it is built and the CPU has SSE4.2, else
// @node-rs/crc32's.
import { crc32c as nodeRsCrc32c } from '@node-rs/crc32';
import { nativeIo } from './native-io';

const native = nativeIo?.crc32c;

/** crc32c of `data`, continuing from `previous` when checksumming a message in pieces. */
export function crc32c(data: Uint8Array, previous = 0): number {
  if (native) return native(data, previous);
  return nodeRsCrc32c(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength), previous) >>> 0;
}

/** crc32c of `pieces` back to back, continuing from `previous`. */
export function crc32cOf(pieces: readonly Uint8Array[], previous = 0): number {
  if (native) return native(pieces, previous);
  let crc = previous;
  for (const piece of pieces) crc = crc32c(piece, crc);
  return crc;
}
