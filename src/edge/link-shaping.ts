// What a relay link does to the frames it carries, when the network file asks (spec 002 leaves the
// WAN to the operator; DRBD Proxy and WAN-optimised SRDF/A are bought for this): zstd compression of
// entry frames, and a bandwidth ceiling (a token bucket per link, so a relay never floods a WAN line
// it shares). The compressed form is only used when it is smaller; a receiver refuses a frame that
// does not state its size or would grow past the reassembly limit (a hostile peer cannot make it
// allocate without bound). zstd comes from zstd-napi, an optional dependency built from source at
// install: a relay where it did not build refuses a network that compresses its links, and says why.
import { TricopyError } from '../common/errors';

interface Zstd {
  compress(data: Uint8Array, parameters?: { compressionLevel?: number }): Buffer;
  decompress(data: Uint8Array): Buffer;
  getFrameContentSize(frame: Uint8Array): number | null;
}

let zstdModule: Zstd | Error | undefined;

/** The zstd binding, or why it cannot be used here. */
export function zstd(): Zstd {
  if (zstdModule === undefined) {
    try {
      /* eslint-disable @typescript-eslint/no-require-imports */
      const simple = require('zstd-napi') as Pick<Zstd, 'compress' | 'decompress'>;
      const binding = require('zstd-napi/binding') as Pick<Zstd, 'getFrameContentSize'>;
      zstdModule = { compress: simple.compress, decompress: simple.decompress, getFrameContentSize: binding.getFrameContentSize };
    } catch (err) {
      zstdModule = err instanceof Error ? err : new Error(String(err));
    }
  }
  if (zstdModule instanceof Error) {
    throw new TricopyError('unavailable', `zstd compression is not available on this relay: ${zstdModule.message.split('\n')[0]}`,
      'the optional package zstd-napi did not build at install (it needs python3, make, g++ and the Node headers): run npm ci again with them, or set the link to compress: off');
  }
  return zstdModule;
}

export const minCompressLevel = 1;
export const maxCompressLevel = 19;
/** Below this a WAN limit is a typo (or the frames of one 1 MiB entry would take minutes). */
export const minLinkBandwidthBitsPerSecond = 100_000;
/** Frames shorter than this are sent as they are: zstd's framing would eat the gain. */
export const minCompressBytes = 256;
/** The largest frame a token bucket lets through at once: a burst of this many bytes. */
export const bucketBurstBytes = 256 * 1024;

/** The compressed frame when it is smaller than `payload`, else null. */
export function compressFrame(payload: Buffer, level: number): Buffer | null {
  if (payload.length < minCompressBytes) return null;
  const c = zstd().compress(payload, { compressionLevel: level });
  return c.length < payload.length ? c : null;
}

/** The frame's original bytes; refuses frames that do not say how big they are, or say more than `maxBytes`. */
export function decompressFrame(frame: Buffer, maxBytes: number): Buffer {
  let size: number | null;
  try {
    size = zstd().getFrameContentSize(frame);
  } catch {
    throw new TricopyError('invalid-argument', 'a compressed frame is not a zstd frame');
  }
  if (size === null) throw new TricopyError('invalid-argument', 'a compressed frame does not state its size');
  if (size > maxBytes) throw new TricopyError('invalid-argument', `a compressed frame would expand to ${size} bytes (the limit is ${maxBytes})`);
  const out = zstd().decompress(frame);
  if (out.length !== size) throw new TricopyError('invalid-argument', 'a compressed frame expanded to another size than it states');
  return out;
}

/** Parses a bandwidth as the network file writes it: `100Mbit`, `1.5Gbit`, `800kbit` (per second), or bits as a number. */
export function parseBandwidth(value: unknown): number | null {
  if (typeof value === 'number') return Number.isInteger(value) && value > 0 ? value : null;
  if (typeof value !== 'string') return null;
  const m = /^(\d+(?:\.\d+)?)\s*(bit|kbit|Mbit|Gbit)(?:\/s)?$/.exec(value.trim());
  if (!m) return null;
  const scale = { bit: 1, kbit: 1e3, Mbit: 1e6, Gbit: 1e9 }[m[2] as 'bit' | 'kbit' | 'Mbit' | 'Gbit'];
  return Math.round(Number(m[1]) * scale);
}

export interface PacerTimer {
  now(): number;
  after(ms: number, fn: () => void): { cancel(): void };
}

export const realPacerTimer: PacerTimer = {
  now: () => performance.now(),
  after: (ms, fn) => {
    const t = setTimeout(fn, ms);
    return { cancel: () => clearTimeout(t) };
  },
};

/**
 * A token bucket in front of one link: frames leave in order, each once the bucket holds its bytes
 * (a frame larger than the burst leaves when the bucket is full and drives it negative, so big
 * entries are never stuck). What waits counts as the link's backlog for back-pressure.
 */
export class Pacer {
  private readonly queue: Array<{ bytes: number; go: () => void }> = [];
  private tokens: number;
  private last: number;
  private timer: { cancel(): void } | undefined;
  queuedBytes = 0;

  constructor(private readonly bytesPerSecond: number, private readonly clock: PacerTimer = realPacerTimer) {
    this.tokens = bucketBurstBytes;
    this.last = clock.now();
  }

  /** Runs `go` (which sends a frame of `bytes`) when the ceiling allows, after everything queued before. */
  send(bytes: number, go: () => void): void {
    this.queue.push({ bytes, go });
    this.queuedBytes += bytes;
    this.pump();
  }

  /** Forgets what waits (the link went down: the source edge sends it again). Returns the frames dropped. */
  clear(): number {
    const n = this.queue.length;
    this.queue.length = 0;
    this.queuedBytes = 0;
    this.timer?.cancel();
    this.timer = undefined;
    return n;
  }

  private refill(): void {
    const now = this.clock.now();
    this.tokens = Math.min(bucketBurstBytes, this.tokens + ((now - this.last) / 1000) * this.bytesPerSecond);
    this.last = now;
  }

  private pump(): void {
    if (this.timer) return;
    this.refill();
    while (this.queue.length > 0) {
      const head = this.queue[0]!;
      const need = Math.min(head.bytes, bucketBurstBytes);
      if (this.tokens < need) {
        const waitMs = Math.max(1, Math.ceil(((need - this.tokens) / this.bytesPerSecond) * 1000));
        this.timer = this.clock.after(waitMs, () => {
          this.timer = undefined;
          this.pump();
        });
        return;
      }
      this.queue.shift();
      this.queuedBytes -= head.bytes;
      this.tokens -= head.bytes;
      head.go();
    }
  }
}
