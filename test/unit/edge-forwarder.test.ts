// A relay on a carried path (issue 15): it forwards the entry unchanged to the next relay of the
// path; when that link is down it drops the entry, counts it, and tells the edge the entry left with
// a PathDown entry back along the path (one per link and edge per interval); the edge that gets it
// chooses around the link; an edge sends its stored entries with the path it chose put on them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RelayNetworkConfig } from '../../src/contracts/network';
import { EntryKind, type RelayEntry, decodeBatch, decodeDeadLink, encodeEntryBytes } from '../../src/edge/entry';
import { Forwarder, RelayMessage } from '../../src/edge/forwarder';
import type { RelayLinks } from '../../src/edge/links';
import { computeRoutes, parseNetworkFile } from '../../src/edge/network-file';
import type { PeerLink } from '../../src/replication/transport/link';
import { silentLogger } from '../../src/common/log';

const log = silentLogger();

function network(): RelayNetworkConfig {
  const links: Array<[string, string]> = [['e-tokyo', 'c-1'], ['c-1', 'e-sapporo'], ['e-tokyo', 'c-2'], ['c-2', 'e-sapporo']];
  const file = parseNetworkFile({
    name: 'rcn', edges: { 'e-tokyo': { api: 'http://h:1' }, 'e-sapporo': { api: 'http://h:2' } },
    cores: { 'c-1': { api: 'http://h:3' }, 'c-2': { api: 'http://h:4' } }, links, orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } },
  });
  const role = (r: string): string => (r.startsWith('c-') ? 'core' : 'edge');
  const relays = Object.fromEntries(['e-tokyo', 'e-sapporo', 'c-1', 'c-2'].map((r) => [r, { role: role(r), host: 'h', port: 1, api: 'http://h' }]));
  const storages = { tokyo: { edge: 'e-tokyo', customer: 'default' }, sapporo: { edge: 'e-sapporo', customer: 'default' } };
  return { network: 'rcn', version: 'v1', relays, links, linkAddresses: [], routes: computeRoutes(file), storages, orders: {}, customers: {} } as unknown as RelayNetworkConfig;
}

/** A relay's forwarder with fake links: what it sends, per neighbour, decoded. */
function rig(name: string, up: string[], now: () => number = Date.now, batch?: { waitMs: number; maxBytes: number }):
  { f: Forwarder; sent: Map<string, RelayEntry[]>; frames: Map<string, number>; up: Set<string>; local: RelayEntry[] } {
  const sent = new Map<string, RelayEntry[]>();
  const frames = new Map<string, number>();
  const upSet = new Set(up);
  const linkTo = (peer: string): PeerLink => ({
    peerNode: peer, bufferedBytes: 0,
    send: (type: number, payload: Buffer | Buffer[]) => {
      assert.equal(type, RelayMessage.Entries);
      frames.set(peer, (frames.get(peer) ?? 0) + 1);
      sent.set(peer, [...(sent.get(peer) ?? []), ...decodeBatch(Buffer.concat(Array.isArray(payload) ? payload : [payload]))]);
    },
  }) as unknown as PeerLink;
  const links = { get: (_kind: string, peer: string) => (upSet.has(peer) ? linkTo(peer) : undefined) } as unknown as RelayLinks;
  const local: RelayEntry[] = [];
  const cfg = network();
  if (batch) (cfg.relays[name] as { batch?: unknown }).batch = batch;
  return { f: new Forwarder(name, links, () => cfg, log, (e) => local.push(e), undefined, now), sent, frames, up: upSet, local };
}

function write(seq: number, path?: string[]): RelayEntry {
  const e: RelayEntry = {
    kind: EntryKind.Request, flags: 0, target: { node: 'sapporo', pair: 'db1' }, source: { node: 'tokyo', pair: 'db1' }, order: 'erp',
    ioTimeMs: 1000 + seq, seq, corr: 0, rio: { type: 7, status: 0, payload: Buffer.from(`write ${seq}`) },
  };
  if (path) e.path = path;
  return e;
}

const fromTokyo = {} as PeerLink;
const route = ['e-tokyo', 'c-1', 'e-sapporo'];

test('a core forwards an entry on its carried path, unchanged', () => {
  const { f, sent } = rig('c-1', ['e-tokyo', 'e-sapporo']);
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(1, route)));
  assert.deepEqual(sent.get('e-sapporo')!.map((e) => [e.seq, e.path]), [[1, route]]);
  assert.equal(f.counters.entriesForwarded, 1);
  assert.equal(f.counters.entriesDropped, 0);
});

test('a core whose next link on the path is down drops the entry, counts it and sends one PathDown back per interval', () => {
  const { f, sent } = rig('c-1', ['e-tokyo']);
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(5, route)));
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(6, route)));
  assert.equal(f.counters.entriesDropped, 2, 'both dropped, both counted');
  assert.equal(f.counters.pathDownNotices, 1, 'one notice for the link and edge within the interval');
  const [notice, ...more] = sent.get('e-tokyo')!;
  assert.equal(more.length, 0);
  assert.equal(notice!.kind, EntryKind.PathDown);
  assert.deepEqual(notice!.path, ['c-1', 'e-tokyo'], 'back along the part of the path the entry crossed');
  assert.deepEqual(notice!.target, { node: 'tokyo', pair: 'db1' }, 'to the entry\'s source');
  assert.equal(notice!.seq, 5);
  assert.deepEqual(decodeDeadLink(notice!.rio.payload), { from: 'c-1', to: 'e-sapporo' });
  assert.equal(sent.get('e-sapporo'), undefined);
  // A relay not on the carried path, or a notice it cannot pass back, is dropped and counted, never answered.
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(7, ['e-tokyo', 'c-2', 'e-sapporo'])));
  assert.equal(f.counters.entriesDropped, 3);
  assert.equal(f.counters.pathDownNotices, 1);
});

