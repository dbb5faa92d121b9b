// A topology's arbiter panel (GET /v1/topologies/:name/arbiter), built from the manager's history
// alone: every decision of a node's failover agent is an event whose details carry the agent's
// report (its state, the holder it sees, its failback watch), so the latest such event of each
// site says where that site stands, and the events themselves are the decisions. The settings
// come from the topology file the manager keeps. Nothing here asks a node.
import type { AgentReport, ArbiterState, FailbackState } from '../contracts/failover';
import type { ArbiterBoard, ArbiterDecisionView, ArbiterSiteView, ManagerEvent } from '../contracts/manager';
import type { Topology } from '../topology/topology-file';

/** How many decisions the panel lists. */
export const arbiterDecisionsShown = 30;

const arbiterStates = new Set<ArbiterState>(['holding', 'fenced', 'standby', 'lost', 'taking-over', 'unreachable', 'observer']);
const failbackStates = new Set<FailbackState>(['idle', 'watching', 'returned', 'failing-back']);
const roles = new Set(['primary', 'sync', 'async']);

/** The agent's report an event carries, checked here (the node's details are stored as they came). */
export function agentReportOf(details: Record<string, unknown> | undefined): AgentReport | undefined {
  const a = details?.agent;
  if (typeof a !== 'object' || a === null) return undefined;
  const r = a as Record<string, unknown>;
  if (typeof r.site !== 'string' || typeof r.arbiter !== 'string' || !roles.has(r.role as string)) return undefined;
  if (!arbiterStates.has(r.state as ArbiterState) || !failbackStates.has(r.failback as FailbackState)) return undefined;
  if (r.holder !== null && typeof r.holder !== 'string') return undefined;
  return { site: r.site, role: r.role as AgentReport['role'], arbiter: r.arbiter, state: r.state as ArbiterState, holder: r.holder, failback: r.failback as FailbackState };
}

/** `events` oldest first (the manager's latest ones); those of other topologies are ignored. */
export function buildArbiterBoard(t: Topology, events: ManagerEvent[]): ArbiterBoard {
  const f = t.failover;
  const sites = new Map<string, ArbiterSiteView>((['primary', 'sync', 'async'] as const).map((role) => [t[role].site, {
    site: t[role].site, role, node: null, state: null, failback: null, reason: null, at: null,
  }]));
  const decisions: ArbiterDecisionView[] = [];
  let arbiter: string | null = null;
  let holder: string | null = null;
  for (const e of events) {
    if (e.subject !== t.name) continue;
    const at = typeof e.details?.nodeTime === 'string' ? e.details.nodeTime : e.time;
    if (e.kind === 'failover-removed') {
      const view = sites.get(String(e.details?.site));
      if (view) Object.assign(view, { node: e.node, state: null, failback: null, reason: e.reason, at });
      continue;
    }
    const report = agentReportOf(e.details);
    const view = report && sites.get(report.site);
    if (!report || !view) continue;
    Object.assign(view, { node: e.node, state: report.state, failback: report.failback, reason: e.reason, at });
    arbiter = report.arbiter;
    // The async site's agent takes no part. A contender that holds names itself; one that names
    // another holder is believed; one that saw no holder (say, just configured, before its first
    // round) changes nothing, unless it is the holder itself letting go.
    if (report.role !== 'async') {
      if (report.state === 'holding') holder = report.site;
      else if (report.holder !== null) holder = report.holder;
      else if (holder === report.site) holder = null;
    }
    decisions.push({ seq: e.seq, at, site: report.site, node: e.node, kind: e.kind, reason: e.reason });
  }
  return {
    topology: t.name,
    failover: f?.mode ?? 'manual',
    arbiter: f?.mode === 'automatic' ? arbiter : null,
    leaseMs: f?.mode === 'automatic' ? f.leaseMs : null,
    renewMs: f?.mode === 'automatic' ? f.renewMs : null,
    fenceMarginMs: f?.mode === 'automatic' ? f.fenceMarginMs : null,
    failback: f?.failback ?? 'manual',
    failbackDelayMs: f?.failback === 'automatic' ? f.failbackDelayMs : null,
    holder: f?.mode === 'automatic' ? holder : null,
    sites: [...sites.values()],
    decisions: decisions.slice(-arbiterDecisionsShown).reverse(),
    eventsRead: events.length,
  };
}
