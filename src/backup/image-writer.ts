// Writing one backup image: the extents of a point-in-time export (a snapshot or a split replica)
// read over NBD (every allocated extent for a full backup, the frozen bitmap's dirty regions for an
// incremental), with their sha256, into a partial directory that is renamed into images/ once data
// and manifest are synced.
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError, invariant } from '../common/errors';
import { NbdClient } from '../nbd/client';
import * as nbd from '../nbd/constants';
import { type BackupManifest, type Extent, coalesceExtents, encodeManifest } from './manifest';
import { blockStatusSpanBytes, copyChunkBytes, copyReadsInFlight } from './limits';
import type { Repository } from './repository';

export interface ImageTarget {
  repo: Repository;
  onProgress?: (event: { phase: 'copying'; doneBytes: number; totalBytes: number }) => void;
  now?: () => Date;
}

export function nbdAddress(exportUri: string): { host: string; port: number; exportName: string } {
  const u = new URL(exportUri);
  if (u.protocol !== 'nbd:') throw new TricopyError('internal', `export ${exportUri} is not an nbd:// URI`);
  return { host: u.hostname, port: Number(u.port || 10809), exportName: decodeURIComponent(u.pathname.slice(1)) };
}

/** Extents whose block-status flags satisfy `wanted`, over the whole export. */
async function extentsWhere(client: NbdClient, wanted: (flags: number) => boolean): Promise<Extent[]> {
  const out: Extent[] = [];
  const size = client.sizeBytes;
  for (let offset = 0; offset < size;) {
    const descriptors = await client.blockStatus(offset, Math.min(size - offset, blockStatusSpanBytes));
    if (descriptors.length === 0) throw new TricopyError('io-error', `block status at ${offset} returned nothing`);
    for (const d of descriptors) {
      const length = Math.min(d.length, size - offset);
      if (length <= 0) break;
      if (wanted(d.flags)) out.push({ offset, length });
      offset += length;
    }
  }
  return coalesceExtents(out);
}

/** The reads a copy makes: each extent in pieces of at most copyChunkBytes, in order. */
function* pieces(extents: Extent[]): Generator<Extent> {
  for (const e of extents) {
    for (let at = e.offset; at < e.offset + e.length; at += copyChunkBytes) yield { offset: at, length: Math.min(copyChunkBytes, e.offset + e.length - at) };
  }
}

/**
 * Copies `extents` of the export into `dataFile`, returning the data's sha256. Up to
 * copyReadsInFlight reads are in flight; their data is hashed and written in order.
 */
async function copyExtents(client: NbdClient, extents: Extent[], dataFile: string, ctx: ImageTarget): Promise<string> {
  const hash = createHash('sha256');
  const out = await fsp.open(dataFile, 'w');
  const totalBytes = extents.reduce((n, e) => n + e.length, 0);
  const todo = pieces(extents);
  const inFlight: Array<Promise<Buffer>> = [];
  const readNext = (): void => {
    const next = todo.next();
    if (next.done) return;
    const read = client.read(next.value.offset, next.value.length);
    read.catch(() => undefined); // awaited in order below; a failure is thrown there, not left unhandled
    inFlight.push(read);
  };
  let doneBytes = 0;
  // The total is known before the first chunk lands (which may wait behind a slow read).
  ctx.onProgress?.({ phase: 'copying', doneBytes, totalBytes });
  try {
    for (let i = 0; i < copyReadsInFlight; i++) readNext();
    while (inFlight.length > 0) {
      const data = await inFlight.shift()!;
      readNext();
      hash.update(data);
      await out.write(data, 0, data.length, doneBytes);
      doneBytes += data.length;
      ctx.onProgress?.({ phase: 'copying', doneBytes, totalBytes });
    }
    invariant(doneBytes === totalBytes, `backup copy: ${doneBytes} bytes copied of ${totalBytes}`);
    await out.datasync();
  } finally {
    await out.close();
  }
  return hash.digest('hex');
}

export async function writeImage(ctx: ImageTarget, manifest: Omit<BackupManifest, 'dataSha256' | 'finishedAt'>, exportUri: string, bitmap: string | null): Promise<BackupManifest> {
  const addr = nbdAddress(exportUri);
  const metaContexts = [bitmap === null ? nbd.BASE_ALLOCATION : `qemu:dirty-bitmap:${bitmap}`];
  const client = await NbdClient.connect({ ...addr, metaContexts });
  try {
    if (client.sizeBytes !== manifest.sizeBytes) throw new TricopyError('io-error', `snapshot export ${exportUri} is ${client.sizeBytes} bytes, the volume ${manifest.sizeBytes}`);
    // Full: every extent that may hold data. Incremental: the regions the frozen bitmap marks dirty.
    const extents = bitmap === null ? await extentsWhere(client, (f) => (f & nbd.STATE_ZERO) === 0) : await extentsWhere(client, (f) => (f & 1) !== 0);
    const partial = ctx.repo.partialDir(manifest.id);
    await fsp.mkdir(partial, { recursive: true });
    const dataSha256 = await copyExtents(client, extents, path.join(partial, 'data'), ctx);
    const complete: BackupManifest = {
      ...manifest, extents, dataBytes: extents.reduce((n, e) => n + e.length, 0), dataSha256, finishedAt: (ctx.now ?? (() => new Date()))().toISOString(),
    };
    const mf = await fsp.open(path.join(partial, 'manifest.json'), 'w');
    await mf.writeFile(encodeManifest(complete));
    await mf.datasync();
    await mf.close();
    await fsp.rename(partial, ctx.repo.imageDir(manifest.id));
    const dir = await fsp.open(path.dirname(partial), 'r');
    await dir.sync();
    await dir.close();
    return complete;
  } finally {
    await client.disconnect().catch(() => undefined);
  }
}

