// A relay of the remote copy network (spec 002): an edge (104, 105) or a core (202). An edge
// presents virtual storages to its attached storage nodes (a node dials it as the node it pairs
// with), numbers and stores what they send under order-guarantee ids, answers writes locally, and
// applies what arrives for them strictly in order; a core only forwards. Both forward entries hop
// by hop along the path each carries, chosen by the edge it left from the routes of the network
// they were given (network apply) and the links that edge knows dead (paths.ts); an edge whose path
// changed because a link died sends its orders' unacknowledged entries again on the new one.
import { zstd } from './link-shaping';
import { promises as fsp } from 'node:fs';
import { type Clock, systemClock } from '../common/clock';
import { type Disk, nodeDisk } from '../common/disk';
import { TricopyError, errorMessage, isErrorCode } from '../common/errors';
import { EventJournal } from '../common/events';
import type { Logger } from '../common/log';
import type {
  RelayInfo, RelayLinkStatus, RelayNetworkConfig, RelayOrderStatus, RelayPairStatus, RelayPathsStatus, RelayPorts, RelayRole, RelayStatus, SuspendResult, FailbackResult,
  VirtualStorage, VirtualStoragesAnswer,
} from '../contracts/network';
import { defaultLinkTimings, type LinkTimings, type PeerLink } from '../replication/transport/link';
import { MessageType, encodeErrorPayload, responseError, responseOk } from '../replication/transport/messages';
import { diffChunkBytes } from '../replication/limits';
import { pairsSyncCodec } from '../replication/transport/control-messages';
import { version } from '../node/version';
import { EntryKind, type RelayEntry, type Rio, responseTo } from './entry';
import { Forwarder, defaultFragmentBytes } from './forwarder';
import type { PathChange } from './paths';
import { type Admission, type LinkKind, RelayLinks } from './links';
import { type LinkTlsConfig, certificateSummary } from '../replication/transport/link-tls';
import { classify, isFua, pairOf } from './rio';
import { OrderSource } from './source';
import { RelayState, regionCount } from './state';
import { OrderTarget } from './target';
import { PositionFile } from './position';
import { virtualStorage, virtualStorages } from './virtual-storage';
import { VirtualNames } from './virtual-names';

export interface RelayOptions {
  name: string;
  role: RelayRole;
  dataDir: string;
  listenHost: string;
  listenPort: number;
  apiHost: string;
  apiPort: number;
  secret: Buffer | undefined;
  /** TLS on every link of the relay (to relays and to attached storage nodes); undefined: plain. */
  tls?: LinkTlsConfig;
  timings?: LinkTimings;
  log: Logger;
  disk?: Disk;
  clock?: Clock;
}

/** How long a direct request (one not numbered) may take end to end. */
export const directTimeoutMs = 30_000;
/** How long the edge waits for a link to an attached storage before it gives up on one delivery. */
const storageConnectMs = 10_000;
const tickMs = 100;

export class Relay {
  readonly events: EventJournal;
  readonly links: RelayLinks;
  readonly forwarder: Forwarder;
  private readonly sources = new Map<string, OrderSource>();
  private readonly targets = new Map<string, OrderTarget>();
  /** Direct requests waiting for their answer: the entry is kept to send it again on a new path. */
  private readonly direct = new Map<number, { resolve: (rio: Rio) => void; timer: NodeJS.Timeout; entry: RelayEntry; to: string | undefined }>();
  /** Storage links held down after a failover (`node>as`): the storage must see its peer gone. */
  private readonly held = new Set<string>();
  /** The names this edge presents its nodes' partners under (Fig. 2), from the network installed. */
  private names = new VirtualNames(undefined, '');
  private nextCorr = 1;
  private ticker: NodeJS.Timeout | undefined;
  private listenPort = 0;
  apiPort = 0;
  refusedRequests = 0;
  private readonly startedAt = new Date().toISOString();
  private readonly disk: Disk;
  private readonly clock: Clock;
  private applying: Promise<void> = Promise.resolve();
  private tls: LinkTlsConfig | undefined;

