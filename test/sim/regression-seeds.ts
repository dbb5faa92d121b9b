// The seeds that once found a bug in the replication core (each named with what it found), and the
// runner the regression test files share. The list is split over several test files only so the
// test runner can run them side by side; every seed runs in `make test`. A failure prints the
// seed's trace; reproduce it with `npm run sim -- --seed N --verbose`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeed } from '../../sim/run';

/** Seeds that found bugs (fixed since), with what they found. */
export const regressionSeeds: Record<number, string> = {
  1: 'a journal mismatch restarted the stream but never the shipper',
  2: 'a planned swap left both ends primary after the old primary refused to prepare',
  3: 'a new incarnation could not connect while the peer still held the old connection',
  7: 'a refusal thrown while routing a peer request broke the link',
  9: 'undelivered entries of a split group were shipped after the split (copy markers carried later data)',
  10: 'a swap from a suspended secondary discards the old primary\'s data (checker: as documented)',
  12: 'a group fell back to bitmaps while another member kept journaling',
  15: 'a journal entry trimmed while the shipper read it failed an invariant',
  16: 'a failed sync secondary lost writes it had acknowledged (power loss): recent extents not resynced',
  17: 'two nodes deadlocked: a swap waited for a prepare that waited behind a resync waiting for the swap',
  28: 'a host write reached the journal before a swap opened it',
  51: 'crash recovery re-sent extents as copy markers read at ship time (not a prefix)',
  75: 'an async copy waited for a position of a journal that no longer existed',
  87: 'both ends secondaries after an interrupted swap: neither could finish it',
  95: 'an async copy waited for a position of an earlier copy',
  48: 'a write recorded while the new primary was writable alone was acknowledged after it began forwarding (swap)',
  135: 'a write recorded in the bitmap while suspended was acknowledged after a resync began forwarding, as if the secondary had it',
  139: 'a planned swap handed over a copy that was not durable',
  205: 'a stream restarted after a crash left the primary\'s applied position behind',
  186: 'a journal segment named before a power loss took the next start\'s entries at other numbers; they were lost at the next open',
  225: 'concurrent transitions of one pair interleaved (a failed flush during a swap)',
  // Topology seeds (ending in 4): the real procedures against simulated sites.
  4: 'the old primary back while the async site that took over was down counted as the active site; failback overwrote newer data',
  14: 'a host write found a new async pair before its group journal was open',
  84: 'Fig. 14 from the sync site left it the primary of copies it could no longer forward to, and swapped before the secondary was duplex',
  124: 'a new stream started below the entries the secondary still held from an earlier one',
  324: 'a Fig. 14 failover swapped by takeover while the sync site was cut off from the async site (its newest writes lost); a Fig. 13 failover left the async site receiving from another site',
  214: 'a planned Fig. 10 switchover from a suspended copy took over (the old primary\'s writes made while suspended were lost)',
  474: 'crash recovery cleared the activity log before the re-journaled extents were durable; a second power loss left the async copy ahead of the primary',
  384: 'Fig. 14 left the sync site without pairs and writable: a stale host wrote there, status took it for the active site, and failback copied its old image over the newest writes',
  374: 'a planned swap stopped half-way left both ends secondaries; status named the end that never took over, and failback copied its image over the newest writes',
  294: 'a write refused by the fence while its sync pair was being deleted left its async entry held for good (the group never drained; a planned swap waited in vain); a failback swap became a takeover while the active site was still reconnecting',
  223: 'a planned swap asked right after the old primary restarted drained a journal nobody shipped: the reconciliation that starts shipping waited behind the swap in the pair\'s queue',
  264: 'a Fig. 13 failover target whose pair the primary dissolved counted as a former secondary (not the active site)',
  389: 'a takeover at a split secondary stopped after the old primary stepped down: both ends secondaries, neither dialed the other, and the end that stepped down (nothing copied into it) refused every swap',
  325: 'a swap stopped after the old primary stepped down for a secondary that had taken over and written: the advice named the end that stepped down (newer generation), whose swap would have discarded the acknowledged writes',
  270: 'the end that stepped down in a swap still counted as awaiting its new primary after that primary had copied into it through the journal: a takeover there was allowed mid-resync and the pair never converged',
  416: 'as 270, with three sites: a takeover at the stepped-down end of a group swap while the new primary\'s resync reached it only through the journal',
  414: 'checker: a pair deleted and created again under the same name counted as consistent during its initial copy (the group image at the secondary is not a prefix until the copy ends)',
  144: 'a pair created while its secondary\'s reconciliation was asking the primary: the answer (from before the primary recorded the pair) dissolved the new secondary',
  1054: 'two nodes deadlocked until a request timed out: the secondary that took over deleted its pair (holding its queue, waiting for the old primary\'s) while the old primary\'s peer-took-over transition waited for the secondary\'s queue to tell it; a Fig. 13 failover failed half-way and failback could not continue',
  134: 'a topology drain waited forever for entries held for a sync copy that could not be updated, or for a cascade\'s ongoing writes',
  1064: 'a Fig. 13 failover away from the sync site, which ran the application and answered, swapped its suspended async copy (the async site\'s older image over it) and left it writable through the pairs it took over from tokyo: status still named it the active site',
  1034: 'a Fig. 14 failover run after a Fig. 13 failover from the sync site (the active site) was taken for a rerun because the sync site was writable: it copied the sync site\'s older image over the writes made at the async site',
  824: 'failback to a restarted primary whose sync site had taken over, written and gone silent found the primary "already" active and started the application on its older image; a Fig. 13 failover away from the answering active site left it writable beside the async site, and once it was lost failback copied the async site\'s image over its writes',
  194: 'status named the writer by comparing generations of different pairs: a site left read-only behind the async site (Fig. 13 away from it) was taken for the newest, and failback copied its image over the writes made at the async site',
  1244: 'a power loss brought back part of the journal of a group dissolved at tokyo (its entries without the progress that said they were delivered); failback recreated the group to sapporo and shipped those 1529 old writes over osaka\'s newer ones while the pair reported duplex',
  344: 'a pair created at a volume left read-only dropped the read-only mark before the pair was registered: a stale host write in that pause was acknowledged by the new secondary, and failback lost it',
  1474: 'simulator: the runbook stopped at a status with every leg PAIR though it was not healthy (a restarted sync site\'s stale half of a pair its peer had dissolved), and the final check found the one-ended pairs',
  1204: 'as 1244, through a swap: a power loss brought back the journal of the group tokyo dissolved at failover; failback\'s swap made tokyo the primary again and shipped those 226 old writes over sapporo\'s newer ones while the pairs reported duplex',
  1543: 'a group takeover with the primary reachable ran as a swap though a secondary was still suspending (its primary\'s "suspended" news waited behind the takeover): the old primary stepped down for every pair, the new one was refused the primary role of that pair and went on, leaving both ends secondaries for good',
  1794: 'a failover\'s drain of the async copy never ended: the apply position the async site reported while the primary was down was never repeated (reconnection ignored it), and the drain counted held entries per pair, not what the group journal holds behind the first of them',
  1804: 'a Fig. 13 failover away from a site that did not answer and held no pair with the async site (its copy came from elsewhere) left the third site following it: back with its pairs, it outranked the async site (which had none) as the active site; a later Fig. 13 rerun away from a lost osaka did the same, and failback copied osaka\'s image over sapporo\'s newest writes',
  2084: 'a Fig. 13 failover dissolved tokyo\'s sync pairs while osaka was down: osaka came back holding their secondary halves, which nobody dialed to tell (only a primary dials), and failback waited for good on those copies "in progress"',
};

/** Registers the regression seeds of one part (of `parts`), every `parts`-th seed of the list. */
export function regressionSeedTests(part: number, parts: number): void {
  Object.entries(regressionSeeds).forEach(([seed, found], i) => {
    if (i % parts !== part) return;
    test(`simulator seed ${seed}: ${found}`, async () => {
      const r = await runSeed({ seed: Number(seed), durationMs: 45_000, verbose: false });
      assert.ok(r.ok, `seed ${seed} failed:\n${r.failures.slice(0, 5).join('\n')}\n--- last steps:\n${r.trace.slice(-30).join('\n')}`);
      assert.ok(r.stats.writesAcknowledged > 100 && r.stats.checks > 0, 'the run wrote and checked something');
    });
  });
}
