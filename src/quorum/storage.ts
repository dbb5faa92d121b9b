// The storage side of spec 004 at one node: the attribute query (§4.2), reservations (§4.3), and
// pair resync / pair swap resync executed as §6.3 says, on top of the replication core's own
// resync and swap (the quorum overlay on the transition engine makes them answer as Fig. 4 does).
//
//   - The node holding the P-VOL is the one authority: a resync is decided there, under the pair's
//     command queue; a swap resync sent to the S-VOL's node is checked there, then forwarded to the
//     P-VOL's node, which decides it under its queue (the swap's prepare step) before the S-VOL's
//     node takes the P-VOL role.
//   - NORMAL_END only once the exit from Suspend(normal) is committed on both nodes (a resync waits
//     for the S-VOL's node to confirm the new state); never waiting for Pair (B4).
//   - A peer that cannot be reached before the commit: ABNORMAL_END, and the pair goes to
//     Suspend(error) here. Nothing is ever decided locally (B6, E6).
//   - A split is accepted at either node: the S-VOL's node forwards it to the P-VOL's node ([0031]).
import { TricopyError, errorMessage } from '../common/errors';
import type { Logger } from '../common/log';
import type { PairStatus } from '../contracts/pairs';
import type { AttributeView, CommandAnswer, QuorumCommand, QuorumVolumeStatus, ReservationAnswer } from '../contracts/quorum';
import type { PairExtensionPoint } from '../replication/extension';
import type { PairRuntime } from '../replication/pairs/runtime';
import { jsonCodec, MessageType } from '../replication/transport/messages';
import { attributeLabel, attributeOf, fig4 } from './fig4';
import { quorumOverlay } from './pair-overlay';
import { Reservations } from './reservations';

/** How long a command waits for the peer to confirm a committed state (then: Suspend(error)). */
export const quorumCommitTimeoutMs = 10_000;

export const hostIdPattern = /^[A-Za-z0-9][A-Za-z0-9._@:-]{0,62}$/;

/** The replication operations a quorum command runs (the node's ReplicationService). */
export interface PairCommands {
  resync(name: string, options: { discard?: string | undefined }): Promise<PairStatus>;
  swap(name: string, options: { discard?: string | undefined }): Promise<PairStatus[]>;
  split(name: string, options: { secondaryWritable: boolean }): Promise<PairStatus>;
}

interface QuorumRequest {
  op: 'split';
  name: string;
}

const quorumRequestCodec = jsonCodec<QuorumRequest>({
  type: 'object',
  additionalProperties: false,
  required: ['op', 'name'],
  properties: { op: { type: 'string', enum: ['split'] }, name: { type: 'string', minLength: 1, maxLength: 63 } },
});

export class QuorumVolumes {
  readonly reservations: Reservations;

  constructor(
    private readonly x: PairExtensionPoint,
    private readonly commands: PairCommands,
    private readonly volumes: { has(name: string): boolean },
    private readonly log: Logger,
  ) {
    this.reservations = new Reservations(x.clock);
    x.engine.setOverlay('quorum', quorumOverlay);
    x.handlePeerRequests(MessageType.QuorumRequest, (payload, peer) => this.onPeerRequest(payload, peer));
    // E5: a link lost while the pair rests in Suspend(normal) makes it Suspend(error) at both nodes.
    x.transport.onPeerDown((node, reason) => {
      for (const p of x.registry.ofPeer(node)) {
        if (p.record.purpose !== 'quorum' || attributeOf(p.record).state !== 'suspend-normal') continue;
        void this.fail(p, `link to ${node} lost: ${reason}`).catch((err: unknown) =>
          this.log.warn({ pair: p.record.name, err: errorMessage(err) }, 'could not record the lost link on the quorum pair'));
      }
    });
  }

  /** The quorum pair of a volume at this node, if it has one. */
  pairOf(volume: string): PairRuntime | undefined {
    return this.x.registry.ofVolume(volume).find((p) => p.record.purpose === 'quorum');
  }

  /** Step 113: the volume's attribute (one of the 9 values of §4.2). */
  attribute(volume: string): AttributeView {
    this.requireVolume(volume);
    const p = this.pairOf(volume);
    const attribute = attributeOf(p?.record);
    return {
      volume, attribute, label: attributeLabel(attribute), pair: p?.record.name ?? null, peer: p?.record.peer.node ?? null,
      epoch: p?.record.generation ?? null, reason: p?.record.reason ?? null,
    };
  }

