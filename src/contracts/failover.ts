// Automatic failover as the nodes take part in it: what `topology apply` gives every site's node
// (FailoverConfig), and what a node says about its part (FailoverStatus). Pure types.

/** Given by topology apply to each site's node of a topology with failover: automatic. */
export interface FailoverConfig {
  /** The topology file, as parsed (the node runs the failover procedure from it). */
  topology: unknown;
  /** The topology's name. */
  name: string;
  /** This node's site in the topology, and its role there. */
  site: string;
  role: 'primary' | 'sync' | 'async';
  /** The API token the node uses to reach the other sites' nodes (the one apply ran with), if any. */
  apiToken?: string;
}

/**
 * Where a node stands with the arbiter:
 *   holding      it holds the arbiter and renews it; host writes are accepted (if its volumes allow them)
 *   fenced       it held the arbiter but could not renew in time: host writes refused until it renews
 *   standby      another site holds the arbiter (or nobody yet): this node does not write
 *   lost         another site took over: this site stays fenced until a failback
 *   taking-over  it holds the arbiter and runs the failover to its site
 *   unreachable  it cannot reach the arbiter (and does not hold it)
 *   observer     the async site: it takes no part in the arbitration
 */
export type ArbiterState = 'holding' | 'fenced' | 'standby' | 'lost' | 'taking-over' | 'unreachable' | 'observer';

/**
 * Automatic failback at the site that took over (failback: automatic):
 *   idle          nothing to undo (no failover to this site, or not this site's to act)
 *   watching      the primary site is not back (or cannot see the arbiter)
 *   returned      the primary site is back; the failback starts once it stayed back for the delay
 *   failing-back  the failback procedure runs
 */
export type FailbackState = 'idle' | 'watching' | 'returned' | 'failing-back';

export interface FailbackStatus {
  mode: 'manual' | 'automatic';
  delayMs: number;
  state: FailbackState;
  reason: string;
}

/**
 * Where a node's agent stands, as every event of its decisions carries it (details.agent): the
 * manager builds its arbiter panel from these events alone.
 */
export interface AgentReport {
  site: string;
  role: 'primary' | 'sync' | 'async';
  /** The arbiter as the agent shows it (etcd endpoints, quorum pair …). */
  arbiter: string;
  state: ArbiterState;
  holder: string | null;
  failback: FailbackState;
}

/** One decision of a node's agent (an event it emitted), as its status keeps the last ones. */
export interface ArbiterDecision {
  /** Wall-clock ISO time. */
  at: string;
  /** The event's kind: arbiter-acquired, arbiter-fenced, failover-started, failback-pending, … */
  kind: string;
  reason: string;
}

export interface FailoverStatus {
  topology: string;
  site: string;
  role: 'primary' | 'sync' | 'async';
  arbiter: string;
  state: ArbiterState;
  /** The site the arbiter names now (null: nobody, or not known). */
  holder: string | null;
  /** Whether the topology's volumes here accept host writes as far as the arbiter is concerned. */
  writesAllowed: boolean;
  /** Until when this node's hold lets it write (ISO time), when it holds the arbiter. */
  holdValidUntil: string | null;
  leaseMs: number;
  renewMs: number;
  fenceMarginMs: number;
  onArbiterLost: 'fence' | 'continue';
  reason: string;
  since: string;
  failback: FailbackStatus;
  /** The agent's last decisions, oldest first (at most 20). */
  decisions: ArbiterDecision[];
}

export interface FailoverList {
  topologies: FailoverStatus[];
}
