// A storage node: composes the volume store, the NBD server, the control API, metrics and the
// event journal, and owns the node-level operations the API exposes.
import type { FastifyInstance } from 'fastify';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import { TricopyError, errnoCode, errorMessage, invariantObservers } from '../common/errors';
import { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import { NbdServer, parsePskFile } from '../nbd/server';
import { defaultNbdLimits, type ExportLookup, type ExportProvider, type NbdClientInfo, type NbdObserver, type NbdTlsConfig } from '../nbd/types';
import { ReplicatedVolume } from '../replication/datapath/replicated-volume';
import { ReplicationService, defaultReplicationOptions } from '../replication/service';
import { defaultLinkTimings } from '../replication/transport/link';
import { PeerManager } from '../replication/transport/peers';
import { type LinkTlsConfig, certificateSummary, loadLinkTls } from '../replication/transport/link-tls';
import { systemClock } from '../common/clock';
import { nodeDisk, nodeDiskIoPath } from '../common/disk';
import { VolumeStore, type VolumeMeta } from '../volume/store';
import type { ClientView, HostWrites, NodeEvent, NodeInfo, NodePorts, VolumeView } from '../contracts/node';
import type { PushedEvent } from '../contracts/monitor';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import type { CreatePairInput } from '../replication/control/operator';
import { NodeMonitor } from '../monitor/monitor';
import { type ReplicaHost, ReplicaService } from '../replica/service';
import { CloneService } from '../replica/clones';
import { HttpMonitorTransport } from '../monitor/transport';
import { buildApi, type NodeApi } from './api';
import type { NodeConfig } from './config';
import { NodeMetrics } from './metrics';
import { type DataDirIdentity, dataDirIdentity } from './identity';
import { lockDataDir } from './lock';
import { PairPeerBook } from './pair-peers';
import { HostGroupBook } from './host-group-book';
import { HostGroupAccess, type HostGroupNode } from './host-group-access';
import { NetworkBook } from './networks';
import { hostWritesOf } from './host-writes';
import { PeerLinks } from './peer-links';
import { ListenerRefusals } from './refusals';
import { version } from './version';
import { NodeRelocations } from './relocations';
import { relocationChunkBytes } from '../volume/relocation';

export type { ClientView, NodeInfo, NodePorts, VolumeView };

/**
 * A module above the node that joins it (quorum pairs and automatic failover, src/quorum/): it is
 * attached once replication runs and before the control API listens, may add API routes, and is
 * stopped before the node's own parts.
 */
export interface NodeExtension {
  readonly name: string;
  attach(node: StorageNode): Promise<void> | void;
  routes?(app: FastifyInstance): void;
  stop?(): Promise<void>;
}

export class StorageNode {
  readonly events: EventJournal;
  readonly metrics: NodeMetrics;
  private readonly refusals: ListenerRefusals;
  private nbd!: NbdServer;
  private transport!: PeerManager;
  private api!: NodeApi;
  replication!: ReplicationService;
  replicas!: ReplicaService;
  /** Writable throwaway clones of volumes (a DR drill at this site). */
  clones!: CloneService;
  monitor!: NodeMonitor;
  private readonly fronts = new Map<string, ReplicatedVolume>();
  private portsValue: NodePorts = { nbdPort: 0, apiPort: 0, replPort: 0 };
  private readonly startedAtMs = Date.now();
  private readonly startedAt = new Date(this.startedAtMs).toISOString();
  private identity!: DataDirIdentity;
  private pairPeers!: PairPeerBook;
  /** Remote copy networks this node is attached to (spec 002). */
  networks!: NetworkBook;
  /** Host groups and LUN mappings (spec 003 §5.6): who may see and open which volume. */
  hostGroups!: HostGroupAccess;
  private peerLinks!: PeerLinks;
  private stopping: Promise<void> | null = null;
  private extensions: NodeExtension[] = [];
  private unlock: () => Promise<void> = async () => undefined;
  /** Online moves of volumes between data areas (spec 003 Fig. 15). */
  relocations!: NodeRelocations;

  private constructor(
    readonly config: NodeConfig,
    readonly store: VolumeStore,
    readonly log: Logger,
  ) {
    this.events = new EventJournal(log.child({ component: 'events' }));
    this.metrics = new NodeMetrics(config.name, () => store.list().map((m) => ({
      name: m.name, sizeBytes: m.sizeBytes, allocatedBytes: store.volume(m.name).allocatedBytes,
    })));
    this.refusals = new ListenerRefusals(this.events, this.metrics, config.securityEventWindowMs);
  }

  static async start(config: NodeConfig, log: Logger, extensions: NodeExtension[] = []): Promise<StorageNode> {
    await checkLocalAddress(config.host, '--host');
    if (config.apiHost !== config.host) await checkLocalAddress(config.apiHost, '--api-host');
    await fsp.mkdir(config.dataDir, { recursive: true, mode: 0o700 });
    const tls = await loadTls(config);
    const apiToken = config.apiTokenFile ? (await fsp.readFile(config.apiTokenFile, 'utf8')).trim() : undefined;
    if (apiToken !== undefined && apiToken.length < 16) {
      throw new TricopyError('invalid-argument', `API token in ${config.apiTokenFile} is shorter than 16 characters`);
    }
    const secret = config.clusterSecretFile ? await readSecret(config.clusterSecretFile) : undefined;
    const replTls = await loadReplTls(config);
    const unlock = await lockDataDir(config.dataDir);
    let store: VolumeStore;
    try {
      store = await VolumeStore.open(config.dataDir, { disk: nodeDisk, clock: systemClock }, log.child({ component: 'store' }), config.dataAreas);
    } catch (err) {
      await unlock();
      throw err;
    }
    const node = new StorageNode(config, store, log);
    node.unlock = unlock;
    node.relocations = new NodeRelocations(store, { rateBytesPerSecond: config.relocationRateBytesPerSecond, chunkBytes: relocationChunkBytes },
      systemClock, log.child({ component: 'relocation' }), (kind, subject, reason, details) => void node.events.emit(kind, subject, reason, details));
    try {
      node.identity = await dataDirIdentity(config.dataDir, nodeDisk);
      node.pairPeers = await PairPeerBook.open(config.dataDir, nodeDisk);
      node.networks = await NetworkBook.open(config.dataDir, nodeDisk);
      node.hostGroups = new HostGroupAccess(await HostGroupBook.open(config.dataDir, nodeDisk), node.hostGroupNode());
    } catch (err) {
      await store.close();
      await unlock();
      throw err;
    }
    // A violated invariant is a bug: say so loudly, wherever the error is caught afterwards.
    invariantObservers.add((err) => log.fatal({ err: err.message, stack: err.stack }, 'invariant violated'));
    try {
      node.nbd = new NbdServer({
        host: config.host,
        port: config.nbdPort,
        provider: node.exportProvider(),
        observer: node.nbdObserver(),
        limits: { ...defaultNbdLimits, maxConnections: config.maxConnections, handshakeTimeoutMs: config.handshakeTimeoutMs,
          minBlockBytes: config.minBlockBytes },
        tlsMode: config.tlsMode,
        tls,
        log: log.child({ component: 'nbd' }),
      });
      const replicationLog = log.child({ component: 'replication' });
      const transport = new PeerManager(config.name, secret,
        { ...defaultLinkTimings, peerTimeoutMs: config.peerTimeoutMs, heartbeatIntervalMs: Math.max(100, Math.floor(config.peerTimeoutMs / 4)) },
        replicationLog.child({ component: 'peers' }), replTls);
      node.transport = transport;
      node.peerLinks = new PeerLinks(transport, node.events, node.startedAtMs, systemClock);
      node.replication = new ReplicationService({
        ...defaultReplicationOptions,
        localNode: config.name,
        advertiseHost: config.advertiseHost,
        advertiseReplPort: config.advertiseReplPort,
        journalCapacityBytes: config.journalSizeBytes,
        journalFullPolicy: config.journalFullPolicy,
        autoResync: config.autoResync,
      }, { clock: systemClock, disk: nodeDisk, transport, volumes: store }, config.dataDir, node.events, replicationLog);
      node.replication.clientsOf = (volume) => node.nbd.clientsOf(volume).length;
      // Residual entries of a fast failover come only from this node's own edge (spec 002 E-21).
      node.replication.residual.isNetworkEdge = (peer) => node.networks.list().some((a) => a.edge.name === peer);
      transport.refusalObserver = node.refusals.replication;
      const replication = node.replication;
      node.metrics.replication = { pairs: () => replication.list(), groups: () => replication.groups().map((g) => replication.groupStatus(g)) };
      // Before remote copy starts: its recovery may write volumes, and their snapshots, replicas and
      // bitmaps must see every change.
      node.replicas = await ReplicaService.open(config.dataDir, {
        volumes: store, disk: nodeDisk, clock: systemClock, log: log.child({ component: 'replica' }), host: node.replicaHost(),
        copyRateBytesPerSecond: config.replicaCopyRateBytesPerSecond,
      });
      node.portsValue.replPort = await node.replication.start(config.host, config.replPort);
      await node.replicas.start();
      node.clones = await node.openClones();
      node.portsValue.nbdPort = await node.nbd.listen();
      node.monitor = await NodeMonitor.open({
        self: config.name, dataDir: config.dataDir, disk: nodeDisk, clock: systemClock, log: log.child({ component: 'monitor' }),
        events: node.events, transport: new HttpMonitorTransport(apiToken),
        pair: (name) => node.pairOrUndefined(name), group: (name) => node.groupOrUndefined(name),
        snapshot: () => ({ info: node.info(), volumes: node.listVolumes(), pairs: replication.list(), groups: node.allGroups() }),
        enrich: (event) => node.enrich(event),
      });
      for (const extension of extensions) {
        await extension.attach(node);
        node.extensions.push(extension);
      }
      node.api = await buildApi(node, { token: apiToken, log: log.child({ component: 'api' }), extensions });
      node.portsValue.apiPort = await node.api.listenOn(config.apiHost, config.apiPort);
    } catch (err) {
      for (const extension of node.extensions.reverse()) await extension.stop?.().catch(() => undefined);
      await node.nbd?.close().catch(() => undefined);
      await node.monitor?.close().catch(() => undefined);
      await node.replication?.stop().catch(() => undefined);
      await node.clones?.close().catch(() => undefined);
      await node.replicas?.close().catch(() => undefined);
      await store.close();
      await unlock();
      throw listenError(err);
    }
    node.refusals.start();
    node.events.emit('node-started', config.name, 'node process started', { ...node.portsValue, version, io: nodeDiskIoPath() });
    return node;
  }

  get ports(): NodePorts {
    return { ...this.portsValue };
  }

  info(): NodeInfo {
    return {
      name: this.config.name,
      site: this.config.site,
      advertiseHost: this.config.advertiseHost,
      replication: this.replication.hasSecret,
      replAddress: { host: this.config.advertiseHost, port: this.config.advertiseReplPort ?? this.portsValue.replPort },
      version,
      dataDir: this.config.dataDir,
      dataDirId: this.identity.id,
      ports: this.ports,
      tlsMode: this.config.tlsMode,
      startedAt: this.startedAt,
      volumeCount: this.store.list().length,
      nbdConnections: this.nbd.connectionCount,
      peerLinks: this.peerLinks.view(this.replication.list().map((p) => p.peer.node)),
    };
  }

  /** Every pair here, with the peer identity it was built with when recorded. */
  pairs(): PairStatus[] {
    return this.replication.list().map((p) => this.pairPeers.decorate(p));
  }

  pairView(p: PairStatus): PairStatus {
    return this.pairPeers.decorate(p);
  }

  /** Creates a pair at this node (the primary) and keeps the identity of the peer's data directory when given. */
  async createPair(input: CreatePairInput, peerDataDirId: string | undefined): Promise<PairStatus> {
    if (this.replicas.isReplica(input.volume)) {
      throw new TricopyError('conflict', `volume ${input.volume} is an in-node replica; only its pair writes it`,
        `copy the primary instead, or delete the replica pair first: tricopy replica delete ${input.volume}`);
    }
    const status = await this.replication.createPair(input);
    if (peerDataDirId === undefined) return status;
    await this.pairPeers.record(status, peerDataDirId, this.replication.list());
    return this.pairPeers.decorate(status);
  }

  listVolumes(): VolumeView[] {
    return this.store.list().map((m) => this.view(m));
  }

  getVolume(name: string): VolumeView {
    return this.view(this.store.get(name));
  }

  async createVolume(options: { name: string; sizeBytes: number; description?: string; thin?: boolean; tier?: string }): Promise<VolumeView> {
    const meta = await this.store.create(options);
    this.events.emit('volume-created', meta.name, 'created by operator', { sizeBytes: meta.sizeBytes, tier: meta.tier });
    return this.view(meta);
  }

  /** Starts moving a volume's data to another data area; host I/O, sessions and pairs go on (spec 003 Fig. 15). */
  async relocateVolume(name: string, tier: string): Promise<VolumeView> {
    await this.relocations.start(name, tier);
    return this.view(this.store.get(name));
  }

  async resizeVolume(name: string, sizeBytes: number): Promise<VolumeView> {
    this.refuseIfPaired(name, 'resize');
    this.replicas.refuseVolumeChange(name, 'resize');
    this.relocations.refuseWhileMoving(name, 'resized');
    const before = this.store.get(name).sizeBytes;
    const meta = await this.store.resize(name, sizeBytes);
    await this.replication.forgetVolume(name, 'resized');
    if (meta.sizeBytes !== before) {
      this.events.emit('volume-resized', name, 'grown by operator; clients attached now see the new size after reconnecting',
        { fromBytes: before, toBytes: meta.sizeBytes });
    }
    return this.view(meta);
  }

  async allow(name: string, rule: { client?: string; identity?: string }): Promise<VolumeView> {
    const refusal = rule.identity !== undefined ? this.identityRefusal(rule.identity) : undefined;
    if (refusal) throw refusal;
    const meta = await this.store.allow(name, rule);
    this.events.emit('access-granted', name, 'access rule added by operator', { rules: meta.access });
    return this.view(meta);
  }

  async disallow(name: string, rule: { client?: string; identity?: string }): Promise<VolumeView> {
    const meta = await this.store.disallow(name, rule);
    this.events.emit('access-revoked', name, 'access rule removed by operator; attached clients keep their session',
      { rules: meta.access });
    return this.view(meta);
  }

  async deleteVolume(name: string, force: boolean): Promise<void> {
    this.store.get(name); // not-found first
    this.refuseIfPaired(name, 'delete');
    this.replicas.refuseVolumeChange(name, 'delete');
    this.relocations.refuseWhileMoving(name, 'deleted');
    const clients = this.nbd.clientsOf(name);
    if (clients.length > 0 && !force) {
      throw new TricopyError('busy', `volume ${name} has ${clients.length} attached client(s): ` +
        clients.map((c) => `${c.address}:${c.port}`).join(', '),
        'detach the clients first, or pass --force to disconnect them and delete anyway');
    }
    const dropped = this.nbd.disconnectExport(name);
    await this.replicas.forgetVolume(name);
    await this.hostGroups.forgetVolume(name);
    await this.store.delete(name);
    await this.replication.forgetVolume(name, 'deleted');
    this.fronts.delete(name);
    this.relocations.forget(name);
    this.metrics.forgetVolume(name);
    this.events.emit('volume-deleted', name, force && dropped > 0 ? `deleted by operator, ${dropped} client(s) disconnected` : 'deleted by operator');
  }

  /** Clean shutdown: stop accepting, finish in-flight requests, flush every volume, close. */
  /**
   * SIGHUP in `node run`: the TLS files (--tls-cert, --tls-key, --tls-ca, --tls-psk-file) read again
   * for NBD handshakes and replication links from now on; sessions already up keep theirs. Files
   * that cannot be read or do not fit change nothing, and are reported as an event.
   */
  async reloadTls(): Promise<void> {
    const name = this.config.name;
    try {
      const nbdTls = await loadTls(this.config);
      const replTls = await loadReplTls(this.config);
      if (nbdTls) this.nbd.reloadTls(nbdTls);
      if (replTls) this.transport.reloadTls(replTls);
      if (!nbdTls && !replTls) throw new TricopyError('invalid-argument', 'the node runs without TLS (--tls and --repl-tls are off): nothing to reload');
      const cert = certificateSummary(replTls?.certPem ?? (nbdTls?.kind === 'x509' ? nbdTls.certPem : undefined));
      this.events.emit('tls-reloaded', name, `${[nbdTls ? `NBD (${nbdTls.kind})` : '', replTls ? 'replication links' : ''].filter(Boolean).join(' and ')} ` +
        `use the files as they are now${cert ? `: ${cert.subject}, valid until ${cert.notAfter} (${cert.fingerprint256})` : ''}`);
    } catch (err) {
      this.events.emit('tls-reload-failed', name, `${errorMessage(err)}; the node goes on with the TLS files it had`);
    }
  }

  stop(): Promise<void> {
    if (!this.stopping) {
      this.stopping = (async () => {
        this.refusals.stop();
        this.events.emit('node-stopping', this.config.name, 'shutdown requested');
        for (const extension of [...this.extensions].reverse()) {
          await extension.stop?.().catch((err: unknown) => this.log.error({ err, extension: extension.name }, 'stopping an extension failed'));
        }
        // Moves stop first: each volume goes back to its own tier's file before anything closes.
        await this.relocations.stop();
        await this.nbd.close();
        await this.monitor.close();
        await this.replication.stop();
        await this.api.close();
        await this.clones.close();
        await this.replicas.close();
        await this.store.close();
        await this.unlock();
        this.log.info('node stopped');
      })();
    }
    return this.stopping;
  }

  pairOrUndefined(name: string): PairStatus | undefined {
    try {
      return this.replication.get(name);
    } catch {
      return undefined;
    }
  }

  groupOrUndefined(name: string): GroupStatus | undefined {
    return this.replication.groups().includes(name) ? this.replication.groupStatus(name) : undefined;
  }

  allGroups(): GroupStatus[] {
    return this.replication.groups().map((g) => this.replication.groupStatus(g));
  }

  /** An event as the node pushes it to its manager: with the current view of its pair or volume. */
  enrich(event: NodeEvent): PushedEvent {
    const out: PushedEvent = { event };
    if (event.kind.startsWith('pair-') || event.kind.startsWith('split-brain') || event.kind.startsWith('copy-report')) {
      const pair = this.pairOrUndefined(event.subject) ?? null;
      out.pair = pair;
      if (pair?.group) out.group = this.groupOrUndefined(pair.group) ?? null;
    } else if (event.kind.startsWith('monitor-row-')) {
      out.table = this.monitor.status().table;
    } else if (event.kind.startsWith('volume-') || event.kind.startsWith('access-')) {
      out.volume = this.store.has(event.subject) ? this.view(this.store.get(event.subject)) : null;
    }
    return out;
  }

  /**
   * PSK users, or client certificates checked against a CA, give clients identities; without them
   * a rule naming an identity could never match, which the operator must hear about.
   */
  private identityRefusal(identity: string): TricopyError | undefined {
    if (this.config.tlsMode !== 'off' && (this.config.tlsPskFile !== undefined || this.config.tlsCa !== undefined)) return undefined;
    return new TricopyError('invalid-argument', `this node cannot verify TLS identities, so identity ${identity} could never match`,
      this.config.tlsMode === 'off'
        ? 'start the node with --tls and --tls-psk-file, or with --tls-cert/--tls-key and --tls-ca (client certificates)'
        : 'X.509 identities need --tls-ca so clients present certificates; PSK identities need --tls-psk-file');
  }

  /** What host groups ask of the node. */
  private hostGroupNode(): HostGroupNode {
    return {
      accessListOf: (volume) => this.store.get(volume).access,
      volumeOfExport: (exportName) => volumeOfExport(exportName),
      disconnectWhere: (refuse) => this.nbd.disconnectWhere(refuse),
      identityRefusal: (identity) => this.identityRefusal(identity),
      emit: (kind, subject, reason, details) => void this.events.emit(kind, subject, reason, details),
    };
  }

  private describe(meta: VolumeMeta): string {
    return meta.description || `tricopy volume on ${this.config.name} (${this.config.site})`;
  }

  /** The device hosts see: the volume, routed through replication when it is paired. */
  front(name: string): ReplicatedVolume {
    let front = this.fronts.get(name);
    if (!front) {
      front = new ReplicatedVolume(this.store.volume(name), this.replication);
      this.fronts.set(name, front);
    }
    return front;
  }

  private refuseIfPaired(name: string, what: string): void {
    const pair = this.replication.list().find((p) => p.volume === name);
    if (pair) {
      throw new TricopyError('conflict', `volume ${name} is in pair ${pair.name}; it cannot be ${what === 'delete' ? 'deleted' : 'resized'} while paired`,
        `delete the pair first: tricopy pair delete ${pair.name}`);
    }
  }

  /** The NBD URI of an export of this node. */
  exportUri(exportName: string): string {
    const host = this.config.advertiseHost.includes(':') ? `[${this.config.advertiseHost}]` : this.config.advertiseHost;
    const scheme = this.config.tlsMode === 'required' ? 'nbds' : 'nbd';
    return `${scheme}://${host}:${this.config.advertiseNbdPort ?? this.portsValue.nbdPort}/${exportName}`;
  }

  /** Clone sets, after snapshots and remote copy are open (a set holds the apply of async copies while it is taken). */
  private async openClones(): Promise<CloneService> {
    const clones = await CloneService.open(this.config.dataDir, {
      disk: nodeDisk, clock: systemClock, log: this.log.child({ component: 'clones' }), snapshots: this.replicas,
      host: {
        hasVolume: (name) => this.store.has(name),
        volumeSize: (name) => this.store.get(name).sizeBytes,
        holdApply: (volumes) => this.replication.holdApplyOf(volumes),
        disconnect: (exportName) => this.nbd.disconnectExport(exportName),
        clientsOf: (exportName) => this.nbd.clientsOf(exportName).length,
        exportUri: (exportName) => this.exportUri(exportName),
        emit: (kind, subject, reason, details) => void this.events.emit(kind, subject, reason, details),
      },
    });
    this.replicas.snapshotInUse = (volume, snapshot) => clones.snapshotUser(volume, snapshot);
    return clones;
  }

  /** What in-node replicas, snapshots and bitmaps ask of the node. */
  private replicaHost(): ReplicaHost {
    return {
      front: (volume) => this.front(volume),
      disconnect: (exportName) => this.nbd.disconnectExport(exportName),
      clientsOf: (exportName) => this.nbd.clientsOf(exportName).length,
      exportUri: (exportName) => this.exportUri(exportName),
      writeRefusal: (volume) => this.replication.writeRefusal(volume)?.reason,
      remotePaired: (volume) => this.replication.list().some((p) => p.volume === volume),
      groupVolumes: (group) => [...new Set(this.replication.list().filter((p) => p.group === group).map((p) => p.volume))],
      emit: (kind, subject, reason, details) => void this.events.emit(kind, subject, reason, details),
    };
  }

  private view(stored: VolumeMeta): VolumeView {
    const { relocatingTo: _moving, ...meta } = stored;
    return {
      ...meta,
      relocation: this.relocations.view(meta.name),
      hostGroups: this.hostGroups?.mappingsOf(meta.name) ?? [],
      allocatedBytes: this.store.volume(meta.name).allocatedBytes,
      exportUri: this.exportUri(meta.name),
      clients: this.nbd ? this.nbd.clientsOf(meta.name).map(clientView) : [],
      hostWrites: this.hostWrites(meta.name),
      detachedSecondary: this.replication?.detachedSecondary(meta.name) ?? null,
    };
  }

  private hostWrites(volume: string): HostWrites {
    return hostWritesOf(this.replication?.writeRefusal(volume));
  }

  /** Traffic goes to the metrics directly (the hot path); refusals to metrics and events. */
  private nbdObserver(): NbdObserver {
    const m = this.metrics;
    return {
      requestCompleted: m.requestCompleted.bind(m),
      clientAttached: m.clientAttached.bind(m),
      clientDetached: m.clientDetached.bind(m),
      refused: this.refusals.nbd,
    };
  }

  /**
   * Every export is decided by host groups and the volume's access list (HostGroupAccess.decide):
   * a snapshot or split replica follows its volume; an export the host may not see is answered
   * as unknown and left out of the list, one it sees but may not open is refused by policy.
   */
  private exportProvider(): ExportProvider {
    const refusal = (decision: 'denied' | 'invisible', volume: string, name: string, client: NbdClientInfo): ExportLookup => {
      const who = `client ${client.address}${client.tlsIdentity ? ` (${client.tlsIdentity})` : ''}`;
      // Invisible is answered like a name that does not exist: the host learns nothing of it.
      return decision === 'invisible'
        ? { status: 'unknown', message: `no volume named ${JSON.stringify(name)} on node ${this.config.name}` }
        : { status: 'denied', message: `${who} is not on the access list of volume ${volume}` };
    };
    return {
      lookup: (name: string, client: NbdClientInfo): ExportLookup => {
        const owned = this.clones.lookup(name) ?? this.replicas.lookup(name);
        if (owned?.status === 'denied') {
          // Refused for its state, unless the host may not even see the volume.
          const volume = volumeOfExport(name);
          if (this.store.has(volume) && this.hostGroups.decide(volume, client) === 'invisible') return refusal('invisible', volume, name, client);
          return { status: 'denied', message: owned.message };
        }
        if (owned) {
          const decision = this.hostGroups.decide(owned.volume, client);
          if (decision !== 'open') return refusal(decision, owned.volume, name, client);
          return { status: 'ok', export: { name, description: owned.description, device: owned.device } };
        }
        if (!this.store.has(name)) return { status: 'unknown', message: `no volume named ${JSON.stringify(name)} on node ${this.config.name}` };
        const meta = this.store.get(name);
        // The NBD server reports a refusal (once per connection); ListenerRefusals records it.
        const decision = this.hostGroups.decide(name, client);
        if (decision !== 'open') return refusal(decision, name, name, client);
        return {
          status: 'ok',
          export: { name, description: this.describe(meta), device: this.replicas.decorate(name, this.front(name)) },
        };
      },
      list: (client: NbdClientInfo) => {
        const admitted = (volume: string): boolean => this.store.has(volume) && this.hostGroups.decide(volume, client) === 'open';
        return [
          ...this.store.list().filter((m) => this.replicas.listed(m.name) && admitted(m.name)).map((m) => ({ name: m.name, description: this.describe(m) })),
          ...this.replicas.snapshotExports().filter((e) => admitted(e.volume)).map((e) => ({ name: e.name, description: e.description })),
          ...this.clones.exports().filter((e) => admitted(e.volume)).map((e) => ({ name: e.name, description: e.description })),
        ];
      },
    };
  }
}

/** Snapshots export as `volume@snapshot`; every other export name is its volume's. */
function volumeOfExport(exportName: string): string {
  const at = exportName.indexOf('@');
  return at > 0 ? exportName.slice(0, at) : exportName;
}

function clientView(c: NbdClientInfo): ClientView {
  return { id: c.id, address: c.address, port: c.port, tls: c.tls, identity: c.tlsIdentity ?? null };
}

function loadReplTls(config: NodeConfig): Promise<LinkTlsConfig | undefined> {
  if (config.replTlsMode === 'off') return Promise.resolve(undefined);
  return loadLinkTls({ mode: config.replTlsMode, cert: config.tlsCert, key: config.tlsKey, ca: config.tlsCa }, { mode: '--repl-tls', cert: '--tls-cert', key: '--tls-key', ca: '--tls-ca' });
}

async function loadTls(config: NodeConfig): Promise<NbdTlsConfig | undefined> {
  if (config.tlsMode === 'off') return undefined;
  const read = async (file: string, what: string): Promise<Buffer> => {
    try {
      return await fsp.readFile(file);
    } catch (err) {
      throw new TricopyError('invalid-argument', `cannot read TLS ${what} ${file}: ${(err as Error).message}`);
    }
  };
  if (config.tlsPskFile) {
    try {
      return { kind: 'psk', keys: parsePskFile((await read(config.tlsPskFile, 'PSK file')).toString('utf8'), config.tlsPskFile) };
    } catch (err) {
      throw err instanceof TricopyError ? err : new TricopyError('invalid-argument', (err as Error).message,
        'create one with: psktool -u <identity> -p <file>');
    }
  }
  return {
    kind: 'x509',
    certPem: await read(config.tlsCert!, 'certificate'),
    keyPem: await read(config.tlsKey!, 'key'),
    caPem: config.tlsCa ? await read(config.tlsCa, 'CA certificate') : undefined,
  };
}

async function readSecret(file: string): Promise<Buffer> {
  let text: string;
  try {
    text = (await fsp.readFile(file, 'utf8')).trim();
  } catch (err) {
    throw new TricopyError('invalid-argument', `cannot read the cluster secret ${file}: ${(err as Error).message}`);
  }
  if (text.length < 16) {
    throw new TricopyError('invalid-argument', `the cluster secret in ${file} is shorter than 16 characters`,
      'create one with: openssl rand -hex 32 > FILE (the same file on every node)');
  }
  return Buffer.from(text, 'utf8');
}

/**
 * Refuses an address this machine does not have before anything starts: a listener that fails on
 * it later would log its own error (with a stack) before the node reports it. Any other failure
 * is left to the real listeners, which report it as before.
 */
async function checkLocalAddress(host: string, flag: string): Promise<void> {
  const probe = net.createServer();
  try {
    await new Promise<void>((resolve, reject) => {
      probe.once('error', reject);
      probe.listen({ host, port: 0 }, resolve);
    });
  } catch (err) {
    if (errnoCode(err) === 'EADDRNOTAVAIL') throw new TricopyError('invalid-argument', `the ${flag} address is not an address of this machine`);
  } finally {
    probe.close();
  }
}

function listenError(err: unknown): Error {
  const e = err as NodeJS.ErrnoException & { port?: number };
  if (e.code === 'EADDRINUSE') {
    return new TricopyError('unavailable', `port ${e.port ?? ''} is already in use`,
      'another node or program listens there: choose other ports, or 0 for any free port');
  }
  if (e.code === 'EADDRNOTAVAIL') return new TricopyError('invalid-argument', 'the --host address is not an address of this machine');
  return err instanceof Error ? err : new Error(String(err));
}

