// The transition engine is the only writer of a pair's state, role, generation and protection: a
// scan of the sources shows no other assignment, and the engine persists, records an event, tells
// the peer (at a primary) and runs its listeners in order for every transition the table decides.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { type Clock, systemClock } from '../../src/common/clock';
import { nodeDisk } from '../../src/common/disk';
import { EventJournal } from '../../src/common/events';
import { InvariantError } from '../../src/common/errors';
import { silentLogger } from '../../src/common/log';
import type { PairRecord } from '../../src/replication/pairs/pair-model';
import { PairStore } from '../../src/replication/pairs/pair-store';
import { PairRegistry } from '../../src/replication/pairs/registry';
import { newRuntime } from '../../src/replication/pairs/runtime';
import { TransitionEngine, newRecord } from '../../src/replication/pairs/transitions';
import { repoRoot } from '../support/node-process';
import { tempDir } from '../support/tools';

const guarded = ['state', 'role', 'generation', 'suspendCause', 'secondaryWritable', 'receivedSeqAtTakeover', 'fence', 'fenceGroup', 'reason'];

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...await sources(full));
    else if (entry.name.endsWith('.ts')) out.push(full);
  }
  return out;
}

test('no source file but the transition engine assigns a pair\'s state, role, generation or protection', async () => {
  const assignment = new RegExp(`\\.(${guarded.join('|')})\\s*=(?!=)`);
  const offenders: string[] = [];
  const files = await sources(path.join(repoRoot, 'src'));
  assert.ok(files.length > 50, 'the scan sees the sources');
  for (const file of files) {
    if (file.endsWith(path.join('replication', 'pairs', 'transitions.ts'))) continue;
    // A relay's own tables (its view of a pair, 725, and its order states; spec 002 §5.12) never
    // touch a pair record; edge-states.test.ts guards that only they assign those states.
    if (file.endsWith(path.join('edge', 'states.ts'))) continue;
    const lines = (await fsp.readFile(file, 'utf8')).split('\n');
    lines.forEach((line, i) => {
      if (assignment.test(line) && !line.trimStart().startsWith('//')) offenders.push(`${path.relative(repoRoot, file)}:${i + 1}: ${line.trim()}`);
    });
  }
  assert.deepEqual(offenders, []);
});

const fixtureDirs: string[] = [];
after(async () => {
  for (const d of fixtureDirs) await fsp.rm(d, { recursive: true, force: true });
});

async function engineFixture(clock: Clock = systemClock) {
  const dir = await tempDir('engine');
  fixtureDirs.push(dir);
  const log = silentLogger();
  const store = await PairStore.open(dir, nodeDisk, log);
  const registry = new PairRegistry('n1');
  const events = new EventJournal(log);
  const told: string[] = [];
  const engine = new TransitionEngine({ localNode: 'n1', clock, store, registry, events, log, tellPeer: async (p) => {
    told.push(`${p.record.name}:${p.record.state}`);
  } });
  const make = async (fields: Partial<PairRecord> = {}) => {
    const record = { ...newRecord({ name: 'p1', role: 'primary', volume: 'v', peerVolume: 'v', peer: { node: 'n2', host: '127.0.0.1', replPort: 1 },
      mode: 'sync', fence: 'data', group: null, fenceGroup: null, state: 'duplex', reason: 'created', generation: 1 }, clock), ...fields };
    await store.save(record);
    const p = newRuntime(record, await store.bitmap(record.name, 1024 * 1024));
    registry.add(p);
    return p;
  };
  return { dir, store, registry, events, engine, told, make };
}

test('a transition is persisted, recorded with its reason, told to the secondary, then handed to the listeners', async () => {
  const f = await engineFixture();
  const order: string[] = [];
  f.engine.onLocal((t) => void order.push(`local ${t.from}->${t.pair.record.state}`));
  f.engine.onAfter((t) => void order.push(`after told=${f.told.length} ${t.event}`));
  const p = await f.make();
  const outcome = await f.engine.apply(p, 'failure', { reason: 'link to n2 lost' });
  assert.equal(outcome.kind, 'transition');
  assert.deepEqual([p.record.state, p.record.suspendCause, p.record.reason], ['suspended', 'failure', 'link to n2 lost']);
  assert.deepEqual(order, ['local duplex->suspended', 'after told=1 failure']);
  assert.deepEqual(f.told, ['p1:suspended']);
  const [saved] = await f.store.loadAll();
  assert.deepEqual([saved!.state, saved!.suspendCause], ['suspended', 'failure'], 'the record file is the commit point');
  const event = f.events.since(0).find((e) => e.kind === 'pair-state');
  assert.deepEqual([event?.reason, event?.details?.from, event?.details?.to, event?.details?.code], ['link to n2 lost', 'duplex', 'suspended', 'PSUE']);
});

test('refusals and no-ops change nothing; a secondary is not told anything; generations only grow', async () => {
  const f = await engineFixture();
  const p = await f.make({ state: 'suspended', suspendCause: 'failure' });
  const before = JSON.stringify(p.record);
  assert.equal((await f.engine.apply(p, 'failure')).kind, 'noop');
  assert.equal((await f.engine.apply(p, 'takeover')).kind, 'refuse');
  assert.equal(JSON.stringify(p.record), before);
  assert.equal(f.events.since(0).length, 0);
  const s = await f.make({ name: 's1', role: 'secondary', state: 'duplex' });
  await f.engine.apply(s, 'takeover');
  assert.deepEqual([s.record.state, s.record.generation], ['secondary-writable', 2]);
  assert.deepEqual(f.told, [], 'only a primary tells its peer');
  await assert.rejects(f.engine.adoptGeneration(s, 1), InvariantError);
});

test('a swap reverses the role and takes the generation; deleting removes the record and its file', async () => {
  const f = await engineFixture();
  const p = await f.make();
  await f.engine.apply(p, 'swap', { clean: true, generation: 7 });
  assert.deepEqual([p.record.role, p.record.state, p.record.generation], ['secondary', 'duplex', 7]);
  const removed: string[] = [];
  f.engine.onRemoval(null, (q) => void removed.push(q.record.name));
  await f.engine.apply(p, 'delete', { reason: 'deleted by operator' });
  assert.deepEqual(removed, ['p1']);
  assert.equal(f.registry.has('p1'), false);
  assert.deepEqual(await f.store.loadAll(), []);
  assert.ok(f.events.since(0).some((e) => e.kind === 'pair-deleted' && e.reason === 'deleted by operator'));
});
