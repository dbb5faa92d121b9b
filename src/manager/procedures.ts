// Topology procedures run by the manager: the same procedures as `tricopy topology …` (apply,
// failover, failback, repair), against the topology's nodes, with every line they print kept in
// the run's record and each numbered step in the history, so what was done, when and by whom is
// in one place. One run per topology at a time. When a run ends the copies' command paths are
// reconciled (the copies a failover built have new paths, spec 000 §6.5 step 4). A run cut short
// by the manager's death is marked interrupted when a manager next leads; the procedures are
// idempotent, so running it again finishes it.
import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { TricopyError, errorMessage } from '../common/errors';
import type { ProcedureRun, StartProcedureRequest } from '../contracts/manager';
import { Orchestrator } from '../topology/orchestrator';
import type { ManagerContext } from './context';
import type { Registry } from './registry';
import { normalizeUrl } from './stored-node-client';

export class Procedures {
  private readonly running = new Map<string, ProcedureRun>();
  private readonly output = new EventEmitter();

  constructor(private readonly ctx: ManagerContext, private readonly registry: Registry) {
    this.output.setMaxListeners(0);
  }

  /** On taking the lead: runs a dead leader left running are interrupted. */
  async markInterrupted(): Promise<void> {
    for (const run of await this.ctx.store.listRuns()) {
      if (run.state !== 'running' || this.running.has(run.id)) continue;
      const ended: ProcedureRun = { ...run, state: 'interrupted', endedAt: new Date(this.ctx.clock.now()).toISOString(),
        error: 'the manager running it stopped; run it again (procedures are idempotent)' };
      await this.ctx.writer.run(async (tx) => {
        tx.ops.push(this.ctx.store.putRun(ended));
        tx.event({ kind: 'procedure-interrupted', node: null, subject: run.topology, reason: `${run.procedure} ${run.id}: ${ended.error}` });
      });
    }
  }

  async start(request: StartProcedureRequest, startedBy: string): Promise<ProcedureRun> {
    const t = await this.registry.topology(request.topology);
    const busy = [...this.running.values()].find((r) => r.topology === t.name);
    if (busy) throw new TricopyError('conflict', `procedure ${busy.procedure} (${busy.id}) is running on topology ${t.name}`, `follow it: tricopy manager procedure ${busy.id}`);
    if ((request.procedure === 'failover' || request.procedure === 'failback') && !request.to) {
      throw new TricopyError('invalid-argument', `${request.procedure} needs the site to move to (--to)`);
    }
    const run: ProcedureRun = {
      id: `r${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`, topology: t.name, procedure: request.procedure,
      args: { to: request.to ?? null, newestFrom: request.newestFrom ?? null, wait: request.wait ?? false },
      state: 'running', startedAt: new Date(this.ctx.clock.now()).toISOString(), endedAt: null, output: [], error: null, startedBy,
    };
    this.running.set(run.id, run);
    await this.ctx.writer.run(async (tx) => {
      tx.ops.push(this.ctx.store.putRun(run));
      tx.event({ kind: 'procedure-started', node: null, subject: t.name, reason: `${describe(run)} started by ${startedBy}`, details: { run: run.id } });
    });
    const nodes = await this.ctx.store.listNodes();
    const orchestrator = new Orchestrator(t, {
      clientFor: (url) => this.ctx.clientFor(nodes.find((n) => normalizeUrl(n.url) === normalizeUrl(url)) ?? { url }),
      print: (line) => this.print(run, line),
      waitSeconds: request.wait ? (request.timeoutSeconds ?? 3600) : 0,
    });
    void this.execute(run, orchestrator, t);
    return { ...run };
  }

  get(id: string): Promise<ProcedureRun | undefined> {
    const live = this.running.get(id);
    return live ? Promise.resolve({ ...live, output: [...live.output] }) : this.ctx.store.getRun(id);
  }

  async list(): Promise<ProcedureRun[]> {
    return (await this.ctx.store.listRuns()).map((r) => this.running.get(r.id) ?? r).reverse();
  }

  /** Lines from `from` on, then each new one, until the run ends. */
  async *follow(id: string, from: number): AsyncGenerator<string> {
    let next = from;
    for (;;) {
      const run = await this.get(id);
      if (!run) throw new TricopyError('not-found', `no procedure run ${id}`);
      while (next < run.output.length) yield run.output[next++]!;
      if (run.state !== 'running') return;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, 500);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.output.once(id, done);
      });
    }
  }

  private print(run: ProcedureRun, line: string): void {
    run.output.push(line);
    this.output.emit(run.id);
    const step = /^\s*\[(\d+)\]\s+(.*)$/.exec(line);
    void this.ctx.writer.run(async (tx) => {
      tx.ops.push(this.ctx.store.putRun(run));
      if (step) tx.event({ kind: 'procedure-step', node: null, subject: run.topology, reason: `${describe(run)} step ${step[1]}: ${step[2]}`, details: { run: run.id } });
    }).catch(() => undefined);
  }

  private async execute(run: ProcedureRun, o: Orchestrator, t: Awaited<ReturnType<Registry['topology']>>): Promise<void> {
    // A run's record is changed in place (the live followers read it), through Object.assign.
    try {
      if (run.procedure === 'apply') await o.apply();
      else if (run.procedure === 'failover') await o.failover(run.args.to!, run.args.newestFrom ?? undefined);
      else if (run.procedure === 'failback') await o.failback(run.args.to!);
      else await o.repair();
      Object.assign(run, { state: 'succeeded' });
    } catch (err) {
      const hint = err instanceof TricopyError ? err.hint : undefined;
      Object.assign(run, { state: 'failed', error: errorMessage(err) });
      run.output.push(`error: ${errorMessage(err)}${hint ? `\nhint: ${hint}` : ''}`);
    }
    run.endedAt = new Date(this.ctx.clock.now()).toISOString();
    try {
      await this.registry.reconcileNow({ topology: t });
    } catch (err) {
      run.output.push(`(command paths not reconciled: ${errorMessage(err)})`);
    }
    await this.ctx.writer.run(async (tx) => {
      tx.ops.push(this.ctx.store.putRun(run));
      tx.event({ kind: run.state === 'succeeded' ? 'procedure-succeeded' : 'procedure-failed', node: null, subject: run.topology,
        reason: `${describe(run)} ${run.state}${run.error ? `: ${run.error}` : ''}`, details: { run: run.id } });
    }).catch((err: unknown) => this.ctx.log.error({ err: errorMessage(err), run: run.id }, 'cannot store the end of a procedure run'));
    this.running.delete(run.id);
    this.output.emit(run.id);
  }
}

function describe(run: ProcedureRun): string {
  const to = run.args.to ? ` --to ${run.args.to}` : '';
  const newest = run.args.newestFrom ? ` --newest-from ${run.args.newestFrom}` : '';
  return `${run.procedure} ${run.topology}${to}${newest} (${run.id})`;
}
