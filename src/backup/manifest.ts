// The manifest of one backup image: what it is a copy of (volume, size, snapshot instant), the
// backup it applies on top of (an incremental's parent), the extents its data file holds in order,
// and the sha256 of that file. A manifest is self-describing: a repository directory copied
// elsewhere can be listed, verified and restored from its manifests alone.
import { TricopyError } from '../common/errors';

export const manifestFormat = 'tricopy-backup/1';

export type BackupKind = 'full' | 'incremental';

export interface Extent {
  offset: number;
  length: number;
}

export interface BackupManifest {
  format: typeof manifestFormat;
  id: string;
  kind: BackupKind;
  volume: string;
  /** The node the volume was read from (its API URL). */
  node: string;
  sizeBytes: number;
  /** When the snapshot it was copied from was taken: the image is the volume at this instant. */
  snapshotAt: string;
  /** The backup this one applies on top of; null for a full backup. */
  parentId: string | null;
  /** The full backup at the root of its chain (itself for a full). */
  chainId: string;
  /** The policy that took it, if any. */
  policy: string | null;
  /** Extents of the volume stored in the data file, ascending and not overlapping, back to back. */
  extents: Extent[];
  /** Sum of the extents' lengths: the data file's size. */
  dataBytes: number;
  /** sha256 (hex) of the data file. */
  dataSha256: string;
  startedAt: string;
  finishedAt: string;
}

function fail(what: string): never {
  throw new TricopyError('invalid-argument', `backup manifest: ${what}`);
}

function str(o: Record<string, unknown>, key: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v.length === 0) fail(`${key} must be a non-empty string`);
  return v;
}

function nonNegInt(o: Record<string, unknown>, key: string): number {
  const v = o[key];
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) fail(`${key} must be a non-negative integer`);
  return v;
}

function nullableStr(o: Record<string, unknown>, key: string): string | null {
  return o[key] === null ? null : str(o, key);
}

function decodeExtents(raw: unknown, sizeBytes: number): Extent[] {
  if (!Array.isArray(raw)) fail('extents must be an array');
  let end = 0;
  return raw.map((e: unknown, i) => {
    if (typeof e !== 'object' || e === null) fail(`extent ${i} must be an object`);
    const x = e as Record<string, unknown>;
    const extent = { offset: nonNegInt(x, 'offset'), length: nonNegInt(x, 'length') };
    if (extent.length === 0) fail(`extent ${i} is empty`);
    if (extent.offset < end) fail(`extent ${i} overlaps or is out of order`);
    if (extent.offset + extent.length > sizeBytes) fail(`extent ${i} ends past the volume's size`);
    end = extent.offset + extent.length;
    return extent;
  });
}

/** Validates a parsed manifest (untrusted: it is read from a directory anyone may have copied). */
export function decodeManifest(raw: unknown): BackupManifest {
  if (typeof raw !== 'object' || raw === null) fail('not an object');
  const o = raw as Record<string, unknown>;
  if (o.format !== manifestFormat) fail(`format must be ${manifestFormat}`);
  const kind = o.kind;
  if (kind !== 'full' && kind !== 'incremental') fail('kind must be full or incremental');
  const sizeBytes = nonNegInt(o, 'sizeBytes');
  const extents = decodeExtents(o.extents, sizeBytes);
  const m: BackupManifest = {
    format: manifestFormat, id: str(o, 'id'), kind, volume: str(o, 'volume'), node: str(o, 'node'), sizeBytes,
    snapshotAt: str(o, 'snapshotAt'), parentId: nullableStr(o, 'parentId'), chainId: str(o, 'chainId'),
    policy: nullableStr(o, 'policy'), extents, dataBytes: nonNegInt(o, 'dataBytes'), dataSha256: str(o, 'dataSha256'),
    startedAt: str(o, 'startedAt'), finishedAt: str(o, 'finishedAt'),
  };
  if (!/^[0-9a-f]{64}$/.test(m.dataSha256)) fail('dataSha256 must be 64 hex digits');
  if (extents.reduce((n, e) => n + e.length, 0) !== m.dataBytes) fail('dataBytes is not the sum of the extents');
  if ((kind === 'full') !== (m.parentId === null)) fail('a full backup has no parent and an incremental has one');
  if (kind === 'full' && m.chainId !== m.id) fail('a full backup is the root of its own chain');
  return m;
}

export function encodeManifest(m: BackupManifest): string {
  decodeManifest(JSON.parse(JSON.stringify(m)) as unknown); // never write what could not be read back
  return `${JSON.stringify(m, null, 2)}\n`;
}

/** Merges touching or overlapping extents (sorted input), so the data file has as few pieces as possible. */
export function coalesceExtents(extents: Extent[]): Extent[] {
  const out: Extent[] = [];
  for (const e of extents) {
    const last = out.at(-1);
    if (last && e.offset <= last.offset + last.length) {
      last.length = Math.max(last.length, e.offset + e.length - last.offset);
    } else {
      out.push({ ...e });
    }
  }
  return out;
}
