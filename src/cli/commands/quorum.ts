// `tricopy quorum`: quorum pair volumes (spec 004) at one node: the attribute query and
// reservations (RESERVE, RELEASE, reset), the pair-volume control commands (pair resync, pair swap
// resync, split), and `arbitrate`, the host control software of Figs. 5–6 as a command.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import type { CommandAnswer, ReservationAnswer } from '../../contracts/quorum';
import { HttpQuorumClient } from '../../quorum/client';
import { PairVolumeControl, arbitrate } from '../../quorum/host-control';
import { printJson, table } from '../format';
import { globals, nodeUrl, tokenOf } from '../globals';

export function registerQuorumCommands(program: Command): void {
  const quorum = program.command('quorum')
    .description('quorum pair volumes (spec 004): attribute, reservations, pair resync / swap resync, split, arbitrate');
  addStatus(quorum);
  addReserve(quorum);
  addRelease(quorum);
  addReset(quorum);
  addCommand(quorum, 'resync', 'PAIR_RESYNC (Fig. 4): ends normally only at the P-VOL in Suspend(normal) (row 4)');
  addCommand(quorum, 'swap-resync', 'PAIR_SWAP_RESYNC (Fig. 4): ends normally only at the S-VOL in Suspend(normal) (row 17); the roles swap');
  addSplit(quorum);
  addArbitrate(quorum);
}

function quorumClient(cmd: Command): HttpQuorumClient {
  return new HttpQuorumClient(nodeUrl(cmd), tokenOf(cmd));
}

function addStatus(quorum: Command): void {
  quorum.command('status [volume]')
    .description('quorum volumes of this node: the attribute (the 9 values of spec 004 §4.2), the pair, and who holds the reservation')
    .action(async (volume: string | undefined, _opts, cmd: Command) => {
      const api = quorumClient(cmd);
      const volumes = volume ? [await api.quorumStatus(volume)] : await api.quorumVolumes();
      if (globals(cmd).json) return printJson(volume ? volumes[0] : volumes);
      if (volumes.length === 0) return console.log('no quorum volumes on this node; create one with: tricopy pair create NAME --volume V --to URL --mode quorum');
      console.log(table(['VOLUME', 'ATTRIBUTE', 'PAIR', 'PEER', 'EPOCH', 'RESERVED BY'], volumes.map((v) => [
        v.volume, v.label, v.pair ?? '-', v.peer ?? '-', v.epoch === null ? '-' : String(v.epoch),
        v.reservation ? `${v.reservation.holder} since ${v.reservation.acquiredAt}` : '-',
      ])));
    });
}

function reservationCommand(quorum: Command, name: string, description: string, run: (api: HttpQuorumClient, volume: string, host: string) => Promise<ReservationAnswer>): void {
  quorum.command(name)
    .description(description)
    .requiredOption('--volume <volume>', 'the quorum volume on this node')
    .requiredOption('--as <host>', 'the host identity that sends the command')
    .action(async (opts: { volume: string; as: string }, cmd: Command) => {
      const answer = await run(quorumClient(cmd), opts.volume, opts.as);
      if (globals(cmd).json) printJson(answer);
      else console.log(`${answer.status === 'GOOD' ? 'GOOD' : 'RESERVATION CONFLICT'}: ${answer.reason}`);
      if (answer.status !== 'GOOD') throw new TricopyError('conflict', `${opts.as} did not get ${opts.volume}`);
    });
}

function addReserve(quorum: Command): void {
  reservationCommand(quorum, 'reserve', 'SCSI-2 RESERVE of the volume at this node only (reservations are not replicated): GOOD, or RESERVATION CONFLICT (exit 1)',
    (api, volume, host) => api.reserve(volume, host));
}

function addRelease(quorum: Command): void {
  reservationCommand(quorum, 'release', 'RELEASE: the holder gives the reservation back (from anyone else it changes nothing)',
    (api, volume, host) => api.release(volume, host));
}

