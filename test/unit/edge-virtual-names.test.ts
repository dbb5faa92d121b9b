// The Fig. 2 variant (spec 002 §6.13, §9.56): names a network file gives or apply allocates for
// virtual storages, and the edge's translation of the node names inside control messages, on bytes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { NodeInfo } from '../../src/contracts/node';
import type { RelayInfo, RelayNetworkConfig } from '../../src/contracts/network';
import { planNetwork } from '../../src/edge/apply';
import { parseNetworkFile } from '../../src/edge/network-file';
import { VirtualNames, mapAnswerNames, mapRequestNames } from '../../src/edge/virtual-names';
import { MessageType, encodeDataHeader } from '../../src/replication/transport/messages';
import { bitmapReplyCodec, pairCreateCodec, pairsSyncCodec, swapPrepareCodec, type PairCreateRequest } from '../../src/replication/transport/control-messages';

const create: PairCreateRequest = {
  name: 'db1-far', volume: 'db1', peerVolume: 'db1', primary: { node: 'tokyo', host: '127.0.0.1', replPort: 7850 }, mode: 'sync', fence: 'never',
  group: null, sizeBytes: 1 << 24, generation: 1, fenceGroup: null, initialCopy: 'full', createVolume: true,
};
const toVirtual = (n: string): string => (n === 'tokyo' ? 'V107' : n);

test('node names inside PairCreate, PairsSync and SwapPrepare requests are mapped; every other field stays as it was', () => {
  const mapped = pairCreateCodec.decode(mapRequestNames(MessageType.PairCreate, pairCreateCodec.encode(create), toVirtual));
  assert.deepEqual(mapped, { ...create, primary: { ...create.primary, node: 'V107' } });
  const sync = { node: 'tokyo', pairs: [], groups: [{ group: 'g', receivedSeq: 3, appliedSeq: 2 }], absentVolumes: ['tokyo'] };
  assert.deepEqual(pairsSyncCodec.decode(mapRequestNames(MessageType.PairsSync, pairsSyncCodec.encode(sync), toVirtual)), { ...sync, node: 'V107' },
    'a volume that happens to share the name is a volume, not a node');
  const swap = { name: 'db1-far', newPrimary: 'tokyo', generation: 4, senderHasChanges: false, receivedSeqAtTakeover: null, discardReceiverChanges: false };
  assert.deepEqual(swapPrepareCodec.decode(mapRequestNames(MessageType.SwapPrepare, swapPrepareCodec.encode(swap), toVirtual)), { ...swap, newPrimary: 'V107' });
});

test('answers: the origin of an applied mark (PairCreate, PairBitmap) and the answering node of PairsSync are mapped', () => {
  const reply = { bitmap: 'AAAA', hostWritesRecorded: false, mark: { origin: 'tokyo', group: 'g', appliedSeq: 9 }, receivedSeq: 9 };
  for (const type of [MessageType.PairCreate, MessageType.PairBitmap]) {
    assert.deepEqual(bitmapReplyCodec.decode(mapAnswerNames(type, bitmapReplyCodec.encode(reply), toVirtual)), { ...reply, mark: { ...reply.mark, origin: 'V107' } });
  }
  const unmarked = bitmapReplyCodec.encode({ bitmap: 'AAAA', hostWritesRecorded: true });
  assert.equal(mapAnswerNames(MessageType.PairBitmap, unmarked, toVirtual), unmarked, 'nothing to map: the same bytes');
  const sync = pairsSyncCodec.encode({ node: 'tokyo', pairs: [], groups: [], absentVolumes: [] });
  assert.equal(pairsSyncCodec.decode(mapAnswerNames(MessageType.PairsSync, sync, toVirtual)).node, 'V107');
});

test('data and other messages pass byte for byte; a name the mapping leaves alone keeps the bytes; a malformed message is refused', () => {
  const data = Buffer.concat([encodeDataHeader({ name: 'tokyo', offset: 0, length: 4, flags: 0 }), Buffer.from('abcd')]);
  assert.equal(mapRequestNames(MessageType.Write, data, toVirtual), data);
  const other = pairCreateCodec.encode({ ...create, primary: { ...create.primary, node: 'osaka' } });
  assert.equal(mapRequestNames(MessageType.PairCreate, other, toVirtual), other);
  assert.throws(() => mapRequestNames(MessageType.PairCreate, Buffer.from('{"name":1}'), toVirtual));
});

