// One simulated run from one seed: set a scenario up, let hosts write while faults (cut and slow
// links, killed processes, power losses, restarts) and operator commands happen at random, check
// the promises at quiet moments, then heal everything, follow the runbook and check that every copy
// converged. Everything random comes from the seed, so a failing seed reproduces exactly.
import { createHash } from 'node:crypto';
import { InvariantError, errorMessage, invariantObservers } from '../src/common/errors';
import { sectorBytes } from './blocks';
import { Checker } from './checker';
import { Cluster, type PairSpec, type VolumeSpec } from './cluster';
import { History } from './history';
import type { CrashKind } from './node';
import { Operator } from './operator';
import { TopologyOperator } from './topology-operator';
import type { Random } from './random';
import { eventLoopTurn } from './scheduler';
import { type Variant, applyVariant } from './variants';
import { Workload } from './workload';

export interface RunOptions {
  seed: number;
  /** Virtual milliseconds of faults and commands before the final convergence. */
  durationMs: number;
  verbose: boolean;
  variant?: Variant | undefined;
}

export interface RunResult {
  seed: number;
  scenario: string;
  ok: boolean;
  failures: string[];
  trace: string[];
  /**
   * A digest of the whole run: every trace line, the stats, and every node's disk (each name it was
   * given and what it holds at the end). A seed gives the same one alone, after other seeds in the
   * same process, and in any process (test/sim/isolation.test.ts).
   */
  fingerprint: string;
  stats: { virtualMs: number; steps: number; writesAcknowledged: number; writesRefused: number; checks: number; crashes: number; commands: number };
}

interface Scenario {
  name: string;
  nodes: string[];
  volumes: VolumeSpec[];
  pairs: PairSpec[];
}

const MiB = 1024 * 1024;

/** Two sites: a sync pair with fence data, a sync pair with fence never, and an async group of two volumes. */
function twoSites(): Scenario {
  return {
    name: 'two sites',
    nodes: ['tokyo', 'osaka'],
    volumes: [
      { name: 'db', index: 1, sizeBytes: MiB }, { name: 'scratch', index: 2, sizeBytes: MiB },
      { name: 'log1', index: 3, sizeBytes: MiB }, { name: 'log2', index: 4, sizeBytes: MiB },
    ],
    pairs: [
      { name: 'db', volume: 'db', from: 'tokyo', to: 'osaka', mode: 'sync', fence: 'data' },
      { name: 'scratch', volume: 'scratch', from: 'tokyo', to: 'osaka', mode: 'sync', fence: 'never' },
      { name: 'log1', volume: 'log1', from: 'tokyo', to: 'osaka', mode: 'async', fence: 'never', group: 'logs' },
      { name: 'log2', volume: 'log2', from: 'tokyo', to: 'osaka', mode: 'async', fence: 'never', group: 'logs' },
    ],
  };
}

/** Three sites, each pair between two of them: sync tokyo → osaka, async tokyo → sapporo, sync osaka → sapporo. */
function threeSites(): Scenario {
  return {
    name: 'three sites',
    nodes: ['tokyo', 'osaka', 'sapporo'],
    volumes: [
      { name: 'db', index: 1, sizeBytes: MiB }, { name: 'log1', index: 3, sizeBytes: MiB },
      { name: 'log2', index: 4, sizeBytes: MiB }, { name: 'web', index: 5, sizeBytes: MiB },
    ],
    pairs: [
      { name: 'db', volume: 'db', from: 'tokyo', to: 'osaka', mode: 'sync', fence: 'data' },
      { name: 'log1', volume: 'log1', from: 'tokyo', to: 'sapporo', mode: 'async', fence: 'never', group: 'logs' },
      { name: 'log2', volume: 'log2', from: 'tokyo', to: 'sapporo', mode: 'async', fence: 'never', group: 'logs' },
      { name: 'web', volume: 'web', from: 'osaka', to: 'sapporo', mode: 'sync', fence: 'data' },
    ],
  };
}

