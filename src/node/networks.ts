// The remote copy networks this node is attached to (spec 002), as `network apply` told it: the
// edge it is attached to and, for each node it may pair with through the network, that node's edge.
// Kept in <dataDir>/networks.json. `pair create --via NETWORK:ORDER` reads it to address the pair
// to the edge (which answers as the peer) and to give the peer its own edge as the way back.
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { TricopyError } from '../common/errors';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { NetworkAttachment } from '../contracts/network';

export const networksFile = 'networks.json';

export class NetworkBook {
  private constructor(private readonly file: string, private readonly disk: Disk, private readonly entries: Map<string, NetworkAttachment>) {}

  static async open(dataDir: string, disk: Disk): Promise<NetworkBook> {
    const file = path.join(dataDir, networksFile);
    const raw = await readJsonIfExists(file, disk);
    const entries = new Map<string, NetworkAttachment>();
    if (Array.isArray(raw)) for (const a of raw as NetworkAttachment[]) if (a && typeof a.network === 'string') entries.set(a.network, a);
    return new NetworkBook(file, disk, entries);
  }

  list(): NetworkAttachment[] {
    return [...this.entries.values()].sort((a, b) => a.network.localeCompare(b.network));
  }

  get(name: string): NetworkAttachment {
    const a = this.entries.get(name);
    if (!a) throw new TricopyError('not-found', `this node is not attached to a network named ${name}`, 'run tricopy network apply with the network file that attaches it');
    return a;
  }

  async put(a: NetworkAttachment, localNode: string): Promise<NetworkAttachment> {
    if (a.node !== localNode) throw new TricopyError('invalid-argument', `the attachment is for node ${a.node}, this node is ${localNode}`);
    this.entries.set(a.network, a);
    await atomicWriteJson(this.file, this.list(), this.disk);
    return a;
  }

  async delete(name: string): Promise<void> {
    if (!this.entries.delete(name)) throw new TricopyError('not-found', `this node is not attached to a network named ${name}`);
    await atomicWriteJson(this.file, this.list(), this.disk);
  }
}

const endpoint = { type: 'object', additionalProperties: false, required: ['name', 'host', 'port', 'api'], properties: {
  name: { type: 'string', minLength: 1, maxLength: 63 }, host: { type: 'string', minLength: 1, maxLength: 255 },
  port: { type: 'integer', minimum: 1, maximum: 65535 }, api: { type: 'string', maxLength: 1024 },
} } as const;

/** The API's schema of an attachment. */
export const networkAttachmentSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['network', 'version', 'node', 'edge', 'peers', 'orders'],
  properties: {
    network: { type: 'string', minLength: 1, maxLength: 63 },
    version: { type: 'string', minLength: 1, maxLength: 64 },
    node: { type: 'string', minLength: 1, maxLength: 63 },
    edge: endpoint,
    peers: {
      type: 'object', maxProperties: 4096,
      additionalProperties: { type: 'object', additionalProperties: false, required: ['edge', 'host', 'port', 'api'], properties: {
        edge: { type: 'string', minLength: 1, maxLength: 63 }, host: { type: 'string', minLength: 1, maxLength: 255 },
        port: { type: 'integer', minimum: 1, maximum: 65535 }, api: { type: 'string', maxLength: 1024 },
        as: { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$' },
      } },
    },
    orders: {
      type: 'object', maxProperties: 4096,
      additionalProperties: { type: 'object', additionalProperties: false, required: ['from', 'to'], properties: {
        from: { type: 'string', minLength: 1, maxLength: 63 }, to: { type: 'string', minLength: 1, maxLength: 63 },
      } },
    },
  },
} as const;
