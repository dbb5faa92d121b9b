// Export access lists: which hosts (CIDR ranges) and which TLS identities (PSK username or client
// certificate common name) may attach a volume. A client is admitted when it matches any rule.
import ipaddr from 'ipaddr.js';
import { TricopyError } from '../common/errors';

export interface AccessList {
  clients: string[];
  identities: string[];
}

export const maxAccessRules = 256;
const identityPattern = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,127}$/;

/** New volumes admit loopback clients only: exposing a volume to a network is a decision. */
export function defaultAccessList(): AccessList {
  return { clients: ['127.0.0.0/8', '::1/128'], identities: [] };
}

export function validateClientRule(rule: string): string {
  const text = rule.trim();
  try {
    if (text.includes('/')) {
      const [addr, bits] = ipaddr.parseCIDR(text);
      return `${addr.toString()}/${bits}`;
    }
    const addr = ipaddr.parse(text);
    return `${addr.toString()}/${addr.kind() === 'ipv4' ? 32 : 128}`;
  } catch {
    throw new TricopyError('invalid-argument', `"${rule}" is not an IP address or CIDR range`,
      'write e.g. 10.0.0.0/8, 192.168.1.20 or fd00::/8');
  }
}

export function validateIdentityRule(rule: string): string {
  if (!identityPattern.test(rule)) {
    throw new TricopyError('invalid-argument', `"${rule}" is not a valid TLS identity`,
      'an identity is the PSK username or the client certificate common name: letters, digits, . _ @ : -');
  }
  return rule;
}

export function normalizeAccessList(value: unknown): AccessList {
  const v = value as Partial<AccessList> | undefined;
  const clients = Array.isArray(v?.clients) ? v.clients.map((c) => validateClientRule(String(c))) : [];
  const identities = Array.isArray(v?.identities) ? v.identities.map((i) => validateIdentityRule(String(i))) : [];
  const list = { clients: [...new Set(clients)], identities: [...new Set(identities)] };
  if (list.clients.length + list.identities.length > maxAccessRules) {
    throw new TricopyError('invalid-argument', `an access list holds at most ${maxAccessRules} rules`);
  }
  return list;
}

export interface ClientCredentials {
  address: string;
  /** Authenticated TLS identity, if the client completed TLS with one. */
  tlsIdentity?: string | undefined;
}

export function isAdmitted(list: AccessList, client: ClientCredentials): boolean {
  if (client.tlsIdentity !== undefined && list.identities.includes(client.tlsIdentity)) return true;
  let address: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    address = ipaddr.process(client.address);
  } catch {
    return false;
  }
  for (const rule of list.clients) {
    const [range, bits] = ipaddr.parseCIDR(rule);
    if (range.kind() === address.kind() && address.match([range, bits] as never)) return true;
  }
  return false;
}
