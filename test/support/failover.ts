// Three real nodes and automatic failover with etcd (Debian's) or a quorum pair as the arbiter, with
// fault proxies where partitions are made: every site reaches etcd through a proxy of its own (etcd
// only), tokyo's and osaka's control APIs (as the topology file names them: the hosts' network the
// quorum pair's heartbeat uses) go through proxies, and tokyo reaches osaka's replication port
// through a proxy (osaka advertises it; only tokyo dials osaka: the storage link). Also the checker that records every acknowledged
// write with the site that took it and when, and proves the sites' histories never overlap.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import type { FailoverStatus } from '../../src/contracts/failover';
import { NbdClient } from '../../src/nbd/client';
import { HttpNodeClient } from '../../src/node/api-client';
import { Cluster } from './cluster';
import { FaultProxy } from './fault-proxy';
import { EtcdProcess } from './manager-process';
import { waitFor } from './wait';

export const sites = ['tokyo', 'osaka', 'sapporo'] as const;
export type Site = (typeof sites)[number];

export interface FailoverTimings {
  lease: string;
  renew: string;
  fenceMargin: string;
  arbiterLost?: 'fence' | 'continue';
  /** failback: automatic with this failback-delay (default: failback manual). */
  failbackDelay?: string;
}

export type ArbiterKind = 'etcd' | 'quorum-pair';
/** The quorum volume of the quorum-pair arbiter. */
export const quorumVolume = 'erp-quorum';

export class FailoverCluster {
  private constructor(
    readonly dir: string,
    readonly cluster: Cluster,
    readonly arbiterKind: ArbiterKind,
    /** Only with the etcd arbiter. */
    readonly etcd: EtcdProcess | undefined,
    /** How each site reaches etcd (none with the quorum-pair arbiter). */
    readonly etcdProxies: Record<Site, FaultProxy>,
    /** tokyo's control API as the topology file names it. */
    readonly tokyoApi: FaultProxy,
    /** osaka's control API as the topology file names it (used so with the quorum-pair arbiter). */
    readonly osakaApi: FaultProxy,
    /** tokyo → osaka replication. */
    readonly tokyoToOsaka: FaultProxy,
    readonly file: string,
  ) {}

  static async start(dir: string, timings: FailoverTimings, arbiterKind: ArbiterKind = 'etcd'): Promise<FailoverCluster> {
    const etcd = arbiterKind === 'etcd' ? await EtcdProcess.start(path.join(dir, 'etcd')) : undefined;
    const cluster = await Cluster.create(path.join(dir, 'c'), [...sites], ['--peer-timeout', '1s']);
    // With the quorum-pair arbiter no site reaches etcd: the record stays empty.
    const etcdProxies = {} as Record<Site, FaultProxy>;
    if (etcd) {
      const etcdPort = Number(new URL(etcd.url).port);
      for (const s of sites) etcdProxies[s] = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: etcdPort });
    }
    const osaka = cluster.node('osaka');
    const tokyoToOsaka = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: osaka.ports.replPort });
    await osaka.stop();
    await cluster.start('osaka', osaka.ports, ['--advertise-repl-port', String(tokyoToOsaka.port)]);
    const tokyoApi = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: cluster.node('tokyo').ports.apiPort });
    const osakaApi = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: cluster.node('osaka').ports.apiPort });
    cluster.proxies.push(tokyoToOsaka, tokyoApi, osakaApi, ...Object.values(etcdProxies));
    const file = path.join(dir, 'erp.json');
    const fc = new FailoverCluster(dir, cluster, arbiterKind, etcd, etcdProxies, tokyoApi, osakaApi, tokyoToOsaka, file);
    await fc.writeTopology(timings);
    return fc;
  }

  async writeTopology(timings: FailoverTimings): Promise<void> {
    const quorum = this.arbiterKind === 'quorum-pair';
    const node = (s: Site): string => s === 'tokyo' ? `http://127.0.0.1:${this.tokyoApi.port}`
      : s === 'osaka' && quorum ? `http://127.0.0.1:${this.osakaApi.port}` : this.cluster.node(s).apiUrl;
    const site = (s: Site): { site: string; node: string; etcd?: string[] } => ({
      site: s, node: node(s), ...(this.etcdProxies[s] ? { etcd: [`http://127.0.0.1:${this.etcdProxies[s].port}`] } : {}),
    });
    await fsp.writeFile(this.file, JSON.stringify({
      name: 'erp', volumes: { db1: '32MiB', log1: '16MiB' }, primary: site('tokyo'), sync: { ...site('osaka'), fence: 'data' }, async: site('sapporo'),
      failover: 'automatic', arbiter: this.etcd ? { etcd: [this.etcd.url] } : { 'quorum-pair': { volume: quorumVolume } },
      lease: timings.lease, renew: timings.renew, 'fence-margin': timings.fenceMargin,
      'arbiter-lost': timings.arbiterLost ?? 'fence',
      ...(timings.failbackDelay ? { failback: 'automatic', 'failback-delay': timings.failbackDelay } : {}),
    }, null, 2));
  }

  /** The node's own API (not through tokyo's proxy). */
  api(s: Site): HttpNodeClient {
    return new HttpNodeClient(this.cluster.node(s).apiUrl, undefined, 5000);
  }

  /** Writes `bytes` random bytes to `volume` at `s` (acknowledged and flushed); returns them. */
  async writeRandom(s: Site, volume: string, offset: number, bytes: number): Promise<Buffer> {
    const data = randomBytes(bytes);
    const c = await NbdClient.connect({ host: '127.0.0.1', port: this.cluster.node(s).ports.nbdPort, exportName: volume });
    try {
      await c.write(offset, data);
      await c.flush();
    } finally {
      c.destroy();
    }
    return data;
  }

  async readAt(s: Site, volume: string, offset: number, bytes: number): Promise<Buffer> {
    const c = await NbdClient.connect({ host: '127.0.0.1', port: this.cluster.node(s).ports.nbdPort, exportName: volume });
    try {
      return await c.read(offset, bytes);
    } finally {
      c.destroy();
    }
  }

  async arbiter(s: Site): Promise<FailoverStatus | undefined> {
    return (await this.api(s).failoverStatus()).find((x) => x.topology === 'erp');
  }

  async waitArbiter(s: Site, state: FailoverStatus['state'], timeoutMs = 30_000): Promise<FailoverStatus> {
    return waitFor(`${s} to be ${state} with the arbiter`, async () => {
      const a = await this.arbiter(s);
      return a?.state === state ? a : undefined;
    }, { timeoutMs, intervalMs: 100 });
  }

  async stop(): Promise<void> {
    await this.cluster.stopAll();
    await this.etcd?.stop();
  }
}

