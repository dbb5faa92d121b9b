// Regression seeds of the deterministic simulator, part 2 of 2 (the list and why it is split:
// regression-seeds.ts).
import { regressionSeedTests } from './regression-seeds';

regressionSeedTests(1, 2);
