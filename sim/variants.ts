// Versions of the product broken on purpose through the simulator's wiring, never in the product's
// code: the self-test (`npm run sim -- --self-test`) shows the checker catches each within a bounded
// number of seeds, so a passing run means something.
import { bitmapHeaderBytes } from '../src/volume/bitmap';
import type { Volume } from '../src/volume/volume';
import type { Cluster } from './cluster';
import { MessageType } from '../src/replication/transport/messages';

export interface Variant {
  name: string;
  what: string;
  /** Crashes are power losses (what the variant needs to show). */
  forcePowerLoss?: boolean;
}

export const variants: Variant[] = [
  { name: 'ack-before-remote-write', what: 'a sync write is acknowledged before the secondary has it' },
  { name: 'apply-out-of-order', what: 'an async secondary applies journal entries out of order' },
  { name: 'bitmap-misses-writes', what: 'the differential records of suspended pairs never reach the disk', forcePowerLoss: true },
  { name: 'lost-flush', what: 'FLUSH does not make volume data durable', forcePowerLoss: true },
];

export function applyVariant(variant: Variant, cluster: Cluster): void {
  switch (variant.name) {
    case 'ack-before-remote-write':
      cluster.network.sabotage.ackBeforeDelivery = new Set([MessageType.Write]);
      return;
    case 'apply-out-of-order':
      for (const node of cluster.nodes.values()) node.volumeWrap = (volume, isAsyncSecondary) => reorderWrites(volume, isAsyncSecondary);
      return;
    case 'bitmap-misses-writes':
      // The file's header reaches the disk (the node still starts); the bits it records never do.
      for (const node of cluster.nodes.values()) Object.assign(node.disk.sabotage, { volatileFiles: /\.diff$/, volatileFromByte: bitmapHeaderBytes });
      return;
    case 'lost-flush':
      for (const node of cluster.nodes.values()) node.disk.sabotage.skipSyncOf = /\/volumes\/[^/]+\.img$/;
      return;
    default:
      throw new Error(`unknown variant ${variant.name}`);
  }
}

/**
 * Writes to an async secondary's volume are held back one at a time: each is acknowledged at once
 * and lands only after the next one, so later entries reach the volume before earlier ones.
 */
function reorderWrites(volume: Volume, isAsyncSecondary: () => boolean): Volume {
  let held: (() => Promise<void>) | undefined;
  const write = async (offset: number, data: Buffer | Buffer[], options: { fua: boolean }): Promise<void> => {
    if (!isAsyncSecondary()) return volume.write(offset, data, options);
    const copy = Buffer.concat(Array.isArray(data) ? data : [data]);
    const previous = held;
    held = () => volume.write(offset, copy, options);
    if (previous) {
      await volume.write(offset, copy, options);
      held = undefined;
      await previous();
    }
  };
  return new Proxy(volume, {
    get(target, prop) {
      if (prop === 'write') return write;
      const value = Reflect.get(target, prop, target) as unknown;
      return typeof value === 'function' ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  });
}
