// What every command of the CLI shares: the global options (--node, --token, --json) and the node
// client they select.
import type { Command } from 'commander';
import { TricopyError } from '../common/errors';
import type { CloneNodeClient, HostGroupNodeClient, NodeClient, ReplicaNodeClient, ResidualNodeClient } from '../contracts/node-client';
import { HttpNodeClient } from '../node/api-client';
import { HttpManagerClient, defaultManagerUrl } from '../manager/client';

export interface GlobalOptions {
  node?: string;
  /** A URL, or true when given without one (then TRICOPY_MANAGER or the default). */
  manager?: string | true;
  token?: string;
  json?: boolean;
}

export const defaultNodeUrl = 'http://127.0.0.1:7801';

/** Commands that may drain a journal first (split, takeover, swap) are given this long to answer. */
export const commandTimeoutMs = 600_000;
/**
 * How long a pair command refused because the pair is running another command (at this node or at
 * its peer: a returning primary recovers first) is tried again. Refused, it did not start.
 */
export const busyRetryMs = 15_000;
const busyRetryIntervalMs = 250;

/** Runs `command` again while it is refused as busy, for up to `forMs`. */
export async function whenNotBusy<T>(command: () => Promise<T>, forMs = busyRetryMs): Promise<T> {
  const deadline = Date.now() + forMs;
  for (;;) {
    try {
      return await command();
    } catch (err) {
      if (!(err instanceof TricopyError) || err.code !== 'busy' || Date.now() + busyRetryIntervalMs > deadline) throw err;
      await new Promise((resolve) => setTimeout(resolve, busyRetryIntervalMs));
    }
  }
}

export function globals(cmd: Command): GlobalOptions {
  return cmd.optsWithGlobals<GlobalOptions>();
}

export function tokenOf(cmd: Command): string | undefined {
  return globals(cmd).token ?? process.env.TRICOPY_TOKEN;
}

/** The URL of the node the command talks to: --node, else TRICOPY_NODE, else the local default. */
export function nodeUrl(cmd: Command): string {
  return globals(cmd).node ?? process.env.TRICOPY_NODE ?? defaultNodeUrl;
}

/** The node the command talks to. */
export function client(cmd: Command): NodeClient {
  return new HttpNodeClient(nodeUrl(cmd), tokenOf(cmd));
}

/** The node's holds for residual entries of fast failovers (the same node as client()). */
export function residualClient(cmd: Command): ResidualNodeClient {
  return new HttpNodeClient(nodeUrl(cmd), tokenOf(cmd));
}

/** The node's replica, snapshot and bitmap API (the same node as client()). */
export function replicaClient(cmd: Command): ReplicaNodeClient {
  const url = globals(cmd).node ?? process.env.TRICOPY_NODE ?? defaultNodeUrl;
  return new HttpNodeClient(url, tokenOf(cmd));
}

/** The node's clone-set API (the same node as client()). */
export function cloneClient(cmd: Command): CloneNodeClient {
  return new HttpNodeClient(nodeUrl(cmd), tokenOf(cmd));
}

/** The node's host-group API (the same node as client()). */
export function hostGroupClient(cmd: Command): HostGroupNodeClient {
  return new HttpNodeClient(nodeUrl(cmd), tokenOf(cmd));
}

/** Whether the command was told to go through the manager (--manager, with or without a URL). */
export function viaManager(cmd: Command): boolean {
  return globals(cmd).manager !== undefined;
}

/** The manager the command talks to: --manager URL, else TRICOPY_MANAGER, else the local default. */
export function managerClient(cmd: Command): HttpManagerClient {
  const flag = globals(cmd).manager;
  const url = typeof flag === 'string' ? flag : process.env.TRICOPY_MANAGER ?? defaultManagerUrl;
  return new HttpManagerClient(url, globals(cmd).token ?? process.env.TRICOPY_MANAGER_TOKEN ?? process.env.TRICOPY_TOKEN);
}
