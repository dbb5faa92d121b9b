// The peer's recorded regions of a pair, as a resync takes them (by the operator or automatic):
// fetched with the peer's split-brain flag, merged into this side's bitmap and made durable, then
// cleared at the peer, so every region either side changed is copied once.
import { decodeBitmap } from '../pairs/bitmap-codec';
import type { PairRuntime } from '../pairs/runtime';
import { type BitmapReply, bitmapReplyCodec, pairNameCodec } from '../transport/control-messages';
import { MessageType } from '../transport/messages';
import type { PeerTransport } from '../transport/peer-transport';

export async function fetchPeerBitmap(transport: PeerTransport, p: PairRuntime): Promise<BitmapReply> {
  return bitmapReplyCodec.decode(await transport.request(p.record.peer.node, MessageType.PairBitmap, pairNameCodec.encode({ name: p.record.name })));
}

export async function takePeerBitmap(transport: PeerTransport, p: PairRuntime, reply: BitmapReply): Promise<void> {
  p.bitmap.mergeFrom(decodeBitmap(reply.bitmap, p.bitmap));
  await p.bitmap.sync();
  await transport.request(p.record.peer.node, MessageType.PairBitmapClear, pairNameCodec.encode({ name: p.record.name }));
}
