// The demo's application: fio writing to a volume at whichever site of the topology is active, so
// the demo shows writes going on through a failover and a failback. It asks `tricopy topology
// status --json` where the application runs, (re)starts fio there with back-off, and stops it when
// the application moves. fio's output goes to a size-capped, rotated log; fio never outlives this
// process for long (it is stopped with a deadline, then killed, and dies of SIGPIPE at its next
// status line if this process is gone), and its pid is in a file so a later demo can end it.
//
// Usage: node scripts/demo-workload.mjs --dir DIR --topology FILE --volume NAME --nbd site=port,... [--iops N]
//          [--tricopy CLI]   (the tricopy CLI to ask for the status; default bin/tricopy of this checkout)
//
// Why fio runs with --iodepth=1: with several writes in flight, fio's nbd engine spins forever once
// the server goes away. libnbd fails the in-flight commands when the connection dies, but fio's
// getevents returns on nbd_poll's error ("nothing to poll for in state DEAD") before it retires
// them, and fio's rate limiter waits for in-flight I/O in a loop that never ends, printing that
// error each time (about 1 GB a minute) and ignoring SIGTERM. With one write in flight, the failed
// write ends the job instead (after that line once). The line is still watched for: seeing it
// again means fio loops, and it is killed at once.
import { spawn, execFile } from 'node:child_process';
import { createWriteStream, existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';

const repo = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');

/** fio.log is rotated to fio.log.1 at this size, so the log never takes more than twice this. */
const maxLogBytes = 1024 * 1024;
/** How often the active site is asked for. */
const statusIntervalMs = 2000;
/** A status call that takes longer (a frozen node) is abandoned. */
const statusTimeoutMs = 20_000;
/** fio gets this long after SIGTERM before SIGKILL. */
const stopDeadlineMs = 5000;
/** Restarts after a failed fio run wait this long, doubling up to the maximum. */
const restartInitialDelayMs = 1000;
const restartMaxDelayMs = 16_000;
/** A run this long counts as healthy: the next failure starts the back-off from the beginning. */
const healthyRunMs = 20_000;
/** fio printing more lines than this in one second is looping on an error: it is killed (a report is ~30 lines). */
const maxFioLinesPerSecond = 200;
/** fio prints a status report this often; if this process is gone, that write kills it (SIGPIPE). */
const fioStatusIntervalSeconds = 30;
const deadConnection = /in state DEAD/;
/** fio at --iodepth=1 prints the dead-connection line once before it ends; more means it loops. */
const maxDeadConnectionLines = 2;

const { values: options } = parseArgs({
  options: {
    dir: { type: 'string' },
    topology: { type: 'string' },
    volume: { type: 'string' },
    nbd: { type: 'string' },
    iops: { type: 'string', default: '200' },
    tricopy: { type: 'string', default: path.join(repo, 'bin', 'tricopy') },
  },
});
const tricopy = options.tricopy;
for (const required of ['dir', 'topology', 'volume', 'nbd']) {
  if (!options[required]) {
    console.error(`demo-workload: --${required} is required`);
    process.exit(2);
  }
}
const dir = path.resolve(options.dir);
const nbdPorts = new Map(options.nbd.split(',').map((pair) => pair.split('=')).map(([site, port]) => [site, Number(port)]));
const pidFile = path.join(dir, 'workload.pid');
const fioPidFile = path.join(dir, 'fio.pid');
const logFile = path.join(dir, 'fio.log');

// ------------------------------------------------------------------------------------------------
// The capped log

let log = createWriteStream(logFile, { flags: 'a' });
let logBytes = existsSync(logFile) ? statSync(logFile).size : 0;

function writeLog(line) {
  if (logBytes >= maxLogBytes) {
    log.end();
    renameSync(logFile, `${logFile}.1`);
    log = createWriteStream(logFile, { flags: 'a' });
    logBytes = 0;
  }
  const bytes = Buffer.from(`${line}\n`);
  logBytes += bytes.length;
  log.write(bytes);
}

function say(message) {
  console.log(`workload: ${message}`);
  writeLog(`--- ${new Date().toISOString()} workload: ${message}`);
}

// ------------------------------------------------------------------------------------------------
// fio

/** The running fio: { child, site, startedAt, exited: Promise<{ code, signal }>, done, killedFor }. */
let fio;

function startFio(site) {
  const port = nbdPorts.get(site);
  if (!port) {
    say(`no NBD port known for site ${site}`);
    return;
  }
  const uri = `nbd://127.0.0.1:${port}/${options.volume}`;
  const args = ['--name=tricopy-demo', '--thread', '--ioengine=nbd', `--uri=${uri}`, '--rw=randwrite', '--bs=4k', '--iodepth=1',
    '--size=25%', `--rate_iops=${options.iops}`, '--time_based', '--runtime=86400', '--randrepeat=0',
    `--status-interval=${fioStatusIntervalSeconds}`];
  const child = spawn('fio', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const run = { child, site, startedAt: Date.now(), killedFor: undefined, done: false };
  run.exited = new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => {
      say(`cannot run fio: ${err.message}`);
      resolve({ code: null, signal: null });
    });
  });
  if (child.pid) writeFileSync(fioPidFile, `${child.pid}\n`);
  let linesThisSecond = 0;
  let second = Math.floor(Date.now() / 1000);
  let deadLines = 0;
  const onLine = (line) => {
    const now = Math.floor(Date.now() / 1000);
    if (now !== second) {
      second = now;
      linesThisSecond = 0;
    }
    if (++linesThisSecond > maxFioLinesPerSecond) return killFio(run, 'fio is printing in a loop');
    writeLog(line);
    if (deadConnection.test(line) && ++deadLines > maxDeadConnectionLines) killFio(run, `fio lost its connection to ${site} and loops`);
  };
  for (const stream of [child.stdout, child.stderr]) {
    let rest = '';
    stream.on('data', (chunk) => {
      const lines = (rest + chunk.toString()).split('\n');
      rest = lines.pop();
      for (const line of lines) onLine(line);
      if (rest.length > 4096) {
        onLine(rest);
        rest = '';
      }
    });
  }
  fio = run;
  void run.exited.then(() => {
    run.done = true;
    wake?.(); // a failed run is noticed at once, not at the next status
  });
  say(`writing ${options.iops} IOPS of 4 KiB to ${options.volume} at ${site} (${uri}), fio pid ${child.pid}`);
}

