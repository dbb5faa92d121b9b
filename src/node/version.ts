// The version reported by the node and the CLI, taken from package.json at build time.
import pkg from '../../package.json';

export const version: string = pkg.version;
