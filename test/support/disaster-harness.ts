// Three real nodes (tokyo, osaka, sapporo), each reached by its peers through a fault proxy, a
// multi-target topology over them and an application that follows it; after every step of a
// disaster, what each site holds is read back and compared with what `topology status` claims a
// failover there would lose. Used by the disaster-cycle test.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import { HttpNodeClient } from '../../src/node/api-client';
import { Orchestrator, type TopologyStatus } from '../../src/topology/orchestrator';
import type { LossClaim } from '../../src/topology/status';
import { loadTopology } from '../../src/topology/topology-file';
import { Cluster } from './cluster';
import { FaultProxy } from './fault-proxy';
import { type Contents, SiteWorkload, readSite } from './site-workload';
import { waitFor } from './wait';

export const sites = ['tokyo', 'osaka', 'sapporo'] as const;
export type SiteName = (typeof sites)[number];
export const volumes = ['db1', 'log1'];
const blockSize = 4096;
const blockCount = 256;
const volumeSize = '4MiB';

export interface ClaimRecord {
  step: string;
  site: string;
  kind: string;
  text: string;
  lacking: number | null;
}

export class DisasterHarness {
  /** Where the application runs (or ran last): the site status must name as holding the newest writes. */
  appSite: SiteName = 'tokyo';
  readonly claims: ClaimRecord[] = [];
  readonly headlines: string[] = [];

  private constructor(readonly cluster: Cluster, readonly file: string, readonly proxies: Map<string, FaultProxy>,
    readonly workload: SiteWorkload, readonly dir: string) {}

