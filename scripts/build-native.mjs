// Builds the optional native addon (native/volio) with node-gyp against the Node headers installed
// with this Node (<prefix>/include/node), never downloading any. Runs from `npm ci` (the package's
// install script) and `make build`. Without headers, a compiler or python3, it says so and exits 0:
// tricopy then runs its pure-JS I/O path. TRICOPY_NATIVE=0 skips the build.
import { spawnSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const addonDir = join(root, 'native', 'volio');
const output = join(addonDir, 'build', 'Release', 'volio.node');
const sources = ['volio.c', 'binding.gyp'].map((f) => join(addonDir, f));

function skip(why) {
  console.error(`tricopy: native I/O addon not built (${why}); the pure-JS I/O path will be used`);
  process.exit(0);
}

if (process.env.TRICOPY_NATIVE === '0') skip('TRICOPY_NATIVE=0');
if (process.platform !== 'linux') skip('Linux only');
const upToDate = existsSync(output) && sources.every((s) => statSync(s).mtimeMs <= statSync(output).mtimeMs);
if (upToDate && !process.argv.includes('--force')) process.exit(0);

// The headers that came with this Node: /usr/bin/node -> /usr/include/node.
const nodeDir = dirname(dirname(process.execPath));
if (!existsSync(join(nodeDir, 'include', 'node', 'node_api.h'))) skip(`no Node headers in ${join(nodeDir, 'include', 'node')}`);
for (const tool of ['python3', 'make', 'g++']) {
  if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) skip(`${tool} is missing (scripts/install-deps.sh installs it)`);
}
// npm's own node-gyp: given to install scripts as npm_config_node_gyp, else next to this Node's npm.
const candidates = [process.env.npm_config_node_gyp, join(nodeDir, 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js')];
const nodeGyp = candidates.find((c) => c && existsSync(c));
if (!nodeGyp) skip('node-gyp (bundled with npm) not found');

const result = spawnSync(process.execPath, [nodeGyp, 'rebuild', `--nodedir=${nodeDir}`, '--loglevel=warn'], { cwd: addonDir, stdio: 'inherit' });
if (result.status !== 0) skip(`node-gyp failed with status ${result.status}`);
console.error(`tricopy: built ${output}`);
