// Host groups and LUN security on a node (spec 003 §5.6): the operations the API exposes, the one
// access decision the NBD export provider asks for every listed or opened export, and what makes a
// narrowing change take effect at once: after every change, each open NBD session is decided again
// and the sessions of hosts that lost access are closed, with an `access-revoked` event per volume.
import { TricopyError } from '../common/errors';
import type { ClosedSession, HostGroupChange, HostGroupView } from '../contracts/host-groups';
import type { NbdClientInfo } from '../nbd/types';
import type { AccessList } from '../volume/access';
import { type HostGroup, type VolumeAccess, volumeAccess } from '../volume/host-groups';
import type { HostGroupBook, Members } from './host-group-book';

/** What host groups need of their node. */
export interface HostGroupNode {
  /** The volume's access list; throws not-found for an unknown volume. */
  accessListOf(volume: string): AccessList;
  /** The volume an export serves (a snapshot `volume@name` follows its volume). */
  volumeOfExport(exportName: string): string;
  /** Closes the sessions `refuse` names and returns them. */
  disconnectWhere(refuse: (exportName: string, client: NbdClientInfo) => boolean): Array<{ exportName: string; client: NbdClientInfo }>;
  /** Undefined when the node can verify TLS identities; else why an identity could never match. */
  identityRefusal(identity: string): TricopyError | undefined;
  emit(kind: string, subject: string, reason: string, details?: Record<string, unknown>): void;
}

export class HostGroupAccess {
  constructor(private readonly book: HostGroupBook, private readonly node: HostGroupNode) {}

  /** Whether a host may open a volume, see it refused, or not see it at all. */
  decide(volume: string, client: NbdClientInfo): VolumeAccess {
    return volumeAccess(volume, this.node.accessListOf(volume), this.book.list(), { address: client.address, tlsIdentity: client.tlsIdentity });
  }

  list(): HostGroupView[] {
    return this.book.list().map(view);
  }

  get(name: string): HostGroupView {
    return view(this.book.get(name));
  }

  /** The groups a volume is mapped to, with its LUN in each. */
  mappingsOf(volume: string): Array<{ hostGroup: string; lun: number }> {
    return this.book.mappingsOf(volume);
  }

  async create(name: string, members: Members): Promise<HostGroupView> {
    this.refuseUnverifiable(members);
    const group = await this.book.create(name, members);
    this.node.emit('host-group-created', name, 'created by operator', { identities: group.identities, clients: group.clients });
    return view(group);
  }

  async addMembers(name: string, members: Members): Promise<HostGroupView> {
    this.refuseUnverifiable(members);
    const group = await this.book.addMembers(name, members);
    this.node.emit('host-group-changed', name, 'members added by operator', { identities: group.identities, clients: group.clients });
    return view(group);
  }

  async removeMembers(name: string, members: Members): Promise<HostGroupChange> {
    const group = await this.book.removeMembers(name, members);
    this.node.emit('host-group-changed', name, 'members removed by operator', { identities: group.identities, clients: group.clients });
    return { hostGroup: view(group), closedSessions: this.revoke(`members removed from host group ${name}`, name) };
  }

  async delete(name: string): Promise<void> {
    await this.book.delete(name);
    this.node.emit('host-group-deleted', name, 'deleted by operator');
  }

  /** Mapping can narrow too: the volume's access list stops applying once it has a mapping. */
  async map(volume: string, name: string, lun: number): Promise<HostGroupChange> {
    this.node.accessListOf(volume); // not-found first
    const group = await this.book.map(volume, name, lun);
    this.node.emit('volume-mapped', volume, `mapped to host group ${name} as LUN ${lun} by operator`, { hostGroup: name, lun });
    return { hostGroup: view(group), closedSessions: this.revoke(`volume ${volume} mapped to host group ${name}`, name) };
  }

  async unmap(volume: string, name: string): Promise<HostGroupChange> {
    const group = await this.book.unmap(volume, name);
    const rest = this.book.mappingsOf(volume);
    this.node.emit('volume-unmapped', volume, rest.length > 0
      ? `unmapped from host group ${name} by operator; still mapped to ${rest.map((m) => m.hostGroup).join(', ')}`
      : `unmapped from host group ${name} by operator; its access list decides again`, { hostGroup: name });
    return { hostGroup: view(group), closedSessions: this.revoke(`volume ${volume} unmapped from host group ${name}`, name) };
  }

  forgetVolume(volume: string): Promise<void> {
    return this.book.forgetVolume(volume);
  }

  /** Decides every open session again and closes those whose host lost access. */
  private revoke(reason: string, hostGroup: string): ClosedSession[] {
    const closed = this.node.disconnectWhere((exportName, client) => this.decideExport(exportName, client) !== 'open');
    const byVolume = new Map<string, ClosedSession[]>();
    const sessions = closed.map(({ exportName, client }) => {
      const session: ClosedSession = { export: exportName, address: client.address, port: client.port, identity: client.tlsIdentity ?? null };
      const volume = this.node.volumeOfExport(exportName);
      byVolume.set(volume, [...(byVolume.get(volume) ?? []), session]);
      return session;
    });
    for (const [volume, list] of byVolume) {
      this.node.emit('access-revoked', volume, `${reason}: ${list.length} session(s) of hosts that lost access closed`, { hostGroup, sessions: list });
    }
    return sessions;
  }

  private decideExport(exportName: string, client: NbdClientInfo): VolumeAccess {
    try {
      return this.decide(this.node.volumeOfExport(exportName), client);
    } catch {
      return 'invisible'; // the volume is gone
    }
  }

  private refuseUnverifiable(members: Members): void {
    for (const identity of members.identities ?? []) {
      const refusal = this.node.identityRefusal(identity);
      if (refusal) throw refusal;
    }
  }
}

function view(g: HostGroup): HostGroupView {
  return { name: g.name, identities: [...g.identities], clients: [...g.clients], mappings: g.mappings.map((m) => ({ ...m })) };
}
