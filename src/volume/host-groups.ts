// Host groups and LUN mappings (spec 003 §5.6): the pure model, its validation and the access
// decision for a connecting host. A host group names hosts by TLS identity and/or client address; a
// mapping presents a volume to a group under a LUN number. A volume with mappings is visible only
// to hosts of its mapped groups (its access list no longer applies); a volume without mappings is
// decided by its access list, as before host groups existed. Durability lives in node/host-group-book.ts.
import { TricopyError } from '../common/errors';
import { type AccessList, type ClientCredentials, isAdmitted, validateClientRule, validateIdentityRule } from './access';

/** How many host groups one node keeps. */
export const maxHostGroups = 256;
/** Identities plus client ranges of one group. */
export const maxHostGroupMembers = 256;
/** Mappings of one group (LUNs 0 … maxLunNumber). */
export const maxLunNumber = 255;
/** Volume names are limited like this elsewhere in the API. */
export const maxHostGroupNameChars = 63;

const groupNamePattern = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

export interface LunMapping {
  volume: string;
  lun: number;
}

export interface HostGroup {
  name: string;
  /** TLS identities (PSK user or client certificate common name). */
  identities: string[];
  /** CIDR ranges. */
  clients: string[];
  /** Volumes presented to the group, each under a LUN unique in the group. */
  mappings: LunMapping[];
}

export function validateHostGroupName(name: string): string {
  if (!groupNamePattern.test(name)) {
    throw new TricopyError('invalid-argument', `"${name}" is not a valid host group name`,
      `letters, digits, . _ - (at most ${maxHostGroupNameChars} characters, starting with a letter or digit)`);
  }
  return name;
}

export function validateLun(lun: number): number {
  if (!Number.isInteger(lun) || lun < 0 || lun > maxLunNumber) {
    throw new TricopyError('invalid-argument', `LUN ${lun} is out of range`, `a LUN is an integer from 0 to ${maxLunNumber}`);
  }
  return lun;
}

/** The members of a group, normalised, without duplicates, within the limit. */
export function normalizeMembers(members: { identities?: readonly string[]; clients?: readonly string[] }, group: string): Pick<HostGroup, 'identities' | 'clients'> {
  const identities = [...new Set((members.identities ?? []).map((i) => validateIdentityRule(i)))];
  const clients = [...new Set((members.clients ?? []).map((c) => validateClientRule(c)))];
  if (identities.length + clients.length > maxHostGroupMembers) {
    throw new TricopyError('invalid-argument', `host group ${group} would hold ${identities.length + clients.length} members; the limit is ${maxHostGroupMembers}`);
  }
  return { identities, clients };
}

/**
 * Validates what a node reads back from its data directory: a damaged or hand-edited file must
 * fail the start with a message, not admit hosts by accident.
 */
export function parseHostGroups(value: unknown, source: string): HostGroup[] {
  const fail = (what: string): never => {
    throw new TricopyError('invalid-argument', `${source}: ${what}`, 'restore the file from a backup, or fix it by hand');
  };
  const raw = (value as { groups?: unknown } | undefined)?.groups;
  if (!Array.isArray(raw)) return fail('expected {"groups": [...]}');
  if (raw.length > maxHostGroups) fail(`${raw.length} host groups; the limit is ${maxHostGroups}`);
  const groups: HostGroup[] = [];
  const names = new Set<string>();
  for (const entry of raw as unknown[]) {
    const g = entry as Partial<Record<keyof HostGroup, unknown>> | null;
    if (!g || typeof g.name !== 'string') fail('a host group without a name');
    const name = g!.name as string;
    try {
      validateHostGroupName(name);
      if (names.has(name)) fail(`host group ${name} appears twice`);
      names.add(name);
      if (!isStringArray(g!.identities) || !isStringArray(g!.clients) || !Array.isArray(g!.mappings)) fail(`host group ${name} is malformed`);
      const members = normalizeMembers({ identities: g!.identities as string[], clients: g!.clients as string[] }, name);
      const mappings = (g!.mappings as unknown[]).map((m) => parseMapping(m, name));
      checkMappings(name, mappings);
      groups.push({ name, ...members, mappings });
    } catch (err) {
      if (err instanceof TricopyError && !err.message.startsWith(source)) fail(err.message);
      throw err;
    }
  }
  return groups;
}

function isStringArray(v: unknown): v is string[] {
  return Array.isArray(v) && v.every((x) => typeof x === 'string');
}

function parseMapping(value: unknown, group: string): LunMapping {
  const m = value as Partial<LunMapping> | null;
  if (!m || typeof m.volume !== 'string' || m.volume === '' || typeof m.lun !== 'number') {
    throw new TricopyError('invalid-argument', `host group ${group} has a malformed mapping`);
  }
  return { volume: m.volume, lun: validateLun(m.lun) };
}

/** A LUN names one volume in a group, and a volume has one LUN in a group. */
function checkMappings(group: string, mappings: LunMapping[]): void {
  const luns = new Set<number>();
  const volumes = new Set<string>();
  for (const m of mappings) {
    if (luns.has(m.lun)) throw new TricopyError('invalid-argument', `host group ${group} maps LUN ${m.lun} twice`);
    if (volumes.has(m.volume)) throw new TricopyError('invalid-argument', `host group ${group} maps volume ${m.volume} twice`);
    luns.add(m.lun);
    volumes.add(m.volume);
  }
}

/** Whether a host belongs to a group: by its TLS identity or by its address. */
export function isMember(group: Pick<HostGroup, 'identities' | 'clients'>, client: ClientCredentials): boolean {
  return isAdmitted({ identities: group.identities, clients: group.clients }, client);
}

/**
 * What a host may do with a volume: 'open' it; 'denied' (it sees the volume but its access list
 * refuses the host: NBD_REP_ERR_POLICY); 'invisible' (the volume is mapped to host groups the host
 * is not in: not listed, NBD_REP_ERR_UNKNOWN).
 */
export type VolumeAccess = 'open' | 'denied' | 'invisible';

export function volumeAccess(volume: string, access: AccessList, groups: readonly HostGroup[], client: ClientCredentials): VolumeAccess {
  const mapped = groups.filter((g) => g.mappings.some((m) => m.volume === volume));
  if (mapped.length === 0) return isAdmitted(access, client) ? 'open' : 'denied';
  return mapped.some((g) => isMember(g, client)) ? 'open' : 'invisible';
}
