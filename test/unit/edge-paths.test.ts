// The path an edge sends on (issue 15): the route while it works, around a link its own end or a
// relay reported dead, back to the route when the hold ends (longer each time the same link is
// reported again soon after), the route when there is no way around.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RelayNetworkConfig } from '../../src/contracts/network';
import { computeRoutes, parseNetworkFile } from '../../src/edge/network-file';
import { type PathChange, PathChooser, deadLinkHoldMs, maxDeadLinkHoldMs } from '../../src/edge/paths';

/** The parts of a network the chooser reads, from a network file. */
function network(links: Array<[string, string]>, cores: string[], version = 'v1'): RelayNetworkConfig {
  const file = parseNetworkFile({
    name: 'rcn', edges: { a: { api: 'http://h:1' }, b: { api: 'http://h:2' } },
    cores: Object.fromEntries(cores.map((c, i) => [c, { api: `http://h:${10 + i}` }])), links, orders: { o: { from: 'a', to: 'b' } },
  });
  const relays = Object.fromEntries([['a', 'edge'], ['b', 'edge'], ...cores.map((c) => [c, 'core'])].map(([r, role]) => [r, { role, host: 'h', port: 1, api: 'http://h' }]));
  return { network: 'rcn', version, relays, links, linkAddresses: [], routes: computeRoutes(file), storages: {}, orders: {}, customers: {} } as unknown as RelayNetworkConfig;
}

function rig(cfg: RelayNetworkConfig, me = 'a'): { chooser: PathChooser; changes: PathChange[]; down: Set<string>; clock: { now: number } } {
  const changes: PathChange[] = [];
  const down = new Set<string>();
  const clock = { now: 1_000_000 };
  const chooser = new PathChooser(me, () => cfg, (n) => !down.has(n), () => clock.now, (c) => changes.push(c));
  return { chooser, changes, down, clock };
}

const twoCores = network([['a', 'x'], ['x', 'b'], ['a', 'y'], ['y', 'b']], ['x', 'y']);

test('the route while it works; around this edge\'s own dead link at once, and back when it is up', () => {
  const { chooser, changes, down } = rig(twoCores);
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b']);
  assert.equal(chooser.pathTo('nowhere'), undefined, 'no route: no path');
  down.add('x');
  chooser.ownLinkChanged('x', false);
  assert.deepEqual(chooser.pathTo('b'), ['a', 'y', 'b']);
  assert.deepEqual(changes.map((c) => [c.to, c.hops.join(''), c.previous.join(''), c.resend]), [['b', 'ayb', 'axb', true]], 'entries sent into x may be lost: resend');
  down.delete('x');
  chooser.ownLinkChanged('x', true);
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b']);
  assert.equal(changes[1]!.resend, false, 'nothing lost by going back');
});

test('a link another relay reported dead is avoided for its hold, then the route is tried again; reported again soon, the hold doubles', () => {
  const { chooser, changes, clock } = rig(twoCores);
  chooser.pathTo('b');
  chooser.reportDead('x', 'b', 'x could not forward entry 7 of o to b');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'y', 'b']);
  assert.equal(changes.length, 1);
  assert.equal(changes[0]!.resend, true);
  assert.match(changes[0]!.reason, /link x–b is avoided for 10 s/);
  assert.deepEqual(chooser.status().avoided.map((a) => [a.between.join('–'), a.untilMs - clock.now]), [['x–b', deadLinkHoldMs]]);
  // Entries sent before the switch keep being reported: nothing changes.
  chooser.reportDead('b', 'x', 'again');
  assert.equal(changes.length, 1);
  clock.now += deadLinkHoldMs;
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b'], 'the hold ended: the route again');
  assert.equal(changes[1]!.resend, false);
  assert.match(changes[1]!.reason, /hold on x–b ended/);
  // Still cut: reported again right away, avoided twice as long.
  chooser.reportDead('x', 'b', 'still cut');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'y', 'b']);
  clock.now += deadLinkHoldMs;
  assert.deepEqual(chooser.pathTo('b'), ['a', 'y', 'b'], 'still held');
  clock.now += deadLinkHoldMs;
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b']);
  for (let i = 0; i < 10; i++) {
    chooser.reportDead('x', 'b', 'still cut');
    clock.now += maxDeadLinkHoldMs;
    chooser.pathTo('b');
  }
  assert.ok(chooser.status().avoided.length === 0, 'holds never exceed the maximum');
  // Long after the last hold, a report starts again at the shortest hold.
  clock.now += 10 * maxDeadLinkHoldMs;
  chooser.pathTo('b');
  chooser.reportDead('x', 'b', 'cut again');
  assert.equal(chooser.status().avoided[0]!.untilMs - clock.now, deadLinkHoldMs);
});

test('with no way around the dead links, the route (entries wait there and are sent again)', () => {
  const { chooser, changes } = rig(twoCores);
  chooser.pathTo('b');
  chooser.reportDead('y', 'b', 'y could not forward');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b']);
  assert.equal(changes.length, 0, 'the route did not use y–b');
  chooser.reportDead('x', 'b', 'x could not forward');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b']);
  assert.equal(changes.length, 0);
  assert.equal(chooser.status().avoided.length, 2);
});

test('with two links dead, a path beyond the listed detours is found; a carried path is checked link by link', () => {
  // The route a → x → b; every single detour goes through y; with x–b and y–b dead only z is left.
  const three = network([['a', 'x'], ['x', 'b'], ['a', 'y'], ['y', 'b'], ['a', 'z'], ['z', 'b']], ['x', 'y', 'z']);
  const { chooser, down } = rig(three);
  assert.deepEqual(chooser.pathTo('b'), ['a', 'x', 'b']);
  chooser.reportDead('x', 'b', 'cut');
  chooser.reportDead('y', 'b', 'cut');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'z', 'b']);
  assert.equal(chooser.usable(['a', 'x', 'b']), false);
  assert.equal(chooser.usable(['a', 'z', 'b']), true);
  down.add('z');
  assert.equal(chooser.usable(['a', 'z', 'b']), false, 'this edge\'s own link is judged by its state now');
  // At the other edge, the answer's way back is judged the same way.
  const back = rig(three, 'b');
  assert.deepEqual(back.chooser.pathTo('a'), ['b', 'x', 'a']);
  back.down.add('x');
  back.chooser.ownLinkChanged('x', false);
  assert.deepEqual(back.chooser.pathTo('a'), ['b', 'y', 'a']);
});

test('a new network starts the choice over (the links may differ)', () => {
  let cfg = twoCores;
  const changes: PathChange[] = [];
  const chooser = new PathChooser('a', () => cfg, () => true, () => 0, (c) => changes.push(c));
  chooser.reportDead('x', 'b', 'cut');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'y', 'b']);
  cfg = network([['a', 'x'], ['x', 'b'], ['a', 'z'], ['z', 'b']], ['x', 'z'], 'v2');
  assert.deepEqual(chooser.pathTo('b'), ['a', 'z', 'b'], 'x–b still dead; y is gone');
});
