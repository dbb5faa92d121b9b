// An unauthenticated flood on a real node's replication port: hundreds of connections that each
// announce a 34 MiB frame. The node refuses them on the frame header, so its memory stays flat, a
// sync pair through the same port goes on, and the refusals show as aggregated events and metrics.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { defaultSecurityEventLimits } from '../../src/common/security-events';
import { FrameKind, encodeFrameHeader, maxFramePayloadBytes } from '../../src/replication/transport/frame';
import { MessageType } from '../../src/replication/transport/messages';
import { Cluster } from '../support/cluster';
import { killAllNodes } from '../support/node-process';
import { fetchMetrics, metricValue, tempDir } from '../support/tools';
import { waitFor } from '../support/wait';

const MiB = 1024 * 1024;
const attackers = 200;
/** Each attacker sends this much after its header: with the header honoured, 200 MiB held in total. */
const bytesPerAttacker = MiB;
const allowedGrowthBytes = 64 * MiB;
const windowSeconds = 3;
let dir: string;

before(async () => {
  dir = await tempDir('preauth');
});

after(async () => {
  killAllNodes();
  await fsp.rm(dir, { recursive: true, force: true });
});

async function residentBytes(pid: number): Promise<number> {
  const status = await fsp.readFile(`/proc/${pid}/status`, 'utf8');
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  assert.ok(kib, `VmRSS of ${pid}`);
  return Number(kib[1]) * 1024;
}

/** One unauthenticated client: a Hello header announcing the largest data frame, then bytes. Resolves once closed. */
function attacker(port: number, filler: Buffer): Promise<{ connected: boolean }> {
  return new Promise((resolve) => {
    let connected = false;
    const socket = net.connect({ host: '127.0.0.1', port }, () => {
      connected = true;
      socket.write(encodeFrameHeader({ kind: FrameKind.Message, type: MessageType.Hello, requestId: 0, status: 0,
        payloadLength: maxFramePayloadBytes }, Buffer.alloc(0)));
      for (let sent = 0; sent < bytesPerAttacker; sent += filler.length) socket.write(filler);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => resolve({ connected }));
  });
}

test('200 unauthenticated connections announcing 34 MiB frames: memory stays flat, the sync pair goes on, refusals are aggregated', async (t) => {
  const config = path.join(dir, 'node.yaml');
  await fsp.writeFile(config, `securityEventWindow: ${windowSeconds}s\n`);
  const cluster = await Cluster.create(path.join(dir, 'c'), ['pa', 'pb'], ['--peer-timeout', '1s', '--config', config]);
  try {
    await cluster.volume('pa', 'db', 64 * MiB);
    await cluster.pair({ name: 'db', primary: 'pa', secondary: 'pb', volume: 'db', mode: 'sync', fence: 'data' });
    await cluster.waitState('pa', 'db', 'duplex');
    const target = cluster.node('pb');
    const pid = target.child.pid!;
    const client = await cluster.client('pa', 'db');
    await client.write(0, randomBytes(4 * MiB)); // the data path warmed up before the baseline
    const baseline = await residentBytes(pid);

    // The flood, while the RSS is sampled; each connection closes when the node refuses it.
    let peak = baseline;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        peak = Math.max(peak, await residentBytes(pid));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const filler = Buffer.alloc(64 * 1024, 0x41);
    const flood = Promise.all(Array.from({ length: attackers }, () => attacker(target.ports.replPort, filler)));
    // Host writes through the pair go on during the flood.
    const data = randomBytes(2 * MiB);
    await client.write(8 * MiB, data);
    await client.flush();
    const results = await flood;
    sampling = false;
    await sampler;
    peak = Math.max(peak, await residentBytes(pid));
    const connected = results.filter((r) => r.connected).length;
    assert.equal(connected, attackers, 'every attacker got a connection (and was then refused)');
    t.diagnostic(`resident memory ${(baseline / MiB).toFixed(1)} MiB before the flood, at most ${(peak / MiB).toFixed(1)} MiB during it`);
    assert.ok(peak - baseline < allowedGrowthBytes,
      `the node's memory grew by ${((peak - baseline) / MiB).toFixed(1)} MiB under the flood (${attackers} × ${bytesPerAttacker / MiB} MiB sent)`);

    // The pair never noticed: still duplex, and the secondary holds what the host wrote.
    await client.disconnect();
    assert.equal((await cluster.pairStatus('pa', 'db')).code, 'PAIR');
    const secondary = await cluster.client('pb', 'db');
    assert.ok((await secondary.read(8 * MiB, data.length)).equals(data), 'the write arrived at the secondary');
    await secondary.disconnect();

    // Every connection counted once, under a fixed reason.
    const metrics = await fetchMetrics(target.apiUrl);
    const oversized = metricValue(metrics, 'tricopy_replication_refused_total', { reason: 'oversized-frame' });
    const crowded = metricValue(metrics, 'tricopy_replication_refused_total', { reason: 'too-many-connections' });
    assert.equal(metricValue(metrics, 'tricopy_replication_refused_total'), attackers, metrics.split('\n').filter((l) => l.includes('refused')).join('\n'));
    assert.equal(oversized + crowded, attackers);
    assert.ok(oversized > 0);

    // A few events of their own, then one summary for the rest when the window ends.
    const perAddress = defaultSecurityEventLimits.eventsPerAddressPerWindow;
    const events = await waitFor('the summary of the window', async () => {
      const list = (await target.api.listEvents(0)).filter((e) => e.kind === 'replication-refused');
      return list.some((e) => e.details?.suppressed !== undefined) ? list : undefined;
    }, { timeoutMs: (windowSeconds + 10) * 1000 });
    const single = events.filter((e) => e.details?.suppressed === undefined);
    assert.equal(single.length, perAddress, 'the first refusals from the address are events of their own');
    for (const e of single) {
      assert.equal(e.subject, '127.0.0.1');
      assert.match(e.reason, /^(oversized-frame: unauthenticated peer announced a 35651584-byte Hello; before authentication frames carry at most 4096 bytes|too-many-connections: .*)$/);
    }
    const summaries = events.filter((e) => e.details?.suppressed !== undefined);
    assert.equal(summaries.length, 1);
    assert.equal(summaries[0]!.subject, '127.0.0.1');
    assert.equal(summaries[0]!.details!.suppressed, attackers - perAddress);
    assert.match(summaries[0]!.reason, new RegExp(`^… and ${attackers - perAddress} more from 127\\.0\\.0\\.1 in the last ${windowSeconds} seconds \\(`));
  } finally {
    await cluster.stopAll();
  }
});