  static async create(dir: string, seed: number): Promise<DisasterHarness> {
    const cluster = await Cluster.create(path.join(dir, 'cluster'), [...sites]);
    const proxies = new Map<string, FaultProxy>();
    // Every node's peers reach it through its own proxy, so a link between two sites can be cut.
    for (const s of sites) {
      const proxy = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: cluster.node(s).ports.replPort });
      cluster.proxies.push(proxy);
      proxies.set(s, proxy);
      await cluster.node(s).stop();
      await cluster.restart(s, ['--advertise-repl-port', String(proxy.port)]);
    }
    const file = await cluster.topologyFile({ name: 'erp', volumes: { db1: volumeSize, log1: volumeSize }, primary: 'tokyo', sync: 'osaka', async: 'sapporo' });
    const workload = new SiteWorkload({ volumes, blockSize, blockCount, writesPerSecond: 150, seed });
    return new DisasterHarness(cluster, file, proxies, workload, dir);
  }

  /** `topology status`, as the CLI computes it (in this process: no process start per check). */
  async status(): Promise<TopologyStatus> {
    const o = new Orchestrator(await loadTopology(this.file), { clientFor: (url) => new HttpNodeClient(url), print: () => undefined, waitSeconds: 0 });
    return o.status();
  }

  async startApp(site: SiteName = this.appSite): Promise<void> {
    this.appSite = site;
    await this.workload.start(this.cluster.node(site).ports.nbdPort);
  }

  /** Waits until the application stopped by itself (its writes were refused, or its site died). */
  async appFailed(): Promise<void> {
    await waitFor('the application to see its writes fail', () => !this.workload.writing, { timeoutMs: 30_000 });
    await this.workload.stop();
  }

  /**
   * The step's check: with the application paused, read every reachable site and hold what it
   * lacks against status's claim; then the site running the application decides the outcome of
   * writes that failed. Resumes the application if it was writing.
   */
  async check(step: string, options: { adopt?: boolean } = {}): Promise<TopologyStatus> {
    const wasWriting = this.workload.writing;
    await this.workload.stop();
    const status = await this.status();
    const headline = status.healthy ? 'healthy' : `NOT protected: ${status.missing.map((m) => m.what).join('; ')}`;
    this.headlines.push(`${step}: ${status.activeSite ? `application at ${status.activeSite}` : 'no site accepts writes'} — ${headline}`);
    assert.equal(status.writer.site, this.appSite, `${step}: status names ${status.writer.site} as holding the newest writes (${status.writer.basis}), the application ran at ${this.appSite}`);
    let appContents: Contents | undefined;
    for (const s of status.sites) {
      const claim = s.atRisk;
      if (!s.reachable) {
        assert.equal(claim.kind, 'unknown', `${step}: ${s.site} does not answer, yet status claims "${claim.text}"`);
        this.claims.push({ step, site: s.site, kind: claim.kind, text: claim.text, lacking: null });
        continue;
      }
      const contents = await this.read(s.site).catch((err: Error) => err);
      if (contents instanceof Error) {
        assert.equal(claim.kind, 'unbounded', `${step}: ${s.site} cannot be read (${contents.message}), yet status claims "${claim.text}"`);
        this.claims.push({ step, site: s.site, kind: claim.kind, text: claim.text, lacking: null });
        continue;
      }
      const lacking = options.adopt && s.site === this.appSite ? [] : this.workload.lacking(contents);
      holds(step, s.site, claim, lacking.length);
      this.claims.push({ step, site: s.site, kind: claim.kind, text: claim.text, lacking: lacking.length });
      if (s.site === this.appSite) appContents = contents;
    }
    if (appContents) {
      if (options.adopt) this.workload.adopt(appContents);
      else this.workload.settle(appContents);
    }
    if (wasWriting) await this.startApp();
    return status;
  }

  async read(site: string): Promise<Contents> {
    return readSite(this.cluster.node(site).ports.nbdPort, volumes, blockSize, blockCount);
  }

  /** The end of a round: protected again, the ends of every pair agreeing, all three sites byte-equal. */
  async restored(step: string): Promise<TopologyStatus> {
    const wasWriting = this.workload.writing;
    await this.workload.stop();
    const healthy = await waitFor(`${step}: status healthy`, async () => {
      const s = await this.status();
      return s.healthy ? s : undefined;
    }, { timeoutMs: 90_000, intervalMs: 250 }).catch(async (err: Error) => {
      const s = await this.status();
      throw new Error(`${err.message}: ${JSON.stringify(s.missing)} ${JSON.stringify(s.pairs)}`);
    });
    assert.deepEqual(healthy.pairs.filter((p) => p.state === 'disagree'), [], `${step}: both ends of every pair agree`);
    await waitFor(`${step}: sapporo applied everything`, async () => (await this.cluster.node('tokyo').api.getGroup('erp')).lag.entries === 0, { timeoutMs: 60_000 });
    for (const v of volumes) {
      const hashes = await Promise.all(sites.map((s) => this.volumeHash(s, v)));
      assert.equal(new Set(hashes).size, 1, `${step}: ${v} is byte-equal at ${sites.join(', ')}`);
    }
    const status = await this.check(`${step} (restored)`);
    if (wasWriting || !this.workload.writing) await this.startApp('tokyo');
    return status;
  }

  /** Waits until every pair's ends agree after a command (the secondary learns its primary's state within moments). */
  async agreeing(step: string): Promise<void> {
    await waitFor(`${step}: the ends of every pair agree`, async () => (await this.status()).pairs.every((p) => p.state !== 'disagree'), { timeoutMs: 15_000, intervalMs: 200 })
      .catch(async (err: Error) => {
        throw new Error(`${err.message}: ${JSON.stringify((await this.status()).pairs)}`);
      });
  }

  /** Moves a stopped site's data directory away (a new disk, a rebuilt server). */
  async loseData(site: SiteName): Promise<void> {
    const dataDir = this.cluster.node(site).spec.dataDir;
    await fsp.rm(`${dataDir}.lost`, { recursive: true, force: true });
    await fsp.rename(dataDir, `${dataDir}.lost`);
  }

  private async volumeHash(site: string, volume: string): Promise<string> {
    const client = await NbdClient.connect({ host: '127.0.0.1', port: this.cluster.node(site).ports.nbdPort, exportName: volume });
    try {
      const hash = createHash('sha256');
      const size = 4 * 1024 * 1024;
      for (let at = 0; at < size; at += 1024 * 1024) hash.update(await client.read(at, 1024 * 1024));
      return hash.digest('hex');
    } finally {
      client.destroy();
    }
  }

  async close(): Promise<void> {
    await this.workload.stop().catch(() => undefined);
    await this.cluster.stopAll();
  }
}

/** What a site lacks must be within what status claimed a failover there would lose. */
function holds(step: string, site: string, claim: LossClaim, lacking: number): void {
  const where = `${step}: ${site} lacks ${lacking} acknowledged block(s), status claimed "${claim.text}"`;
  if (claim.kind === 'none') assert.equal(lacking, 0, where);
  if (claim.kind === 'bounded') {
    if (claim.writes !== null) assert.ok(lacking <= claim.writes, where);
    if (claim.bytes !== null) assert.ok(lacking * blockSize <= claim.bytes, where);
  }
}
