// Self-describing sectors: every 512-byte sector a simulated host writes names the write that made
// it (and its volume and place), with a checksum, so the checker can read any copy of a volume and
// tell exactly which write each sector holds, even after a torn write.
import { crc32c } from '../src/common/crc32c';
import { freshBytes } from './fresh-bytes';

export const sectorBytes = 512;
const magic = 0x73696d31; // "sim1"
const zeroSector = Buffer.alloc(sectorBytes);

export function encodeSectors(writeId: number, volume: number, firstSector: number, count: number): Buffer {
  // Every byte is written below, so the buffer need not start zeroed.
  const out = freshBytes(count * sectorBytes);
  // A DataView writes each word without Buffer's per-call checks; the words are those writeUInt32BE wrote.
  const view = new DataView(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < count; i++) {
    const base = i * sectorBytes;
    view.setUint32(base, magic);
    view.setUint32(base + 4, writeId);
    view.setUint32(base + 8, volume);
    view.setUint32(base + 12, firstSector + i);
    // Exact integer arithmetic (below 2^53), so grouping the terms differently gives the same words.
    const seed = writeId * 2654435761 + i;
    for (let at = 16; at + 4 <= sectorBytes - 4; at += 4) view.setUint32(base + at, (seed + at * 40503) >>> 0);
    view.setUint32(base + sectorBytes - 4, crc32c(out.subarray(base, base + sectorBytes - 4)));
  }
  return out;
}

export type SectorValue = { kind: 'zero' } | { kind: 'write'; id: number } | { kind: 'garbage'; why: string };

/** Which write a sector holds (0 bytes: never written, or zeroed). */
export function decodeSector(s: Buffer, volume: number, sector: number): SectorValue {
  if (s.length === sectorBytes ? s.equals(zeroSector) : s.every((b) => b === 0)) return { kind: 'zero' };
  if (s.readUInt32BE(0) !== magic) return { kind: 'garbage', why: 'not a simulator sector' };
  if (crc32c(s.subarray(0, sectorBytes - 4)) !== s.readUInt32BE(sectorBytes - 4)) return { kind: 'garbage', why: 'checksum mismatch (a torn sector)' };
  if (s.readUInt32BE(8) !== volume || s.readUInt32BE(12) !== sector) {
    return { kind: 'garbage', why: `holds volume ${s.readUInt32BE(8)} sector ${s.readUInt32BE(12)}` };
  }
  return { kind: 'write', id: s.readUInt32BE(4) };
}

/** Write id per sector (0 = zero); garbage sectors are reported through `bad`. */
export function decodeVolume(bytes: Buffer, volume: number, bad: (sector: number, why: string) => void, firstSector = 0): Uint32Array {
  const n = Math.floor(bytes.length / sectorBytes);
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) {
    const v = decodeSector(bytes.subarray(i * sectorBytes, (i + 1) * sectorBytes), volume, firstSector + i);
    if (v.kind === 'write') out[i] = v.id;
    else if (v.kind === 'garbage') bad(firstSector + i, v.why);
  }
  return out;
}
