// The block interface every consumer of a volume uses: the NBD server serves it to hosts, and the
// replication layer wraps it to copy writes to other nodes. Nothing above this line knows whether a
// device is a plain volume or a replicated one.

/** Largest single read or write a device accepts (the NBD server's payload limit is this). */
export const maxIoBytes = 32 * 1024 * 1024;

export interface Extent {
  offset: number;
  length: number;
  /** Allocated in the backing store (false = hole). */
  allocated: boolean;
  /** Known to read as zeroes. */
  zero: boolean;
}

export interface WriteOptions {
  /** Force unit access: durable on stable storage before the promise resolves. */
  fua: boolean;
}

export interface ZeroOptions extends WriteOptions {
  /** The caller requires the range to stay allocated (NBD NO_HOLE). */
  noHole: boolean;
  /** Fail with ENOTSUP unless zeroing is cheaper than writing (NBD FAST_ZERO). */
  fastOnly: boolean;
}

/** A device error with the errno a block client should see. */
export class BlockDeviceError extends Error {
  constructor(
    readonly errno: 'EPERM' | 'EIO' | 'ENOSPC' | 'EINVAL' | 'ENOTSUP' | 'ESHUTDOWN' | 'EOVERFLOW',
    message: string,
  ) {
    super(message);
    this.name = 'BlockDeviceError';
  }
}

/** One run of a metadata context: `flags` mean what the context defines (NBD block status). */
export interface ContextRun {
  length: number;
  flags: number;
}

export interface BlockDevice {
  readonly name: string;
  readonly sizeBytes: number;
  /** Host writes are refused with EPERM (e.g. the secondary of an active pair). */
  readonly readOnly: boolean;

  /** Reads into `target` when given (at least `length` bytes), else into a new buffer. */
  read(offset: number, length: number, target?: Buffer): Promise<Buffer>;
  /**
   * Writes `data` (one buffer or consecutive pieces) at `offset`. The device must not keep a
   * reference to `data` once the promise settles: callers recycle the buffer.
   */
  write(offset: number, data: Buffer | Buffer[], options: WriteOptions): Promise<void>;
  writeZeroes(offset: number, length: number, options: ZeroOptions): Promise<void>;
  /** Advisory discard; contents of the range are undefined afterwards but nothing else changes. */
  trim(offset: number, length: number, options: WriteOptions): Promise<void>;
  /** Every write completed before this call is on stable storage when it resolves. */
  flush(): Promise<void>;
  /** Allocation status of consecutive extents from `offset`; at least one extent. */
  extents(offset: number, length: number, maxExtents: number): Extent[];
  /**
   * Metadata contexts the device offers besides allocation status, by their NBD names (for example
   * `qemu:dirty-bitmap:nightly`). Absent: none.
   */
  metaContexts?(): string[];
  /**
   * Consecutive runs of `context` from `offset` (at least one when the range is not empty), or
   * undefined when the device no longer offers that context.
   */
  contextRuns?(context: string, offset: number, length: number, maxRuns: number): ContextRun[] | undefined;
}

export function totalLength(data: Buffer | Buffer[]): number {
  if (Buffer.isBuffer(data)) return data.length;
  let total = 0;
  for (const piece of data) total += piece.length;
  return total;
}