/** A three-site topology (spec 001, multi-target) run by the real procedures: failovers, failbacks, repairs. */
function topology(): Scenario {
  return {
    name: 'topology',
    nodes: ['tokyo', 'osaka', 'sapporo'],
    volumes: [{ name: 'db1', index: 1, sizeBytes: MiB }, { name: 'log1', index: 3, sizeBytes: MiB }],
    pairs: [],
  };
}

/** Which scenario a seed runs (seeds ending in 4 run a topology). */
export function scenarioOf(seed: number): Scenario {
  if (seed % 10 === 4) return topology();
  return seed % 3 === 2 ? threeSites() : twoSites();
}

export async function runSeed(options: RunOptions): Promise<RunResult> {
  const scenario = scenarioOf(options.seed);
  const cluster = new Cluster(options.seed, scenario.nodes, scenario.volumes, scenario.pairs,
    { verbose: options.verbose, journalBytes: 64 * MiB, autoResync: true });
  const history = new History(MiB / sectorBytes);
  const checker = new Checker(cluster, history);
  const rng = cluster.rng.fork();
  const operator = scenario.name === 'topology'
    ? new TopologyOperator(cluster, checker, rng.fork(), { primary: 'tokyo', sync: 'osaka', async: 'sapporo' },
      Object.fromEntries(scenario.volumes.map((v) => [v.name, v.sizeBytes])))
    : new Operator(cluster, checker, rng.fork());
  const workload = new Workload(cluster, history, checker, rng.fork());
  let crashes = 0;
  let commands = 0;
  for (const node of cluster.nodes.values()) {
    const trace = node.onEvent;
    node.onEvent = (n, e) => {
      trace?.(n, e);
      if (e.kind === 'pair-state') checker.noteTransition(n, e.subject, e.details?.role, e.details?.to);
      if (e.kind === 'pair-created') checker.notePairCreated(n, e.subject, e.details?.role);
    };
  }
  if (options.variant) applyVariant(options.variant, cluster);
  // The process-wide hooks are this run's only from here to the finally below: nothing of them outlives it.
  const observeInvariant = (err: InvariantError): void => cluster.fail(`${err.message}\n${err.stack?.split('\n').slice(1, 6).join('\n') ?? ''}`);
  invariantObservers.add(observeInvariant);
  const unhandled = (reason: unknown): void => cluster.fail(`unhandled rejection: ${errorMessage(reason)}`);
  process.on('unhandledRejection', unhandled);
  try {
    await cluster.startAll();
    await operator.setUp();
    workload.start();
    const restarts: Array<{ node: string; atMs: number }> = [];
    const end = cluster.scheduler.now + options.durationMs;
    while (cluster.scheduler.now < end && cluster.failures.length === 0) {
      await cluster.run(200 + rng.int(1300));
      for (const r of restarts.splice(0).filter((x) => {
        if (x.atMs > cluster.scheduler.now) {
          restarts.push(x);
          return false;
        }
        return true;
      })) await cluster.start(r.node);
      const roll = rng.next();
      if (roll < 0.3) await checkpoint(cluster, workload, checker);
      else if (roll < 0.55) {
        const crashed = fault(cluster, rng, workload, checker, options.variant);
        if (crashed) {
          crashes++;
          restarts.push({ node: crashed, atMs: cluster.scheduler.now + 300 + rng.int(8000) });
        }
      } else if (roll < 0.8) {
        commands++;
        await operator.randomCommand();
      }
    }
    // The end: no more faults or commands; everything heals and the operator follows the runbook.
    cluster.trace.add('--- healing: links restored, crashed nodes restarted; the operator follows the runbook');
    cluster.network.heal();
    for (const node of cluster.nodes.values()) if (!node.incarnation.alive) await cluster.start(node.name);
    await checkpoint(cluster, workload, checker);
    workload.stop();
    await cluster.scheduler.runUntilTrue(() => workload.inFlightCount === 0, cluster.scheduler.now + 60_000);
    const converged = await operator.converge(cluster.scheduler.now + 600_000);
    if (!converged) cluster.fail('the pairs did not all return to duplex with empty journals within 10 minutes after the faults healed');
    checker.final();
    for (const m of cluster.network.misuse) cluster.fail(m);
  } catch (err) {
    cluster.fail(`the run itself failed: ${err instanceof Error ? err.stack ?? err.message : String(err)}`);
  } finally {
    workload.stop();
    invariantObservers.delete(observeInvariant);
    // A real turn, so a rejection left unhandled at the end is reported to this run's handler before it goes.
    await eventLoopTurn();
    process.off('unhandledRejection', unhandled);
  }
  const stats = { virtualMs: cluster.scheduler.elapsed, steps: cluster.scheduler.steps, writesAcknowledged: workload.writesAcked,
    writesRefused: workload.writesRefused, checks: checker.checks, crashes, commands };
  return {
    seed: options.seed, scenario: scenario.name, ok: cluster.failures.length === 0, failures: [...cluster.failures], trace: cluster.trace.tail(60),
    fingerprint: fingerprint(cluster, stats), stats,
  };
}

