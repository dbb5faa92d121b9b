// Spec 004 §6.5, Figs. 7–13, as a script over two hosts, each with its cluster software and its
// pair-volume control software (src/quorum/host-control.ts) in front of its local storage. Runs
// against the in-memory model (unit tests) or real nodes (integration tests): the storages and the
// two hooks (write the cluster information, wait for the copy) are all that differ.
import type { AttributeView } from '../../src/contracts/quorum';
import type { QuorumStorage } from '../../src/quorum/client';
import { type ArbitrationResult, PairVolumeControl, arbitrate } from '../../src/quorum/host-control';

/** What the cluster software of one host does with the answers (B9: start-up vs failure). */
export class ClusterSoftware {
  owner = false;
  running = false;
  readonly log: string[] = [];

  constructor(readonly host: string, readonly control: PairVolumeControl) {}

  /** Cluster start (Fig. 8): GOOD → owner; RESERVATION CONFLICT → a member that does not own the quorum. */
  started(result: ArbitrationResult): void {
    this.owner = result.status === 'GOOD';
    this.running = true;
    this.log.push(this.owner ? 'started as the owner' : 'started as a member (RESERVATION CONFLICT at start-up)');
  }

  /** Heartbeat lost (Figs. 12–13): GOOD → take over everything; RESERVATION CONFLICT → stop everything. */
  afterFailure(result: ArbitrationResult): void {
    this.owner = result.status === 'GOOD';
    if (this.owner) this.log.push('took over every application and volume (failover)');
    else {
      this.running = false;
      this.log.push('stopped all applications and services (RESERVATION CONFLICT after the failure)');
    }
  }
}

export interface ScenarioHooks {
  /** Fig. 8: the winner writes the cluster management information to the quorum pair. */
  writeClusterInfo(host: string): Promise<void>;
  /** Resolves once the pair is in Pair at both nodes (the copy after a normal end finished). */
  waitPair(): Promise<void>;
}

export interface FigureRecord {
  fig: number;
  /** The quorum pair's state as host 10's storage reports it. */
  state: string;
  owner: string | null;
  running: Record<string, boolean>;
}

/** A storage whose pair commands wait for `gate`: makes the other host's command execute first. */
function gated(storage: QuorumStorage, gate: Promise<unknown>): QuorumStorage {
  return new Proxy(storage, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if ((prop === 'pairResync' || prop === 'pairSwapResync') && typeof value === 'function') {
        return async (...args: unknown[]) => {
          await gate.catch(() => undefined);
          return (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        };
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
}

function stateOf(a: AttributeView): string {
  return a.attribute.role === 'simplex' ? 'Simplex' : a.label.replace(/^[PS]-VOL, /, '');
}

/**
 * Runs Figs. 7–13. `first` is the host whose pair command executes first in both rounds (the
 * source draws host 10, on the P-VOL's side; host 11 is the S-VOL case the source leaves implied).
 */
export async function figures7to13(site10: QuorumStorage, site11: QuorumStorage, hooks: ScenarioHooks, first: 'host10' | 'host11' = 'host10'):
  Promise<{ figures: FigureRecord[]; hosts: Record<string, ClusterSoftware>; rounds: ArbitrationResult[][] }> {
  const figures: FigureRecord[] = [];
  const storages: Record<string, QuorumStorage> = { host10: site10, host11: site11 };
  const hosts: Record<string, ClusterSoftware> = {};
  const record = async (fig: number): Promise<void> => {
    const owner = Object.values(hosts).find((h) => h.owner)?.host ?? null;
    figures.push({ fig, state: stateOf(await site10.attribute('qd')), owner, running: Object.fromEntries(Object.values(hosts).map((h) => [h.host, h.running])) });
  };
  /** Both hosts arbitrate at once; the second host's pair command waits until the first host has its answer. */
  const round = async (reset: boolean): Promise<ArbitrationResult[]> => {
    const second = first === 'host10' ? 'host11' : 'host10';
    let release!: () => void;
    const gate = new Promise<void>((r) => { release = r; });
    const controls = {
      [first]: new PairVolumeControl(storages[first]!, first, 'qd'),
      [second]: new PairVolumeControl(gated(storages[second]!, gate), second, 'qd'),
    };
    const a = arbitrate(controls[first]!, { reset, split: false }).finally(release);
    const b = arbitrate(controls[second]!, { reset, split: false });
    const [ra, rb] = await Promise.all([a, b]);
    return first === 'host10' ? [ra, rb] : [rb, ra];
  };

  hosts.host10 = new ClusterSoftware('host10', new PairVolumeControl(site10, 'host10', 'qd'));
  hosts.host11 = new ClusterSoftware('host11', new PairVolumeControl(site11, 'host11', 'qd'));
  // Fig. 7: the cluster is stopped, the quorum pair rests in Suspend(normal).
  await record(7);
  // Fig. 8: the user starts the cluster; both RESERVE; the first command wins; the owner writes.
  const start = await round(false);
  hosts.host10.started(start[0]!);
  hosts.host11.started(start[1]!);
  const owner = Object.values(hosts).find((h) => h.owner);
  if (owner) await hooks.writeClusterInfo(owner.host);
  await hooks.waitPair();
  await record(8);
  // Fig. 9: both mount their data volumes and start their applications.
  await record(9);
  // Fig. 10: the quorum pair is split with the control software (by the owner, B10).
  if (owner) await storages[owner.host]!.pairSplit('qd');
  await record(10);
  // Fig. 11: normal operation.
  await record(11);
  // Fig. 12: the heartbeat stops; each sends a bus device reset, then RESERVE; the first wins.
  const failure = await round(true);
  hosts.host10.afterFailure(failure[0]!);
  hosts.host11.afterFailure(failure[1]!);
  await hooks.waitPair();
  await record(12);
  // Fig. 13: the winner runs everything; the loser stopped.
  await record(13);
  return { figures, hosts, rounds: [start, failure] };
}
