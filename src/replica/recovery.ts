// Recovery of a node's replica state at start: bitmaps, snapshot chains and in-node pairs from
// <dataDir>/replica, and the power-loss rule for pairs that were dual-writing.
import * as path from 'node:path';
import { checkBoot } from './boot';
import type { ReplicaPairCommands } from './pair-commands';
import type { ReplicaRegistry } from './registry';

/**
 * Opens the replica records after a start: each volume's bitmaps and snapshots, then the pairs.
 * After a power loss (the last boot did not stop cleanly) pairs that were dual-writing copy every
 * allocated region again, since a write may have reached one volume and not the other.
 */
export async function recoverReplicas(reg: ReplicaRegistry, pairs: ReplicaPairCommands): Promise<void> {
  const { disk, volumes, log } = reg.env;
  await disk.mkdirp(path.join(reg.root, 'volumes'));
  await pairs.store.init();
  const powerLost = await checkBoot(reg.root, reg.env.disk);
  for (const volume of await disk.list(path.join(reg.root, 'volumes'))) {
    if (!volumes.has(volume)) {
      log.warn({ volume }, 'removing the replica records of a volume that no longer exists');
      await disk.remove(reg.volumeDir(volume));
      continue;
    }
    await reg.openBitmaps(volume);
    await reg.openChain(volume);
    reg.relationsOf(volume).refresh();
  }
  for (const { record, bitmaps } of await pairs.store.loadAll()) {
    if (!volumes.has(record.primary) || !volumes.has(record.name)) {
      log.error({ replica: record.name, primary: record.primary }, 'a replica pair names a volume that no longer exists; dropping the pair');
      await pairs.store.remove(record.name, bitmaps);
      continue;
    }
    const rel = reg.relationsOf(record.primary);
    let current = record;
    if (powerLost && (record.state === 'duplex' || record.state === 'copying' || record.state === 'resync')) {
      // Dual writes not flushed before the power went may have reached one volume and not the
      // other: every allocated region is copied again.
      const primaryAllocated = reg.env.volumes.volume(record.primary).allocation;
      const secondaryAllocated = reg.env.volumes.volume(record.name).allocation;
      for (let r = 0; r < bitmaps.copied.bitCount; r++) {
        if (primaryAllocated.get(r) || (r < secondaryAllocated.bitCount && secondaryAllocated.get(r))) bitmaps.copied.clearRange(r, 1);
      }
      await bitmaps.copied.sync();
      current = { ...record, state: record.state === 'duplex' ? 'resync' : record.state, reason: 'the node lost power: every allocated region is copied again' };
      await pairs.store.save(current);
      reg.env.host.emit('replica-resync', record.name, current.reason, { volume: record.primary });
    }
    const pair = pairs.newPair(current, bitmaps, volumes.volume(record.primary), volumes.volume(record.name), rel);
    rel.replicas.push(pair);
    reg.pairs.set(record.name, pair);
    rel.refresh();
    if (current.state === 'restoring') rel.exclusive = `replica ${record.name} is being restored onto it`;
  }
  log.info({ replicas: reg.pairs.size, volumes: reg.relations.size, powerLost }, 'replicas, snapshots and bitmaps opened');
}