  private constructor(readonly options: RelayOptions, readonly state: RelayState) {
    this.disk = options.disk ?? nodeDisk;
    this.clock = options.clock ?? systemClock;
    this.events = new EventJournal(options.log, this.clock);
    this.tls = options.tls;
    this.links = new RelayLinks(options.name, options.secret, options.timings ?? defaultLinkTimings, options.log, (d, e) => this.admit(d, e), options.tls);
    this.links.requestHandler = (link, kind, type, payload) => this.onLinkRequest(link, kind, type, payload);
    this.forwarder = new Forwarder(options.name, this.links, () => this.state.data.config, options.log, (e) => this.onLocalEntry(e), defaultFragmentBytes, () => this.clock.now());
    this.links.on('up', (_key: string, kind: LinkKind, peer: string, local: string) => this.onLinkUp(kind, peer, local));
    this.links.on('down', (_key: string, kind: LinkKind, peer: string) => {
      if (kind === 'relay') this.forwarder.linkDown(peer);
    });
    this.forwarder.onPathChange = (c) => this.onPathChange(c);
  }

  static async start(options: RelayOptions): Promise<Relay> {
    await fsp.mkdir(options.dataDir, { recursive: true });
    const state = await RelayState.load(options.dataDir, options.disk ?? nodeDisk);
    const relay = new Relay(options, state);
    if (state.data.config) {
      relay.applying = relay.install(state.data.config, false);
      await relay.applying;
    }
    relay.listenPort = await relay.links.listen(options.listenHost, options.listenPort);
    relay.ticker = setInterval(() => relay.tick(), tickMs);
    relay.ticker.unref();
    relay.events.emit('relay-started', options.name, `${options.role} listening on ${options.listenHost}:${relay.listenPort}`);
    return relay;
  }

  /**
   * New TLS files' contents (SIGHUP in `edge run`): links dialled or accepted from now on use them;
   * links already up keep their session. Refused (the old ones kept) when the mode or mutual TLS would change.
   */
  reloadTls(next: LinkTlsConfig | undefined): void {
    this.links.reloadTls(next);
    this.tls = next;
    const cert = certificateSummary(next?.certPem);
    this.events.emit('tls-reloaded', this.name, cert ? `now presenting ${cert.subject}, valid until ${cert.notAfter} (${cert.fingerprint256})` : 'TLS is off');
  }

  get name(): string {
    return this.options.name;
  }

  get ports(): RelayPorts {
    return { apiPort: this.apiPort, listenPort: this.listenPort };
  }

  get config(): RelayNetworkConfig | null {
    return this.state.data.config;
  }

  /** The virtual storages this edge presents to its attached nodes (§9.50); a core presents none. */
  virtualStorages(): VirtualStoragesAnswer {
    const cfg = this.config;
    return {
      edge: this.name, network: cfg?.network ?? null, variant: this.names.ownNames ? 'own-names' : 'base',
      virtualStorages: cfg && this.options.role === 'edge' ? virtualStorages(cfg, this.name) : [],
    };
  }

  /** A configuration query to the virtual storage `wwn` (§9.55): answered with its partner's configuration. */
  virtualStorage(wwn: string): VirtualStorage {
    const cfg = this.config;
    if (!cfg) throw new TricopyError('not-found', `relay ${this.name} has no network yet`, 'run tricopy network apply');
    if (this.options.role !== 'edge') throw new TricopyError('invalid-argument', `relay ${this.name} is a core: only edges present virtual storages`);
    return virtualStorage(cfg, this.name, wwn);
  }

  async stop(): Promise<void> {
    clearInterval(this.ticker);
    this.forwarder.close();
    for (const t of this.targets.values()) t.close();
    for (const s of this.sources.values()) await s.close();
    await this.links.close();
    await this.state.save();
  }

  info(): RelayInfo {
    const cfg = this.config;
    return {
      name: this.name, role: this.options.role, version, listen: { host: this.options.listenHost, port: this.listenPort }, apiPort: this.apiPort,
      dataDir: this.options.dataDir, startedAt: this.startedAt, network: cfg?.network ?? null, configVersion: cfg?.version ?? null,
    };
  }

  // ----------------------------------------------------------------------------------------------
  // Configuration (§6.12 step 7: the tables are distributed; the devices start using them)

