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
  /** crc32c of the data (or pieces back to back) continuing from `previous`; absent without SSE4.2. */
  crc32c?: (data: Uint8Array | readonly Uint8Array[], previous: number) => number;
}

export const maxNativePieces = 64;

/** The file the build writes, from dist/src/common. */
export const nativeAddonFile = path.join(__dirname, '..', '..', '..', 'native', 'volio', 'build', 'Release', 'volio.node');

function load(): NativeIo | undefined {
  if (process.env.TRICOPY_NATIVE === '0') return undefined;
  try {
    return require(nativeAddonFile) as NativeIo;
  } catch {
    return undefined;
  }
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
