// The simulator's self-test in `make test`: each broken variant (wired in through the simulator, see
// sim/variants.ts) must be caught by the checker on a seed known to catch it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runSeed } from '../../sim/run';
import { variants } from '../../sim/variants';

/** For each broken variant, a seed on which the checker catches it. */
const selfTestSeeds: Record<string, number> = {
  'ack-before-remote-write': 1,
  'apply-out-of-order': 1,
  'bitmap-misses-writes': 7,
  'lost-flush': 1,
};

for (const variant of variants) {
  test(`simulator self-test: "${variant.name}" (${variant.what}) is caught`, async () => {
    const seed = selfTestSeeds[variant.name];
    assert.ok(seed !== undefined, `a seed is chosen for ${variant.name}`);
    const r = await runSeed({ seed, durationMs: 45_000, verbose: false, variant });
    assert.equal(r.ok, false, `the broken variant ${variant.name} passed seed ${seed}: the checker missed it`);
  });
}