  /** Installs a network from `network apply` (or the manager). Orders already running keep their counters. */
  apply(cfg: RelayNetworkConfig): Promise<void> {
    const next = this.applying.then(() => this.install(cfg, true));
    this.applying = next.catch(() => undefined);
    return next;
  }

  private async install(cfg: RelayNetworkConfig, persist: boolean): Promise<void> {
    // Both ends of a compressed link need zstd: refuse the network here rather than drop its frames.
    if (cfg.linkShaping?.some((s) => s.compressLevel !== null && s.between.includes(this.name))) zstd();
    const me = cfg.relays[this.name];
    if (!me) throw new TricopyError('invalid-argument', `network ${cfg.network} has no relay named ${this.name}`, 'check the names in the network file');
    if (me.role !== this.options.role) {
      throw new TricopyError('invalid-argument', `network ${cfg.network} lists ${this.name} as ${me.role === 'edge' ? 'an edge' : 'a core'}, but it runs as ${this.options.role === 'edge' ? 'an edge' : 'a core'}`,
        'start it with the matching --role, or move it to the right section of the network file');
    }
    const previous = this.state.data.config;
    if (previous && previous.network !== cfg.network) {
      throw new TricopyError('conflict', `relay ${this.name} belongs to network ${previous.network}, not ${cfg.network}`, 'a relay serves one network');
    }
    this.state.data.config = cfg;
    this.names = new VirtualNames(cfg, this.name);
    if (persist) await this.state.save();
    // Links held down by a failover stay down across restarts and applies.
    this.held.clear();
    for (const [id, t] of Object.entries(this.state.data.targets)) {
      if (!t.failedOver) continue;
      for (const row of Object.values(this.state.data.pairs)) if (row.order === id && row.side === 'target') this.held.add(`${row.target}>${row.source}`);
    }
    // Orders: a source for those leaving this edge, a target for those arriving here.
    for (const [id, o] of Object.entries(cfg.orders)) {
      if (o.from === this.name) {
        const s = this.sources.get(id);
        if (s) s.cfg = o;
        else {
          const source = new OrderSource(id, o, {
            edge: this.name, dataDir: this.options.dataDir, disk: this.disk, clock: this.clock, state: this.state, log: this.options.log, events: this.events,
            send: (entry) => this.forwarder.send(entry),
            sendLogged: (to, bytes) => this.forwarder.sendLogged(to, bytes),
            canSend: (to) => this.forwarder.canSend(to),
            dropStorageLinks: (node, as, reason) => this.links.disconnect('storage', node, this.names.presented(as), reason),
          });
          await source.open();
          this.sources.set(id, source);
          source.pump();
        }
      }
      if (o.to === this.name) {
        const t = this.targets.get(id);
        if (t) t.cfg = o;
        else {
          this.targets.set(id, new OrderTarget(id, o, {
            edge: this.name, clock: this.clock, state: this.state, log: this.options.log, events: this.events,
            send: (entry) => this.forwarder.send(entry),
            deliver: (node, as, type, payload, timeoutMs) => this.deliver(node, as, type, payload, timeoutMs),
            dropStorageLinks: (node, as, reason, hold) => this.dropStorageLinks(node, as, reason, hold),
            releaseStorageLink: (node, as) => this.links.release('storage', node, this.names.presented(as)),
          }, await PositionFile.open(this.options.dataDir, id, this.disk)));
        }
      }
    }
    // Relay links: one end dials (the one given an address for the other, else the name that sorts
    // first), the other accepts, so a link takes the path the file says.
    const dialed = new Map<string, { host: string; port: number }>();
    for (const l of cfg.links.filter((x) => x.includes(this.name))) {
      const n = l[0] === this.name ? l[1] : l[0];
      const mine = cfg.linkAddresses.find((a) => a.from === this.name && a.to === n);
      const theirs = cfg.linkAddresses.find((a) => a.from === n && a.to === this.name);
      if (mine) dialed.set(n, mine);
      else if (!theirs && this.name < n) dialed.set(n, { host: cfg.relays[n]!.host, port: cfg.relays[n]!.port });
    }
    for (const t of this.links.wantedTargets()) if (t.kind === 'relay' && !dialed.has(t.peer)) this.links.release('relay', t.peer, t.local);
    for (const [n, a] of dialed) this.links.want({ kind: 'relay', peer: n, local: this.name, host: a.host, port: a.port });
    // Storage links: every attached node is kept linked, as each storage it may pair with, from the
    // start (as two nodes paired directly stay linked). Both ends exchange their pairs when a link
    // comes up; doing that now, not when a pair's first message arrives, keeps that exchange from
    // crossing the creation of the pair.
    const virtual = new Set<string>();
    for (const [node, s] of Object.entries(cfg.storages)) {
      if (s.edge !== this.name) continue;
      for (const [other, o] of Object.entries(cfg.storages)) {
        if (other === node || o.customer !== s.customer || this.held.has(`${node}>${other}`)) continue;
        const as = this.names.presented(other);
        virtual.add(`${node}\u0000${as}`);
        this.links.want({ kind: 'storage', peer: node, local: as, host: s.host, port: s.replPort });
      }
    }
    for (const t of this.links.wantedTargets()) if (t.kind === 'storage' && !virtual.has(`${t.peer}\u0000${t.local}`)) this.links.release('storage', t.peer, t.local);
    for (const [pair, order] of Object.entries(cfg.orders).flatMap(([id, o]) => o.pairs.map((p) => [p, id] as const))) this.state.data.bindings[pair] ??= order;
    if (persist) {
      this.events.emit('network-applied', cfg.network, `version ${cfg.version}: ${Object.keys(cfg.relays).length} relays, ${Object.keys(cfg.orders).length} order-guarantee ids`);
      await this.state.save();
    }
  }

