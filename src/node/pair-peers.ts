// Which data directory each pair created here was built with at its other end: the peer's
// identity (NodeInfo.dataDirId) as the caller of `pair create` saw it, kept in
// <dataDir>/pair-peers.json. The node reports it with the pair (PairStatus.peerDataDirId), so
// `topology status` can tell when the peer now runs on another data directory (it lost its data)
// even if a pair of the same name exists there again. An entry belongs to one pair record: it is
// matched on the pair's name, peer node and creation time, so a later pair of the same name (or the
// record the peer creates here) is never mistaken for it.
import * as path from 'node:path';
import type { Disk } from '../common/disk';
import { atomicWriteJson, readJsonIfExists } from '../common/fsutil';
import type { PairStatus } from '../contracts/pairs';

interface PeerEntry {
  pair: string;
  createdAt: string;
  peerNode: string;
  peerDataDirId: string;
}

export const pairPeersFile = 'pair-peers.json';

export class PairPeerBook {
  private constructor(private readonly file: string, private readonly disk: Disk, private entries: PeerEntry[]) {}

  static async open(dataDir: string, disk: Disk): Promise<PairPeerBook> {
    const file = path.join(dataDir, pairPeersFile);
    const raw = await readJsonIfExists(file, disk);
    return new PairPeerBook(file, disk, Array.isArray(raw) ? raw.filter(isEntry) : []);
  }

  /** The pair with the identity of the data directory it was built with at the peer, when recorded here. */
  decorate(p: PairStatus): PairStatus {
    const e = this.entries.find((x) => x.pair === p.name && x.createdAt === p.createdAt && x.peerNode === p.peer.node);
    return { ...p, peerDataDirId: e?.peerDataDirId ?? null };
  }

  /** Records the peer's identity for a pair created here; drops entries of pairs that no longer exist. */
  async record(p: PairStatus, peerDataDirId: string, existing: PairStatus[]): Promise<void> {
    const live = new Set(existing.map((x) => `${x.name}\n${x.createdAt}`));
    this.entries = this.entries.filter((x) => x.pair !== p.name && live.has(`${x.pair}\n${x.createdAt}`));
    this.entries.push({ pair: p.name, createdAt: p.createdAt, peerNode: p.peer.node, peerDataDirId });
    await atomicWriteJson(this.file, this.entries, this.disk);
  }
}

function isEntry(x: unknown): x is PeerEntry {
  const e = x as Partial<PeerEntry> | null;
  return e !== null && typeof e === 'object' && typeof e.pair === 'string' && typeof e.createdAt === 'string' &&
    typeof e.peerNode === 'string' && typeof e.peerDataDirId === 'string';
}
