// The typed node client (NodeClient) for a simulated node: the topology procedures run against it
// exactly as they run against a node over HTTP. Each call takes a virtual round trip, fails as
// 'unavailable' when the node is down (or goes down before it answers), and maps a request to the
// same service call the node's HTTP API makes.
import { TricopyError } from '../src/common/errors';
import type { AccessRuleRequest, CreateVolumeRequest, NodeEvent, NodeInfo, ResizeVolumeRequest, VolumeView } from '../src/contracts/node';
import type { CallOptions, DeleteOptions, NodeClient } from '../src/contracts/node-client';
import type { CreatePairRequest, DiscardRequest, GroupStatus, PairState, PairStatus, ProtectionRequest, SplitRequest, VerifyRequest } from '../src/contracts/pairs';
import { parseSize } from '../src/common/units';
import { createPairInput } from '../src/replication/control/operator';
import { hostWritesOf } from '../src/node/host-writes';
import type { ReplicationService } from '../src/replication/service';
import type { VolumeStore } from '../src/volume/store';
import type { SimNode } from './node';
import type { Scheduler } from './scheduler';

/** Virtual milliseconds of one API round trip. */
const apiRoundTripMs = 1;
/** A call that has no answer in this much virtual time is 'unavailable' (as an HTTP timeout). */
const defaultCallTimeoutMs = 30_000;

export class SimNodeClient implements NodeClient {
  constructor(private readonly node: SimNode, private readonly scheduler: Scheduler, readonly address: string) {}

  private call<T>(what: string, op: (service: ReplicationService, store: VolumeStore) => Promise<T> | T, timeoutMs = defaultCallTimeoutMs): Promise<T> {
    const node = this.node;
    return new Promise<T>((resolve, reject) => {
      this.scheduler.schedule(apiRoundTripMs / 2, () => {
        const inc = node.incarnation;
        if (!node.up) {
          reject(new TricopyError('unavailable', `cannot reach node at ${this.address} (${what}: node is down)`));
          return;
        }
        let settled = false;
        const timer = this.scheduler.schedule(timeoutMs, () => {
          if (settled) return;
          settled = true;
          reject(new TricopyError('unavailable', `node at ${this.address} did not answer ${what} within ${timeoutMs} ms`));
        });
        Promise.resolve().then(() => op(node.service!, node.store!)).then((value) => {
          this.scheduler.schedule(apiRoundTripMs / 2, () => {
            if (settled) return;
            settled = true;
            this.scheduler.cancel(timer);
            if (node.incarnation !== inc || !inc.alive) reject(new TricopyError('unavailable', `node at ${this.address} went down during ${what}`));
            else resolve(value);
          });
        }, (err: unknown) => {
          this.scheduler.schedule(apiRoundTripMs / 2, () => {
            if (settled) return;
            settled = true;
            this.scheduler.cancel(timer);
            reject(err);
          });
        });
      });
    });
  }

  nodeInfo(options?: CallOptions): Promise<NodeInfo> {
    return this.call('node info', (service, store) => ({
      name: this.node.name, site: this.node.name, advertiseHost: this.node.name, replication: service.hasSecret,
      replAddress: { host: this.node.name, port: service.replPort }, version: 'sim', dataDir: this.node.dataDir,
      ports: { nbdPort: 10809, apiPort: 7801, replPort: service.replPort }, tlsMode: 'off', startedAt: new Date(this.scheduler.now).toISOString(),
      volumeCount: store.list().length, nbdConnections: 0, dataDirId: `${this.node.name}-data`,
      peerLinks: this.node.peerLinks?.view(service.list().map((p) => p.peer.node)) ?? [],
    }), options?.timeoutMs);
  }

  listVolumes(): Promise<VolumeView[]> {
    return this.call('volume list', (_s, store) => store.list().map((m) => this.view(store, m.name)));
  }

  getVolume(name: string): Promise<VolumeView> {
    return this.call('volume show', (_s, store) => this.view(store, name));
  }

  createVolume(request: CreateVolumeRequest): Promise<VolumeView> {
    return this.call('volume create', async (_s, store) => {
      await store.create({ name: request.name, sizeBytes: parseSize(request.size), thin: request.thin === true });
      return this.view(store, request.name);
    });
  }

