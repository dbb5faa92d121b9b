// Data areas (spec 003 Fig. 15 "areas" and tiers): named directories, typically on devices of
// different speed, that hold volumes' data files. The node's data directory is the area `default`;
// the operator names the others (`--data-area fast=/mnt/nvme/tricopy`). A volume's tier is the
// name of the area its data file lives in; metadata always stays in the data directory.
import * as path from 'node:path';
import { TricopyError } from '../common/errors';

export const defaultTier = 'default';
export const tierNamePattern = /^[a-z][a-z0-9-]{0,31}$/;
export const maxDataAreas = 16;

export interface DataArea {
  tier: string;
  /** Absolute directory holding the area's data files (`<dir>/<volume>.img`). */
  dir: string;
}

/** Parses one `NAME=DIR` (flag or config file), with a clear error. */
export function parseDataArea(spec: string): DataArea {
  const eq = spec.indexOf('=');
  if (eq <= 0 || eq === spec.length - 1) {
    throw new TricopyError('invalid-argument', `data area "${spec}" is not NAME=DIRECTORY`, 'e.g. --data-area fast=/mnt/nvme/tricopy');
  }
  const tier = spec.slice(0, eq);
  const dir = spec.slice(eq + 1);
  validateTierName(tier);
  if (tier === defaultTier) {
    throw new TricopyError('invalid-argument', `data area "${defaultTier}" is the data directory itself`, 'name the other areas differently, e.g. fast or slow');
  }
  return { tier, dir: path.resolve(dir) };
}

export function validateTierName(tier: string): void {
  if (!tierNamePattern.test(tier)) {
    throw new TricopyError('invalid-argument', `"${tier}" is not a valid tier name`, 'use 1–32 lowercase letters, digits or "-", starting with a letter');
  }
}

/** The areas of one node: `default` (the data directory's volumes/) and the configured ones. */
export class DataAreas {
  private readonly byTier = new Map<string, string>();

  constructor(defaultDir: string, configured: DataArea[]) {
    this.byTier.set(defaultTier, defaultDir);
    if (configured.length > maxDataAreas) throw new TricopyError('invalid-argument', `a node has at most ${maxDataAreas} data areas besides the default`);
    const dirs = new Set([path.resolve(defaultDir)]);
    for (const area of configured) {
      if (this.byTier.has(area.tier)) throw new TricopyError('invalid-argument', `data area ${area.tier} is named twice`);
      if (dirs.has(path.resolve(area.dir))) {
        throw new TricopyError('invalid-argument', `data area ${area.tier} uses directory ${area.dir}, which another area uses already`, 'give each area a directory of its own');
      }
      dirs.add(path.resolve(area.dir));
      this.byTier.set(area.tier, area.dir);
    }
  }

  tiers(): string[] {
    return [...this.byTier.keys()];
  }

  has(tier: string): boolean {
    return this.byTier.has(tier);
  }

  /** The area's directory; an unknown tier is the caller's error, said clearly. */
  dirOf(tier: string): string {
    const dir = this.byTier.get(tier);
    if (dir === undefined) {
      throw new TricopyError('invalid-argument', `tier ${tier} is not a data area of this node`,
        `its tiers are: ${this.tiers().join(', ')}; add one with --data-area ${tier}=DIRECTORY when starting the node`);
    }
    return dir;
  }
}
