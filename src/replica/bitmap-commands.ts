// Changed-block bitmaps for backup tools (issue 12): one persistent bitmap per consumer, added,
// cleared and deleted with the volume's gate held so no change in flight is missed.
import { TricopyError } from '../common/errors';
import type { BitmapView } from '../contracts/replicas';
import { type ChangedBlockBitmaps, dirtyBitmapContextPrefix } from './changed-blocks';
import type { ReplicaEnv } from './env';
import { regionBytes } from './limits';
import type { ReplicaRegistry } from './registry';

export class BitmapCommands {
  private readonly env: ReplicaEnv;

  constructor(private readonly reg: ReplicaRegistry) {
    this.env = reg.env;
  }

  listBitmaps(volume: string): BitmapView[] {
    if (!this.env.volumes.has(volume)) throw new TricopyError('not-found', `volume ${volume} does not exist`);
    const bitmaps = this.reg.relations.get(volume)?.bitmaps;
    if (!bitmaps) return [];
    return bitmaps.names().map((n) => this.bitmapView(volume, bitmaps, n));
  }

  addBitmap(volume: string, name: string): Promise<BitmapView> {
    return this.reg.queue.run(`volume:${volume}`, async () => {
      if (!this.env.volumes.has(volume)) throw new TricopyError('not-found', `volume ${volume} does not exist`);
      await this.reg.openBitmaps(volume);
      const rel = this.reg.relationsOf(volume);
      await rel.whileHeld(async () => {
        await rel.bitmaps!.add(name, new Date(this.env.clock.now()).toISOString(), volume);
        rel.refresh();
      });
      this.env.host.emit('bitmap-added', volume, `changed-block bitmap ${name} records every change from now on`, { bitmap: name });
      return this.bitmapView(volume, rel.bitmaps!, name);
    });
  }

  clearBitmap(volume: string, name: string): Promise<BitmapView> {
    return this.reg.queue.run(`volume:${volume}`, async () => {
      const rel = this.reg.relations.get(volume);
      if (!rel?.bitmaps?.has(name)) throw new TricopyError('not-found', `volume ${volume} has no bitmap named ${name}`);
      await rel.whileHeld(() => rel.bitmaps!.clear(name, new Date(this.env.clock.now()).toISOString()));
      this.env.host.emit('bitmap-cleared', volume, `changed-block bitmap ${name} starts over`, { bitmap: name });
      return this.bitmapView(volume, rel.bitmaps, name);
    });
  }

  deleteBitmap(volume: string, name: string): Promise<void> {
    return this.reg.queue.run(`volume:${volume}`, async () => {
      const rel = this.reg.relations.get(volume);
      if (!rel?.bitmaps?.has(name)) throw new TricopyError('not-found', `volume ${volume} has no bitmap named ${name}`);
      await rel.whileHeld(async () => {
        await rel.bitmaps!.remove(name);
        rel.refresh();
      });
      this.reg.dropRelationsIfEmpty(volume);
      this.env.host.emit('bitmap-deleted', volume, `changed-block bitmap ${name} deleted`, { bitmap: name });
    });
  }

  private bitmapView(volume: string, bitmaps: ChangedBlockBitmaps, name: string): BitmapView {
    const r = bitmaps.record(name);
    const size = this.env.volumes.get(volume).sizeBytes;
    return {
      volume, name, createdAt: r.createdAt, clearedAt: r.clearedAt, granularityBytes: regionBytes,
      dirtyBytes: Math.min(size, bitmaps.bits(name).setBitCount * regionBytes), context: `${dirtyBitmapContextPrefix}${name}`,
    };
  }
}
