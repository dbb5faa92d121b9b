// Retention: which backups to delete so that the newest N chains of a volume stay. A chain is a
// full backup and the incrementals that apply on top of it; only whole chains are deleted, so a full
// backup that an incremental still needs is never deleted.
import type { BackupManifest } from './manifest';

export interface Chain {
  fullId: string;
  /** The chain's newest snapshot instant (ISO): chains are ordered by it. */
  newestAt: string;
  ids: string[];
}

/** Groups one volume's backups into chains, newest chain first. */
export function chainsOf(backups: readonly BackupManifest[]): Chain[] {
  const byChain = new Map<string, Chain>();
  for (const b of backups) {
    const chain = byChain.get(b.chainId) ?? { fullId: b.chainId, newestAt: b.snapshotAt, ids: [] };
    chain.ids.push(b.id);
    if (b.snapshotAt > chain.newestAt) chain.newestAt = b.snapshotAt;
    byChain.set(b.chainId, chain);
  }
  return [...byChain.values()].sort((a, b) => (a.newestAt < b.newestAt ? 1 : a.newestAt > b.newestAt ? -1 : 0));
}

/**
 * The backups of one volume to delete so that `keepChains` chains remain (the newest). Every id
 * returned belongs to a chain that is deleted whole.
 */
export function backupsToExpire(backups: readonly BackupManifest[], keepChains: number): string[] {
  if (!Number.isSafeInteger(keepChains) || keepChains < 1) throw new Error(`keepChains must be at least 1, not ${keepChains}`);
  return chainsOf(backups).slice(keepChains).flatMap((c) => c.ids);
}
