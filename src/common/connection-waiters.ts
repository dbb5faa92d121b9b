// Waiters for TLS handshakes that a non-listening tls.Server runs on connections accepted
// elsewhere (NBD STARTTLS, replication links on a shared port): the server's events name the
// TLSSocket, not the raw connection, so both are matched by the peer address and port they share.
import type * as net from 'node:net';

export class ConnectionWaiters<T> {
  private readonly waiters = new Map<string, T>();

  set(socket: net.Socket, waiter: T): void {
    this.waiters.set(connectionKey(socket), waiter);
  }

  /** The waiter of this connection, removed; undefined when none waits (any more). */
  take(socket: net.Socket): T | undefined {
    const key = connectionKey(socket);
    const waiter = this.waiters.get(key);
    this.waiters.delete(key);
    return waiter;
  }
}

/** A live TCP connection is identified by its peer address and port. */
function connectionKey(socket: net.Socket): string {
  return `${socket.remoteAddress ?? '?'}|${socket.remotePort ?? 0}`;
}