function fingerprint(cluster: Cluster, stats: RunResult['stats']): string {
  const h = createHash('sha256');
  for (const line of cluster.trace.lines) h.update(`${line.atMs} ${line.text}\n`);
  h.update(JSON.stringify(stats));
  for (const node of cluster.nodes.values()) h.update(`\n${node.name} ${node.disk.fingerprint()}`);
  return h.digest('hex');
}

async function checkpoint(cluster: Cluster, workload: Workload, checker: Checker): Promise<void> {
  if (!await workload.pause()) {
    cluster.fail(`host requests still in flight 120 s after the hosts paused (${workload.inFlightCount})`);
    return;
  }
  // Secondaries apply what they received (after a restart they replay it) before their images are read.
  const groups = (): string[] => [...new Set([...cluster.nodes.values()].flatMap((n) => (n.up ? n.service!.groups() : [])))];
  await cluster.scheduler.runUntilTrue(() => [...cluster.nodes.keys()].every((n) => groups().every((g) => checker.backlog(n, g) === 0)),
    cluster.scheduler.now + 5000);
  checker.checkpoint();
  workload.resume();
}

/** One random fault; returns the node it crashed, if any. */
function fault(cluster: Cluster, rng: Random, workload: Workload, checker: Checker, variant: Variant | undefined): string | undefined {
  const names = [...cluster.nodes.keys()];
  const roll = rng.next();
  if (roll < 0.4) {
    const a = rng.pick(names);
    const b = rng.pick(names.filter((n) => n !== a));
    const both = rng.chance(0.6);
    cluster.trace.add(`network: cut ${a} ${both ? '⇄' : '→'} ${b}`);
    cluster.network.cutLink(a, b, both);
    cluster.scheduler.schedule(500 + rng.int(10_000), () => {
      cluster.trace.add(`network: ${a} ⇄ ${b} restored`);
      cluster.network.healLink(a, b);
    });
    return undefined;
  }
  if (roll < 0.55) {
    const a = rng.pick(names);
    const b = rng.pick(names.filter((n) => n !== a));
    cluster.trace.add(`network: ${a} ⇄ ${b} slow`);
    cluster.network.setProfile(a, b, { delayMs: 20 + rng.int(200), jitterMs: 50 });
    return undefined;
  }
  const alive = names.filter((n) => cluster.node(n).incarnation.alive);
  if (alive.length === 0) return undefined;
  const victim = rng.pick(alive);
  const kind: CrashKind = variant?.forcePowerLoss || rng.chance(0.5) ? 'power' : 'kill';
  checker.crashing(victim, kind);
  cluster.crash(victim, kind);
  workload.nodeCrashed(victim);
  return victim;
}
