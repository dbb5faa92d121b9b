// The pairs of a node, indexed by name, volume, group and peer so the write path finds a volume's
// pairs without scanning, and the per-pair command queue that runs commands on a pair one at a time.
import { TricopyError, invariant } from '../../common/errors';
import type { PairRuntime } from './runtime';

const none: readonly PairRuntime[] = Object.freeze([]);

export class PairRegistry {
  private readonly byName = new Map<string, PairRuntime>();
  private readonly byVolume = new Map<string, PairRuntime[]>();
  private readonly byGroup = new Map<string, PairRuntime[]>();

  constructor(private readonly localNode: string) {}

  get size(): number {
    return this.byName.size;
  }

  add(p: PairRuntime): void {
    const r = p.record;
    invariant(!this.byName.has(r.name), `pair ${r.name} is registered once`);
    this.byName.set(r.name, p);
    push(this.byVolume, r.volume, p);
    if (r.group !== null) push(this.byGroup, r.group, p);
  }

  remove(p: PairRuntime): void {
    const r = p.record;
    invariant(this.byName.get(r.name) === p, `pair ${r.name} is registered when it is removed`);
    this.byName.delete(r.name);
    pull(this.byVolume, r.volume, p);
    if (r.group !== null) pull(this.byGroup, r.group, p);
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  get(name: string): PairRuntime | undefined {
    return this.byName.get(name);
  }

  /** The pair, or a not-found error that says how to list pairs. */
  require(name: string): PairRuntime {
    const p = this.byName.get(name);
    if (!p) throw new TricopyError('not-found', `pair ${name} does not exist on ${this.localNode}`, 'list pairs with: tricopy pair status');
    return p;
  }

  /** The pair shared with `peer` (requests from a peer may only touch their own pairs). */
  requireOfPeer(name: string, peer: string): PairRuntime {
    const p = this.byName.get(name);
    if (!p) throw new TricopyError('not-found', `pair ${name} does not exist on ${this.localNode}`);
    if (p.record.peer.node !== peer) throw new TricopyError('forbidden', `pair ${name} is not shared with ${peer}`);
    return p;
  }

  all(): IterableIterator<PairRuntime> {
    return this.byName.values();
  }

  ofVolume(volume: string): readonly PairRuntime[] {
    return this.byVolume.get(volume) ?? none;
  }

  ofGroup(group: string): readonly PairRuntime[] {
    return this.byGroup.get(group) ?? none;
  }

  ofPeer(node: string): PairRuntime[] {
    return [...this.byName.values()].filter((p) => p.record.peer.node === node);
  }

  groups(): string[] {
    return [...this.byGroup.keys()].sort();
  }

  /** Runs `op` after every command queued on the pair before it. */
  serialize<T>(name: string, op: (p: PairRuntime) => Promise<T>): Promise<T> {
    // A pair removed meanwhile is a rejected promise, never a synchronous throw (callers chain .catch).
    let p: PairRuntime;
    try {
      p = this.require(name);
    } catch (err) {
      return Promise.reject(err);
    }
    p.commandsPending++;
    const result = p.commandChain.then(() => op(p), () => op(p)).finally(() => {
      p.commandsPending--;
    });
    p.commandChain = result.catch(() => undefined);
    return result;
  }

  /**
   * Runs `op` now if no command runs on the pair, else refuses. For requests from the peer that a
   * command here may be waiting on (through the peer): waiting would deadlock both nodes.
   */
  trySerialize<T>(name: string, op: (p: PairRuntime) => Promise<T>): Promise<T> {
    const p = this.byName.get(name);
    if (p && p.commandsPending > 0) {
      return Promise.reject(new TricopyError('busy', `pair ${name} on ${this.localNode} is running another command`, 'run the command again in a moment'));
    }
    return this.serialize(name, op);
  }

  /** trySerialize for several pairs at once (all idle, or refused). */
  trySerializeAll<T>(names: string[], op: () => Promise<T>): Promise<T> {
    const busy = names.find((n) => (this.byName.get(n)?.commandsPending ?? 0) > 0);
    if (busy !== undefined) {
      return Promise.reject(new TricopyError('busy', `pair ${busy} on ${this.localNode} is running another command`, 'run the command again in a moment'));
    }
    return this.serializeAll(names, op);
  }

  /** Runs `op` holding the command queues of all the named pairs (a group command). */
  serializeAll<T>(names: string[], op: () => Promise<T>): Promise<T> {
    const [first, ...rest] = names;
    if (first === undefined) return op();
    return this.serialize(first, () => (rest.length > 0 ? this.serializeAll(rest, op) : op()));
  }
}

function push(map: Map<string, PairRuntime[]>, key: string, p: PairRuntime): void {
  const list = map.get(key);
  if (list) list.push(p);
  else map.set(key, [p]);
}

function pull(map: Map<string, PairRuntime[]>, key: string, p: PairRuntime): void {
  const list = map.get(key);
  if (!list) return;
  const at = list.indexOf(p);
  if (at >= 0) list.splice(at, 1);
  if (list.length === 0) map.delete(key);
}
