// Metadata contexts (NBD proto.md "Metadata querying"): which contexts a query names, the ids a
// selection gets, and status descriptors from a device's runs. Pure functions; the server offers
// base:allocation for every export plus whatever the export's device names (BlockDevice.metaContexts),
// without knowing what those contexts mean.
import type { ContextRun } from '../volume/block-device';
import * as c from './constants';

export interface SelectedContext {
  id: number;
  name: string;
}

export type ContextQueryResult =
  | { ok: true; contexts: SelectedContext[] }
  | { ok: false; message: string };

/**
 * The contexts a LIST (ids 0) or SET (ids assigned) answers for `queries` against `available`
 * (base:allocation first). LIST with no query lists everything; a LIST query ending in ':' (a
 * namespace such as `base:` or `qemu:`, or a prefix such as `qemu:dirty-bitmap:`) lists every
 * context it starts; SET selects exact names only. Unknown names are ignored, as the protocol says.
 */
export function matchContexts(available: string[], queries: string[], isSet: boolean): ContextQueryResult {
  for (const query of queries) {
    if (!query.includes(':')) return { ok: false, message: `meta context query "${query}" has no namespace` };
  }
  const wanted = new Set<string>();
  if (!isSet && queries.length === 0) for (const name of available) wanted.add(name);
  for (const query of queries) {
    for (const name of available) {
      if (name === query || (!isSet && query.endsWith(':') && name.startsWith(query))) wanted.add(name);
    }
  }
  const contexts: SelectedContext[] = [];
  available.forEach((name, index) => {
    if (!wanted.has(name)) return;
    // base:allocation keeps its fixed id; the device's contexts follow it.
    const id = !isSet ? 0 : name === c.BASE_ALLOCATION ? c.BASE_ALLOCATION_CONTEXT_ID : c.BASE_ALLOCATION_CONTEXT_ID + 1 + index;
    contexts.push({ id, name });
  });
  return { ok: true, contexts };
}

/** Every context an export offers: base:allocation, then the device's own (each once). */
export function availableContexts(deviceContexts: string[] | undefined): string[] {
  const out = [c.BASE_ALLOCATION];
  for (const name of deviceContexts ?? []) if (!out.includes(name) && name.includes(':')) out.push(name);
  return out;
}

/**
 * Descriptors of a block status reply from consecutive runs starting at `offset`: runs end at the
 * request's end (the last may not pass it), with REQ_ONE exactly one, at most `max` of them.
 */
export function descriptorsFromRuns(runs: ContextRun[], requestedLength: number, reqOne: boolean, max: number): Array<{ length: number; flags: number }> {
  const out: Array<{ length: number; flags: number }> = [];
  let covered = 0;
  for (const run of runs) {
    if (covered >= requestedLength || out.length >= max) break;
    const length = Math.min(run.length, requestedLength - covered);
    if (length <= 0) continue;
    const previous = out[out.length - 1];
    if (previous && previous.flags === run.flags) previous.length += length;
    else out.push({ length, flags: run.flags });
    covered += length;
    if (reqOne) break;
  }
  return out;
}
