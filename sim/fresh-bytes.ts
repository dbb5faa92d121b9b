// Fresh byte regions for the simulator's hot paths: the data a simulated host writes, and what a
// simulated disk or link takes from its caller. Each region is carved from a larger slab and never
// handed out twice, so it is as private as a buffer of its own, without one ArrayBuffer (a malloc,
// page faults and a sweep by the garbage collector) per write: those were a fifth of a run's time.
// A region kept for long (a disk page) keeps its slab alive, so slabs are small.
const slabBytes = 64 * 1024;
/** Larger regions get a buffer of their own: carving them would waste most of a slab. */
const ownBufferFromBytes = 8 * 1024;

let slab: Buffer = Buffer.alloc(0);
let used = 0;

/** `length` bytes nobody else holds; their contents are undefined. */
export function freshBytes(length: number): Buffer {
  if (length >= ownBufferFromBytes) return Buffer.allocUnsafeSlow(length);
  if (used + length > slab.length) {
    slab = Buffer.allocUnsafeSlow(slabBytes);
    used = 0;
  }
  const out = slab.subarray(used, used + length);
  // Regions start 8-byte aligned, as buffers of their own do (DataView and typed-array views of them stay cheap).
  used += (length + 7) & ~7;
  return out;
}

/** A fresh copy of `pieces`, one after the other (Buffer.concat into a fresh region). */
export function freshCopy(pieces: readonly Buffer[]): Buffer {
  let length = 0;
  for (const p of pieces) length += p.length;
  const out = freshBytes(length);
  let at = 0;
  for (const p of pieces) at += p.copy(out, at);
  return out;
}