test('an edge\'s table: base variant passes every name; own names map both ways and the partner\'s real name is no virtual storage', () => {
  const base = new VirtualNames(undefined, 'e-tokyo');
  assert.equal(base.ownNames, false);
  assert.equal(base.partner('sapporo'), 'sapporo');
  const payload = pairCreateCodec.encode(create);
  assert.equal(base.requestToNode(MessageType.PairCreate, payload), payload);
  const cfg = { virtualNames: { 'e-sapporo': { tokyo: 'V107' } } } as unknown as RelayNetworkConfig;
  const own = new VirtualNames(cfg, 'e-sapporo');
  assert.equal(own.ownNames, true);
  assert.equal(own.presented('tokyo'), 'V107');
  assert.equal(own.partner('V107'), 'tokyo');
  assert.equal(own.partner('tokyo'), undefined, 'a node must ask for the virtual storage');
  // To the node: the partner under its virtual name; from the node: back to the real name.
  const toNode = own.requestToNode(MessageType.PairCreate, payload);
  assert.equal(pairCreateCodec.decode(toNode).primary.node, 'V107');
  assert.equal(pairCreateCodec.decode(own.requestFromNode(MessageType.PairCreate, toNode)).primary.node, 'tokyo');
  assert.equal(new VirtualNames(cfg, 'e-tokyo').ownNames, false, 'another edge has its own table');
});

const file = (extra: Record<string, unknown>): ReturnType<typeof parseNetworkFile> => parseNetworkFile({
  name: 'rcn',
  edges: { 'e-tokyo': { api: 'http://e-tokyo', attach: ['http://tokyo'] }, 'e-sapporo': { api: 'http://e-sapporo', attach: ['http://sapporo', 'http://kushiro'] } },
  links: [['e-tokyo', 'e-sapporo']], orders: { erp: { from: 'e-tokyo', to: 'e-sapporo' } }, ...extra,
});

async function plan(extra: Record<string, unknown>): ReturnType<typeof planNetwork> {
  const relayInfo = async (api: string): Promise<RelayInfo> => {
    const name = new URL(api).hostname;
    return { name, role: 'edge', listen: { host: '127.0.0.1', port: 1 }, network: null } as RelayInfo;
  };
  const nodeInfo = async (api: string): Promise<NodeInfo> => ({ name: new URL(api).hostname, replication: true, replAddress: { host: '127.0.0.1', port: 2 }, version: '1', site: 'x' } as unknown as NodeInfo);
  return planNetwork(file(extra), relayInfo, nodeInfo, async () => []);
}

test('network file: virtualStorages is partner or own; virtualNames needs own, names edges, and gives each name once', () => {
  assert.equal(file({}).virtualStorages, 'partner');
  assert.throws(() => file({ virtualStorages: 'mine' }), /"virtualStorages" must be partner .* or own/);
  assert.throws(() => file({ virtualNames: { 'e-tokyo': { sapporo: 'V106' } } }), /"virtualNames" is given, but virtual storages answer under their partners' names/);
  assert.throws(() => file({ virtualStorages: 'own', virtualNames: { 'e-osaka': { sapporo: 'V1' } } }), /virtualNames: "e-osaka" is not an edge/);
  assert.throws(() => file({ virtualStorages: 'own', virtualNames: { 'e-tokyo': { sapporo: 'bad name' } } }), /must be 1–63 letters/);
  assert.throws(() => file({ virtualStorages: 'own', virtualNames: { 'e-tokyo': { sapporo: 'V1', kushiro: 'V1' } } }), /virtual name V1 is given twice/);
});

test('apply allocates PARTNER.EDGE where the file gives no name, tells each node its peers\' names, and refuses clashes and unknown partners', async () => {
  assert.equal((await plan({})).config.virtualNames, undefined, 'base variant: no table');
  const p = await plan({ virtualStorages: 'own', virtualNames: { 'e-tokyo': { sapporo: 'V106' } } });
  assert.deepEqual(p.config.virtualNames, {
    'e-tokyo': { kushiro: 'kushiro.e-tokyo', sapporo: 'V106' },
    'e-sapporo': { tokyo: 'tokyo.e-sapporo' },
  });
  const tokyo = p.attachments.find((a) => a.attachment.node === 'tokyo')!.attachment;
  assert.deepEqual([tokyo.peers.sapporo?.as, tokyo.peers.kushiro?.as], ['V106', 'kushiro.e-tokyo']);
  const sapporo = p.attachments.find((a) => a.attachment.node === 'sapporo')!.attachment;
  assert.deepEqual(Object.keys(sapporo.peers), ['tokyo', 'kushiro'], 'nodes at one edge see each other too (not through the network)');
  assert.equal(sapporo.peers.tokyo?.as, 'tokyo.e-sapporo');
  await assert.rejects(plan({ virtualStorages: 'own', virtualNames: { 'e-tokyo': { sapporo: 'kushiro' } } }), /would be named kushiro, as storage node kushiro is/);
  await assert.rejects(plan({ virtualStorages: 'own', virtualNames: { 'e-tokyo': { osaka: 'V9' } } }), /virtualNames\.e-tokyo\.osaka: no attached storage node is named osaka/);
  await assert.rejects(plan({ virtualStorages: 'own', virtualNames: { 'e-tokyo': { tokyo: 'V9' } } }), /tokyo is attached to e-tokyo itself/);
});
