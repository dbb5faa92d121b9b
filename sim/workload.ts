// Simulated hosts: a few clients per volume writing self-describing sectors (some with FUA) and
// flushing, at the node where the volume's application runs, each waiting a random while between
// requests. Every request is recorded in the history; an answer is reported to the checker. A
// request to a node that crashes never gets an answer: its outcome stays unknown.
import { errorMessage } from '../src/common/errors';
import { encodeSectors, sectorBytes } from './blocks';
import type { Cluster } from './cluster';
import type { HostFlush, HostWrite, History } from './history';
import type { Random } from './random';

export interface WorkloadOptions {
  clientsPerVolume: number;
  /** Longest pause between two requests of one client. */
  maxThinkMs: number;
  maxSectorsPerWrite: number;
  flushProbability: number;
  fuaProbability: number;
}

export const defaultWorkload: WorkloadOptions = { clientsPerVolume: 2, maxThinkMs: 40, maxSectorsPerWrite: 32, flushProbability: 0.1, fuaProbability: 0.05 };

export interface WorkloadObserver {
  acked(w: HostWrite, fua: boolean): void;
  flushed(f: HostFlush): void;
}

interface InFlight {
  node: string;
  abandon: () => void;
}

export class Workload {
  private paused = false;
  private stopped = false;
  private readonly inflight = new Set<InFlight>();
  private resumeWaiters: Array<() => void> = [];
  writesAcked = 0;
  writesRefused = 0;

  constructor(private readonly cluster: Cluster, private readonly history: History, private readonly observer: WorkloadObserver,
    private readonly rng: Random, private readonly options: WorkloadOptions = defaultWorkload) {}

  start(): void {
    for (const v of this.cluster.volumes) {
      for (let c = 0; c < this.options.clientsPerVolume; c++) void this.client(v.name, v.index, v.sizeBytes / sectorBytes);
    }
  }

  get inFlightCount(): number {
    return this.inflight.size;
  }

  /** Stops issuing and waits (in virtual time) until nothing is in flight. */
  async pause(deadlineMs = 120_000): Promise<boolean> {
    this.paused = true;
    return this.cluster.scheduler.runUntilTrue(() => this.inflight.size === 0, this.cluster.scheduler.now + deadlineMs);
  }

  resume(): void {
    this.paused = false;
    for (const w of this.resumeWaiters.splice(0)) w();
  }

  stop(): void {
    this.stopped = true;
    this.resume();
  }

  /** The node crashed: its requests will never be answered. */
  nodeCrashed(node: string): void {
    for (const op of [...this.inflight]) if (op.node === node) op.abandon();
  }

  private async client(volume: string, index: number, sectors: number): Promise<void> {
    const scheduler = this.cluster.scheduler;
    while (!this.stopped) {
      await new Promise<void>((r) => scheduler.schedule(this.rng.next() * this.options.maxThinkMs, r));
      if (this.paused) await new Promise<void>((r) => this.resumeWaiters.push(r));
      if (this.stopped) return;
      const nodeName = this.cluster.active.get(volume);
      const front = nodeName ? this.cluster.node(nodeName).front(volume) : undefined;
      if (!nodeName || !front) continue;
      if (this.rng.chance(this.options.flushProbability)) {
        const f = this.history.issueFlush(volume, nodeName);
        const outcome = await this.track(nodeName, front.flush());
        if (outcome === 'abandoned') continue;
        this.history.completeFlush(f, outcome === 'ok');
        if (outcome === 'ok') this.observer.flushed(f);
        continue;
      }
      const aligned = this.rng.chance(0.5);
      let first = this.rng.int(sectors);
      let count = 1 + this.rng.int(this.options.maxSectorsPerWrite);
      if (aligned) {
        first -= first % 8;
        count = Math.max(8, count - (count % 8));
      }
      count = Math.min(count, sectors - first);
      const fua = this.rng.chance(this.options.fuaProbability);
      const w = this.history.issueWrite(volume, nodeName, first, count, scheduler.elapsed);
      const data = encodeSectors(w.id, index, first, count);
      const outcome = await this.track(nodeName, front.write(first * sectorBytes, data, { fua }));
      if (outcome === 'abandoned') continue;
      this.history.complete(w, outcome === 'ok', outcome === 'ok' ? undefined : outcome.error);
      if (outcome === 'ok') {
        this.writesAcked++;
        this.observer.acked(w, fua);
      } else {
        this.writesRefused++;
      }
    }
  }

  /** Waits for a request, or gives up on it when its node crashes. */
  private track(node: string, request: Promise<void>): Promise<'ok' | 'abandoned' | { error: string }> {
    return new Promise((resolve) => {
      const op: InFlight = { node, abandon: () => {
        this.inflight.delete(op);
        resolve('abandoned');
      } };
      this.inflight.add(op);
      request.then(() => {
        if (!this.inflight.delete(op)) return;
        resolve('ok');
      }, (err: unknown) => {
        if (!this.inflight.delete(op)) return;
        resolve({ error: errorMessage(err) });
      });
    });
  }
}
