// A NodeClient that answers reads from the manager's read model instead of asking the node: what
// the node last pushed. The topology read model (topology/status.ts) runs over it unchanged, so
// the manager shows every topology's status, legs and data at risk without sending a query. A node
// the manager cannot reach answers 'unavailable', as the real node would; changes are refused.
import { TricopyError } from '../common/errors';
import type { NodeEvent, NodeInfo, VolumeView } from '../contracts/node';
import type { NodeClient } from '../contracts/node-client';
import type { GroupStatus, PairStatus } from '../contracts/pairs';
import type { NodeState, StoredNode } from './store/collections';

export class StoredNodeClient implements NodeClient {
  constructor(readonly address: string, private readonly node: StoredNode | undefined, private readonly state: NodeState | undefined) {}

  private known(): NodeState & { info: NodeInfo } {
    if (!this.node) throw new TricopyError('unavailable', `node ${this.address} is not registered at the manager`, `run: tricopy manager node add ${this.address}`);
    if (!this.node.reachable) throw new TricopyError('unavailable', `node ${this.node.name} is not reachable (${this.node.lastError ?? 'no answer'})`);
    if (!this.state?.info) throw new TricopyError('unavailable', `node ${this.node.name} has not pushed its state yet`);
    return this.state as NodeState & { info: NodeInfo };
  }

  async nodeInfo(): Promise<NodeInfo> {
    return this.known().info;
  }

  async listVolumes(): Promise<VolumeView[]> {
    return this.known().volumes;
  }

  async getVolume(name: string): Promise<VolumeView> {
    const v = this.known().volumes.find((x) => x.name === name);
    if (!v) throw new TricopyError('not-found', `no volume ${name} on ${this.address}`);
    return v;
  }

  async listPairs(): Promise<PairStatus[]> {
    return this.known().pairs;
  }

  async getPair(name: string): Promise<PairStatus> {
    const p = this.known().pairs.find((x) => x.name === name);
    if (!p) throw new TricopyError('not-found', `no pair ${name} on ${this.address}`);
    return p;
  }

  async listGroups(): Promise<GroupStatus[]> {
    return this.known().groups;
  }

  async getGroup(name: string): Promise<GroupStatus> {
    const g = this.known().groups.find((x) => x.group === name);
    if (!g) throw new TricopyError('not-found', `no group ${name} on ${this.address}`);
    return g;
  }

  async listEvents(): Promise<NodeEvent[]> {
    return [];
  }

  // eslint-disable-next-line require-yield
  async *followEvents(): AsyncIterable<NodeEvent> {
    return;
  }

  createVolume(): Promise<VolumeView> { return readOnly(); }
  resizeVolume(): Promise<VolumeView> { return readOnly(); }
  allow(): Promise<VolumeView> { return readOnly(); }
  disallow(): Promise<VolumeView> { return readOnly(); }
  deleteVolume(): Promise<void> { return readOnly(); }
  createPair(): Promise<PairStatus> { return readOnly(); }
  waitPair(): Promise<PairStatus> { return readOnly(); }
  split(): Promise<PairStatus> { return readOnly(); }
  resync(): Promise<PairStatus> { return readOnly(); }
  setProtection(): Promise<PairStatus> { return readOnly(); }
  takeover(): Promise<PairStatus[]> { return readOnly(); }
  swap(): Promise<PairStatus[]> { return readOnly(); }
  deletePair(): Promise<void> { return readOnly(); }
  verify(): Promise<PairStatus> { return readOnly(); }
  cancelVerify(): Promise<PairStatus> { return readOnly(); }
}

function readOnly(): Promise<never> {
  return Promise.reject(new TricopyError('internal', 'the manager\'s read model cannot change a node'));
}

/** The same node URL however it is written (trailing slash, default port). */
export function normalizeUrl(url: string): string {
  try {
    return new URL(url).toString().replace(/\/$/, '');
  } catch {
    return url;
  }
}