  /** Assigns a pair to an order-guarantee id before it is created (method B, §4.6). */
  async bind(pair: string, order: string): Promise<void> {
    const cfg = this.config;
    const o = cfg?.orders[order];
    if (!cfg || !o) throw new TricopyError('not-found', `edge ${this.name} knows no order-guarantee id ${order}`, 'run tricopy network apply first');
    if (o.from !== this.name) throw new TricopyError('invalid-argument', `order-guarantee id ${order} leaves from ${o.from}, not from ${this.name}`);
    const row = this.state.data.pairs[pair];
    if (row && row.order !== order && row.state !== 'deleted') {
      throw new TricopyError('conflict', `pair ${pair} already goes through order-guarantee id ${row.order}`);
    }
    this.state.data.bindings[pair] = order;
    await this.state.save();
  }

  // ----------------------------------------------------------------------------------------------
  // Admission and virtual addressing (§5.3)

  private admit(dialer: string, expect: string | undefined): Admission {
    const cfg = this.config;
    if (!cfg) return { refuse: `relay ${this.name} has no network yet (run tricopy network apply)` };
    if (cfg.relays[dialer]) {
      if (expect !== undefined && expect !== this.name) return { refuse: `relay ${dialer} asked for ${expect}, but this is ${this.name}` };
      return { kind: 'relay', local: this.name };
    }
    const mine = cfg.storages[dialer];
    if (!mine) return { refuse: `${dialer} is neither a relay nor a storage node of network ${cfg.network}` };
    if (this.options.role !== 'edge' || mine.edge !== this.name) return { refuse: `storage node ${dialer} is attached to ${mine.edge}, not to ${this.name}` };
    if (expect === undefined) return { refuse: `storage node ${dialer} did not say which storage it pairs with` };
    // Fig. 2 (§6.13 (A)): the name asked for is the virtual storage's; the partner it stands for is real.
    const real = this.names.partner(expect);
    if (real === undefined) {
      const named = cfg.storages[expect];
      const why = !named ? '' : named.edge === this.name ? ` (${expect} is attached to ${this.name} too)` : ` (this edge presents ${expect} as ${this.names.presented(expect)})`;
      return { refuse: `edge ${this.name} presents no virtual storage ${expect}${why}` };
    }
    const partner = cfg.storages[real];
    if (!partner || real === dialer) return { refuse: `${expect} is not a storage node of network ${cfg.network}` };
    // Access control (405): a virtual storage is offered only to the same customer's storages.
    if (partner.customer !== mine.customer) {
      return { refuse: `storage node ${dialer} (customer ${mine.customer}) may not reach ${expect} (customer ${partner.customer})` };
    }
    if (this.held.has(`${dialer}>${real}`)) return { refuse: `${expect} failed over: ${dialer} sees it gone until the order resumes` };
    return { kind: 'storage', local: expect };
  }

