// A simulated cluster: its scheduler, network and nodes, the volumes and pairs of the scenario, the
// trace of what happened, and where the application of each volume runs (its active node).
import { errorMessage } from '../src/common/errors';
import type { NodeEvent } from '../src/contracts/node';
import type { ReplicationService } from '../src/replication/service';
import { SimNetwork } from './network';
import { type CrashKind, SimNode } from './node';
import { Random } from './random';
import { Scheduler, settle } from './scheduler';

export interface VolumeSpec {
  name: string;
  /** Index written into every sector (identifies the volume in the data). */
  index: number;
  sizeBytes: number;
}

export interface PairSpec {
  name: string;
  volume: string;
  from: string;
  to: string;
  mode: 'sync' | 'async';
  fence: 'data' | 'never';
  group?: string;
}

export interface TraceLine {
  atMs: number;
  text: string;
}

export class Trace {
  readonly lines: TraceLine[] = [];

  constructor(private readonly scheduler: Scheduler, private readonly echo: boolean) {}

  add(text: string): void {
    const line = { atMs: this.scheduler.elapsed, text };
    this.lines.push(line);
    if (this.echo) console.log(format(line));
  }

  tail(n: number): string[] {
    return this.lines.slice(-n).map(format);
  }
}

function format(l: TraceLine): string {
  return `${(l.atMs / 1000).toFixed(3).padStart(9)}s  ${l.text}`;
}

export class Cluster {
  readonly scheduler = new Scheduler();
  readonly rng: Random;
  readonly network: SimNetwork;
  readonly nodes = new Map<string, SimNode>();
  readonly trace: Trace;
  /** Where hosts write each volume now (the application's site). */
  readonly active = new Map<string, string>();
  /** Failures found by the checker or by the run itself. */
  readonly failures: string[] = [];

  constructor(readonly seed: number, nodeNames: string[], readonly volumes: VolumeSpec[], readonly pairs: PairSpec[],
    options: { verbose: boolean; journalBytes: number; autoResync: boolean }) {
    this.rng = new Random(seed);
    this.trace = new Trace(this.scheduler, options.verbose);
    this.network = new SimNetwork(this.scheduler, this.rng.fork());
    if (process.env.SIM_TRACE_NET === '1') this.network.onMessage = (line) => this.trace.add(`net ${line}`);
    for (const name of nodeNames) {
      const node = new SimNode(name, this.scheduler, this.network, this.rng, { journalBytes: options.journalBytes, autoResync: options.autoResync });
      node.onEvent = (n, e) => this.onNodeEvent(n, e);
      this.nodes.set(name, node);
    }
  }

  node(name: string): SimNode {
    const n = this.nodes.get(name);
    if (!n) throw new Error(`no node ${name}`);
    return n;
  }

  fail(text: string): void {
    this.failures.push(text);
    this.trace.add(`FAILURE ${text}`);
  }

  /** Runs `op` on a node's service after an API round trip; rejects when the node is down. */
  async command<T>(nodeName: string, what: string, op: (s: ReplicationService) => Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: string }> {
    const node = this.node(nodeName);
    await this.scheduler.runUntil(this.scheduler.now + 1);
    if (!node.up) {
      this.trace.add(`${nodeName}: ${what} → refused: node is down`);
      return { ok: false, error: 'node is down' };
    }
    const inc = node.incarnation;
    const result = await this.scheduler.runUntilSettled(op(node.service!), this.scheduler.now + 600_000);
    if (!result.done || inc !== node.incarnation || !inc.alive) {
      this.trace.add(`${nodeName}: ${what} → no answer (the node went down)`);
      return { ok: false, error: 'no answer' };
    }
    if ('error' in result && result.error !== undefined) {
      this.trace.add(`${nodeName}: ${what} → error: ${errorMessage(result.error)}`);
      return { ok: false, error: errorMessage(result.error) };
    }
    this.trace.add(`${nodeName}: ${what} → ok`);
    return { ok: true, value: result.value as T };
  }

  async startAll(): Promise<void> {
    for (const node of this.nodes.values()) await this.start(node.name);
  }

  async start(name: string): Promise<void> {
    const node = this.node(name);
    this.trace.add(`${name}: start (incarnation ${node.incarnation.number + 1})`);
    const done = await this.scheduler.runUntilSettled(node.start(), this.scheduler.now + 60_000);
    if (!done.done) this.fail(`${name} did not finish starting within 60 s`);
    else if ('error' in done && done.error !== undefined) this.fail(`${name} failed to start: ${errorMessage(done.error)}`);
  }

  crash(name: string, kind: CrashKind): void {
    this.trace.add(`${name}: CRASH (${kind === 'kill' ? 'process killed' : 'power loss'})`);
    this.node(name).crash(kind);
  }

  /** Lets virtual time pass. */
  async run(ms: number): Promise<void> {
    await this.scheduler.runUntil(this.scheduler.now + ms);
    await settle();
  }

  private onNodeEvent(node: string, e: NodeEvent): void {
    if (e.kind === 'pair-state') {
      const d = e.details ?? {};
      this.trace.add(`${node}: ${e.subject} ${String(d.from)} → ${String(d.to)} [${String(d.event)}] ${e.reason}`);
    } else if (e.kind !== 'volume-created') {
      this.trace.add(`${node}: ${e.kind} ${e.subject}: ${e.reason}`);
    }
  }
}