  /** Whether the storage link to the peer of the volume's quorum pair is up now (false: no pair). */
  linkUp(volume: string): boolean {
    const p = this.pairOf(volume);
    return p !== undefined && this.x.transport.isUp(p.record.peer.node);
  }

  status(volume: string): QuorumVolumeStatus {
    return { ...this.attribute(volume), reservation: this.reservations.holder(volume) };
  }

  /** Volumes that are quorum volumes or reserved, at this node. */
  list(): QuorumVolumeStatus[] {
    const names = new Set(this.reservations.volumes().filter((v) => this.volumes.has(v)));
    for (const p of this.x.registry.all()) if (p.record.purpose === 'quorum') names.add(p.record.volume);
    return [...names].sort().map((v) => this.status(v));
  }

  reserve(volume: string, host: string): ReservationAnswer {
    this.check(volume, host);
    const status = this.reservations.reserve(volume, host);
    const holder = this.reservations.holder(volume)?.holder ?? null;
    const reason = status === 'GOOD' ? `reserved by ${host}` : `reserved by ${holder}; ${host} gets RESERVATION CONFLICT`;
    this.x.events.emit(status === 'GOOD' ? 'quorum-reserved' : 'quorum-reservation-conflict', volume, reason, { host, holder });
    return { volume, status, holder, reason };
  }

  release(volume: string, host: string): ReservationAnswer {
    this.check(volume, host);
    const released = this.reservations.release(volume, host);
    const holder = this.reservations.holder(volume)?.holder ?? null;
    const reason = released ? `released by ${host}` : holder ? `held by ${holder}, not ${host}: nothing released` : 'not reserved: nothing released';
    if (released) this.x.events.emit('quorum-released', volume, reason, { host });
    return { volume, status: 'GOOD', holder, reason };
  }

  /** A bus device reset on the host's path: the volume's reservation is cleared, whoever held it. */
  reset(volume: string, host: string): ReservationAnswer {
    this.check(volume, host);
    const was = this.reservations.reset(volume);
    const reason = was ? `reset by ${host}: the reservation of ${was} was cleared` : `reset by ${host}: no reservation to clear`;
    this.x.events.emit('quorum-reset', volume, reason, { host, cleared: was });
    return { volume, status: 'GOOD', holder: null, reason };
  }

  /** PAIR_RESYNC (114) sent to `volume`. */
  async resync(volume: string): Promise<CommandAnswer> {
    const before = this.attribute(volume);
    const row = fig4('resync', before.attribute);
    const p = this.pairOf(volume);
    if (row.result === 'ABNORMAL_END' || !p) return this.answer('resync', before, row.row, 'ABNORMAL_END', row.reason);
    const name = p.record.name;
    try {
      // Decided here, at the P-VOL's node, under the pair's command queue: the overlay lets the
      // resync through only in Suspend(normal) (row 4), and the commit leaves that state at once.
      await this.commands.resync(name, {});
    } catch (err) {
      return this.afterFailure('resync', before, row.row, p, err);
    }
    if (!(p.record.role === 'primary' && attributeOf(p.record).state !== 'suspend-normal' && this.x.registry.get(name) === p)) {
      return this.answer('resync', before, row.row, 'ABNORMAL_END', `the resync did not leave Suspend(normal): ${p.record.reason}`);
    }
    // Committed here; NORMAL_END only once the S-VOL's node has it too.
    try {
      await this.x.tellConfirmed(p, quorumCommitTimeoutMs);
    } catch (err) {
      await this.fail(p, `the S-VOL's node ${p.record.peer.node} did not confirm the resync: ${errorMessage(err)}`);
      return this.answer('resync', before, row.row, 'ABNORMAL_END', `the S-VOL's node could not be told of the resync (${errorMessage(err)}); the pair is in Suspend(error)`);
    }
    return this.answer('resync', before, row.row, 'NORMAL_END', row.reason);
  }

  /** PAIR_SWAP_RESYNC (115) sent to `volume`. */
  async swapResync(volume: string): Promise<CommandAnswer> {
    const before = this.attribute(volume);
    const row = fig4('swap-resync', before.attribute);
    const p = this.pairOf(volume);
    if (row.result === 'ABNORMAL_END' || !p) return this.answer('swap-resync', before, row.row, 'ABNORMAL_END', row.reason);
    const name = p.record.name;
    try {
      // Checked here (the S-VOL), decided at the P-VOL's node (the swap's prepare), then this
      // node takes the P-VOL role.
      await this.commands.swap(name, {});
    } catch (err) {
      return this.afterFailure('swap-resync', before, row.row, p, err);
    }
    if (!(p.record.role === 'primary' && attributeOf(p.record).state !== 'suspend-normal' && this.x.registry.get(name) === p)) {
      return this.answer('swap-resync', before, row.row, 'ABNORMAL_END', `the swap resync did not make this volume the P-VOL: ${p.record.reason}`);
    }
    return this.answer('swap-resync', before, row.row, 'NORMAL_END', row.reason);
  }

