// One simulated storage node: the real volume store and replication service over the simulated
// disk, network and clock. A node runs as a sequence of incarnations; a crash ends the current one
// (its pending I/O, timers and messages never complete) and a restart builds the service again from
// what its disk kept.
import * as path from 'node:path';
import { EventJournal } from '../src/common/events';
import { silentLogger } from '../src/common/log';
import type { NodeEvent } from '../src/contracts/node';
import { ReplicatedVolume } from '../src/replication/datapath/replicated-volume';
import { ReplicationService, defaultReplicationOptions } from '../src/replication/service';
import { PeerLinks } from '../src/node/peer-links';
import { VolumeStore } from '../src/volume/store';
import type { Volume } from '../src/volume/volume';
import type { VolumeAccess } from '../src/replication/env';
import { SimDisk } from './disk';
import type { SimNetwork } from './network';
import type { Random } from './random';
import type { Scheduler } from './scheduler';

export interface Incarnation {
  alive: boolean;
  /** Started: recovery done, listening for peers. */
  ready: boolean;
  readonly number: number;
}

export type CrashKind = 'kill' | 'power';

export class SimNode {
  readonly disk: SimDisk;
  readonly dataDir: string;
  incarnation: Incarnation = { alive: false, ready: false, number: 0 };
  store: VolumeStore | undefined;
  service: ReplicationService | undefined;
  events: EventJournal | undefined;
  /** Since when each replication link is up or down (node info). */
  peerLinks: PeerLinks | undefined;
  private readonly fronts = new Map<string, ReplicatedVolume>();
  /** Volumes this node created (over all incarnations): their uuids are numbered, not random. */
  private volumesCreated = 0;
  /** The self-test's broken wiring: wraps the volumes the replication service writes. */
  volumeWrap: ((volume: Volume, isAsyncSecondary: () => boolean) => Volume) | undefined;
  /** Called with every event of every incarnation (the run's trace). */
  onEvent: ((node: string, event: NodeEvent) => void) | undefined;

  constructor(readonly name: string, private readonly scheduler: Scheduler, private readonly network: SimNetwork, rng: Random,
    private readonly options: { journalBytes: number; autoResync: boolean }) {
    this.disk = new SimDisk(scheduler, rng.fork());
    this.dataDir = `/nodes/${name}`;
  }

  get up(): boolean {
    return this.incarnation.alive && this.incarnation.ready;
  }

  /** Starts a new incarnation; resolves when it listens (or never, if it crashed meanwhile). */
  async start(): Promise<void> {
    const inc: Incarnation = { alive: true, ready: false, number: this.incarnation.number + 1 };
    this.incarnation = inc;
    this.fronts.clear();
    const clock = this.scheduler.clock(inc);
    const disk = this.disk.forIncarnation(inc);
    const transport = this.network.attach(this.name, inc);
    const log = silentLogger();
    const events = new EventJournal(log, clock);
    events.subscribe((e) => this.onEvent?.(this.name, e));
    this.events = events;
    this.peerLinks = new PeerLinks(transport, events, clock.now(), clock);
    const store = await VolumeStore.open(this.dataDir, { disk, clock, uuid: () => this.nextUuid() }, log);
    if (!inc.alive) return;
    this.store = store;
    const service = new ReplicationService({
      ...defaultReplicationOptions,
      localNode: this.name, advertiseHost: this.name, advertiseReplPort: undefined,
      journalCapacityBytes: this.options.journalBytes, autoResync: this.options.autoResync,
    }, { clock, disk, transport, volumes: this.volumeAccess(store) }, this.dataDir, events, log);
    service.clientsOf = () => 0;
    this.service = service;
    await service.start(this.name, 0);
    if (inc.alive) inc.ready = true;
  }

  /** A uuid (version 4 layout) from the node's name and a count, never from the process's randomness. */
  private nextUuid(): string {
    let h = 0x811c9dc5; // FNV-1a of the name: nodes of one cluster give different uuids
    for (const c of Buffer.from(this.name)) h = Math.imul(h ^ c, 0x01000193) >>> 0;
    return `${h.toString(16).padStart(8, '0')}-0000-4000-8000-${(++this.volumesCreated).toString(16).padStart(12, '0')}`;
  }

  private volumeAccess(store: VolumeStore): VolumeAccess {
    const wrap = this.volumeWrap;
    if (!wrap) return store;
    const wrapped = new Map<string, Volume>();
    const isAsyncSecondary = (name: string) => (): boolean =>
      this.service?.internals().some((p) => p.record.volume === name && p.record.role === 'secondary' && p.record.mode === 'async') ?? false;
    return {
      has: (name) => store.has(name),
      get: (name) => store.get(name),
      create: (options) => store.create(options),
      volume: (name) => {
        let v = wrapped.get(name);
        if (!v) {
          v = wrap(store.volume(name), isAsyncSecondary(name));
          wrapped.set(name, v);
        }
        return v;
      },
    };
  }

  crash(kind: CrashKind): void {
    this.incarnation.alive = false;
    this.incarnation.ready = false;
    this.network.detach(this.name, kind);
    if (kind === 'kill') this.disk.kill();
    else this.disk.powerLoss();
    this.store = undefined;
    this.service = undefined;
    this.fronts.clear();
  }

  /** The device hosts write: the volume through replication (as the NBD server sees it). */
  front(volume: string): ReplicatedVolume | undefined {
    if (!this.up || !this.store?.has(volume)) return undefined;
    let f = this.fronts.get(volume);
    if (!f) {
      f = new ReplicatedVolume(this.store.volume(volume), this.service!);
      this.fronts.set(volume, f);
    }
    return f;
  }

  hasVolume(volume: string): boolean {
    return this.disk.exists(this.volumeFile(volume));
  }

  volumeFile(volume: string): string {
    return path.join(this.dataDir, 'volumes', `${volume}.img`);
  }

  /** The volume's bytes as reads would return them now (page cache view). */
  read(volume: string, offset: number, length: number): Buffer {
    return this.disk.readNow(this.volumeFile(volume), offset, length);
  }

  /** The volume's first `length` bytes as reads would return them now, not to be changed and valid only until the next disk operation. */
  image(volume: string, length: number): Buffer {
    return this.disk.imageNow(this.volumeFile(volume), length);
  }
}
