// Plain TCP sockets that read into one fixed buffer (Node's `onread` option) instead of allocating
// a fresh 64 KiB buffer per read: larger reads and no garbage on the bulk-data paths. Node offers
// `onread` only for sockets it creates, so an accepted socket's handle is moved into a new Socket.
import * as net from 'node:net';

export const defaultReceiveBufferBytes = 256 * 1024;

type HandleOwner = { _handle: unknown };

/**
 * Re-homes an accepted socket (created with `pauseOnConnect: true`) onto a Socket that delivers
 * data as `onRead(view)`; `view` is only valid during the call. Returns undefined if the handle
 * cannot be moved (the caller keeps using the socket as it is).
 */
export function adoptWithReceiveBuffer(socket: net.Socket, onRead: (view: Buffer) => void,
  receiveBufferBytes = defaultReceiveBufferBytes): net.Socket | undefined {
  const owner = socket as unknown as HandleOwner;
  const handle = owner._handle;
  if (!handle || socket.destroyed) return undefined;
  owner._handle = null;
  const buffer = Buffer.allocUnsafe(receiveBufferBytes);
  const adopted = new net.Socket({
    handle,
    onread: { buffer, callback: (n: number) => { onRead(buffer.subarray(0, n)); } },
  } as net.SocketConstructorOpts);
  return adopted;
}
