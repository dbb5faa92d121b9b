// A host running PostgreSQL on an NBD export: the export as a block device (nbdfuse + loop), ext4 on
// it, and a database cluster in it. One site makes a new cluster; another (after a takeover, or on a
// drill's clone) checks the copied file system and lets PostgreSQL recover what it finds.
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { type FsckResult, NbdBlockDevice } from './blockdev';
import { PostgresServer, initdb } from './postgres';

export interface PostgresHost {
  device: NbdBlockDevice;
  pg: PostgresServer;
  /** The mounted file system; the cluster is `pgdata` in it. */
  mountDir: string;
}

async function attachAt(nbdUri: string, hostDir: string): Promise<NbdBlockDevice> {
  await fsp.mkdir(hostDir, { recursive: true });
  return NbdBlockDevice.attach(nbdUri, hostDir);
}

function startIn(hostDir: string, mountDir: string): Promise<PostgresServer> {
  return PostgresServer.start({ dataDir: path.join(mountDir, 'pgdata'), socketDir: path.join(hostDir, 'sock'), logFile: path.join(hostDir, 'postgres.log') });
}

/** A fresh ext4 and database cluster on the export, PostgreSQL started. */
export async function newPostgresHost(nbdUri: string, hostDir: string): Promise<PostgresHost> {
  const device = await attachAt(nbdUri, hostDir);
  await device.mkfsExt4();
  const mountDir = path.join(hostDir, 'mnt');
  await device.mount(mountDir);
  await initdb(path.join(mountDir, 'pgdata'));
  return { device, pg: await startIn(hostDir, mountDir), mountDir };
}

/**
 * The copy of a host's file system on another export: e2fsck replays ext4's journal (the export
 * must take writes), then PostgreSQL starts and runs its crash recovery. `beforeStart` may change
 * the mounted copy first. The caller judges the fsck result.
 */
export async function recoveredPostgresHost(nbdUri: string, hostDir: string,
  beforeStart?: (mountDir: string) => Promise<void>): Promise<PostgresHost & { fsck: FsckResult }> {
  const device = await attachAt(nbdUri, hostDir);
  const fsck = await device.fsck();
  const mountDir = path.join(hostDir, 'mnt');
  await device.mount(mountDir);
  await beforeStart?.(mountDir);
  return { device, pg: await startIn(hostDir, mountDir), mountDir, fsck };
}