function addReset(quorum: Command): void {
  reservationCommand(quorum, 'reset', 'bus device reset on the host\'s path: clears the volume\'s reservation, whoever holds it',
    (api, volume, host) => api.reset(volume, host));
}

function addCommand(quorum: Command, name: 'resync' | 'swap-resync', description: string): void {
  quorum.command(name)
    .description(`${description}. Exit 0 on NORMAL_END, 1 on ABNORMAL_END.`)
    .requiredOption('--volume <volume>', 'the quorum volume on this node the command is sent to')
    .action(async (opts: { volume: string }, cmd: Command) => {
      const api = quorumClient(cmd);
      const answer: CommandAnswer = name === 'resync' ? await api.pairResync(opts.volume) : await api.pairSwapResync(opts.volume);
      if (globals(cmd).json) printJson(answer);
      else console.log(`${answer.result} (Fig. 4 row ${answer.row}): ${answer.reason}; ${opts.volume} is now ${answer.after.label}`);
      if (answer.result !== 'NORMAL_END') throw new TricopyError('conflict', `${name} of ${opts.volume} ended abnormally`);
    });
}

function addSplit(quorum: Command): void {
  quorum.command('split')
    .description('split the quorum pair to Suspend(normal) (Fig. 10), from either node: at the S-VOL\'s node it is forwarded to the P-VOL\'s.\n' +
      'Also how an operator recovers a pair in Suspend(error) once both nodes reach each other again.')
    .requiredOption('--volume <volume>', 'the quorum volume on this node')
    .action(async (opts: { volume: string }, cmd: Command) => {
      const view = await quorumClient(cmd).pairSplit(opts.volume);
      if (globals(cmd).json) return printJson(view);
      console.log(`${opts.volume} is ${view.label}`);
    });
}

function addArbitrate(quorum: Command): void {
  quorum.command('arbitrate')
    .description('the host control software of spec 004 Fig. 5: reserve the local quorum volume, query its attribute, send pair resync (P-VOL)\n' +
      'or pair swap resync (S-VOL); GOOD only if that command ends normally (exit 0), else RESERVATION CONFLICT (exit 1) after\n' +
      'releasing the local reservation. The winner then splits the pair back to Suspend(normal) once it is in Pair.\n' +
      'Send it at cluster start and when the heartbeat is lost, never periodically (spec 004 E11).')
    .requiredOption('--volume <volume>', 'the quorum volume on this host\'s local node (--node)')
    .requiredOption('--as <host>', 'this host\'s identity')
    .option('--reset', 'send a bus device reset first, as cluster software does after a failure (Fig. 12)')
    .option('--no-split', 'leave the pair in Pair after a win (Figs. 8–9); split it later with tricopy quorum split')
    .option('--split-timeout <seconds>', 'how long the winner waits for Pair before splitting', '60')
    .option('--verbose', 'print every step of Fig. 5')
    .action(async (opts: { volume: string; as: string; reset?: boolean; split: boolean; splitTimeout: string; verbose?: boolean }, cmd: Command) => {
      const control = new PairVolumeControl(quorumClient(cmd), opts.as, opts.volume);
      const result = await arbitrate(control, { reset: opts.reset === true, split: opts.split, splitTimeoutMs: Number(opts.splitTimeout) * 1000 });
      if (globals(cmd).json) printJson(result);
      else {
        // Verbose: every step, the answer (116 or 117) among them; otherwise the answer alone.
        if (opts.verbose) for (const s of result.steps) console.log(`${s.step === 0 ? '   ' : String(s.step)}  ${s.what}`);
        else console.log(`${result.status === 'GOOD' ? 'GOOD' : 'RESERVATION CONFLICT'}: ${result.reason}`);
      }
      if (result.status !== 'GOOD') throw new TricopyError('conflict', `${opts.as} did not obtain the exclusive right to ${opts.volume}`);
    });
}
