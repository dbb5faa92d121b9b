// The manager process: opens the store (embedded or etcd), serves the API and console, and takes
// part in the leadership. The leader holds the working state (history sequence, alerts, read
// model), takes what nodes push, runs procedures, backup schedules and jobs, scrapes nodes and
// collects the remote copy networks it keeps; on taking
// the lead it loads that state from the store, marks runs and backup jobs a dead leader left as
// interrupted, and tells every node the current manager addresses. Other managers answer reads from the store and forward writes.
import { randomUUID } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { systemClock } from '../common/clock';
import { TricopyError, errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { Alert, ArbiterBoard, ManagerInfo, NodeRecord, PerfSample, StatusDocument, TopologyRecord } from '../contracts/manager';
import { HttpNodeClient } from '../node/api-client';
import { version } from '../node/version';
import { AlertBook } from './alerts';
import { type ManagerApi, buildManagerApi } from './api';
import { ManagerBackups } from './backup-service';
import type { ManagerConfig } from './config';
import type { ManagerContext } from './context';
import { buildArbiterBoard } from './arbiter-board';
import { EventHistory, maxEventsPerQuery } from './history';
import { Ingest } from './ingest';
import { EtcdLeadership, type Leadership, ReadyLeadership, SoleLeadership } from './leadership';
import { ManagerMetrics } from './metrics';
import { ManagerNetworks } from './networks';
import { ClusterModel } from './model';
import { Procedures } from './procedures';
import { Registry, publicNode } from './registry';
import { Scraper } from './scraper';
import { buildStatus } from './status';
import { ManagerStore } from './store/collections';
import { EtcdKv } from './store/etcd-kv';
import type { KvStore } from './store/kv';
import { LevelKv } from './store/level-kv';
import { Webhooks } from './webhooks';
import { Writer } from './writer';

export class ManagerService {
  readonly metrics = new ManagerMetrics();
  ctx!: ManagerContext;
  private leadership!: ReadyLeadership;
  registry!: Registry;
  procedures!: Procedures;
  ingest!: Ingest;
  history!: EventHistory;
  backups!: ManagerBackups;
  networks!: ManagerNetworks;
  private scraper!: Scraper;
  private api!: ManagerApi;
  private id = '';
  private port = 0;
  private readonly startedAt = new Date().toISOString();
  private stopping: Promise<void> | null = null;
  /** Set once the services exist: the API listens before (its port makes this manager's address). */
  ready = false;

  private constructor(readonly config: ManagerConfig, readonly log: Logger, private readonly kv: KvStore) {}

  static async start(config: ManagerConfig, log: Logger): Promise<ManagerService> {
    const token = config.apiTokenFile ? (await fsp.readFile(config.apiTokenFile, 'utf8')).trim() : undefined;
    if (token !== undefined && token.length < 16) throw new TricopyError('invalid-argument', `API token in ${config.apiTokenFile} is shorter than 16 characters`);
    let kv: KvStore;
    if (config.store === 'etcd') {
      kv = await EtcdKv.connect(config.etcdEndpoints, config.etcdPrefix);
    } else {
      await fsp.mkdir(config.dataDir!, { recursive: true, mode: 0o700 });
      kv = await LevelKv.open(path.join(config.dataDir!, 'store'));
    }
    const m = new ManagerService(config, log, kv);
    try {
      m.api = await buildManagerApi(m, token);
      m.port = await m.api.listenOn(config.host, config.apiPort);
      const url = config.advertiseUrl ?? `http://${config.host.includes(':') ? `[${config.host}]` : config.host}:${m.port}`;
      m.id = await managerIdOf(kv);
      const claim: Leadership = kv instanceof EtcdKv ? new EtcdLeadership(kv, url, config.leaderTtlSeconds, log.child({ component: 'leadership' })) : new SoleLeadership(url);
      const leadership = new ReadyLeadership(claim, () => m.lead(), log);
      m.build(url, leadership, token);
      m.ready = true;
      await leadership.start();
      m.scraper.start();
      m.networks.start();
    } catch (err) {
      await m.api?.close().catch(() => undefined);
      await kv.close().catch(() => undefined);
      throw listenError(err);
    }
    return m;
  }

  private build(url: string, leadership: ReadyLeadership, token: string | undefined): void {
    this.leadership = leadership;
    const store = new ManagerStore(this.kv);
    const history = new EventHistory(store, systemClock);
    const alerts = new AlertBook(store, systemClock);
    const model = new ClusterModel(store, systemClock);
    const webhooks = new Webhooks(this.config.webhooks, this.log.child({ component: 'webhooks' }));
    const writer = new Writer(store, history, alerts, webhooks, () => this.id, () => model.load());
    this.history = history;
    this.ctx = {
      config: this.config, log: this.log, clock: systemClock, store, history, alerts, model, writer, webhooks, leadership, metrics: this.metrics, url,
      managerId: () => this.id, apiToken: token, clientFor: (n) => new HttpNodeClient(n.url, n.token),
    };
    this.registry = new Registry(this.ctx);
    this.procedures = new Procedures(this.ctx, this.registry);
    this.ingest = new Ingest(this.ctx, (c) => this.registry.pairChanged(c.node, c.pair));
    this.scraper = new Scraper(this.ctx);
    this.backups = new ManagerBackups(this.ctx);
    this.networks = new ManagerNetworks(this.ctx);
    leadership.onChange((leading) => this.backups.onLeadership(leading));
    this.metrics.status = () => this.status();
  }

  get apiPort(): number {
    return this.port;
  }

  isLeader(): boolean {
    return this.ctx.leadership.isLeader();
  }

  /** Holds the leader claim but is still loading the working state. */
  takingLead(): boolean {
    return this.leadership.takingLead();
  }

  leaderUrl(): string | null {
    return this.ctx.leadership.leaderUrl();
  }

  /** Taking the lead: the working state from the store, then every node learns who leads. */
  private async lead(): Promise<void> {
    const { history, alerts, model, store, writer } = this.ctx;
    await history.load();
    await alerts.load();
    await model.load();
    await writer.run(async (tx) => {
      tx.event({ kind: 'manager-leading', node: null, subject: this.ctx.url, reason: `this manager leads (${this.config.store} store)` });
    });
    await this.procedures.markInterrupted();
    await this.backups.jobs.markInterrupted();
    for (const node of await store.listNodes()) {
      await this.registry.tellManager(node).catch((err: unknown) => this.log.info({ node: node.name, err: errorMessage(err) }, 'cannot tell the node its manager now; it keeps its last addresses'));
    }
  }

  async info(): Promise<ManagerInfo> {
    return {
      managerId: this.id, version, store: this.config.store, url: this.ctx.url, leader: this.isLeader(), leaderUrl: this.leaderUrl(),
      managers: await this.ctx.leadership.managers(), pollIntervalMs: this.config.pollIntervalMs, startedAt: this.startedAt,
    };
  }

  async status(): Promise<StatusDocument> {
    const { store } = this.ctx;
    let model = this.ctx.model;
    let alertsOpen: number;
    if (this.isLeader()) {
      alertsOpen = this.ctx.alerts.activeAlerts().length;
    } else {
      model = new ClusterModel(store, systemClock);
      await model.load();
      alertsOpen = (await store.listAlerts()).filter((a) => a.state !== 'closed').length;
    }
    return buildStatus({ manager: await this.info(), nodes: await store.listNodes(), states: model.all(), topologies: await this.registry.topologies(), alertsOpen });
  }

  async nodes(): Promise<NodeRecord[]> {
    return (await this.ctx.store.listNodes()).map(publicNode);
  }

  /** A topology's arbiter panel from the latest events stored (what the nodes' agents reported). */
  async arbiterBoard(name: string): Promise<ArbiterBoard> {
    const t = await this.registry.topology(name);
    const last = await this.ctx.store.lastEventSeq();
    return buildArbiterBoard(t, await this.history.query({ afterSeq: Math.max(0, last - maxEventsPerQuery), limit: maxEventsPerQuery }));
  }

  topologyRecords(): Promise<TopologyRecord[]> {
    return this.ctx.store.listTopologies();
  }

  async alertList(all: boolean): Promise<Alert[]> {
    const alerts = (await this.ctx.store.listAlerts()).reverse();
    return all ? alerts : alerts.filter((a) => a.state !== 'closed');
  }

  async ack(id: string, by: string): Promise<Alert> {
    return this.ctx.writer.run(async (tx) => {
      const change = await this.ctx.alerts.ack(id, by);
      if (change.ops.length > 0) tx.alert(change);
      return change.alert;
    });
  }

  async samples(subject: string | undefined, sinceMs: number): Promise<PerfSample[]> {
    const rows = await this.ctx.store.listSamples('');
    return rows.map((r) => r.sample).filter((s) => (subject === undefined || s.subject === subject) && Date.parse(s.time) >= sinceMs);
  }

  /** Clean stop: the API closes, an etcd lease is revoked (another manager leads at once), the store closes. */
  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        this.scraper.stop();
        this.networks.stop();
        this.registry.stop();
        this.backups.stop();
        await this.api.close();
        await this.ctx.leadership.stop();
        await this.kv.close();
        this.log.info('manager stopped');
      })();
    }
    return this.stopping;
  }
}

/** One id for every manager sharing the store: made by the first, read by the others. */
async function managerIdOf(kv: KvStore): Promise<string> {
  const fresh = JSON.stringify(randomUUID());
  if (kv instanceof EtcdKv) return JSON.parse(await kv.createIfAbsent('meta/managerId', fresh)) as string;
  const existing = await kv.get('meta/managerId');
  if (existing !== undefined) return JSON.parse(existing) as string;
  await kv.batch([{ type: 'put', key: 'meta/managerId', value: fresh }]);
  return JSON.parse(fresh) as string;
}

function listenError(err: unknown): Error {
  const e = err as NodeJS.ErrnoException & { port?: number };
  if (e.code === 'EADDRINUSE') return new TricopyError('unavailable', `port ${e.port ?? ''} is already in use`, 'choose another --api-port, or 0 for any free port');
  return err instanceof Error ? err : new Error(String(err));
}
