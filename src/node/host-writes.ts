// Whether hosts may write a volume, as the control API reports it: a lasting refusal (EPERM: a
// secondary, a primary taken over) makes the export read-only; a fence (EIO) refuses writes for now.
import type { HostWrites } from '../contracts/node';

export function hostWritesOf(refusal: { errno: string; reason: string } | undefined): HostWrites {
  if (!refusal) return { state: 'accepted', reason: null };
  return { state: refusal.errno === 'EPERM' ? 'read-only' : 'refused', reason: refusal.reason };
}
