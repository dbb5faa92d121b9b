// The web console's files (console/: one HTML page, one script, one style sheet; plain browser
// JavaScript, so nothing is built). They are read from the source tree next to the compiled code
// once and kept in memory.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { TricopyError } from '../common/errors';

export type ConsoleFile = 'index.html' | 'app.js' | 'style.css';

const types: Record<ConsoleFile, string> = {
  'index.html': 'text/html; charset=utf-8',
  'app.js': 'text/javascript; charset=utf-8',
  'style.css': 'text/css; charset=utf-8',
};

/** dist/src/manager → src/manager/console in the checkout. */
const candidates = [path.join(__dirname, 'console'), path.resolve(__dirname, '..', '..', '..', 'src', 'manager', 'console')];
const cache = new Map<ConsoleFile, string>();

export async function consoleAsset(file: ConsoleFile): Promise<{ body: string; contentType: string }> {
  let body = cache.get(file);
  if (body === undefined) {
    for (const dir of candidates) {
      body = await fsp.readFile(path.join(dir, file), 'utf8').catch(() => undefined);
      if (body !== undefined) break;
    }
    if (body === undefined) throw new TricopyError('not-found', `console file ${file} is missing`, 'the console is served from src/manager/console of the checkout');
    cache.set(file, body);
  }
  return { body, contentType: types[file] };
}