test('a core whose link goes down tells the edges that sent over it lately at once (what it had put on the link is lost without a trace)', () => {
  let now = 100_000;
  const { f, sent, up } = rig('c-1', ['e-tokyo', 'e-sapporo'], () => now);
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(1, route)));
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(2, route)));
  assert.equal(sent.get('e-sapporo')!.length, 2);
  up.delete('e-sapporo');
  now += 1000;
  f.linkDown('e-sapporo');
  const notices = sent.get('e-tokyo')!;
  assert.equal(notices.length, 1, 'one notice for the edge, nothing dropped here');
  assert.equal(notices[0]!.kind, EntryKind.PathDown);
  assert.deepEqual(notices[0]!.path, ['c-1', 'e-tokyo']);
  assert.deepEqual(notices[0]!.target, { node: 'tokyo', pair: 'db1' });
  assert.equal(notices[0]!.rio.type, 0);
  assert.deepEqual(decodeDeadLink(notices[0]!.rio.payload), { from: 'c-1', to: 'e-sapporo' });
  assert.equal(f.counters.pathDownNotices, 1);
  // An edge that sent over the link long ago is not told (the notice would only make it avoid a link it does not use).
  up.add('e-sapporo');
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(3, route)));
  up.delete('e-sapporo');
  now += 11_000;
  f.linkDown('e-sapporo');
  assert.equal(sent.get('e-tokyo')!.length, 1);
  assert.equal(f.counters.pathDownNotices, 1);
});

test('the source edge puts its chosen path on stored entries; a PathDown makes it choose around the link and resend', () => {
  const { f, sent } = rig('e-tokyo', ['c-1', 'c-2']);
  const changes: string[] = [];
  f.onPathChange = (c) => changes.push(`${c.hops.join(' → ')} resend=${c.resend}`);
  assert.ok(f.canSend('e-sapporo'));
  assert.ok(f.sendLogged('e-sapporo', encodeEntryBytes(write(1))));
  assert.deepEqual(sent.get('c-1')!.map((e) => e.path), [route]);
  // c-1 reports its link to e-sapporo dead (the notice arrives as an entry for this edge).
  const notice: RelayEntry = {
    kind: EntryKind.PathDown, flags: 0, target: { node: 'tokyo', pair: 'db1' }, source: { node: 'sapporo', pair: 'db1' }, order: 'erp', ioTimeMs: 1, seq: 1, corr: 0,
    rio: { type: 0, status: 0, payload: Buffer.from([3, ...Buffer.from('c-1'), 9, ...Buffer.from('e-sapporo')]) }, path: ['c-1', 'e-tokyo'],
  };
  f.onFrame({} as PeerLink, RelayMessage.Entries, encodeEntryBytes(notice));
  assert.deepEqual(changes, ['e-tokyo → c-2 → e-sapporo resend=true']);
  assert.equal(f.counters.reroutes, 1);
  assert.ok(f.sendLogged('e-sapporo', encodeEntryBytes(write(1))));
  assert.deepEqual(sent.get('c-2')!.map((e) => [e.seq, e.path]), [[1, ['e-tokyo', 'c-2', 'e-sapporo']]]);
  // An answer this edge originates goes back the way its request came, when that looks usable.
  assert.ok(f.send({ ...write(9), target: { node: 'sapporo', pair: '' }, path: ['e-tokyo', 'c-2', 'e-sapporo'] }));
  assert.equal(sent.get('c-2')!.at(-1)!.seq, 9);
});

test('the target edge takes an entry at the end of its path; one whose path ends elsewhere is dropped', () => {
  const { f, local } = rig('e-sapporo', ['c-1', 'c-2']);
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(3, route)));
  assert.deepEqual(local.map((e) => e.seq), [3]);
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes({ ...write(4, ['e-tokyo', 'c-1', 'e-sapporo']), target: { node: 'tokyo', pair: 'db1' } }));
  assert.equal(local.length, 1);
  assert.equal(f.counters.entriesDropped, 1);
});

test('§9.12: a core with batch transfer holds entries for its wait time and sends them in one frame; a batch that reaches maxBytes leaves at once', async () => {
  const { f, sent, frames } = rig('c-1', ['e-tokyo', 'e-sapporo'], Date.now, { waitMs: 30, maxBytes: 64 * 1024 });
  for (let seq = 1; seq <= 3; seq++) f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(write(seq, route)));
  const heldAt = Date.now();
  assert.equal(sent.get('e-sapporo'), undefined, 'held for the wait time');
  for (const deadline = heldAt + 5000; !sent.get('e-sapporo');) {
    assert.ok(Date.now() < deadline, 'the batch left within 5 s');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.ok(Date.now() - heldAt >= 25, 'not before the wait time');
  assert.deepEqual(sent.get('e-sapporo')!.map((e) => e.seq), [1, 2, 3], 'in order, unchanged');
  assert.equal(frames.get('e-sapporo'), 1, 'in one frame');
  const big = (seq: number): RelayEntry => ({ ...write(seq, route), rio: { type: 7, status: 0, payload: Buffer.alloc(40 * 1024, seq) } });
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(big(4)));
  f.onFrame(fromTokyo, RelayMessage.Entries, encodeEntryBytes(big(5)));
  assert.equal(frames.get('e-sapporo'), 2, 'the batch reached maxBytes: it left without waiting');
  assert.deepEqual(sent.get('e-sapporo')!.map((e) => e.seq), [1, 2, 3, 4, 5]);
  assert.ok(sent.get('e-sapporo')![4]!.rio.payload.equals(Buffer.alloc(40 * 1024, 5)));
});
