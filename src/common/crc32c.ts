// crc32c (Castagnoli), the checksum of every replication frame and journal entry. One place wraps
// the native implementation so callers never depend on it directly.
import { crc32c as nativeCrc32c } from '@node-rs/crc32';

/** crc32c of `data`, continuing from `previous` when checksumming a message in pieces. */
export function crc32c(data: Uint8Array, previous = 0): number {
  return nativeCrc32c(Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength), previous) >>> 0;
}
