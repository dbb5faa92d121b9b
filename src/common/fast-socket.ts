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
import { invariant } from './errors';
import { nativeIo } from './native-io';

export const defaultReceiveBufferBytes = 256 * 1024;
/**
 * The most a low-water mark asks for: more would only grow the kernel's receive buffer (it makes
 * room for twice the mark), and the kernel wakes the reader anyway when memory runs short.
 */
export const maxReceiveLowWaterBytes = 1024 * 1024;

type HandleOwner = { _handle: unknown };
/** net.Socket's record of the server that accepted it (Node internals, as `_handle`). */
type ServerOwned = { _server: net.Server | null; server: net.Server | null };
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
  const sink = new ReceiveSink(receiveBufferBytes);
  sink.bind(onRead, direct, direct ? lowWaterKeeper(direct, handle) : undefined);
  const adopted = new net.Socket({ handle, onread: sink.onread } as net.SocketConstructorOpts);
  // The server counts its connections down when a socket closes: the new socket carries the count,
  // or net.Server's close callback would wait for a socket that never closes.
  const accepted = socket as unknown as ServerOwned;
  const moved = adopted as unknown as ServerOwned;
  moved._server = accepted._server;
  moved.server = accepted.server;
  accepted._server = null;
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

/**
 * The reading end of a socket that reads into a fixed buffer (Node's `onread`), and straight into
 * the owner's buffers where DirectReads says. An adopted socket uses one; a socket this process
 * dials gets `onread` from one at net.connect, and its reader is bound before the event loop turns
 * (nothing is read before the connection is made); it goes without the low-water mark, having no
 * descriptor yet when it is created.
 */
export class ReceiveSink {
  private readonly fixed: Buffer;
  private reader: { onRead: (view: Buffer) => void; direct: DirectReads | undefined; afterRead: (() => void) | undefined } | undefined;

  constructor(receiveBufferBytes = defaultReceiveBufferBytes) {
    this.fixed = Buffer.allocUnsafe(receiveBufferBytes);
  }

  /** The `onread` option of net.connect or a new net.Socket. */
  get onread(): net.OnReadOpts {
    return {
      buffer: () => this.reader?.direct?.next() ?? this.fixed,
      callback: (n, buffer) => {
        invariant(this.reader !== undefined, 'a socket is read only once its reader is bound');
        if (buffer === this.fixed) this.reader.onRead(this.fixed.subarray(0, n));
        else this.reader.direct!.filled(n);
        this.reader.afterRead?.();
        return true; // keep reading
      },
    };
  }

  /** `afterRead`: called after every read (the low-water mark follows what is still awaited). */
  bind(onRead: (view: Buffer) => void, direct?: DirectReads, afterRead?: () => void): void {
    invariant(this.reader === undefined, 'a receive sink has one reader');
    this.reader = { onRead, direct, afterRead };
  }
}
