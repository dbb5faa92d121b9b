// Benchmark entry point: `npm run bench -- <name> [--write-docs]`.
import { benchNbd } from './nbd';
import { benchReplication } from './replication';
import { benchTopology } from './topology';

const benches: Record<string, (args: string[]) => Promise<void>> = {
  nbd: benchNbd,
  replication: benchReplication,
  topology: benchTopology,
};

async function main(): Promise<void> {
  const [name, ...args] = process.argv.slice(2);
  const bench = name ? benches[name] : undefined;
  if (!bench) {
    console.error(`usage: npm run bench -- <${Object.keys(benches).join('|')}> [--write-docs]`);
    process.exit(2);
  }
  await bench(args);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
