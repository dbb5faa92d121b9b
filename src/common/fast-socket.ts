// Plain TCP sockets that read into one fixed buffer (Node's `onread` option) instead of allocating
// a fresh 64 KiB buffer per read: larger reads and no garbage on the bulk-data paths. The owner may
// also name where the next read should land instead (the rest of a large payload), so those bytes
// go from the kernel straight to their final buffer without a copy. Node offers `onread` only for
// sockets it creates, so an accepted socket's handle is moved into a new Socket.
import * as net from 'node:net';

export const defaultReceiveBufferBytes = 256 * 1024;

type HandleOwner = { _handle: unknown };

/** Reads that land in the owner's buffers instead of the fixed one. */
export interface DirectReads {
  /** Where the next read should land (asked after every read), or undefined for the fixed buffer. */
  next(): Buffer | undefined;
  /** `n` bytes were read into the buffer the last `next()` gave. */
  filled(n: number): void;
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
  const callback = (n: number, buffer: Uint8Array): void => {
    if (buffer === fixed) onRead(fixed.subarray(0, n));
    else direct!.filled(n);
  };
  const adopted = new net.Socket({
    handle,
    onread: { buffer: direct ? () => direct.next() ?? fixed : fixed, callback },
  } as net.SocketConstructorOpts);
  return adopted;
}
