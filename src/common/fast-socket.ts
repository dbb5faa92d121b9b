// Plain TCP sockets that read into one fixed buffer (Node's `onread` option) instead of allocating
// a fresh 64 KiB buffer per read: larger reads and no garbage on the bulk-data paths. The owner may
// also name where the next read should land instead (the rest of a large payload), so those bytes
// go from the kernel straight to their final buffer without a copy. Node offers `onread` only for
// sockets it creates, so an accepted socket's handle is moved into a new Socket.
// While a direct read awaits the rest of a large payload, the socket's receive low-water mark
// (SO_RCVLOWAT, through the native addon where it is built) is raised to what is still missing, so
// the event loop wakes once for it rather than for every burst of segments: each wake is a read
// and a JavaScript callback, 2.7 of them per 1 MiB write before.
import * as net from 'node:net';
import { nativeIo } from './native-io';

export const defaultReceiveBufferBytes = 256 * 1024;
/**
 * The most a low-water mark asks for: more would only grow the kernel's receive buffer (it makes
 * room for twice the mark), and the kernel wakes the reader anyway when memory runs short.
 */
export const maxReceiveLowWaterBytes = 1024 * 1024;

type HandleOwner = { _handle: unknown };
type SetLowWater = (fd: number, bytes: number) => number;

/** Reads that land in the owner's buffers instead of the fixed one. */
export interface DirectReads {
  /** Where the next read should land (asked after every read), or undefined for the fixed buffer. */
  next(): Buffer | undefined;
  /** `n` bytes were read into the buffer the last `next()` gave. */
  filled(n: number): void;
  /**
   * Bytes the next direct reads are sure to receive (the rest of the payload next() points into),
   * 0 when next() would give undefined.
   */
  awaiting(): number;
}

/**
 * Re-homes an accepted socket (created with `pauseOnConnect: true`) onto a Socket that delivers
 * data as `onRead(view)`; `view` is only valid during the call. Returns undefined if the handle
 * cannot be moved (the caller keeps using the socket as it is).
 */
export function adoptWithReceiveBuffer(socket: net.Socket, onRead: (view: Buffer) => void,
  receiveBufferBytes = defaultReceiveBufferBytes, direct?: DirectReads): net.Socket | undefined {
  const owner = socket as unknown as HandleOwner;
  const handle = owner._handle;
  if (!handle || socket.destroyed) return undefined;
  owner._handle = null;
  const fixed = Buffer.allocUnsafe(receiveBufferBytes);
  const keepLowWater = direct ? lowWaterKeeper(direct, handle) : undefined;
  const callback = (n: number, buffer: Uint8Array): void => {
    if (buffer === fixed) onRead(fixed.subarray(0, n));
    else direct!.filled(n);
    keepLowWater?.();
  };
  const adopted = new net.Socket({
    handle,
    onread: { buffer: direct ? () => direct.next() ?? fixed : fixed, callback },
  } as net.SocketConstructorOpts);
  return adopted;
}

/**
 * After each read: the low-water mark becomes what the direct target still lacks (1 when nothing
 * is awaited). Set after the read, never before it: a mark above what is still to come would leave
 * the socket unreadable for good.
 */
function lowWaterKeeper(direct: DirectReads, handle: unknown, setLowWater: SetLowWater | undefined = nativeIo?.setReceiveLowWater): (() => void) | undefined {
  const fd = (handle as { fd?: unknown }).fd;
  if (!setLowWater || typeof fd !== 'number' || fd < 0) return undefined;
  const set = setLowWater;
  let mark = 1;
  let working = true;
  return () => {
    if (!working) return;
    const bytes = Math.max(1, Math.min(direct.awaiting(), maxReceiveLowWaterBytes));
    if (bytes === mark) return;
    if (set(fd, bytes) === 0) {
      mark = bytes;
      return;
    }
    // A failure only costs the extra wake-ups: back to the default mark, and left alone from then on.
    working = false;
    if (mark !== 1) set(fd, 1);
  };
}
