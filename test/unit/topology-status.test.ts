// topology status from the facts the nodes report (no nodes): the situations of issue 14 where the
// old status claimed too little loss or "healthy" without protection, and disagreeing pair ends.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeInfo, VolumeView } from '../../src/contracts/node';
import type { GroupStatus, PairStatus } from '../../src/contracts/pairs';
import type { Facts, SiteFacts } from '../../src/topology/facts';
import { statusFromFacts } from '../../src/topology/status';
import { parseTopology, parsePairName } from '../../src/topology/topology-file';

const t = parseTopology({
  name: 'erp', layout: 'multi-target', volumes: { db1: '16MiB' },
  primary: { site: 'tokyo', node: 'http://t' }, sync: { site: 'osaka', node: 'http://o', fence: 'data' }, async: { site: 'sapporo', node: 'http://s' },
});
const ids: Record<string, string> = { tokyo: '11111111-1111-4111-8111-111111111111', osaka: '22222222-2222-4222-8222-222222222222', sapporo: '33333333-3333-4333-8333-333333333333' };
const now = Date.parse('2026-12-01T12:00:40Z');

function info(site: string, links: Array<[string, boolean]> = []): NodeInfo {
  return {
    name: site, site, advertiseHost: '127.0.0.1', replication: true, replAddress: { host: '127.0.0.1', port: 1 }, version: 'test', dataDir: `/d/${site}`,
    dataDirId: ids[site]!, ports: { nbdPort: 1, apiPort: 2, replPort: 3 }, tlsMode: 'off', startedAt: '', volumeCount: 1, nbdConnections: 0,
    peerLinks: links.map(([node, up]) => ({ node, up, since: '2026-12-01T12:00:00Z', reason: up ? 'link up' : 'no heartbeat' })),
  };
}

function volume(name: string, hostWrites: VolumeView['hostWrites'] = { state: 'accepted', reason: null }, detachedSecondary: VolumeView['detachedSecondary'] = null): VolumeView {
  return { name, uuid: 'u', sizeBytes: 16 << 20, createdAt: '', description: '', access: { clients: [], identities: [] }, hostGroups: [], allocatedBytes: 0, exportUri: '', clients: [], hostWrites, detachedSecondary, tier: 'default', relocation: null };
}

function pair(name: string, role: 'primary' | 'secondary', peer: string, over: Partial<PairStatus> = {}): PairStatus {
  const mode = name.includes('sapporo') && !name.includes('osaka.sapporo') ? 'async' : over.mode ?? 'sync';
  return {
    name, role, code: 'PAIR', state: 'duplex', volume: 'db1', peer: { node: peer, volume: 'db1', host: '', replPort: 1, connected: true },
    mode, purpose: 'data', fence: mode === 'sync' ? 'data' : 'never', group: mode === 'async' ? 'erp' : null, suspendCause: null, reason: 'in step', generation: 1,
    progressPercent: null, interruptedCopyPercent: null, differentialBytes: 0, hostWritesRecorded: false, awaitingNewPrimary: false, secondaryWritable: false,
    deltaBytes: null, deltaMethod: null, deltaNote: null, deltaRecord: null, heldEntries: 0, fenceGroup: 'erp', journal: null, lag: null,
    createdAt: '', updatedAt: '', peerDataDirId: null, ...over,
  };
}

function group(role: 'primary' | 'secondary', peer: string, lag = { entries: 0, bytes: 0, seconds: 0 }, receivedSeq = 0): GroupStatus {
  return { group: 'erp', role, peer, connected: true, pairs: [], lastSeq: receivedSeq, receivedSeq, appliedSeq: receivedSeq, journal: null, lag, blockedEntries: 0 };
}

type SiteInput = { up?: boolean; pairs?: PairStatus[]; groups?: GroupStatus[]; volumes?: VolumeView[]; links?: Array<[string, boolean]> };

