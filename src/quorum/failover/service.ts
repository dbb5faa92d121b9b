// Automatic failover at one node: the topologies `topology apply` gave it (kept in
// <dataDir>/failover/, so a restarted node takes part again at once), one agent per topology (etcd
// or quorum pair, as the topology's arbiter says), and the gate that refuses host writes of a
// topology's volumes while this site does not hold its arbiter.
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { nodeDisk } from '../../common/disk';
import { TricopyError, errorMessage } from '../../common/errors';
import { atomicWriteJson, isAtomicTemp, readJsonIfExists, removeIfExists } from '../../common/fsutil';
import type { Logger } from '../../common/log';
import type { FailoverConfig, FailoverStatus } from '../../contracts/failover';
import { HttpNodeClient } from '../../node/api-client';
import type { StorageNode } from '../../node/node';
import { Orchestrator } from '../../topology/orchestrator';
import { type Topology, parseTopology } from '../../topology/topology-file';
import { PairVolumeControl } from '../host-control';
import { LocalQuorumStorage } from '../local-storage';
import type { QuorumVolumes } from '../storage';
import { FailoverAgent } from './agent';
import type { AgentBaseDeps, ArbiterAgent } from './arbiter-agent';
import { EtcdArbiter } from './etcd-arbiter';
import { QuorumPairAgent } from './quorum-pair-agent';

/** A returning primary site that does not answer this fast is not back yet. */
const primaryProbeTimeoutMs = 1000;
/** How long an automatic failback waits for its copies (then it fails and is tried again after the delay). */
const failbackWaitSeconds = 3600;

interface Entry {
  config: FailoverConfig;
  agent: ArbiterAgent;
}

export class FailoverService {
  private readonly entries = new Map<string, Entry>();
  private readonly dir: string;

  constructor(private readonly node: StorageNode, private readonly quorum: QuorumVolumes, private readonly log: Logger) {
    this.dir = path.join(node.config.dataDir, 'failover');
  }

  async start(): Promise<void> {
    await nodeDisk.mkdirp(this.dir);
    for (const file of (await nodeDisk.list(this.dir)).filter((n) => n.endsWith('.json') && !isAtomicTemp(n)).sort()) {
      const config = await readJsonIfExists(path.join(this.dir, file), nodeDisk) as FailoverConfig | undefined;
      if (!config) continue;
      try {
        this.run(config, this.check(config));
      } catch (err) {
        this.log.error({ file, err: errorMessage(err) }, 'ignoring a failover configuration that is no longer valid');
      }
    }
    this.node.replication.setHostWriteGate((volume) => this.gate(volume));
  }

  /** The gate stays: a stopped agent holds nothing, so writes to its topology's volumes are refused until the node is gone. */
  async stop(): Promise<void> {
    for (const e of this.entries.values()) await e.agent.stop(false);
  }

  /** Takes part in `config`'s topology from now on (replacing what it had for it), and keeps it. */
  async configure(config: FailoverConfig): Promise<FailoverStatus> {
    const t = this.check(config);
    await atomicWriteJson(path.join(this.dir, `${config.name}.json`), config, nodeDisk);
    const old = this.entries.get(config.name);
    if (old) await old.agent.stop(false);
    const agent = this.run(config, t);
    this.node.events.emit('failover-configured', config.name, t.failover?.mode === 'automatic'
      ? `automatic failover of topology ${config.name}: this node is the ${config.role} site ${config.site}; arbiter ${agent.status().arbiter}, lease ${t.failover.leaseMs} ms, renew ${t.failover.renewMs} ms, fence margin ${t.failover.fenceMarginMs} ms; failback ${t.failover.failback === 'automatic' ? `automatic after ${t.failover.failbackDelayMs} ms` : 'manual'}`
      : `failover of topology ${config.name} is manual`, { site: config.site, role: config.role, agent: agent.report() });
    return agent.status();
  }

  async remove(name: string): Promise<void> {
    const e = this.entries.get(name);
    this.entries.delete(name);
    if (e) await e.agent.stop(true);
    await removeIfExists(path.join(this.dir, `${name}.json`), nodeDisk);
    if (e) this.node.events.emit('failover-removed', name, 'this node no longer takes part in the automatic failover of the topology', { site: e.config.site, role: e.config.role });
  }

  list(): FailoverStatus[] {
    return [...this.entries.values()].map((e) => e.agent.status()).sort((a, b) => a.topology.localeCompare(b.topology));
  }

  get(name: string): FailoverStatus {
    const e = this.entries.get(name);
    if (!e) throw new TricopyError('not-found', `this node takes no part in the failover of topology ${name}`, 'topology apply with failover: automatic gives it one');
    return e.agent.status();
  }

