// Benchmark entry point: `npm run bench -- <name> [--write-docs]`.
import { benchFailover } from './failover';
import { benchEdge } from './edge';
import { benchMonitor } from './monitor';
import { benchNbd } from './nbd';
import { benchPgbench } from './pgbench';
import { benchReplicas } from './replicas';
import { benchReplication } from './replication';
import { benchScaling } from './scaling';
import { benchSnapshotLayout } from './snapshot-layout';
import { benchTopology } from './topology';

const benches: Record<string, (args: string[]) => Promise<void>> = {
  // The NBD comparison is fio's, then pgbench's (an application on a filesystem on the export).
  nbd: async (args) => {
    await benchNbd(args);
    // BENCH_PGBENCH=0: the fio comparison alone (the pgbench section of the docs stays as it is).
    if (process.env.BENCH_PGBENCH !== '0') await benchPgbench(args, 'nbd');
  },
  failover: benchFailover,
  edge: benchEdge,
  monitor: benchMonitor,
  pgbench: (args) => benchPgbench(args),
  replicas: benchReplicas,
  replication: benchReplication,
  scaling: benchScaling,
  'snapshot-layout': benchSnapshotLayout,
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