function facts(input: Record<'tokyo' | 'osaka' | 'sapporo', SiteInput>): Facts {
  const roles = { tokyo: 'primary', osaka: 'sync', sapporo: 'async' } as const;
  const sites: SiteFacts[] = (['tokyo', 'osaka', 'sapporo'] as const).map((site) => {
    const s = input[site];
    const up = s.up ?? true;
    return {
      site, role: roles[site], node: `http://${site}`, info: up ? info(site, s.links) : undefined, error: up ? null : 'ECONNREFUSED',
      pairs: up ? s.pairs ?? [] : [], groups: up ? s.groups ?? [] : [], volumes: up ? s.volumes ?? [volume('db1')] : [],
    };
  });
  const byName = new Map<string, { name: string; volume: string; sites: [string, string]; at: Map<string, PairStatus> }>();
  for (const s of sites) {
    for (const p of s.pairs) {
      const parsed = parsePairName(t, p.name)!;
      const e = byName.get(p.name) ?? { name: p.name, volume: parsed.volume, sites: parsed.sites, at: new Map() };
      e.at.set(s.site, p);
      byName.set(p.name, e);
    }
  }
  return { t, sites, pairs: [...byName.values()] };
}

const syncName = 'erp.db1.osaka.tokyo';
const asyncName = 'erp.db1.sapporo.tokyo';
const allLinks: Record<string, Array<[string, boolean]>> = { tokyo: [['osaka', true], ['sapporo', true]], osaka: [['tokyo', true]], sapporo: [['tokyo', true]] };

function steady(): Record<'tokyo' | 'osaka' | 'sapporo', SiteInput> {
  return {
    tokyo: { pairs: [pair(syncName, 'primary', 'osaka', { peerDataDirId: ids.osaka }), pair(asyncName, 'primary', 'sapporo')], groups: [group('primary', 'sapporo', { entries: 3, bytes: 12288, seconds: 0.2 })], links: allLinks.tokyo },
    osaka: { pairs: [pair(syncName, 'secondary', 'tokyo')], links: allLinks.osaka },
    sapporo: { pairs: [pair(asyncName, 'secondary', 'tokyo')], groups: [group('secondary', 'tokyo')], links: allLinks.sapporo },
  };
}

test('in step: healthy; the sync site loses nothing, the async site at most its lag', () => {
  const s = statusFromFacts(facts(steady()), now);
  assert.equal(s.healthy, true, JSON.stringify(s.missing));
  assert.deepEqual(s.sites.map((x) => x.atRisk.kind), ['none', 'none', 'bounded']);
  assert.equal(s.sites[2]!.atRisk.writes, 3);
});

test('a site back on an empty data directory is offered as losing everything, not nothing (issue 14, 1a)', () => {
  const f = steady();
  // tokyo's record still says fence data and suspended by a failure; osaka came back empty.
  f.tokyo.pairs![0] = pair(syncName, 'primary', 'osaka', { peerDataDirId: ids.osaka, state: 'suspended', code: 'PSUE', suspendCause: 'failure' });
  f.osaka = { pairs: [], volumes: [], links: allLinks.osaka };
  const facts1 = facts(f);
  facts1.sites[1]!.info!.dataDirId = '44444444-4444-4444-8444-444444444444';
  const s = statusFromFacts(facts1, now);
  assert.equal(s.sites[1]!.atRisk.kind, 'unbounded');
  assert.match(s.sites[1]!.atRisk.text, /^everything: osaka runs on another data directory/);
  assert.ok(s.pairs.some((p) => p.pair === syncName && p.state === 'disagree' && /another data directory/.test(p.problems.join())));
  assert.equal(s.healthy, false);
});

test('after a Fig. 13 failover, a sync copy in step with the old primary loses what the async site wrote (issue 14, 1b)', () => {
  const s = statusFromFacts(facts({
    tokyo: { pairs: [pair(syncName, 'primary', 'osaka', { peerDataDirId: ids.osaka }),
      pair(asyncName, 'primary', 'sapporo', { state: 'suspended', code: 'PSUE', suspendCause: 'takeover-by-peer' })], links: allLinks.tokyo },
    osaka: { pairs: [pair(syncName, 'secondary', 'tokyo')], links: allLinks.osaka },
    sapporo: { pairs: [], links: allLinks.sapporo },
  }), now);
  assert.equal(s.activeSite, 'sapporo');
  const osaka = s.sites.find((x) => x.site === 'osaka')!;
  assert.equal(osaka.atRisk.kind, 'unbounded', osaka.atRisk.text);
  assert.match(osaka.atRisk.text, /everything written at sapporo/);
  assert.ok(s.missing.some((m) => m.what === 'no sync copy'), 'the headline names the missing sync copy');
});