  /** Why a host write of `volume` is refused by an arbiter now, or undefined. */
  gate(volume: string): string | undefined {
    for (const e of this.entries.values()) {
      const why = e.agent.gate(volume);
      if (why !== undefined) return why;
    }
    return undefined;
  }

  private check(config: FailoverConfig): Topology {
    const t = parseTopology(config.topology, `topology ${config.name}`);
    if (t.name !== config.name) throw new TricopyError('invalid-argument', `the configuration names topology ${config.name} but holds ${t.name}`);
    const spec = t[config.role];
    if (!spec || spec.site !== config.site) {
      throw new TricopyError('invalid-argument', `${config.site} is not the ${config.role} site of topology ${t.name}`);
    }
    if (!t.failover || t.failover.mode !== 'automatic' || !t.failover.arbiter) {
      throw new TricopyError('invalid-argument', `topology ${t.name} does not have failover: automatic with an arbiter`);
    }
    return t;
  }

  private run(config: FailoverConfig, t: Topology): ArbiterAgent {
    const f = t.failover!;
    const arbiter = f.arbiter!;
    const common = this.commonDeps(config, t);
    let agent: ArbiterAgent;
    if (arbiter.kind === 'etcd') {
      agent = new FailoverAgent({
        ...common, arbiter: new EtcdArbiter({
          endpoints: t[config.role].etcd ?? arbiter.endpoints, topology: t.name, site: config.site, leaseMs: f.leaseMs,
          // A call must end before the hold it renews could run out.
          callTimeoutMs: Math.max(200, Math.min(f.renewMs, f.leaseMs - f.renewMs - f.fenceMarginMs)),
          now: () => performance.now(),
        }),
      });
    } else {
      // The other contender's node, as the topology file names it: the heartbeat over the hosts' network.
      const peer = config.role === 'primary' ? t.sync : t.primary;
      const heartbeatTimeoutMs = Math.max(200, Math.min(f.renewMs, primaryProbeTimeoutMs));
      agent = new QuorumPairAgent({
        ...common, volume: arbiter.volume,
        local: { attribute: (v) => this.quorum.attribute(v), linkUp: (v) => this.quorum.linkUp(v), split: (v) => this.quorum.split(v) },
        control: new PairVolumeControl(new LocalQuorumStorage(this.quorum), `failover@${config.site}`, arbiter.volume),
        heartbeat: async () => {
          await new HttpNodeClient(peer.node, config.apiToken, heartbeatTimeoutMs).failoverStatus();
        },
      });
    }
    this.entries.set(config.name, { config, agent });
    agent.start();
    return agent;
  }

  /**
   * The client of a site's node for the procedures this node runs. This node itself is reached on
   * its own listening address, not over the network the topology file names (a hosts' network that
   * is cut, which is exactly when a quorum-pair arbiter makes this node run a failover).
   */
  private clientFor(config: FailoverConfig, t: Topology, timeoutMs?: number): (url: string) => HttpNodeClient {
    return (url) => {
      const own = t[config.role].node;
      const host = this.node.config.apiHost === '0.0.0.0' || this.node.config.apiHost === '::' ? '127.0.0.1' : this.node.config.apiHost;
      const direct = url === own && url.startsWith('http:') ? `http://${host.includes(':') ? `[${host}]` : host}:${this.node.ports.apiPort}` : url;
      return new HttpNodeClient(direct, config.apiToken, timeoutMs);
    };
  }

  /** What both kinds of agent are given: the node's pairs and events, and the procedures they run. */
  private commonDeps(config: FailoverConfig, t: Topology): AgentBaseDeps {
    return {
      topology: t, site: config.site, role: config.role,
      now: () => performance.now(),
      wallNow: () => Date.now(),
      pairs: () => this.node.replication.list(),
      hasVolume: (name) => this.node.store.has(name),
      failOverHere: async (print) => {
        // The primary stopped answering a lease ago: a site that does not answer within a second is
        // taken as lost (a dead host's address would hold the probe for the whole default 5 s).
        const orchestrator = new Orchestrator(t, { clientFor: this.clientFor(config, t), print, waitSeconds: 0, probeTimeoutMs: 1000 });
        await orchestrator.failover(config.site, undefined);
      },
      primaryView: async () => {
        const client = new HttpNodeClient(t.primary.node, config.apiToken, primaryProbeTimeoutMs);
        return (await client.failoverStatus()).find((x) => x.topology === t.name);
      },
      failBackToPrimary: async (print) => {
        // The copy back waits for duplex before the swap, however long the volumes take to copy.
        const orchestrator = new Orchestrator(t, { clientFor: this.clientFor(config, t), print, waitSeconds: failbackWaitSeconds, probeTimeoutMs: primaryProbeTimeoutMs });
        await orchestrator.failback(t.primary.site);
      },
      events: this.node.events,
      log: this.log.child({ topology: t.name }),
    };
  }
}