  // ----------------------------------------------------------------------------------------------
  // Requests of attached storages (program 403)

  private async onLinkRequest(link: PeerLink, kind: LinkKind, type: MessageType, payload: Buffer): Promise<Buffer | Buffer[] | void> {
    if (kind === 'relay') {
      this.forwarder.onFrame(link, type, payload);
      return undefined;
    }
    await this.applying; // a network being installed: its orders are ready once it is
    const node = link.peerNode!;
    if (link.localName === this.name) return this.onResidualLink(node, type);
    const as = this.names.toReal(link.localName);
    try {
      const answer = await this.fromStorage(node, as, type, this.names.requestFromNode(type, payload));
      return answer && this.names.answerToNode(type, answer);
    } catch (err) {
      this.refusedRequests++;
      throw err;
    }
  }

  /**
   * A link this edge dialed under its own name to apply residual entries of a fast failover (§6.9,
   * E-21): it answers as no storage, so the node's reconciliation finds no pair there.
   */
  private onResidualLink(node: string, type: MessageType): Buffer {
    if (type === MessageType.PairsSync) return pairsSyncCodec.encode({ node: this.name, pairs: [], groups: [], absentVolumes: [] });
    throw new TricopyError('conflict', `edge ${this.name} applies residual entries to ${node} on this link; it relays nothing here`);
  }

  private async fromStorage(node: string, as: string, type: MessageType, payload: Buffer): Promise<Buffer | void> {
    const c = classify(type);
    const pair = pairOf(type, payload);
    const source = c === 'node-control' ? undefined : this.sourceFor(pair, node, as, c === 'data');
    if (c === 'data') {
      await source!.request({ kind: 'data', source: { node, pair }, target: { node: as, pair }, type, payload, fua: isFua(payload) });
      return undefined;
    }
    if (c === 'flush' && source) {
      await source.sync();
      return undefined;
    }
    if (c === 'pair-control' && source) {
      const row = this.state.data.pairs[pair];
      // A new pair, or one whose direction reversed (a swap or failback, E-22): this edge is now its source.
      const reversed = row !== undefined && (row.side !== 'source' || row.source !== node || row.order !== source.id);
      if (type === MessageType.PairCreate || !row || row.state === 'deleted' || reversed) {
        // Numbered without waiting (the storage's messages keep their order); saved with the entry.
        this.state.data.pairs[pair] = { order: source.id, side: 'source', source: node, target: as, state: reversed ? row.state : 'simplex', diff: row?.diff ?? [], ...(row?.written ? { written: row.written } : {}) };
        void this.state.save();
      }
      const rio = await source.request({ kind: 'control', source: { node, pair }, target: { node: as, pair }, type, payload, fua: false });
      if (type === MessageType.PairDelete && rio?.status === responseOk) {
        delete this.state.data.pairs[pair]; // its row goes (the deletion was an event of 725)
        delete this.state.data.bindings[pair];
        await this.state.save();
      }
      return answerOf(rio!, as);
    }
    return answerOf(await this.directRequest(node, as, pair, type, payload), as);
  }

  /**
   * The order-guarantee id of a pair's messages from `node` to `as` (§4.6): its row, the id it was
   * assigned to, or the one id leaving this edge toward the edge of `as`. None: messages are relayed
   * unnumbered, and writes are refused (E-17).
   */
  private sourceFor(pair: string, node: string, as: string, required: boolean): OrderSource | undefined {
    const cfg = this.config!;
    const toEdge = cfg.storages[as]?.edge;
    const fits = (id: string | undefined): OrderSource | undefined => {
      if (id === undefined) return undefined;
      const o = cfg.orders[id];
      return o && o.from === this.name && o.to === toEdge ? this.sources.get(id) : undefined;
    };
    const row = this.state.data.pairs[pair];
    const found = (row && row.side === 'source' && row.source === node && row.target === as ? fits(row.order) : undefined)
      ?? fits(this.state.data.bindings[pair]);
    if (found) return found;
    const candidates = Object.keys(cfg.orders).filter((id) => fits(id));
    if (candidates.length === 1) return this.sources.get(candidates[0]!);
    if (!required) return undefined;
    if (candidates.length === 0) {
      throw new TricopyError('conflict', `no order-guarantee id leads from edge ${this.name} to edge ${toEdge} for pair ${pair} (${node} → ${as})`,
        `add one to the network file's orders (from: ${this.name}, to: ${toEdge}) and run tricopy network apply`);
    }
    throw new TricopyError('conflict', `pair ${pair}: several order-guarantee ids lead from ${this.name} to ${toEdge} (${candidates.join(', ')})`,
      'create the pair with --via NETWORK:ORDER, or list it under the order\'s pairs in the network file');
  }