test('after a failover and failback the ends of the sync pair disagree on the fence: shown as a disagreement (issue 14, 2)', () => {
  const f = steady();
  f.osaka.pairs = [pair(syncName, 'secondary', 'tokyo', { fence: 'never' })];
  const s = statusFromFacts(facts(f), now);
  const g = s.pairs.find((p) => p.pair === syncName)!;
  assert.equal(g.state, 'disagree');
  assert.match(g.problems.join(), /fence never at osaka, data at tokyo/);
  assert.equal(s.healthy, false);
});

test('a fenced primary is reported as fenced, not writable, and named in the headline (issue 14, 3)', () => {
  const f = steady();
  f.tokyo.pairs![0] = pair(syncName, 'primary', 'osaka', { state: 'suspended', code: 'PSUE', suspendCause: 'failure', reason: 'link to osaka lost', peer: { node: 'osaka', volume: 'db1', host: '', replPort: 1, connected: false } });
  f.tokyo.volumes = [volume('db1', { state: 'refused', reason: 'the sync copy of protected group erp cannot be updated' })];
  f.tokyo.links = [['osaka', false], ['sapporo', true]];
  f.osaka = { up: false };
  const s = statusFromFacts(facts(f), now);
  const tokyo = s.sites[0]!;
  assert.match(tokyo.fenced ?? '', /cannot be updated/);
  assert.ok(s.missing.some((m) => m.what === 'writes refused: tokyo is fenced'));
  assert.ok(s.missing.some((m) => m.what === 'no sync copy: osaka unreachable for 40 s'), JSON.stringify(s.missing.map((m) => m.what)));
  // osaka does not answer: unknown, with what it would hold if it returns with its data.
  assert.equal(s.sites[1]!.atRisk.kind, 'unknown');
  assert.match(s.sites[1]!.atRisk.text, /if it returns with its data: nothing acknowledged/);
});

test('the async site stopped is not healthy: the headline says for how long (issue 14, 4)', () => {
  const f = steady();
  f.tokyo.links = [['osaka', true], ['sapporo', false]];
  f.sapporo = { up: false };
  const s = statusFromFacts(facts(f), now);
  assert.equal(s.healthy, false);
  assert.deepEqual(s.missing.map((m) => m.what), ['async site sapporo unreachable for 40 s']);
});

test('with the primary and the sync site lost, the async site\'s loss is unknown and says why; with the sync site alive it is bounded', () => {
  const f = steady();
  f.tokyo = { up: false };
  f.osaka = { up: false };
  f.sapporo.groups = [group('secondary', 'tokyo', undefined, 40)];
  const s = statusFromFacts(facts(f), now);
  assert.equal(s.writer.site, 'tokyo');
  assert.equal(s.sites[2]!.atRisk.kind, 'unknown');
  assert.match(s.sites[2]!.atRisk.text, /tokyo does not answer; sapporo received its writes through entry 40/);
  const g = steady();
  g.tokyo = { up: false };
  g.osaka.pairs = [pair(syncName, 'secondary', 'tokyo', { state: 'suspended', code: 'PSUE', suspendCause: 'failure',
    deltaRecord: { origin: 'tokyo', group: 'erp', source: 'forwarded', usable: true, baseSeq: 0, newestSeq: 45, entries: 45, overflowRegions: 0, text: '' } })];
  g.sapporo.groups = [group('secondary', 'tokyo', undefined, 40)];
  const t2 = statusFromFacts(facts(g), now);
  assert.deepEqual([t2.sites[1]!.atRisk.kind, t2.sites[2]!.atRisk.kind, t2.sites[2]!.atRisk.writes], ['none', 'bounded', 5]);
  assert.equal(t2.sites[1]!.deltaResync?.method, 'sequence');
});

