// The outgoing bytes of one connection (a replication link, an NBD client), gathered per event-loop
// turn. Headers and small payloads are copied into one buffer that leaves in a single socket write
// when the turn ends: Node's stream machinery costs about a microsecond per write call, more than
// copying a few KiB, and a 4 KiB replicated write used to cost three calls (header, data header,
// data). Large payloads are written as they are, in order, without a copy.
import type * as net from 'node:net';

const slabBytes = 256 * 1024;
/** Pieces up to this size are copied; larger ones are handed to the socket as they are. */
export const copyMaxBytes = 64 * 1024;

export class SendBuffer {
  private slabValue = Buffer.allocUnsafeSlow(slabBytes);
  /** Bytes [start, at) are gathered and not yet handed to the socket. */
  private start = 0;
  private at = 0;
  private scheduled: NodeJS.Immediate | undefined;
  private readonly flushBound = (): void => {
    this.scheduled = undefined;
    this.flush();
  };

  constructor(private readonly socket: net.Socket) {}

  /** The buffer `reserve` returned an offset into. */
  get slab(): Buffer {
    return this.slabValue;
  }

  /**
   * Makes room for `n` contiguous bytes and returns their offset in `slab`; the caller fills them.
   * Read `slab` after this call: it may have started a new buffer.
   */
  reserve(n: number): number {
    if (this.at + n > this.slabValue.length) {
      this.flush();
      this.slabValue = Buffer.allocUnsafeSlow(Math.max(slabBytes, n));
      this.start = 0;
      this.at = 0;
    }
    const offset = this.at;
    this.at += n;
    this.flushSoon();
    return offset;
  }

  /**
   * Queues `piece` after everything queued before it. `onTaken` runs once nothing refers to `piece`
   * any more: at once when it was copied, else when the socket has written it.
   */
  append(piece: Buffer, onTaken?: () => void): void {
    if (piece.length <= copyMaxBytes) {
      if (piece.length > 0) {
        const offset = this.reserve(piece.length); // first: it may start a new buffer
        piece.copy(this.slabValue, offset);
      }
      onTaken?.();
      return;
    }
    this.flush();
    if (onTaken) this.socket.write(piece, onTaken);
    else this.socket.write(piece);
  }

  /** Hands what was gathered to the socket now (the slab's later bytes stay free for more). */
  flush(): void {
    if (this.scheduled) {
      // Nothing is left for it: a pending immediate would cost the event loop an extra turn.
      clearImmediate(this.scheduled);
      this.scheduled = undefined;
    }
    if (this.at === this.start) return;
    const region = this.slabValue.subarray(this.start, this.at);
    this.start = this.at;
    if (!this.socket.destroyed) this.socket.write(region);
  }

  private flushSoon(): void {
    if (this.scheduled) return;
    this.scheduled = setImmediate(this.flushBound);
  }
}