/** A fio stuck in its error loop ignores SIGTERM: SIGKILL at once. */
function killFio(run, why) {
  if (run.killedFor) return;
  run.killedFor = why;
  run.child.kill('SIGKILL');
}

async function stopFio(run, why) {
  say(`stopping fio at ${run.site}: ${why}`);
  run.killedFor ??= why;
  run.child.kill('SIGTERM');
  const timer = setTimeout(() => {
    say(`fio did not stop within ${stopDeadlineMs} ms: killing it`);
    run.child.kill('SIGKILL');
  }, stopDeadlineMs);
  await run.exited;
  clearTimeout(timer);
}

// ------------------------------------------------------------------------------------------------
// Where the application runs

/** The status call in progress, ended if the demo stops meanwhile. */
let statusCall;

/** The active site, null when none is, undefined when the status could not be read. */
function activeSite() {
  return new Promise((resolve) => {
    statusCall = execFile(process.execPath, [tricopy, 'topology', 'status', options.topology, '--json'], { timeout: statusTimeoutMs },
      (_err, stdout) => {
        statusCall = undefined;
        try {
          resolve(JSON.parse(stdout).activeSite ?? null);
        } catch {
          resolve(undefined); // unknown: keep what runs
        }
      });
  });
}

// ------------------------------------------------------------------------------------------------
// The supervisor loop

let stopping = false;
let wake;
const nap = (ms) => new Promise((resolve) => {
  const timer = setTimeout(resolve, ms);
  wake = () => {
    clearTimeout(timer);
    resolve();
  };
});

function isRunning(run) {
  return !run.done;
}

/** Reports how a run ended and forgets it. */
async function ended(run) {
  const { code, signal } = await run.exited;
  const ranMs = Date.now() - run.startedAt;
  say(`fio at ${run.site} ended (${signal ?? `exit code ${code}`}${run.killedFor ? `: ${run.killedFor}` : ''}) after ${(ranMs / 1000).toFixed(1)} s`);
  rmSync(fioPidFile, { force: true });
  if (fio === run) fio = undefined;
  return ranMs;
}

async function supervise() {
  let delayMs = restartInitialDelayMs;
  let notBefore = 0;
  let reportedWaiting = false;
  while (!stopping) {
    if (fio && !isRunning(fio)) {
      // It failed by itself (the node went away, the volume became read-only): retry with back-off.
      const ranMs = await ended(fio);
      if (ranMs >= healthyRunMs) delayMs = restartInitialDelayMs;
      notBefore = Date.now() + delayMs;
      delayMs = Math.min(restartMaxDelayMs, delayMs * 2);
    }
    const site = await activeSite();
    if (stopping) break;
    if (fio && site !== undefined && site !== fio.site) {
      const run = fio;
      await stopFio(run, site ? `the application moved to ${site}` : `${run.site} is no longer active`);
      await ended(run);
      delayMs = restartInitialDelayMs;
      notBefore = 0; // the new site at once
    }
    if (!fio && site && Date.now() >= notBefore) {
      reportedWaiting = false;
      startFio(site);
    } else if (!fio && site === null && !reportedWaiting) {
      say('no site is active (a failover is needed); waiting');
      reportedWaiting = true;
    }
    // While a restart waits for its back-off, wake when it is due rather than at the next status.
    const backingOffMs = !fio && site ? notBefore - Date.now() : 0;
    await nap(backingOffMs > 0 ? Math.min(statusIntervalMs, backingOffMs) : statusIntervalMs);
  }
}

async function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  wake?.();
  statusCall?.kill('SIGKILL');
  if (fio) {
    await stopFio(fio, `the demo is stopping (${signal})`);
    rmSync(fioPidFile, { force: true });
  }
  rmSync(pidFile, { force: true });
  say('stopped');
  log.end(() => process.exit(0));
}

for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => void shutdown(signal));
writeFileSync(pidFile, `${process.pid}\n`);
supervise().catch((err) => {
  say(`failed: ${err.stack ?? err}`);
  void shutdown('error');
});