test('after a --newest-from failover to the async site with the primary down, the headline names the missing sync copy (issue 14, 4)', () => {
  const reversed = 'erp.db1.osaka.sapporo';
  const s = statusFromFacts(facts({
    tokyo: { up: false },
    osaka: { pairs: [pair(reversed, 'secondary', 'sapporo', { mode: 'async', group: 'erp', fence: 'never' })], links: [['sapporo', true]] },
    sapporo: { pairs: [pair(reversed, 'primary', 'osaka', { mode: 'async', group: 'erp', fence: 'never' })], groups: [group('primary', 'osaka')], links: [['osaka', true]] },
  }), now);
  assert.equal(s.activeSite, 'sapporo');
  assert.equal(s.healthy, false);
  assert.ok(s.missing.some((m) => m.what === 'no sync copy'), JSON.stringify(s.missing.map((m) => m.what)));
});

test('the old primary back while the async site that took over is down is not the active site: the newest writes are at the async site (sim seed 4)', () => {
  const reversed = 'erp.db1.osaka.sapporo';
  // After `failover --to sapporo --newest-from osaka`, osaka dissolved its sync pair with tokyo and
  // follows sapporo; tokyo returns still holding its side as a suspended primary, and sapporo is down.
  const s = statusFromFacts(facts({
    tokyo: { pairs: [pair(syncName, 'primary', 'osaka', { code: 'PSUE', state: 'suspended', suspendCause: 'crash-recovery', peerDataDirId: ids.osaka })], links: [['osaka', true]] },
    osaka: { pairs: [pair(reversed, 'secondary', 'sapporo', { mode: 'async', group: 'erp', fence: 'never', generation: 2 })], links: [['tokyo', true], ['sapporo', false]] },
    sapporo: { up: false },
  }), now);
  assert.equal(s.activeSite, null);
  assert.equal(s.writer.site, 'sapporo');
  assert.equal(s.writer.reachable, false);
});

test('a former secondary left without pairs is not the active site: it holds its old primary\'s image (sim seed 384)', () => {
  // Fig. 14 dissolved tokyo's sync pair with osaka (tokyo keeps osaka's image, read-only); osaka then
  // became the primary and crashed; sapporo follows it. No reachable site holds the newest writes.
  const reversed = 'erp.db1.osaka.sapporo';
  const detached = { pair: syncName, primary: 'osaka', generation: 2, at: '2026-12-01T12:00:11Z' };
  const input = {
    tokyo: { volumes: [volume('db1', { state: 'read-only', reason: 'left read-only' }, detached)], links: [['sapporo', true]] as Array<[string, boolean]> },
    osaka: { up: false },
    sapporo: { pairs: [pair(reversed, 'secondary', 'osaka', { mode: 'async', group: 'erp', fence: 'never', generation: 3 })], links: [['tokyo', true]] as Array<[string, boolean]> },
  };
  const s = statusFromFacts(facts(input), now);
  assert.equal(s.activeSite, null);
  assert.equal(s.writer.site, 'osaka');
  assert.equal(s.writer.reachable, false);
  // Without the mark (a pairless volume hosts may write) tokyo would be the one writable site.
  const written = statusFromFacts(facts({ ...input, tokyo: { volumes: [volume('db1')], links: input.tokyo.links } }), now);
  assert.equal(written.activeSite, 'tokyo');
});

test('with every site detached, the writer is the primary their marks name', () => {
  const detached = { pair: syncName, primary: 'tokyo', generation: 1, at: '2026-12-01T12:00:11Z' };
  const s = statusFromFacts(facts({
    tokyo: { up: false },
    osaka: { volumes: [volume('db1', undefined, detached)] },
    sapporo: { volumes: [volume('db1', undefined, { ...detached, pair: asyncName })] },
  }), now);
  assert.equal(s.activeSite, null);
  assert.equal(s.writer.site, 'tokyo');
});

test('both ends secondaries after a swap stopped half-way: the end with the newer generation wrote last (sim seed 374)', () => {
  // tokyo (primary, generation 1) stepped down for osaka (generation 2 at tokyo); osaka never took over.
  const s = statusFromFacts(facts({
    tokyo: { pairs: [pair(syncName, 'secondary', 'osaka', { code: 'PSUE', state: 'suspended', suspendCause: 'failure', generation: 2 })], links: [['osaka', true]] },
    osaka: { pairs: [pair(syncName, 'secondary', 'tokyo', { code: 'PSUE', state: 'suspended', suspendCause: 'failure', generation: 1 })], links: [['tokyo', true]] },
    sapporo: { up: false },
  }), now);
  assert.equal(s.activeSite, null);
  assert.equal(s.writer.site, 'tokyo');
});
