// Several storage nodes on loopback sharing a cluster secret, and helpers to pair their volumes
// directly or through fault-injecting proxies on both directions of the link.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { NbdClient } from '../../src/nbd/client';
import type { PairState, PairStatus } from '../../src/contracts/pairs';
import { FaultProxy } from './fault-proxy';
import { NodeProcess } from './node-process';
import { waitFor } from './wait';

export class Cluster {
  readonly nodes = new Map<string, NodeProcess>();
  readonly proxies: FaultProxy[] = [];

  private constructor(readonly dir: string, readonly secretFile: string, private readonly extraArgs: string[]) {}

  static async create(dir: string, names: string[], extraArgs: string[] = ['--peer-timeout', '1s']): Promise<Cluster> {
    await fsp.mkdir(dir, { recursive: true });
    const secretFile = path.join(dir, 'cluster.secret');
    await fsp.writeFile(secretFile, 'test-cluster-secret-0123456789abcdef\n');
    const cluster = new Cluster(dir, secretFile, extraArgs);
    for (const name of names) await cluster.start(name);
    return cluster;
  }

  async start(name: string, ports?: NodeProcess['ports'], moreArgs: string[] = []): Promise<NodeProcess> {
    const node = await NodeProcess.start({
      name, dataDir: path.join(this.dir, name), ports,
      args: ['--cluster-secret-file', this.secretFile, '--site', name, ...this.extraArgs, ...moreArgs],
    });
    this.nodes.set(name, node);
    return node;
  }

  node(name: string): NodeProcess {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  /** SIGKILL a node (a site lost). */
  async kill(name: string): Promise<void> {
    await this.node(name).kill();
  }

  /** Restart a killed (or stopped) node on the same ports and data, with extra flags if given. */
  async restart(name: string, moreArgs?: string[]): Promise<NodeProcess> {
    const old = this.node(name);
    const node = moreArgs ? await this.start(name, old.ports, moreArgs) : await old.restart();
    this.nodes.set(name, node);
    return node;
  }

  /** Freezes a node (SIGSTOP): a hung site whose links time out; thaw() resumes it. */
  freeze(name: string): void {
    this.node(name).child.kill('SIGSTOP');
  }

  thaw(name: string): void {
    this.node(name).child.kill('SIGCONT');
  }

  /** Writes a topology file for three of the nodes and returns its path. */
  async topologyFile(opts: { name: string; layout?: 'multi-target' | 'cascade'; volumes: Record<string, string | { size: string; role: 'data' | 'log' }>;
    primary: string; sync: string; async: string; fence?: 'data' | 'never' }): Promise<string> {
    const file = path.join(this.dir, `${opts.name}.yaml`);
    const site = (n: string): { site: string; node: string } => ({ site: n, node: this.node(n).apiUrl });
    const doc = {
      name: opts.name, layout: opts.layout ?? 'multi-target', volumes: opts.volumes,
      primary: site(opts.primary), sync: { ...site(opts.sync), fence: opts.fence ?? 'data' }, async: site(opts.async),
    };
    await fsp.writeFile(file, JSON.stringify(doc, null, 2));
    return file;
  }

  async volume(nodeName: string, volume: string, sizeBytes: number): Promise<void> {
    await this.node(nodeName).api.createVolume({ name: volume, size: sizeBytes, thin: true });
  }

  /**
   * Creates a pair from `primary` to `secondary`. With `viaProxy`, both directions of the link go
   * through fault proxies (returned), so a test can cut or delay it.
   */
  async pair(opts: { name: string; primary: string; secondary: string; volume: string; mode: 'sync' | 'async'; fence?: 'data' | 'never';
    group?: string; viaProxy?: boolean; noCopy?: boolean; purpose?: 'data' | 'quorum' }): Promise<{ status: PairStatus; proxies: FaultProxy[] }> {
    const p = this.node(opts.primary);
    const s = this.node(opts.secondary);
    let peer = { node: opts.secondary, host: '127.0.0.1', replPort: s.ports.replPort };
    let returnAddress: { host: string; replPort: number } | undefined;
    const proxies: FaultProxy[] = [];
    if (opts.viaProxy) {
      const toSecondary = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: s.ports.replPort });
      const toPrimary = await FaultProxy.start({ targetHost: '127.0.0.1', targetPort: p.ports.replPort });
      proxies.push(toSecondary, toPrimary);
      this.proxies.push(toSecondary, toPrimary);
      peer = { ...peer, replPort: toSecondary.port };
      returnAddress = { host: '127.0.0.1', replPort: toPrimary.port };
    }
    const status = await p.api.createPair({
      name: opts.name, volume: opts.volume, peer, mode: opts.mode, ...(opts.fence ? { fence: opts.fence } : {}),
      ...(opts.group ? { group: opts.group } : {}), ...(returnAddress ? { returnAddress } : {}), ...(opts.noCopy ? { noCopy: true } : {}),
      ...(opts.purpose ? { purpose: opts.purpose } : {}),
    });
    return { status, proxies };
  }

  async pairStatus(nodeName: string, pair: string): Promise<PairStatus> {
    return this.node(nodeName).api.getPair(`${pair}`);
  }

  async waitState(nodeName: string, pair: string, state: PairState, timeoutMs = 60_000): Promise<PairStatus> {
    return this.node(nodeName).api.waitPair(pair, state, timeoutMs);
  }

  async waitCode(nodeName: string, pair: string, code: string, timeoutMs = 60_000): Promise<PairStatus> {
    return waitFor(`${pair} on ${nodeName} to be ${code}`, async () => {
      const s = await this.pairStatus(nodeName, pair);
      return s.code === code ? s : undefined;
    }, { timeoutMs });
  }

  client(nodeName: string, volume: string): Promise<NbdClient> {
    return NbdClient.connect({ host: '127.0.0.1', port: this.node(nodeName).ports.nbdPort, exportName: volume });
  }

  async stopAll(): Promise<void> {
    for (const p of this.proxies) await p.close().catch(() => undefined);
    for (const n of this.nodes.values()) {
      n.child.kill('SIGCONT');
      await n.stop().catch(() => undefined);
    }
  }
}
