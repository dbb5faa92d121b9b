// `tricopy manager events|alerts|alert ack|procedures|procedure`: what happened, from the manager's
// store (reports, node events, alert changes, procedure steps), what is wrong now, and the
// procedures run through the manager with their output.
import type { Command } from 'commander';
import { TricopyError } from '../../common/errors';
import { parseDurationMs } from '../../common/units';
import type { ManagerEvent } from '../../contracts/manager';
import { printJson, table } from '../format';
import { globals, managerClient } from '../globals';

export function registerManagerHistoryCommands(manager: Command): void {
  addEvents(manager);
  addAlerts(manager);
  addProcedures(manager);
}

/** --since takes a duration back from now ("10m") or a time ("2024-05-01T10:00:00Z"). */
export function sinceMs(text: string, now = Date.now()): number {
  if (/^\d{4}-\d{2}-\d{2}/.test(text)) {
    const t = Date.parse(text);
    if (Number.isNaN(t)) throw new TricopyError('invalid-argument', `--since ${text} is not a time`, 'use a duration like 10m, or an ISO time');
    return t;
  }
  return now - parseDurationMs(text, '--since');
}

function addEvents(manager: Command): void {
  manager.command('events')
    .description('reports, node events, alert changes and procedure steps from the manager\'s store; --follow streams new ones')
    .option('--since <when>', 'only events from this long ago (10m, 2h) or this time (ISO 8601)')
    .option('--after <seq>', 'only events after this sequence number')
    .option('--limit <n>', 'at most this many stored events (default 1000)', '1000')
    .option('--follow', 'keep streaming events as they are stored (Ctrl-C to stop)')
    .action(async (opts: { since?: string; after?: string; limit: string; follow?: boolean }, cmd: Command) => {
      const api = managerClient(cmd);
      const after = opts.after === undefined ? undefined : Number(opts.after);
      if (after !== undefined && (!Number.isInteger(after) || after < 0)) throw new TricopyError('invalid-argument', '--after takes a sequence number (a whole number)');
      const limit = Number(opts.limit);
      if (!Number.isInteger(limit) || limit < 1) throw new TricopyError('invalid-argument', '--limit takes a positive whole number');
      const query = { ...(opts.since ? { since: sinceMs(opts.since) } : {}), ...(after !== undefined ? { afterSeq: after } : {}), limit };
      const json = globals(cmd).json === true;
      const print = (e: ManagerEvent): void => {
        if (json) process.stdout.write(`${JSON.stringify(e)}\n`);
        else console.log(`${e.time}  ${`#${e.seq}`.padStart(7)}  ${(e.node ?? 'manager').padEnd(10)} ${e.kind.padEnd(22)} ${e.subject}: ${e.reason}`);
      };
      if (!opts.follow) {
        const events = await api.listEvents(query);
        if (json) return printJson({ events });
        events.forEach(print);
        return;
      }
      for await (const e of api.followEvents(query)) print(e);
    });
}

function addAlerts(manager: Command): void {
  manager.command('alerts')
    .description('alerts not closed (open or acknowledged); --all includes closed ones')
    .option('--all', 'include closed alerts')
    .action(async (opts: { all?: boolean }, cmd: Command) => {
      const alerts = await managerClient(cmd).listAlerts({ all: opts.all === true });
      if (globals(cmd).json) return printJson({ alerts });
      if (alerts.length === 0) return console.log(opts.all ? 'no alerts' : 'no open alerts');
      console.log(table(['ID', 'STATE', 'SEVERITY', 'KIND', 'SUBJECT', 'REPORTED BY', 'OPENED', 'MESSAGE'], alerts.map((a) => [
        a.id, a.state, a.severity, a.kind, a.subject, a.reportedBy ?? '-', a.openedAt, a.message.slice(0, 100),
      ])));
    });
  const alert = manager.command('alert').description('one alert');
  alert.command('ack <id>')
    .description('acknowledge an alert: someone is on it (it closes by itself once the copy is healthy)')
    .option('--by <name>', 'who acknowledges (default: $USER)')
    .action(async (id: string, opts: { by?: string }, cmd: Command) => {
      const a = await managerClient(cmd).ackAlert(id, opts.by ?? process.env.USER ?? 'operator');
      if (globals(cmd).json) return printJson(a);
      console.log(`alert ${a.id} ${a.state} by ${a.acknowledgedBy ?? '?'}: ${a.message}`);
    });
}

function addProcedures(manager: Command): void {
  manager.command('procedures')
    .description('procedure runs (failover, failback, repair, apply) started through the manager, newest first')
    .action(async (_opts, cmd: Command) => {
      const runs = await managerClient(cmd).listProcedures();
      if (globals(cmd).json) return printJson({ runs });
      console.log(table(['ID', 'TOPOLOGY', 'PROCEDURE', 'TO', 'STATE', 'STARTED', 'ENDED', 'BY'], runs.map((r) => [
        r.id, r.topology, r.procedure, r.args.to ?? '-', r.state, r.startedAt, r.endedAt ?? '-', r.startedBy,
      ])));
    });
  manager.command('procedure <id>')
    .description('one procedure run with every line it printed')
    .action(async (id: string, _opts, cmd: Command) => {
      const run = await managerClient(cmd).getProcedure(id);
      if (globals(cmd).json) return printJson(run);
      console.log(`${run.procedure} ${run.topology}${run.args.to ? ` --to ${run.args.to}` : ''}: ${run.state} (${run.startedAt} – ${run.endedAt ?? 'running'}, by ${run.startedBy})`);
      for (const line of run.output) console.log(line);
    });
}
