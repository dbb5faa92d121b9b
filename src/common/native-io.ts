// The optional native addon (native/volio, built by scripts/build-native.mjs at install): reads that
// take what the page cache holds without ever waiting for the disk (preadv2 RWF_NOWAIT), which Node's
// fs module cannot do, synchronous vectored writes, and a hardware crc32c. Absent (not built, another platform, or
// TRICOPY_NATIVE=0), the node runs on Node's fs module alone.
import * as os from 'node:os';
import * as path from 'node:path';

export interface NativeIo {
  /** Bytes read (0 at the end of the file), or -errno; -EAGAIN when the disk would have to be read. */
  preadNowait(fd: number, target: Uint8Array, offset: number, length: number, position: number): number;
  /** Bytes written (may be short), or -errno. At most `maxNativePieces` pieces. */
  pwritev(fd: number, pieces: readonly Uint8Array[], position: number): number;
  /** SO_RCVLOWAT of a TCP socket (epoll wakes once that many bytes are queued): 0 or -errno. */
  setReceiveLowWater?: (fd: number, bytes: number) => number;
  /** Keeps large allocations on glibc's heap for reuse (mallopt); false where that is not possible. */
  tuneMalloc(mmapThresholdBytes: number, trimThresholdBytes: number): boolean;
  /** crc32c of the data (or pieces back to back) continuing from `previous`; absent without SSE4.2. */
  crc32c?: (data: Uint8Array | readonly Uint8Array[], previous: number) => number;
}

export const maxNativePieces = 64;

/** The file the build writes, from dist/src/common. */
export const nativeAddonFile = path.join(__dirname, '..', '..', '..', 'native', 'volio', 'build', 'Release', 'volio.node');

/**
 * Allocations below this come from glibc's heap, not mmap (every payload buffer: at most 32 MiB),
 * and up to the trim threshold of freed memory stays in the process: fresh pages cost a page fault
 * each on first touch, which on this class of virtual machine made a new 1 MiB buffer cost 40 times
 * the copy into it (see native/volio/volio.c).
 */
const mallocMmapThresholdBytes = 32 * 1024 * 1024;
const mallocTrimThresholdBytes = 256 * 1024 * 1024;

function load(): NativeIo | undefined {
  if (process.env.TRICOPY_NATIVE === '0') return undefined;
  let addon: NativeIo;
  try {
    addon = require(nativeAddonFile) as NativeIo;
  } catch {
    return undefined;
  }
  addon.tuneMalloc(mallocMmapThresholdBytes, mallocTrimThresholdBytes);
  return addon;
}

export const nativeIo: NativeIo | undefined = load();

const errnoNames = new Map(Object.entries(os.constants.errno).map(([name, value]) => [value, name]));
export const EAGAIN = os.constants.errno.EAGAIN;
export const EOPNOTSUPP = os.constants.errno.EOPNOTSUPP;
export const EINVAL = os.constants.errno.EINVAL;

/** The error Node's fs module would have raised for `errno` (callers look at `code`). */
export function errnoError(errno: number, syscall: string): NodeJS.ErrnoException {
  const code = errnoNames.get(errno) ?? `E${errno}`;
  const err: NodeJS.ErrnoException = new Error(`${code}: ${syscall} failed`);
  err.code = code;
  err.errno = -errno;
  err.syscall = syscall;
  return err;
}
