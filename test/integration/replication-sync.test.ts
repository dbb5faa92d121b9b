// Synchronous pairs between two real nodes: no acknowledged write lost across a primary crash and
// takeover, fencing under a cut link, split/resync by delta, split brain, hostile replication bytes.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import * as path from 'node:path';
import { NbdClientError } from '../../src/nbd/client';
import * as c from '../../src/nbd/constants';
import { Cluster } from '../support/cluster';
import { cli, killAllNodes } from '../support/node-process';
import { RawSocket } from '../support/raw-socket';
import { acknowledgedPrefixBlocks, fetchMetrics, metricValue, parseFioJson, run, sha256Export, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
let dir: string;

before(async () => {
  dir = await tempDir('sync');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

test('sync: fio verify on the primary, SIGKILL it, takeover at the secondary: fio verify_only passes there', async () => {
  const cluster = await Cluster.create(path.join(dir, 'takeover'), ['tokyo', 'osaka']);
  try {
    await cluster.volume('tokyo', 'db', 512 * MiB);
    await cluster.pair({ name: 'db-osaka', primary: 'tokyo', secondary: 'osaka', volume: 'db', mode: 'sync', fence: 'data' });
    await cluster.waitState('tokyo', 'db-osaka', 'duplex');
    const uri = cluster.node('tokyo').nbdUri('db');
    const common = ['--name=sync', '--ioengine=nbd', '--rw=write', '--bs=64k', '--iodepth=16', '--size=512M', '--verify=crc32c'];
    // The completion log says which writes were acknowledged (they complete out of order).
    const completions = path.join(dir, 'takeover-writes');
    const fio = spawn('fio', [...common, `--uri=${uri}`, '--verify_state_save=0', '--output-format=json', `--write_lat_log=${completions}`, '--log_offset=1'],
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    fio.stdout.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((resolve) => fio.on('exit', resolve));
    await waitFor('64 MiB written through the pair', async () =>
      metricValue(await fetchMetrics(cluster.node('tokyo').apiUrl), 'tricopy_nbd_bytes_total', { volume: 'db', op: 'write' }) >= 64 * MiB,
    { timeoutMs: 120_000, intervalMs: 20 });
    await cluster.kill('tokyo');
    assert.notEqual(await exited, 0, 'fio saw the primary die');
    const written = parseFioJson<{ jobs: Array<{ write: { io_bytes: number } }> }>(out).jobs[0]!.write.io_bytes;
    const prefixBlocks = await acknowledgedPrefixBlocks(completions, 64 * 1024);
    assert.ok(prefixBlocks * 64 * 1024 >= 32 * MiB && prefixBlocks * 64 * 1024 <= written, `${prefixBlocks} blocks acknowledged in a row of ${written} bytes`);
    // Takeover with the CLI, as an operator would.
    const takeover = await cli(['--node', cluster.node('osaka').apiUrl, 'pair', 'takeover', 'db-osaka']);
    assert.equal(takeover.code, 0, takeover.stderr);
    assert.match(takeover.stdout, /secondary-writable \(SSWS\)/);
    // Every write acknowledged before the kill must be at osaka: verify the acknowledged prefix.
    const verifyBytes = prefixBlocks * 64 * 1024;
    const verify = await run('fio', [...common.map((a) => (a === '--size=512M' ? `--size=${verifyBytes}` : a)),
      `--uri=${cluster.node('osaka').nbdUri('db')}`, '--verify_only=1', '--verify_fatal=1', '--verify_state_save=0', '--output-format=json'], { cwd: dir });
    assert.equal(verify.code, 0, `verify_only on the secondary failed: ${verify.stdout.slice(-2000)} ${verify.stderr}`);
    assert.equal(parseFioJson<{ jobs: Array<{ read: { io_bytes: number } }> }>(verify.stdout).jobs[0]!.read.io_bytes, verifyBytes);
    // The taken-over volume accepts writes now.
    const client = await cluster.client('osaka', 'db');
    await client.write(0, Buffer.alloc(4096, 7));
    await client.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('fence data refuses writes while the link is cut; fence never goes on and records; both resync when it returns', async () => {
  const cluster = await Cluster.create(path.join(dir, 'fence'), ['p1', 's1']);
  try {
    await cluster.volume('p1', 'guarded', 32 * MiB);
    await cluster.volume('p1', 'relaxed', 32 * MiB);
    const a = await cluster.pair({ name: 'guarded', primary: 'p1', secondary: 's1', volume: 'guarded', mode: 'sync', fence: 'data', viaProxy: true });
    const b = await cluster.pair({ name: 'relaxed', primary: 'p1', secondary: 's1', volume: 'relaxed', mode: 'sync', fence: 'never', viaProxy: true });
    await cluster.waitState('p1', 'guarded', 'duplex');
    await cluster.waitState('p1', 'relaxed', 'duplex');
    const g = await cluster.client('p1', 'guarded');
    const r = await cluster.client('p1', 'relaxed');
    const before = randomBytes(64 * 1024);
    await g.write(0, before);
    await r.write(0, before);
    for (const proxy of [...a.proxies, ...b.proxies]) proxy.cut();
    // Writes during the cut: fence data fails them (EIO), fence never acknowledges them.
    const acknowledged: number[] = [];
    let refused = 0;
    for (let i = 1; i <= 20; i++) {
      const data = Buffer.alloc(4096, i);
      await g.write(i * 4096 + 65536, data).then(() => acknowledged.push(i), (e: NbdClientError) => {
        assert.equal(e.errno, c.NBD_EIO);
        refused++;
      });
      await r.write(i * 4096 + 65536, data);
    }
    assert.ok(refused > 0, 'fence data refused writes once the secondary could not be updated');
    await cluster.waitCode('p1', 'guarded', 'PSUE');
    await cluster.waitCode('p1', 'relaxed', 'PSUE');
    assert.deepEqual(await g.read(0, 64 * 1024), before, 'reads still work on the fenced volume');
    // Claim 2 of 001: every write acknowledged on the fenced volume is on the secondary.
    const secondary = await cluster.client('s1', 'guarded');
    assert.deepEqual(await secondary.read(0, 64 * 1024), before);
    for (const i of acknowledged) assert.deepEqual(await secondary.read(i * 4096 + 65536, 4096), Buffer.alloc(4096, i), `acknowledged write ${i} is on the secondary`);
    await secondary.disconnect();
    const relaxedStatus = await cluster.pairStatus('p1', 'relaxed');
    assert.ok(relaxedStatus.differentialBytes > 0, 'fence never recorded the regions written while apart');
    for (const proxy of [...a.proxies, ...b.proxies]) proxy.restore();
    await cluster.waitState('p1', 'guarded', 'duplex', 30_000);
    await cluster.waitState('p1', 'relaxed', 'duplex', 30_000);
    await g.write(0, Buffer.alloc(4096, 0xaa)); // writes flow again
    for (const v of ['guarded', 'relaxed']) {
      assert.equal(await sha256Export(cluster.node('s1').nbdUri(v), dir), await sha256Export(cluster.node('p1').nbdUri(v), dir), `${v} equal after resync`);
    }
    await g.disconnect();
    await r.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('split, writes on the primary, resync copies about the changed bytes only, volumes equal', async () => {
  const cluster = await Cluster.create(path.join(dir, 'split'), ['sp', 'ss']);
  try {
    const size = 128 * MiB;
    await cluster.volume('sp', 'v', size);
    const client = await cluster.client('sp', 'v');
    for (let off = 0; off < size; off += 4 * MiB) await client.write(off, randomBytes(4 * MiB)); // fully allocated
    const { proxies } = await cluster.pair({ name: 'v', primary: 'sp', secondary: 'ss', volume: 'v', mode: 'sync', viaProxy: true });
    await cluster.waitState('sp', 'v', 'duplex', 60_000);
    const fullCopyBytes = proxies[0]!.bytesForwarded.toTarget;
    assert.ok(fullCopyBytes >= size, `the initial copy sent the allocated ${size} bytes (${fullCopyBytes})`);
    const split = await cli(['--node', cluster.node('sp').apiUrl, 'pair', 'split', 'v', '--json']);
    assert.equal(split.code, 0, split.stderr);
    assert.equal((JSON.parse(split.stdout) as { code: string }).code, 'PSUS');
    assert.equal((await cluster.pairStatus('ss', 'v')).code, 'SSUS');
    // Change 1% of the volume in 64 KiB pieces spread over it.
    const changed = Math.floor(size / 100 / (64 * 1024));
    for (let i = 0; i < changed; i++) await client.write(((i * 97) % (size / (64 * 1024))) * 64 * 1024, randomBytes(64 * 1024));
    const status = await cluster.pairStatus('sp', 'v');
    assert.equal(status.differentialBytes, changed * 64 * 1024);
    const before = proxies[0]!.bytesForwarded.toTarget;
    const resync = await cli(['--node', cluster.node('sp').apiUrl, 'pair', 'resync', 'v', '--wait']);
    assert.equal(resync.code, 0, resync.stderr);
    const sent = proxies[0]!.bytesForwarded.toTarget - before;
    assert.ok(sent >= changed * 64 * 1024 && sent < changed * 64 * 1024 * 1.5 + 256 * 1024,
      `resync sent ${sent} bytes for ${changed * 64 * 1024} changed bytes`);
    assert.equal(await sha256Export(cluster.node('ss').nbdUri('v'), dir), await sha256Export(cluster.node('sp').nbdUri('v'), dir));
    await client.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('split brain: both sides written while split; resync refuses until the operator names the side to discard', async () => {
  const cluster = await Cluster.create(path.join(dir, 'brain'), ['bp', 'bs']);
  try {
    await cluster.volume('bp', 'v', 16 * MiB);
    await cluster.pair({ name: 'v', primary: 'bp', secondary: 'bs', volume: 'v', mode: 'sync' });
    await cluster.waitState('bp', 'v', 'duplex');
    const api = cluster.node('bp').apiUrl;
    assert.equal((await cli(['--node', api, 'pair', 'split', 'v', '--rw'])).code, 0);
    const p = await cluster.client('bp', 'v');
    const s = await cluster.client('bs', 'v');
    await p.write(0, Buffer.alloc(65536, 1));
    await s.write(MiB, Buffer.alloc(65536, 2));
    const refused = await cli(['--node', api, 'pair', 'resync', 'v']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /split brain: both bp \(primary\) and bs \(secondary\) were written[\s\S]*--discard bs/);
    assert.equal((await cluster.pairStatus('bp', 'v')).code, 'PSUS', 'nothing changed');
    const resolved = await cli(['--node', api, 'pair', 'resync', 'v', '--discard', 'bs', '--wait']);
    assert.equal(resolved.code, 0, resolved.stderr);
    assert.deepEqual(await s.read(MiB, 65536), Buffer.alloc(65536), 'the secondary\'s change was discarded');
    assert.deepEqual(await s.read(0, 65536), Buffer.alloc(65536, 1), 'the primary\'s change arrived');
    assert.equal(await sha256Export(cluster.node('bs').nbdUri('v'), dir), await sha256Export(cluster.node('bp').nbdUri('v'), dir));
    const events = await cli(['--node', api, 'events']);
    assert.match(events.stdout, /split-brain-resolved\s+v: operator discarded the changes made on bs/);
    await p.disconnect();
    await s.disconnect();
  } finally {
    await cluster.stopAll();
  }
});

test('secondary volumes are read-only to hosts; hostile bytes on a real node\'s replication port harm nothing', async () => {
  const cluster = await Cluster.create(path.join(dir, 'ro'), ['rp', 'rs']);
  try {
    await cluster.volume('rp', 'v', 16 * MiB);
    await cluster.pair({ name: 'v', primary: 'rp', secondary: 'rs', volume: 'v', mode: 'sync' });
    await cluster.waitState('rp', 'v', 'duplex');
    const s = await cluster.client('rs', 'v');
    assert.ok(s.transmissionFlags & c.TFLAG_READ_ONLY, 'the export says read-only');
    await assert.rejects(s.write(0, Buffer.alloc(512)), (e: NbdClientError) => e.errno === c.NBD_EPERM);
    await s.disconnect();
    for (const junk of [randomBytes(300), Buffer.alloc(32, 0xff), Buffer.from('GET / HTTP/1.1\r\n\r\n')]) {
      const raw = await RawSocket.connect(cluster.node('rs').ports.replPort);
      raw.send(junk);
      assert.ok(await raw.closesWithin(10_000), 'closed (at the latest by the handshake deadline)');
    }
    const p = await cluster.client('rp', 'v');
    await p.write(4096, Buffer.alloc(4096, 9));
    await p.disconnect();
    assert.equal((await cluster.pairStatus('rp', 'v')).code, 'PAIR', 'the pair is undisturbed');
    const sc = await cluster.client('rs', 'v');
    assert.deepEqual(await sc.read(4096, 4096), Buffer.alloc(4096, 9));
    await sc.disconnect();
  } finally {
    await cluster.stopAll();
  }
});
