// The `tricopy` command: the program, its global options, and how a failure becomes a message and
// an exit code (0 success, 1 the operation failed, 2 bad usage or invalid argument). The commands
// are one file per group in commands/; they talk to nodes through the typed node client and print
// tables for humans or JSON for machines.
process.env.UV_THREADPOOL_SIZE ??= '4'; // before any fs call (bin/tricopy sizes it by core count)

import { Command, CommanderError, Help, type Option } from 'commander';
import { TricopyError, errorMessage } from '../common/errors';
import { version } from '../node/version';
import { registerBackupCommands } from './commands/backup';
import { registerEdgeCommands } from './commands/edge';
import { registerEventsCommand } from './commands/events';
import { registerGroupCommands } from './commands/group';
import { registerHostGroupCommands } from './commands/host-group';
import { registerManagerCommands } from './commands/manager';
import { registerNetworkCommands } from './commands/network';
import { registerNodeCommands } from './commands/node';
import { registerPairCommands } from './commands/pair';
import { registerReplicaCommands } from './commands/replica';
import { registerSnapshotCommands } from './commands/snapshot';
import { registerCloneCommands } from './commands/clone';
import { registerQuorumCommands } from './commands/quorum';
import { registerTopologyCommands } from './commands/topology';
import { registerVolumeCommands } from './commands/volume';

export function buildProgram(): Command {
  const program = new Command('tricopy')
    .description('Multi-site remote copy for block storage: NBD volumes on storage nodes, replicated to other sites.')
    .version(version, '-V, --version')
    .option('--node <url>', 'control API of the node to talk to (env TRICOPY_NODE, default http://127.0.0.1:7801)')
    .option('--manager [url]', 'the manager to talk to (env TRICOPY_MANAGER, default http://127.0.0.1:7900); with topology commands: run them through the manager')
    .option('--token <token>', 'API bearer token, if the node demands one (env TRICOPY_TOKEN)')
    .option('--json', 'print machine-readable JSON instead of tables')
    .showHelpAfterError('(run with --help for usage)')
    .configureHelp({ sortSubcommands: false, optionDescription: describeOption })
    // Set before subcommands exist so they inherit it: usage errors come back to main() as exit 2.
    .exitOverride();
  registerNodeCommands(program);
  registerVolumeCommands(program);
  registerHostGroupCommands(program);
  registerPairCommands(program);
  registerReplicaCommands(program);
  registerSnapshotCommands(program);
  registerCloneCommands(program);
  registerGroupCommands(program);
  registerBackupCommands(program);
  registerQuorumCommands(program);
  registerTopologyCommands(program);
  registerEventsCommand(program);
  registerManagerCommands(program);
  registerEdgeCommands(program);
  registerNetworkCommands(program);
  return program;
}

/** Commander's option help, plus the options that must be given (it shows choices and defaults only). */
function describeOption(this: Help, option: Option): string {
  const text = Help.prototype.optionDescription.call(this, option);
  return option.mandatory ? `${text} (required)` : text;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Help and version exit with code 0; usage errors were printed by commander already.
      return err.exitCode === 0 ? 0 : 2;
    }
    if (err instanceof TricopyError) {
      process.stderr.write(`error: ${err.message}\n`);
      if (err.hint) process.stderr.write(`hint: ${err.hint}\n`);
      return err.code === 'invalid-argument' ? 2 : 1;
    }
    process.stderr.write(`error: ${errorMessage(err)}\n`);
    return 1;
  }
}

if (require.main === module) {
  main(process.argv).then((code) => {
    process.exitCode = code;
  }, (err: unknown) => {
    process.stderr.write(`fatal: ${errorMessage(err)}\n`);
    process.exitCode = 1;
  });
}
