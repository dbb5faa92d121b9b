// Per-volume reservations with SCSI-2 RESERVE/RELEASE semantics (spec 004 §4.3), kept by the node
// that holds the volume: a RESERVE on a free volume, or from its holder, is GOOD; from anyone else
// it is a RESERVATION CONFLICT; RELEASE by the holder frees it (by anyone else it changes nothing,
// as in SCSI-2); a reset clears the volume's reservation whoever holds it (a bus device reset on the
// host's path). Reservations are local to this node and never replicated to the peer volume
// [S, 0016], and, like SCSI-2 reservations across a power cycle, they do not survive a restart.
import { type Clock, isoTime } from '../common/clock';
import type { Reservation, ReserveStatus } from '../contracts/quorum';

export class Reservations {
  private readonly held = new Map<string, Reservation>();

  constructor(private readonly clock: Clock) {}

  holder(volume: string): Reservation | null {
    return this.held.get(volume) ?? null;
  }

  reserve(volume: string, host: string): ReserveStatus {
    const current = this.held.get(volume);
    if (current && current.holder !== host) return 'RESERVATION_CONFLICT';
    if (!current) this.held.set(volume, { holder: host, acquiredAt: isoTime(this.clock) });
    return 'GOOD';
  }

  /** True when `host` held the volume and now does not. */
  release(volume: string, host: string): boolean {
    if (this.held.get(volume)?.holder !== host) return false;
    this.held.delete(volume);
    return true;
  }

  /** Clears the volume's reservation; returns who held it. */
  reset(volume: string): string | null {
    const current = this.held.get(volume);
    this.held.delete(volume);
    return current?.holder ?? null;
  }

  /** A deleted volume takes its reservation with it. */
  forget(volume: string): void {
    this.held.delete(volume);
  }

  volumes(): string[] {
    return [...this.held.keys()];
  }
}
