// `npm run sim`: the deterministic simulator of the replication core.
//   npm run sim -- --seed 42 [--verbose]     one run, its trace printed when it fails (or always)
//   npm run sim -- --seeds 500 [--from 1]    many runs; failing seeds are listed with a short trace
//   npm run sim -- --self-test               broken variants must each be caught within a few seeds
// A failing seed reproduces exactly: run it again with --seed N.
import { runSeed, type RunResult } from './run';
import { variants } from './variants';

interface Args {
  seed?: number;
  seeds: number;
  from: number;
  durationMs: number;
  verbose: boolean;
  selfTest: boolean;
  selfTestSeeds: number;
}

function parseArgs(argv: string[]): Args {
  const args: Args = { seeds: 20, from: 1, durationMs: 45_000, verbose: false, selfTest: false, selfTestSeeds: 40 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = (): number => {
      const v = Number(argv[++i]);
      if (!Number.isSafeInteger(v) || v < 0) throw new Error(`${a} needs a whole number`);
      return v;
    };
    if (a === '--seed') args.seed = value();
    else if (a === '--seeds') args.seeds = value();
    else if (a === '--from') args.from = value();
    else if (a === '--duration-ms') args.durationMs = value();
    else if (a === '--self-test-seeds') args.selfTestSeeds = value();
    else if (a === '--verbose' || a === '-v') args.verbose = true;
    else if (a === '--self-test') args.selfTest = true;
    else if (a === '--help' || a === '-h') {
      console.log('usage: npm run sim -- [--seed N | --seeds N [--from N] | --self-test [--self-test-seeds N]] [--duration-ms MS] [--verbose]');
      process.exit(0);
    } else throw new Error(`unknown argument ${a} (see --help)`);
  }
  return args;
}

function report(r: RunResult): void {
  const s = r.stats;
  const line = `seed ${r.seed} (${r.scenario}): ${r.ok ? 'ok' : 'FAILED'} — ${(s.virtualMs / 1000).toFixed(0)} s simulated, ${s.steps} events, ` +
    `${s.writesAcknowledged} writes acknowledged, ${s.writesRefused} refused, ${s.crashes} crashes, ${s.commands} commands, ${s.checks} checkpoints`;
  console.log(line);
  if (!r.ok) {
    for (const f of r.failures.slice(0, 5)) console.log(`  ✖ ${f}`);
    console.log('  last steps:');
    for (const t of r.trace.slice(-25)) console.log(`    ${t}`);
    console.log(`  reproduce: npm run sim -- --seed ${r.seed} --verbose`);
  }
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.selfTest) {
    let missed = 0;
    for (const variant of variants) {
      let caughtAt: RunResult | undefined;
      for (let seed = 1; seed <= args.selfTestSeeds && !caughtAt; seed++) {
        const r = await runSeed({ seed, durationMs: args.durationMs, verbose: false, variant });
        if (!r.ok) caughtAt = r;
      }
      if (caughtAt) console.log(`✔ ${variant.name} (${variant.what}): caught at seed ${caughtAt.seed}: ${caughtAt.failures[0]?.split('\n')[0]}`);
      else {
        missed++;
        console.log(`✖ ${variant.name} (${variant.what}): not caught in ${args.selfTestSeeds} seeds`);
      }
    }
    process.exit(missed === 0 ? 0 : 1);
  }
  if (args.seed !== undefined) {
    const r = await runSeed({ seed: args.seed, durationMs: args.durationMs, verbose: args.verbose });
    report(r);
    process.exit(r.ok ? 0 : 1);
  }
  const failed: number[] = [];
  const started = Date.now();
  for (let seed = args.from; seed < args.from + args.seeds; seed++) {
    const r = await runSeed({ seed, durationMs: args.durationMs, verbose: false });
    if (!r.ok || args.verbose) report(r);
    if (!r.ok) failed.push(seed);
    // A long sweep says how far it got (stopped early, the seeds up to here are the result).
    const run = seed - args.from + 1;
    if (run % 25 === 0 && run < args.seeds) console.log(`… ${run - failed.length}/${run} seeds passed so far (through seed ${seed}, ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  }
  console.log(`${args.seeds - failed.length}/${args.seeds} seeds passed in ${((Date.now() - started) / 1000).toFixed(0)} s${failed.length ? `; failing: ${failed.join(' ')}` : ''}`);
  process.exit(failed.length === 0 ? 0 : 1);
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(2);
});
