// topology apply with arbiter: { quorum-pair: { volume } } — the spec 004 quorum pair between the
// primary site (P-VOL) and the sync site (S-VOL), left in Suspend(normal) (Fig. 10): only in that
// state can a later failure be arbitrated (in Pair or Copy every command ends abnormally, E1/E2).
// The pair is named after its volume; it is no leg of the topology (its name does not parse as one),
// so status, failover and failback leave it to the nodes' agents.
import { TricopyError } from '../../common/errors';
import type { PairStatus } from '../../contracts/pairs';
import type { TopologyContext } from '../context';

/** How long apply waits for the quorum volume's initial copy (it is small). */
const quorumCopyTimeoutMs = 120_000;

export async function ensureQuorumPair(ctx: TopologyContext, volume: string, sizeBytes: number): Promise<void> {
  const primary = ctx.site('primary');
  const sync = ctx.site('sync');
  const name = volume;
  ctx.step(`quorum pair ${name}: ${primary.spec.site} (P-VOL) → ${sync.spec.site} (S-VOL), split to Suspend(normal) so a failure can be arbitrated (spec 004 Figs. 7, 10)`);
  let existing: PairStatus | undefined = (await primary.api.listPairs()).find((p) => p.name === name);
  if (existing && existing.role !== 'primary') {
    throw new TricopyError('conflict', `the P-VOL of quorum pair ${name} is at ${sync.spec.site}, not at the primary site ${primary.spec.site}`,
      `the primary site's node takes it over by itself once the application runs there (tricopy topology arbiter <file> shows where it stands); apply again then`);
  }
  if (existing && existing.purpose !== 'quorum') {
    throw new TricopyError('conflict', `pair ${name} at ${primary.spec.site} is a data pair, not a quorum pair`, 'name another volume in arbiter.quorum-pair.volume');
  }
  if (!existing) {
    if (!(await primary.api.listVolumes()).some((v) => v.name === volume)) {
      await primary.api.createVolume({ name: volume, size: sizeBytes, description: `quorum volume of topology ${ctx.t.name}` });
    }
    if ((await sync.api.listPairs()).some((p) => p.name === name)) await sync.api.deletePair(name, { force: true });
    const info = sync.info!;
    existing = await primary.api.createPair({
      name, volume, peer: { node: info.name, host: info.replAddress.host, replPort: info.replAddress.port }, mode: 'sync', purpose: 'quorum',
      initialCopy: 'full', peerDataDirId: info.dataDirId,
    });
    ctx.print(`    ${name}: created (${sizeBytes} bytes), copying to ${sync.spec.site}`);
  }
  if (existing.state === 'suspended' && existing.suspendCause === 'operator') {
    ctx.print(`    ${name}: P-VOL at ${primary.spec.site}, Suspend(normal)`);
    return;
  }
  if (existing.state !== 'suspended') await primary.api.waitPair(name, 'duplex', quorumCopyTimeoutMs);
  // From Pair: Fig. 10. From Suspend(error) (a link was lost): the split is the recovery.
  await primary.api.split(name, {});
  ctx.print(`    ${name}: split to Suspend(normal) (Fig. 10)`);
}
