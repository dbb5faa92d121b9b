// Parsing and printing of byte sizes and durations, shared by the CLI, the config loader and the API.
import { TricopyError } from './errors';

const binaryUnits: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  p: 1024 ** 5,
  pib: 1024 ** 5,
  kb: 1000,
  mb: 1000 ** 2,
  gb: 1000 ** 3,
  tb: 1000 ** 4,
  pb: 1000 ** 5,
};

export const acceptedSizeUnits = 'B, K/KiB, M/MiB, G/GiB, T/TiB, P/PiB (powers of 1024) or kB, MB, GB, TB, PB (powers of 1000)';

/** Parses "10GiB", "512M", "4096" into bytes. Throws a TricopyError naming the accepted units. */
export function parseSize(text: string | number, what = 'size'): number {
  if (typeof text === 'number') {
    if (!Number.isSafeInteger(text) || text < 0) {
      throw new TricopyError('invalid-argument', `${what} must be a non-negative whole number of bytes, got ${text}`);
    }
    return text;
  }
  const match = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!match) {
    throw new TricopyError('invalid-argument', `${what} "${text}" is not a size`,
      `write a number with an optional unit, e.g. 10GiB; accepted units: ${acceptedSizeUnits}`);
  }
  const unit = binaryUnits[(match[2] ?? '').toLowerCase()];
  if (unit === undefined) {
    throw new TricopyError('invalid-argument', `${what} "${text}" has an unknown unit "${match[2]}"`,
      `accepted units: ${acceptedSizeUnits}`);
  }
  const bytes = Number(match[1]) * unit;
  if (!Number.isSafeInteger(bytes)) {
    throw new TricopyError('invalid-argument', `${what} "${text}" is not a whole number of bytes or is too large`);
  }
  return bytes;
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let value = bytes;
  let i = 0;
  while (Math.abs(value) >= 1024 && i < units.length - 1) {
    value /= 1024;
    i++;
  }
  const text = i === 0 || Number.isInteger(value) ? String(value) : value.toFixed(value < 10 ? 2 : 1);
  return `${text}${units[i]}`;
}

/** Parses "5s", "250ms", "2m" or a bare number of milliseconds. */
export function parseDurationMs(text: string | number, what = 'duration'): number {
  if (typeof text === 'number') return text;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!match) {
    throw new TricopyError('invalid-argument', `${what} "${text}" is not a duration`, 'use e.g. 500ms, 5s, 2m or 1h');
  }
  const factor = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(match[2] ?? 'ms') as 'ms' | 's' | 'm' | 'h'];
  return Math.round(Number(match[1]) * factor);
}
