// The manager's arbiter panel from the history alone: each site's state from its agent's latest
// report, the holder (a contender holding, or the one a contender names), decisions newest first, reports that are not an
// agent's (or of another topology, or malformed) ignored, a node that leaves shows no state.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { AgentReport } from '../../src/contracts/failover';
import type { ManagerEvent } from '../../src/contracts/manager';
import { buildArbiterBoard } from '../../src/manager/arbiter-board';
import { parseTopology } from '../../src/topology/topology-file';

const topology = parseTopology({
  name: 'erp', volumes: { db1: '1GiB' },
  primary: { site: 'tokyo', node: 'http://127.0.0.1:1' }, sync: { site: 'osaka', node: 'http://127.0.0.1:2' }, async: { site: 'sapporo', node: 'http://127.0.0.1:3' },
  failover: 'automatic', arbiter: { 'quorum-pair': { volume: 'erp-quorum' } }, lease: '10s', renew: '2s', 'fence-margin': '2s',
  failback: 'automatic', 'failback-delay': '30s',
});

let seq = 0;
function event(kind: string, site: string, agent: Partial<AgentReport> | null, reason = kind, subject = 'erp'): ManagerEvent {
  seq++;
  const report: AgentReport = { site, role: site === 'tokyo' ? 'primary' : site === 'osaka' ? 'sync' : 'async', arbiter: 'quorum pair erp-quorum', state: 'standby', holder: null, failback: 'idle', ...agent };
  return {
    seq, time: new Date(1_700_000_000_000 + seq * 1000).toISOString(), kind, node: `${site}-node`, subject, reason,
    details: { site, nodeEventId: seq, nodeTime: new Date(1_700_000_000_000 + seq * 1000 - 5).toISOString(), ...(agent === null ? {} : { agent: report }) },
  };
}

test('a failover and its failback, as the agents reported them', () => {
  const events = [
    event('failover-configured', 'tokyo', { state: 'standby' }),
    event('failover-configured', 'osaka', { state: 'standby' }),
    event('failover-configured', 'sapporo', { state: 'observer' }),
    event('agent-state', 'tokyo', { state: 'holding', holder: 'tokyo' }, 'holds the quorum pair erp-quorum'),
    event('pair-suspended', 'tokyo', null),
    event('agent-state', 'tokyo', { state: 'holding' }, 'another topology', 'crm'),
    event('heartbeat-lost', 'osaka', { state: 'standby', holder: 'tokyo' }),
    event('failover-started', 'osaka', { state: 'taking-over', holder: 'osaka' }),
    event('failover-finished', 'osaka', { state: 'holding', holder: 'osaka', failback: 'watching' }, 'failed over to osaka in 3.1 s'),
  ];
  const b = buildArbiterBoard(topology, events);
  assert.deepEqual([b.failover, b.arbiter, b.leaseMs, b.renewMs, b.fenceMarginMs, b.failback, b.failbackDelayMs, b.holder],
    ['automatic', 'quorum pair erp-quorum', 10_000, 2000, 2000, 'automatic', 30_000, 'osaka']);
  assert.deepEqual(b.sites.map((s) => [s.site, s.role, s.state, s.failback, s.node]),
    [['tokyo', 'primary', 'holding', 'idle', 'tokyo-node'], ['osaka', 'sync', 'holding', 'watching', 'osaka-node'], ['sapporo', 'async', 'observer', 'idle', 'sapporo-node']]);
  assert.equal(b.sites[1]!.reason, 'failed over to osaka in 3.1 s');
  assert.equal(b.sites[1]!.at, events[8]!.details!.nodeTime, 'the node\'s time of the decision');
  assert.deepEqual(b.decisions.map((d) => d.kind), ['failover-finished', 'failover-started', 'heartbeat-lost', 'agent-state', 'failover-configured', 'failover-configured', 'failover-configured'],
    'newest first; the pair event and the other topology\'s are not decisions');
  assert.equal(b.eventsRead, events.length);
  // tokyo comes back and learns it lost: the holder stays osaka; a malformed report is ignored.
  const later = [...events, event('arbiter-lost', 'tokyo', { state: 'lost', holder: 'osaka' }), event('agent-state', 'tokyo', { state: 'bogus' as AgentReport['state'] })];
  const b2 = buildArbiterBoard(topology, later);
  assert.deepEqual([b2.holder, b2.sites[0]!.state], ['osaka', 'lost']);
  // tokyo's node leaves the topology's failover.
  const removed: ManagerEvent = { ...event('failover-removed', 'tokyo', null), reason: 'this node no longer takes part' };
  assert.equal(buildArbiterBoard(topology, [...later, removed]).sites[0]!.state, null);
});

test('a topology with manual failover has no arbiter', () => {
  const manual = parseTopology({
    name: 'crm', volumes: { db1: '1GiB' },
    primary: { site: 'tokyo', node: 'http://127.0.0.1:1' }, sync: { site: 'osaka', node: 'http://127.0.0.1:2' }, async: { site: 'sapporo', node: 'http://127.0.0.1:3' },
  });
  const b = buildArbiterBoard(manual, []);
  assert.deepEqual([b.failover, b.arbiter, b.holder, b.leaseMs, b.decisions.length], ['manual', null, null, null, 0]);
  assert.deepEqual(b.sites.map((s) => s.state), [null, null, null]);
});

test('a contender configured after the holder reported does not hide the holder (it has seen none yet)', () => {
  const b = buildArbiterBoard(topology, [
    event('agent-state', 'tokyo', { state: 'holding', holder: null }, 'holds the quorum pair erp-quorum'),
    event('failover-configured', 'osaka', { state: 'standby', holder: null }),
    event('failover-configured', 'sapporo', { state: 'observer' }),
  ]);
  assert.equal(b.holder, 'tokyo');
  // The holder letting go without naming another: nobody holds.
  assert.equal(buildArbiterBoard(topology, [
    event('agent-state', 'tokyo', { state: 'holding' }),
    event('agent-state', 'tokyo', { state: 'unreachable', holder: null }),
  ]).holder, null);
});
