// Whether the node lost power (or the machine crashed) since it last ran: it did not stop cleanly
// and the machine booted since. A process crash keeps the page cache; a power loss does not, so
// dual writes not yet flushed may have reached one volume of a replica pair and not the other.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';

interface BootRecord {
  bootId: string;
  clean: boolean;
}

/** Records this start (not clean until saveBoot(true)); true when the last run ended in a power loss. */
export async function checkBoot(root: string, disk: Disk): Promise<boolean> {
  const previous = (await readJsonIfExists(path.join(root, 'boot.json'), disk)) as BootRecord | undefined;
  const bootId = await currentBootId();
  const lost = previous !== undefined && !previous.clean && previous.bootId !== bootId;
  await saveBoot(root, disk, false, bootId);
  return lost;
}

export async function saveBoot(root: string, disk: Disk, clean: boolean, bootId?: string): Promise<void> {
  await atomicWriteJson(path.join(root, 'boot.json'), { bootId: bootId ?? await currentBootId(), clean } satisfies BootRecord, disk);
}

async function currentBootId(): Promise<string> {
  try {
    return (await fsp.readFile('/proc/sys/kernel/random/boot_id', 'utf8')).trim();
  } catch {
    return 'unknown';
  }
}