  resizeVolume(name: string, request: ResizeVolumeRequest): Promise<VolumeView> {
    return this.call('volume resize', async (_s, store) => {
      await store.resize(name, parseSize(request.size));
      return this.view(store, name);
    });
  }

  allow(name: string, rule: AccessRuleRequest): Promise<VolumeView> {
    return this.call('volume allow', async (_s, store) => {
      await store.allow(name, rule);
      return this.view(store, name);
    });
  }

  disallow(name: string, rule: AccessRuleRequest): Promise<VolumeView> {
    return this.call('volume disallow', async (_s, store) => {
      await store.disallow(name, rule);
      return this.view(store, name);
    });
  }

  deleteVolume(name: string): Promise<void> {
    return this.call('volume delete', async (service, store) => {
      await store.delete(name);
      await service.forgetVolume(name, 'deleted');
    });
  }

  listPairs(): Promise<PairStatus[]> {
    return this.call('pair list', (service) => service.list());
  }

  getPair(name: string): Promise<PairStatus> {
    return this.call('pair show', (service) => service.get(name));
  }

  createPair(request: CreatePairRequest): Promise<PairStatus> {
    return this.call(`pair create ${request.name}`, (service) => service.createPair(createPairInput(request)));
  }

  waitPair(name: string, state: PairState, timeoutMs: number): Promise<PairStatus> {
    return this.call(`pair wait ${name}`, (service) => service.waitFor(name, state, timeoutMs), timeoutMs + 5000);
  }

  split(name: string, request?: SplitRequest, options?: CallOptions): Promise<PairStatus> {
    return this.call(`pair split ${name}`, (service) => service.split(name, { secondaryWritable: request?.rw === true }), options?.timeoutMs ?? 600_000);
  }

  resync(name: string, request?: DiscardRequest): Promise<PairStatus> {
    return this.call(`pair resync ${name}`, (service) => service.resync(name, { discard: request?.discard }));
  }

  setProtection(name: string, request: ProtectionRequest): Promise<PairStatus> {
    return this.call(`pair protection ${name}`, (service) => service.setProtection(name, { fence: request.fence, fenceGroup: request.fenceGroup ?? null }));
  }

  verify(name: string, request?: VerifyRequest): Promise<PairStatus> {
    return this.call(`pair verify ${name}`, (service) => service.verify(name, { rateMiBPerSecond: request?.rateMiBPerSecond }));
  }

  cancelVerify(name: string): Promise<PairStatus> {
    return this.call(`pair verify ${name} --cancel`, (service) => service.cancelVerify(name));
  }

  takeover(name: string, options?: CallOptions): Promise<PairStatus[]> {
    return this.call(`pair takeover ${name}`, (service) => service.takeover(name), options?.timeoutMs ?? 600_000);
  }

  swap(name: string, request?: DiscardRequest, options?: CallOptions): Promise<PairStatus[]> {
    return this.call(`pair swap ${name}`, (service) => service.swap(name, { discard: request?.discard }), options?.timeoutMs ?? 600_000);
  }

  deletePair(name: string, options?: DeleteOptions): Promise<void> {
    return this.call(`pair delete ${name}`, (service) => service.deletePair(name, { force: options?.force === true, keepReadOnly: options?.keepReadOnly === true }));
  }

  listGroups(): Promise<GroupStatus[]> {
    return this.call('group list', (service) => service.groups().map((g) => service.groupStatus(g)));
  }

  getGroup(name: string): Promise<GroupStatus> {
    return this.call('group show', (service) => service.groupStatus(name));
  }

  listEvents(after: number): Promise<NodeEvent[]> {
    return this.call('events', () => this.node.events?.since(after) ?? []);
  }

  followEvents(): AsyncIterable<NodeEvent> {
    throw new TricopyError('invalid-argument', 'the simulator does not follow events');
  }

  private view(store: VolumeStore, name: string): VolumeView {
    const { relocatingTo: _moving, ...meta } = store.get(name);
    return { ...meta, relocation: null, hostGroups: [], allocatedBytes: store.volume(name).allocatedBytes, exportUri: `nbd://${this.node.name}/${name}`, clients: [],
      hostWrites: hostWritesOf(this.node.service?.writeRefusal(name)), detachedSecondary: this.node.service?.detachedSecondary(name) ?? null };
  }
}