  // ----------------------------------------------------------------------------------------------
  // Direct (unnumbered) requests: node-level control in both directions

  private async directRequest(node: string, as: string, pair: string, type: number, payload: Buffer): Promise<Rio> {
    const corr = this.nextCorr++;
    if (this.nextCorr > 0xffffffff) this.nextCorr = 1;
    const entry: RelayEntry = {
      kind: EntryKind.Direct, flags: 0, target: { node: as, pair }, source: { node, pair }, order: '', ioTimeMs: this.clock.now(), seq: 0, corr,
      rio: { type, status: 0, payload },
    };
    const deadline = this.clock.now() + directTimeoutMs;
    // A link of this edge may come up before the relay links do (a restart): wait for the route.
    const toEdge = this.config?.storages[as]?.edge;
    while (toEdge && !this.forwarder.canSend(toEdge) && this.clock.now() < deadline) await this.clock.sleep(100);
    return new Promise<Rio>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.direct.delete(corr);
        reject(new TricopyError('unavailable', `node ${as} did not answer through the network within ${directTimeoutMs} ms`));
      }, Math.max(1, deadline - this.clock.now()));
      this.direct.set(corr, { resolve, timer, entry, to: toEdge });
      if (!this.forwarder.send(entry)) {
        clearTimeout(timer);
        this.direct.delete(corr);
        reject(new TricopyError('unavailable', `the network cannot carry a message to ${as} now (its route is down)`));
      }
    });
  }

  /**
   * Closes an attached storage's links that answer as `as`: it sees `as` gone and its pairs with it
   * enter Failure Suspend (§6.10 (2)). `hold`: they stay down until released (a failover, §6.9).
   */
  private dropStorageLinks(node: string, as: string, reason: string, hold: boolean): void {
    const s = this.config?.storages[node];
    const local = this.names.presented(as);
    if (hold) {
      this.held.add(`${node}>${as}`);
      this.links.release('storage', node, local);
    } else if (this.held.delete(`${node}>${as}`) && s) {
      this.links.want({ kind: 'storage', peer: node, local, host: s.host, port: s.replPort });
      return;
    }
    this.links.disconnect('storage', node, local, reason);
  }

  /** Sends a request to an attached storage on the link that answers as `as` (dialing it if needed). */
  private async deliver(node: string, as: string, type: number, payload: Buffer, timeoutMs: number): Promise<Buffer> {
    if (this.held.has(`${node}>${as}`)) throw new TricopyError('unavailable', `${as} failed over: nothing goes to ${node} as ${as} until the order resumes`);
    const cfg = this.config;
    const s = cfg?.storages[node];
    if (!s || s.edge !== this.name) throw new TricopyError('conflict', `storage node ${node} is not attached to ${this.name}`);
    // Fig. 2 (§6.13 (D)): the node sees the partner under its virtual storage's name, inside the
    // message too. This edge's own name (a fast failover's link) is no partner's: it stays as it is.
    const local = this.names.presented(as);
    const link = this.links.get('storage', node, local)
      ?? await this.links.connect({ kind: 'storage', peer: node, local, host: s.host, port: s.replPort }, storageConnectMs);
    return this.names.answerFromNode(type, await link.request(type, this.names.requestToNode(type, payload), timeoutMs));
  }

  // ----------------------------------------------------------------------------------------------
  // Entries whose target edge is this relay

  private onLocalEntry(e: RelayEntry): void {
    switch (e.kind) {
      case EntryKind.Request:
        return this.target(e)?.onRequest(e);
      case EntryKind.Response:
        return this.sources.get(e.order)?.onResponse(e);
      case EntryKind.FailNotice: {
        const t = this.targets.get(e.order);
        const s = this.sources.get(e.order);
        // Toward the target edge it names the target storage; toward the source edge, the source storage.
        const toTarget = t && (!s || Object.values(this.state.data.pairs).some((p) => p.order === e.order && p.side === 'target' && p.target === e.target.node));
        if (toTarget) t.onFailNotice(e);
        else void s?.failureSuspend(`the target edge declared Failure Suspend: ${e.rio.payload.toString('utf8')}`, false);
        return;
      }
      case EntryKind.Suspend:
        void this.sources.get(e.order)?.onSuspend(e).catch((err: unknown) => this.options.log.error({ err: errorMessage(err) }, 'failover flush failed'));
        return;
      case EntryKind.SuspendOk:
        return this.targets.get(e.order)?.onSuspendOk(e);
      case EntryKind.Direct:
        void this.answerDirect(e);
        return;
      case EntryKind.DirectResponse: {
        const d = this.direct.get(e.corr);
        if (!d) return;
        this.direct.delete(e.corr);
        clearTimeout(d.timer);
        d.resolve(e.rio);
        return;
      }
    }
  }

  private target(e: RelayEntry): OrderTarget | undefined {
    const t = this.targets.get(e.order);
    if (!t) this.options.log.warn({ order: e.order, seq: e.seq }, 'an entry arrived for an order-guarantee id this edge does not apply');
    return t;
  }

  private async answerDirect(e: RelayEntry): Promise<void> {
    let rio: Rio;
    try {
      const payload = await this.deliver(e.target.node, e.source.node, e.rio.type, e.rio.payload, directTimeoutMs);
      rio = { type: e.rio.type, status: responseOk, payload };
    } catch (err) {
      const plain = err instanceof TricopyError && err.message.startsWith(`node ${e.target.node}: `)
        ? new TricopyError(err.code, err.message.slice(`node ${e.target.node}: `.length), err.hint) : err;
      rio = { type: e.rio.type, status: responseError, payload: encodeErrorPayload(plain) };
    }
    this.forwarder.send(responseTo(e, EntryKind.DirectResponse, rio));
  }

  /**
   * The path toward an edge changed (issue 15): recorded as an event; when entries were probably
   * lost on the old path (a link on it died), the orders toward that edge send again from their
   * oldest unacknowledged entry, on the new path. Deferred: the change is noticed while sending.
   */
  private onPathChange(c: PathChange): void {
    this.events.emit('route-changed', `${this.name}>${c.to}`, `now ${c.hops.join(' → ')} (was ${c.previous.join(' → ')}): ${c.reason}`,
      { to: c.to, hops: c.hops, previous: c.previous });
    if (!c.resend) return;
    setImmediate(() => {
      for (const s of this.sources.values()) if (s.cfg.to === c.to) s.retransmitNow(`the path to ${c.to} changed: ${c.reason}`);
      // Direct requests (an async pair's journal batches, pair views) are not numbered and nothing
      // resends them but their storage, after its timeout: sent again here, oldest first, on the new
      // path. A copy that did arrive is harmless: the receiver skips journal entries it holds, and
      // only the first answer is taken.
      for (const d of [...this.direct.values()]) if (d.to === c.to) this.forwarder.send(d.entry);
    });
  }

  private onLinkUp(kind: LinkKind, peer: string, local: string): void {
    if (kind === 'relay') {
      this.forwarder.linkUp(peer);
      // What was sent into the link that went down may be lost: the sources send it again now.
      for (const s of this.sources.values()) s.retransmitNow(`link to ${peer} came up`);
      return;
    }
    for (const t of this.targets.values()) t.resume();
    void local;
  }

  private tick(): void {
    for (const s of this.sources.values()) {
      s.tick();
      s.pump();
    }
  }

  // ----------------------------------------------------------------------------------------------
  // Failover and status

  /** §6.9 at the target edge of `order`; `fast`: the variant of ¶0087 (residual entries applied after). */
  async failover(order: string, timeoutMs?: number, fast = false): Promise<SuspendResult> {
    const t = this.targetOf(order, 'failover');
    return t.failover(timeoutMs ?? t.cfg.failoverTimeoutMs, fast);
  }

  /** A fast failover's residual entries not applied yet are discarded: the storages' hosts write at once. */
  discardResidual(order: string): Promise<SuspendResult> {
    return this.targetOf(order, 'failover').discardResidual();
  }

  /** The order arriving at this edge, where `what` (a failover or failback) runs. */
  private targetOf(order: string, what: 'failover' | 'failback'): OrderTarget {
    const t = this.targets.get(order);
    if (!t) throw new TricopyError('not-found', `order-guarantee id ${order} does not arrive at edge ${this.name}`, `run ${what} at the order's target edge (its "to")`);
    return t;
  }

  /** E-22 at the target edge of `order`, after its failover: the storages see each other again. */
  async failback(order: string): Promise<FailbackResult> {
    const pairs = await this.targetOf(order, 'failback').failback();
    return { order, edge: this.name, released: pairs !== false, pairs: pairs === false ? [] : pairs };
  }

  status(): RelayStatus {
    const orders: RelayOrderStatus[] = [...[...this.sources.values()].map((s) => s.status()), ...[...this.targets.values()].map((t) => t.status())]
      .sort((a, b) => a.id.localeCompare(b.id) || a.side.localeCompare(b.side));
    const pairs: RelayPairStatus[] = Object.entries(this.state.data.pairs).filter(([, r]) => r.state !== 'deleted').map(([name, r]) => ({
      name, order: r.order, side: r.side, source: r.source, target: r.target, state: r.state, differentialBytes: regionCount(r.diff) * diffChunkBytes,
    })).sort((a, b) => a.name.localeCompare(b.name));
    const links: RelayLinkStatus[] = this.links.list().map((l) => ({ peer: l.peer, kind: l.kind, as: l.local, up: l.up, tls: l.tls }));
    // Neighbours that dial this relay are listed too (down while they do not).
    for (const l of this.config?.links ?? []) {
      const n = l[0] === this.name ? l[1] : l[1] === this.name ? l[0] : undefined;
      if (n && !links.some((x) => x.kind === 'relay' && x.peer === n)) links.push({ peer: n, kind: 'relay', as: this.name, up: false, tls: false });
    }
    links.sort((a, b) => `${a.kind}${a.peer}${a.as}`.localeCompare(`${b.kind}${b.peer}${b.as}`));
    const r = this.links.lastRefusal;
    return {
      name: this.name, role: this.options.role, network: this.config?.network ?? null, configVersion: this.config?.version ?? null, links, orders, pairs,
      counters: { ...this.forwarder.counters, refusedConnections: this.links.refusedConnections, refusedRequests: this.refusedRequests },
      tls: { mode: this.tls?.mode ?? 'off', mutual: this.tls?.caPem !== undefined, certificate: certificateSummary(this.tls?.certPem) },
      lastRefusal: r ? { peer: r.claimedNode ?? null, reason: r.reason, detail: r.detail, at: r.at } : null,
      paths: this.pathsStatus(),
    };
  }

  private pathsStatus(): RelayPathsStatus {
    const p = this.forwarder.paths.status();
    return {
      toward: p.paths,
      avoided: p.avoided.map((a) => ({ between: a.between, until: new Date(a.untilMs).toISOString(), reason: a.reason })),
    };
  }
}

/** What the storage gets back for a relayed request: the payload, or the error the far storage answered. */
function answerOf(rio: Rio, as: string): Buffer {
  if (rio.status === responseOk) return rio.payload;
  let code = 'internal';
  let message = `node ${as} answered with an unreadable error`;
  let hint: string | undefined;
  try {
    const p = JSON.parse(rio.payload.toString('utf8')) as { code?: unknown; message?: unknown; hint?: unknown };
    if (typeof p.code === 'string') code = p.code;
    if (typeof p.message === 'string') message = p.message;
    if (typeof p.hint === 'string') hint = p.hint;
  } catch {
    // keep the generic message
  }
  throw new TricopyError(isErrorCode(code) ? code : 'internal', message, hint);
}
