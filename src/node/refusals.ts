// Refusals on the node's listeners (the NBD port and the replication port) as the operator sees them:
// every refusal counted in /metrics under its reason, and recorded as a rate-limited, aggregated
// event in the node's journal. The listeners only classify; this is where the node decides what an
// operator is told.
import type { EventJournal } from '../common/events';
import { SecurityEventLimiter, defaultSecurityEventLimits } from '../common/security-events';
import type { NbdRefusal } from '../nbd/types';
import type { LinkRefusal } from '../replication/transport/link';
import type { NodeMetrics } from './metrics';

export class ListenerRefusals {
  private readonly limiter: SecurityEventLimiter;

  constructor(events: EventJournal, private readonly metrics: NodeMetrics, windowMs: number) {
    this.limiter = new SecurityEventLimiter((kind, subject, reason, details) => events.emit(kind, subject, reason, details),
      { ...defaultSecurityEventLimits, windowMs });
  }

  start(): void {
    this.limiter.start();
  }

  /** Reports what the open window held back, before the node stops. */
  stop(): void {
    this.limiter.stop();
  }

  readonly nbd = (r: NbdRefusal): void => {
    this.metrics.nbdRefused(r.reason, r.dropped);
    const who = `client ${r.client.address}${r.client.tlsIdentity ? ` (${r.client.tlsIdentity})` : ''}`;
    if (r.reason === 'access-denied') {
      // The kind operators already know, about the volume the client asked for.
      this.limiter.record({ kind: 'access-denied', address: r.client.address, reason: r.reason, subject: r.exportName,
        message: `${who} is not on the access list`, details: { port: r.client.port } });
      return;
    }
    this.limiter.record({ kind: 'nbd-refused', address: r.client.address, reason: r.reason, message: `${r.reason}: ${r.detail}`,
      details: { port: r.client.port, ...(r.exportName !== undefined ? { export: r.exportName } : {}), dropped: r.dropped } });
  };

  readonly replication = (r: LinkRefusal): void => {
    this.metrics.replicationRefused(r.reason);
    const claimed = r.claimedNode !== undefined ? ` (claims to be node ${r.claimedNode})` : '';
    this.limiter.record({ kind: 'replication-refused', address: r.remoteAddress, reason: r.reason,
      message: `${r.reason}${claimed}: ${r.detail}`,
      details: { port: r.remotePort, side: r.side, ...(r.claimedNode !== undefined ? { claimedNode: r.claimedNode } : {}) } });
  };
}