  /** SPLIT (Fig. 10), accepted at either node: Pair → Suspend(normal) (or Suspend(error) → Suspend(normal), recovery). */
  async split(volume: string): Promise<AttributeView> {
    this.requireVolume(volume);
    const p = this.pairOf(volume);
    if (!p) throw new TricopyError('conflict', `volume ${volume} is in no quorum pair`, 'create one with: tricopy pair create NAME --volume V --to URL --mode quorum');
    if (p.record.role === 'primary') {
      await this.commands.split(p.record.name, { secondaryWritable: false });
    } else {
      // The S-VOL's node forwards to the P-VOL's node, which splits and tells this node before it answers.
      await this.x.transport.request(p.record.peer.node, MessageType.QuorumRequest, quorumRequestCodec.encode({ op: 'split', name: p.record.name }),
        quorumCommitTimeoutMs).catch((err: unknown) => {
        throw new TricopyError(err instanceof TricopyError && err.code !== 'unavailable' ? err.code : 'unavailable',
          `split of quorum pair ${p.record.name}: ${errorMessage(err)}`, err instanceof TricopyError ? err.hint : undefined);
      });
    }
    return this.attribute(volume);
  }

  private async onPeerRequest(payload: Buffer, peer: string): Promise<void> {
    const req = quorumRequestCodec.decode(payload);
    const p = this.x.registry.requireOfPeer(req.name, peer);
    if (p.record.purpose !== 'quorum') throw new TricopyError('conflict', `pair ${req.name} is not a quorum pair on ${this.x.localNode}`);
    if (p.record.role !== 'primary') throw new TricopyError('conflict', `${this.x.localNode} holds the S-VOL of pair ${req.name} too: a swap did not finish`);
    await this.commands.split(req.name, { secondaryWritable: false });
  }

  /** What a failed command leaves: Suspend(error) when the peer could not be reached before the commit. */
  private async afterFailure(command: QuorumCommand, before: AttributeView, row: number, p: PairRuntime, err: unknown): Promise<CommandAnswer> {
    const unreachable = err instanceof TricopyError && err.code === 'unavailable';
    const stillThere = this.x.registry.get(p.record.name) === p;
    if (unreachable && stillThere && attributeOf(p.record).state === 'suspend-normal') {
      await this.fail(p, `${command}: the peer ${p.record.peer.node} could not be reached (${errorMessage(err)}); nothing was decided here`);
    }
    // A refusal of the overlay names the row that decided at the authority (the state had moved).
    const decided = /Fig\. 4 row (\d+): (.*)$/.exec(errorMessage(err));
    return this.answer(command, before, decided ? Number(decided[1]) : row, 'ABNORMAL_END', decided ? decided[2]! : errorMessage(err));
  }

  /** Suspend(normal) → Suspend(error) (through the engine: the overlay's failure row). */
  private fail(p: PairRuntime, reason: string): Promise<unknown> {
    return this.x.registry.serialize(p.record.name, (q) => this.x.engine.apply(q, 'failure', { reason }));
  }

  private answer(command: QuorumCommand, before: AttributeView, row: number, result: CommandAnswer['result'], reason: string): CommandAnswer {
    const after = this.attribute(before.volume);
    this.x.events.emit('quorum-command', before.volume, `${command === 'resync' ? 'pair resync' : 'pair swap resync'} on a ${before.label}: ${result === 'NORMAL_END' ? 'normal end' : 'abnormal end'} (Fig. 4 row ${row}): ${reason}`,
      { command, result, row, before: before.label, after: after.label, pair: before.pair });
    return { volume: before.volume, command, result, row, before, after, reason };
  }

  private check(volume: string, host: string): void {
    this.requireVolume(volume);
    if (!hostIdPattern.test(host)) throw new TricopyError('invalid-argument', `"${host}" is not a valid host identity`, 'use 1–63 letters, digits, ".", "_", "@", ":" or "-"');
  }

  private requireVolume(volume: string): void {
    if (!this.volumes.has(volume)) throw new TricopyError('not-found', `volume ${volume} does not exist on ${this.x.localNode}`);
  }
}