export interface AckedWrite {
  site: Site;
  seq: number;
  issuedAt: number;
  ackedAt: number;
}

/**
 * One writer per site on the same volume, each trying all the time (reconnecting after refusals):
 * every acknowledged write is recorded with its site and times (one monotonic clock for all).
 */
export class TwoSiteChecker {
  readonly acked: AckedWrite[] = [];
  refused: Record<string, number> = {};
  private running = false;
  private workers: Promise<void>[] = [];
  private seq = 1;

  constructor(private readonly fc: FailoverCluster, private readonly volume: string, private readonly writers: Site[]) {}

  start(): void {
    this.running = true;
    this.workers = this.writers.map((s, i) => this.worker(s, i));
  }

  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.workers);
  }

  ackedAt(s: Site): AckedWrite[] {
    return this.acked.filter((w) => w.site === s);
  }

  /** At no time did two sites accept writes: each site's acknowledged writes come before the next site's first. */
  assertNoOverlap(): void {
    const bySite = this.writers.map((s) => ({ s, writes: this.ackedAt(s) })).filter((x) => x.writes.length > 0);
    bySite.sort((a, b) => a.writes[0]!.issuedAt - b.writes[0]!.issuedAt);
    for (let i = 1; i < bySite.length; i++) {
      const before = bySite[i - 1]!;
      const after = bySite[i]!;
      const lastBefore = Math.max(...before.writes.map((w) => w.ackedAt));
      const firstAfter = Math.min(...after.writes.map((w) => w.issuedAt));
      assert.ok(lastBefore < firstAfter,
        `${before.s} acknowledged a write at ${lastBefore.toFixed(0)} ms, after ${after.s} had issued one it acknowledged at ${firstAfter.toFixed(0)} ms: two sites accepted writes at once`);
    }
  }

  /**
   * The writes went from site to site exactly in `order` (a failover, then a failback: tokyo, osaka,
   * tokyo), and at each handover the site before had acknowledged its last write before the next
   * site issued its first: at no time did two sites accept writes.
   */
  assertHandovers(order: Site[]): void {
    const runs: AckedWrite[][] = [];
    for (const w of [...this.acked].sort((a, b) => a.issuedAt - b.issuedAt)) {
      const last = runs.at(-1);
      if (last && last[0]!.site === w.site) last.push(w);
      else runs.push([w]);
    }
    assert.deepEqual(runs.map((r) => r[0]!.site), order, `the sites took writes in this order: ${runs.map((r) => `${r[0]!.site} (${r.length})`).join(', ')}`);
    for (let i = 1; i < runs.length; i++) {
      const lastBefore = Math.max(...runs[i - 1]!.map((w) => w.ackedAt));
      const firstAfter = Math.min(...runs[i]!.map((w) => w.issuedAt));
      assert.ok(lastBefore < firstAfter, `${runs[i - 1]![0]!.site} acknowledged a write at ${lastBefore.toFixed(0)} ms, after ${runs[i]![0]!.site} had issued one at ${firstAfter.toFixed(0)} ms: two sites accepted writes at once`);
    }
  }

  private async worker(s: Site, index: number): Promise<void> {
    const blockBytes = 4096;
    let client: NbdClient | undefined;
    while (this.running) {
      try {
        client ??= await NbdClient.connect({ host: '127.0.0.1', port: this.fc.cluster.node(s).ports.nbdPort, exportName: this.volume });
        const seq = this.seq++;
        const block = Buffer.alloc(blockBytes, seq & 0xff);
        block.writeUInt32BE(seq, 0);
        const issuedAt = performance.now();
        // Each writer keeps to its own half of the volume's first MiB.
        await within(client.write((index * 128 + (seq % 128)) * blockBytes, block), 5000);
        this.acked.push({ site: s, seq, issuedAt, ackedAt: performance.now() });
      } catch {
        this.refused[s] = (this.refused[s] ?? 0) + 1;
        client?.destroy();
        client = undefined;
        await new Promise((r) => setTimeout(r, 50));
      }
    }
    client?.destroy();
  }
}

function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  })]).finally(() => clearTimeout(timer));
}

/** Milliseconds until `site` acknowledges a write to `volume` (reconnecting between tries). */
export async function firstAcceptedWrite(fc: FailoverCluster, s: Site, volume: string, offset: number, timeoutMs: number): Promise<number> {
  const started = performance.now();
  for (;;) {
    try {
      const c = await NbdClient.connect({ host: '127.0.0.1', port: fc.cluster.node(s).ports.nbdPort, exportName: volume });
      try {
        await within(c.write(offset, Buffer.alloc(4096, 0x77)), 3000);
        return performance.now() - started;
      } finally {
        c.destroy();
      }
    } catch {
      if (performance.now() - started > timeoutMs) throw new Error(`${s} accepted no write to ${volume} within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}
