// The node's host groups and LUN mappings, kept durably in <dataDir>/host-groups.json (replaced
// atomically, validated when the node starts). Changes run one at a time and reach memory only
// after the file holds them, so what hosts are admitted by never differs from what a restart reads.
// It knows nothing of volumes or sessions: node/host-group-access.ts checks volumes and closes
// the sessions a change revoked.
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { TricopyError } from '../common/errors';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import {
  type HostGroup, maxHostGroups, maxLunNumber, normalizeMembers, parseHostGroups, validateHostGroupName, validateLun,
} from '../volume/host-groups';

export const hostGroupsFile = 'host-groups.json';

export interface Members {
  identities?: readonly string[];
  clients?: readonly string[];
}

export class HostGroupBook {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly file: string, private readonly disk: Disk, private groups: HostGroup[]) {}

  static async open(dataDir: string, disk: Disk): Promise<HostGroupBook> {
    const file = path.join(dataDir, hostGroupsFile);
    const raw = await readJsonIfExists(file, disk);
    return new HostGroupBook(file, disk, raw === undefined ? [] : parseHostGroups(raw, file));
  }

  list(): readonly HostGroup[] {
    return this.groups;
  }

  get(name: string): HostGroup {
    const group = this.groups.find((g) => g.name === name);
    if (!group) {
      throw new TricopyError('not-found', `no host group named ${name}`, 'list them with: tricopy host-group list');
    }
    return group;
  }

  /** The groups a volume is mapped to, with its LUN in each. */
  mappingsOf(volume: string): Array<{ hostGroup: string; lun: number }> {
    return this.groups.flatMap((g) => g.mappings.filter((m) => m.volume === volume).map((m) => ({ hostGroup: g.name, lun: m.lun })));
  }

  create(name: string, members: Members): Promise<HostGroup> {
    return this.change(() => {
      validateHostGroupName(name);
      if (this.groups.some((g) => g.name === name)) {
        throw new TricopyError('already-exists', `host group ${name} exists`, `add members with: tricopy host-group add ${name} --identity ID | --client CIDR`);
      }
      if (this.groups.length >= maxHostGroups) {
        throw new TricopyError('conflict', `this node holds ${this.groups.length} host groups, the limit`, 'delete a group that is no longer used');
      }
      const group: HostGroup = { name, ...normalizeMembers(members, name), mappings: [] };
      return { groups: sorted([...this.groups, group]), result: group };
    });
  }

  addMembers(name: string, members: Members): Promise<HostGroup> {
    return this.update(name, (g) => ({
      ...g, ...normalizeMembers({ identities: [...g.identities, ...(members.identities ?? [])], clients: [...g.clients, ...(members.clients ?? [])] }, name),
    }));
  }

  removeMembers(name: string, members: Members): Promise<HostGroup> {
    return this.update(name, (g) => {
      const gone = normalizeMembers(members, name);
      const missing = [...gone.identities.filter((i) => !g.identities.includes(i)), ...gone.clients.filter((c) => !g.clients.includes(c))];
      if (missing.length > 0) {
        throw new TricopyError('not-found', `host group ${name} has no member ${missing.join(', ')}`, `see its members with: tricopy host-group show ${name}`);
      }
      return { ...g, identities: g.identities.filter((i) => !gone.identities.includes(i)), clients: g.clients.filter((c) => !gone.clients.includes(c)) };
    });
  }

  /** A group still presenting volumes is not deleted: unmapping them is the operator's decision. */
  delete(name: string): Promise<void> {
    return this.change(() => {
      const group = this.get(name);
      if (group.mappings.length > 0) {
        throw new TricopyError('conflict', `host group ${name} still has ${group.mappings.length} mapped volume(s): ${group.mappings.map((m) => `${m.volume} (LUN ${m.lun})`).join(', ')}`,
          `unmap them first: tricopy volume unmap VOLUME --host-group ${name}`);
      }
      return { groups: this.groups.filter((g) => g !== group), result: undefined };
    });
  }

  map(volume: string, name: string, lun: number): Promise<HostGroup> {
    return this.update(name, (g) => {
      validateLun(lun);
      const same = g.mappings.find((m) => m.volume === volume);
      if (same) {
        if (same.lun === lun) return g;
        throw new TricopyError('conflict', `volume ${volume} is already mapped to host group ${name} as LUN ${same.lun}`,
          `unmap it first to change its LUN: tricopy volume unmap ${volume} --host-group ${name}`);
      }
      const taken = g.mappings.find((m) => m.lun === lun);
      if (taken) {
        const free = firstFreeLun(g);
        throw new TricopyError('conflict', `LUN ${lun} of host group ${name} is taken by volume ${taken.volume}`,
          free === undefined ? `every LUN up to ${maxLunNumber} is taken` : `LUN ${free} is free`);
      }
      return { ...g, mappings: [...g.mappings, { volume, lun }].sort((a, b) => a.lun - b.lun) };
    });
  }

  unmap(volume: string, name: string): Promise<HostGroup> {
    return this.update(name, (g) => {
      if (!g.mappings.some((m) => m.volume === volume)) {
        throw new TricopyError('not-found', `volume ${volume} is not mapped to host group ${name}`, `see its mappings with: tricopy host-group show ${name}`);
      }
      return { ...g, mappings: g.mappings.filter((m) => m.volume !== volume) };
    });
  }

  /** A deleted volume leaves no mapping behind for a later volume of the same name to inherit. */
  forgetVolume(volume: string): Promise<void> {
    return this.change(() => {
      if (this.mappingsOf(volume).length === 0) return { groups: this.groups, result: undefined };
      return { groups: this.groups.map((g) => ({ ...g, mappings: g.mappings.filter((m) => m.volume !== volume) })), result: undefined };
    });
  }

  private update(name: string, edit: (group: HostGroup) => HostGroup): Promise<HostGroup> {
    return this.change(() => {
      const before = this.get(name);
      const after = edit(before);
      return { groups: this.groups.map((g) => (g === before ? after : g)), result: after };
    });
  }

  /** Runs one change after the previous ones; memory follows only once the file holds it. */
  private change<T>(plan: () => { groups: HostGroup[]; result: T }): Promise<T> {
    const run = async (): Promise<T> => {
      const { groups, result } = plan();
      if (groups !== this.groups) {
        await atomicWriteJson(this.file, { groups }, this.disk);
        this.groups = groups;
      }
      return result;
    };
    const next = this.queue.then(run, run);
    this.queue = next.catch(() => undefined);
    return next;
  }
}

function sorted(groups: HostGroup[]): HostGroup[] {
  return groups.sort((a, b) => a.name.localeCompare(b.name));
}

function firstFreeLun(group: HostGroup): number | undefined {
  const taken = new Set(group.mappings.map((m) => m.lun));
  for (let lun = 0; lun <= maxLunNumber; lun++) if (!taken.has(lun)) return lun;
  return undefined;
}
