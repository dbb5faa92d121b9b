// The vocabulary of quorum pair volumes (spec 004) and the bodies of the node's quorum API: volume
// attributes (the 9 values of §4.2), reservations (GOOD / RESERVATION CONFLICT), pair command
// results (NORMAL_END / ABNORMAL_END with the Fig. 4 row that decided). Pure types; no behaviour.

/** A quorum pair's state as spec 004 names it (§2): Copy, Pair, Suspend(normal), Suspend(error). */
export type QuorumPairState = 'copy' | 'pair' | 'suspend-normal' | 'suspend-error';
export type VolumeRoleAttribute = 'simplex' | 'pvol' | 'svol';

/** What the attribute query (step 113) answers: Simplex, or P-VOL/S-VOL in one of four states (9 values). */
export interface VolumeAttribute {
  role: VolumeRoleAttribute;
  /** Absent for Simplex. */
  state?: QuorumPairState;
}

/** The pair-volume control commands of Fig. 4. */
export type QuorumCommand = 'resync' | 'swap-resync';
export type CommandEnd = 'NORMAL_END' | 'ABNORMAL_END';
/** SCSI status to the cluster software (116 / 117). */
export type ReserveStatus = 'GOOD' | 'RESERVATION_CONFLICT';

/** The attribute query's answer: the volume's attribute and the pair behind it. */
export interface AttributeView {
  volume: string;
  attribute: VolumeAttribute;
  /** "P-VOL, Suspend(normal)", "Simplex", … */
  label: string;
  /** The quorum pair of the volume, null when Simplex. */
  pair: string | null;
  /** The node holding the other volume of the pair. */
  peer: string | null;
  /** The pair's generation: raised when the roles swap. */
  epoch: number | null;
  reason: string | null;
}

export interface Reservation {
  holder: string;
  acquiredAt: string;
}

/** A quorum volume at this node: its attribute and its reservation (reservations are local, §4.3). */
export interface QuorumVolumeStatus extends AttributeView {
  reservation: Reservation | null;
}

export interface QuorumVolumeList {
  volumes: QuorumVolumeStatus[];
}

/** RESERVE, RELEASE and reset: the host that sends it. */
export interface HostRequest {
  host: string;
}

/** The answer to RESERVE, RELEASE or reset. */
export interface ReservationAnswer {
  volume: string;
  status: ReserveStatus;
  /** Who holds the volume after the command (null: nobody). */
  holder: string | null;
  reason: string;
}

/** The answer to a pair resync or pair swap resync (Fig. 4). */
export interface CommandAnswer {
  volume: string;
  command: QuorumCommand;
  result: CommandEnd;
  /** The Fig. 4 row that decided (1–18), by the attribute the command found. */
  row: number;
  /** The attribute of the volume when the command arrived. */
  before: AttributeView;
  /** The attribute after the command. */
  after: AttributeView;
  reason: string;
}
