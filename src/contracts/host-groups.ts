// Request/response bodies of the node's host-group API (spec 003 §5.6): host groups, their members
// and the volumes mapped to them under LUN numbers. Shared by the node, the typed client and the CLI.

export interface LunMappingView {
  volume: string;
  lun: number;
}

export interface HostGroupView {
  name: string;
  /** TLS identities (PSK user or certificate CN). */
  identities: string[];
  /** CIDR ranges. */
  clients: string[];
  /** Volumes presented to the group, by LUN. */
  mappings: LunMappingView[];
}

export interface HostGroupList {
  hostGroups: HostGroupView[];
}

/** HostGroupNodeClient.createHostGroup */
export interface CreateHostGroupRequest {
  name: string;
  identities?: string[];
  clients?: string[];
}

/** HostGroupNodeClient.addHostGroupMembers and removeHostGroupMembers */
export interface HostGroupMembersRequest {
  identities?: string[];
  clients?: string[];
}

/** HostGroupNodeClient.mapVolume */
export interface MapVolumeRequest {
  hostGroup: string;
  lun: number;
}

/** HostGroupNodeClient.unmapVolume */
export interface UnmapVolumeRequest {
  hostGroup: string;
}

/** An NBD session the node closed because its host lost access. */
export interface ClosedSession {
  export: string;
  address: string;
  port: number;
  identity: string | null;
}

/** The answer to a change that may narrow access: the group after it, and the sessions it closed. */
export interface HostGroupChange {
  hostGroup: HostGroupView;
  closedSessions: ClosedSession[];
}
