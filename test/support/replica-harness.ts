// In-process replicas, snapshots and bitmaps over a real volume store in a temporary directory, with
// a host that records events and a copy throttle a test controls (how many background copy batches
// may run).
import { promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { systemClock } from '../../src/common/clock';
import { type Disk, nodeDisk } from '../../src/common/disk';
import { silentLogger } from '../../src/common/log';
import { type ReplicaHost, ReplicaService } from '../../src/replica/service';
import type { BlockDevice } from '../../src/volume/block-device';
import { VolumeStore } from '../../src/volume/store';
import { tempDir } from './tools';

export const MiB = 1024 * 1024;
export const KiB = 1024;
export const region = 64 * KiB;

export interface HarnessEvent {
  kind: string;
  subject: string;
  reason: string;
}

export class ReplicaHarness {
  readonly events: HarnessEvent[] = [];
  /** Background copy batches allowed to start; Infinity: unthrottled. */
  copyBudget = Number.POSITIVE_INFINITY;
  clients = new Map<string, number>();
  disconnected: string[] = [];
  groups = new Map<string, string[]>();
  store!: VolumeStore;
  service!: ReplicaService;

  private constructor(readonly dir: string, readonly disk: Disk) {}

  /** `disk`: the node's real disk unless a test wraps it (a RecordingDisk, say). */
  static async open(dir?: string, disk: Disk = nodeDisk): Promise<ReplicaHarness> {
    const h = new ReplicaHarness(dir ?? await tempDir('replica'), disk);
    await h.start();
    return h;
  }

  async start(): Promise<void> {
    this.store = await VolumeStore.open(this.dir, { disk: this.disk, clock: systemClock }, silentLogger());
    this.service = await ReplicaService.open(this.dir, {
      volumes: this.store, disk: this.disk, clock: systemClock, log: silentLogger(), host: this.host(),
      beforeCopyBatch: async () => {
        while (this.copyBudget <= 0) await new Promise((r) => setTimeout(r, 2));
        this.copyBudget--;
      },
    });
    await this.service.start();
  }

  /** Closes (as a clean stop) and opens again on the same directory. */
  async restart(): Promise<void> {
    await this.service.close();
    await this.store.close();
    await this.start();
  }

  async close(remove = true): Promise<void> {
    this.copyBudget = Number.POSITIVE_INFINITY;
    await this.service.close();
    await this.store.close();
    if (remove) await fsp.rm(this.dir, { recursive: true, force: true });
  }

  host(): ReplicaHost {
    return {
      front: (volume) => this.store.volume(volume),
      disconnect: (name) => {
        this.disconnected.push(name);
        const n = this.clients.get(name) ?? 0;
        this.clients.delete(name);
        return n;
      },
      clientsOf: (name) => this.clients.get(name) ?? 0,
      exportUri: (name) => `nbd://test/${name}`,
      writeRefusal: () => undefined,
      remotePaired: () => false,
      groupVolumes: (group) => this.groups.get(group) ?? [],
      emit: (kind, subject, reason) => void this.events.push({ kind, subject, reason }),
    };
  }

  /** The device an NBD client would get for `name` (throws if refused). */
  device(name: string): BlockDevice {
    const answer = this.service.lookup(name);
    if (!answer) return this.store.volume(name);
    if (answer.status === 'denied') throw new Error(`denied: ${answer.message}`);
    return answer.device;
  }

  async volume(name: string, sizeBytes: number): Promise<void> {
    await this.store.create({ name, sizeBytes });
  }
}

export async function readAll(device: BlockDevice, size = device.sizeBytes): Promise<Buffer> {
  const out = Buffer.alloc(size);
  for (let at = 0; at < size; at += 4 * MiB) {
    const n = Math.min(4 * MiB, size - at);
    await device.read(at, n, out.subarray(at, at + n));
  }
  return out;
}

/** A volume's contents kept in memory beside it: every write goes to both. */
export class Model {
  readonly data: Buffer;

  constructor(readonly device: BlockDevice) {
    this.data = Buffer.alloc(device.sizeBytes);
  }

  async write(offset: number, length: number, fill?: number): Promise<Buffer> {
    const buf = fill === undefined ? randomBytes(length) : Buffer.alloc(length, fill);
    await this.device.write(offset, buf, { fua: false });
    buf.copy(this.data, offset);
    return buf;
  }

  async zero(offset: number, length: number): Promise<void> {
    await this.device.writeZeroes(offset, length, { fua: false, noHole: false, fastOnly: false });
    this.data.fill(0, offset, offset + length);
  }

  image(): Buffer {
    return Buffer.from(this.data);
  }
}

/** A deterministic pseudo-random source. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

export async function waitUntil(what: string, check: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
