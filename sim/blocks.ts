// Self-describing sectors: every 512-byte sector a simulated host writes names the write that made
// it (and its volume and place), with a checksum, so the checker can read any copy of a volume and
// tell exactly which write each sector holds, even after a torn write.
import { crc32c } from '../src/common/crc32c';

export const sectorBytes = 512;
const magic = 0x73696d31; // "sim1"

export function encodeSectors(writeId: number, volume: number, firstSector: number, count: number): Buffer {
  const out = Buffer.alloc(count * sectorBytes);
  for (let i = 0; i < count; i++) {
    const s = out.subarray(i * sectorBytes, (i + 1) * sectorBytes);
    s.writeUInt32BE(magic, 0);
    s.writeUInt32BE(writeId, 4);
    s.writeUInt32BE(volume, 8);
    s.writeUInt32BE(firstSector + i, 12);
    for (let at = 16; at + 4 <= sectorBytes - 4; at += 4) s.writeUInt32BE((writeId * 2654435761 + at * 40503 + i) >>> 0, at);
    s.writeUInt32BE(crc32c(s.subarray(0, sectorBytes - 4)), sectorBytes - 4);
  }
  return out;
}

export type SectorValue = { kind: 'zero' } | { kind: 'write'; id: number } | { kind: 'garbage'; why: string };

/** Which write a sector holds (0 bytes: never written, or zeroed). */
export function decodeSector(s: Buffer, volume: number, sector: number): SectorValue {
  if (s.every((b) => b === 0)) return { kind: 'zero' };
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
