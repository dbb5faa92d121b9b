// `tricopy events`: the node's recent events, and with --follow the ones it pushes as they happen.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import type { NodeEvent } from '../../contracts/node';
import { client, globals } from '../globals';

export function registerEventsCommand(program: Command): void {
  program.command('events')
    .description('show the node\'s recent events (state changes with reasons); --follow streams new ones')
    .option('--after <id>', 'only events after this id', '0')
    .option('--follow', 'keep streaming events as they happen (Ctrl-C to stop)')
    .action(async (opts: { after: string; follow?: boolean }, cmd: Command) => {
      const api = client(cmd);
      const print = (e: NodeEvent): void => {
        if (globals(cmd).json) process.stdout.write(`${JSON.stringify(e)}\n`);
        else console.log(`${e.time}  ${`#${e.id}`.padStart(6)}  ${e.kind.padEnd(20)} ${e.subject}: ${e.reason}`);
      };
      const after = Number(opts.after);
      if (!Number.isInteger(after) || after < 0) throw new TricopyError('invalid-argument', '--after takes an event id (a whole number)');
      if (!opts.follow) {
        (await api.listEvents(after)).forEach(print);
        return;
      }
      // The node pushes events (server-sent events); nothing is polled.
      for await (const event of api.followEvents(after)) print(event);
    });
}
