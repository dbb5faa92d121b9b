// Runs the compiled test suite with node's test runner. Usage: node scripts/run-tests.mjs [unit|integration|interop|file-filter...]
import { spawn } from 'node:child_process';
import { readdirSync, statSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const testRoot = join(root, 'dist', 'test');
const filters = process.argv.slice(2);

function walk(dir) {
  return readdirSync(dir).flatMap((name) => {
    const full = join(dir, name);
    if (statSync(full).isDirectory()) return name === 'support' ? [] : walk(full);
    return name.endsWith('.test.js') ? [full] : [];
  });
}

// Filters match the path below dist/test, so a checkout's own path (say /work/wt-postgres) matches nothing.
// The runner starts files in the order given, so the longest start first: started last, one of them
// would run alone at the end while the other slots sit idle. Times are from `make test` on the
// 2-core machine (seconds, all tests of the file); a file not listed counts as short.
const longestFirst = [
  'integration/edge-network', 'integration/topology-multitarget', 'integration/edge-faults',
  'integration/topology-disasters', 'integration/topology-drill', 'integration/cli.test',
  'integration/topology-protection', 'integration/quorum-pairs', 'integration/quorum-failover',
  'sim/regressions-1', 'sim/regressions-2', 'integration/replication-sync',
  'integration/manager-backup-kill', 'integration/manager-network',
];
const rank = (f) => {
  const i = longestFirst.findIndex((x) => relative(testRoot, f).startsWith(x));
  return i === -1 ? longestFirst.length : i;
};
const files = walk(testRoot)
  .filter((f) => filters.length === 0 || filters.some((x) => relative(testRoot, f).includes(x)))
  .sort()
  .sort((a, b) => rank(a) - rank(b));
if (files.length === 0) {
  console.error(`no test files match ${filters.join(' ')}`);
  process.exit(1);
}
// Three files at once on two cores: most integration tests spend their time waiting for leases,
// timeouts and peers, not computing.
const concurrency = process.env.TEST_CONCURRENCY ?? '3';
const timesReporter = join(root, 'scripts', 'test-times-reporter.mjs');
const reporters = ['--test-reporter=spec', '--test-reporter-destination=stdout', `--test-reporter=${timesReporter}`, '--test-reporter-destination=stdout'];
const child = spawn(process.execPath, ['--test', `--test-concurrency=${concurrency}`, ...reporters, ...files], {
  stdio: 'inherit',
  env: process.env,
});
child.on('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
