// A node:test reporter that prints, after the run, the test files that took longest (the sum of
// their top-level tests' durations). The runner's `longestFirst` list is kept from this output:
// a long file started late runs alone at the end while the other slots sit idle.
import { relative } from 'node:path';

const shown = 12;

export default async function* testTimes(source) {
  const byFile = new Map();
  for await (const event of source) {
    if (event.type !== 'test:pass' && event.type !== 'test:fail') continue;
    const { nesting, file, details } = event.data;
    if (nesting !== 0 || !file || details?.duration_ms === undefined) continue;
    byFile.set(file, (byFile.get(file) ?? 0) + details.duration_ms);
  }
  const slowest = [...byFile].sort((a, b) => b[1] - a[1]).slice(0, shown);
  if (slowest.length === 0) return;
  yield `\nslowest test files (seconds, sum of their tests):\n`;
  for (const [file, ms] of slowest) yield `  ${(ms / 1000).toFixed(1).padStart(6)}  ${relative(process.cwd(), file)}\n`;
}
