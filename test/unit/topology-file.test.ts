// The topology file: what an operator writes is parsed once, with errors that say what to fix.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { promises as fsp } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { asyncVolumes, loadTopology, pairName, parsePairName, parseTopology } from '../../src/topology/topology-file';

const valid = {
  name: 'erp',
  layout: 'multi-target',
  volumes: { db1: '10GiB', log1: { size: '2GiB', role: 'log' } },
  primary: { site: 'tokyo', node: 'http://127.0.0.1:7801' },
  sync: { site: 'osaka', node: 'http://127.0.0.1:7811', fence: 'data' },
  async: { site: 'sapporo', node: 'http://127.0.0.1:7821' },
};

test('a valid file: sizes, roles, defaults, which volumes go to the async site, pair names', () => {
  const t = parseTopology(valid);
  assert.equal(t.name, 'erp');
  assert.deepEqual(t.volumes, [{ name: 'db1', sizeBytes: 10 * 1024 ** 3, role: 'data' }, { name: 'log1', sizeBytes: 2 * 1024 ** 3, role: 'log' }]);
  assert.equal(t.logLayout, true);
  assert.deepEqual(asyncVolumes(t).map((v) => v.name), ['log1'], 'log/data layout: only logs go to the async site');
  const plain = parseTopology({ ...valid, layout: undefined, volumes: { a: '1GiB' }, sync: { site: 'osaka', node: 'http://127.0.0.1:7811' } });
  assert.equal(plain.layout, 'multi-target', 'multi-target by default');
  assert.equal(plain.sync.fence, 'data', 'fence data by default: protection is the safe choice');
  assert.deepEqual(asyncVolumes(plain).map((v) => v.name), ['a']);
  assert.equal(pairName(t, 'db1', 'tokyo', 'osaka'), 'erp.db1.osaka.tokyo', 'the name does not depend on the direction');
  assert.equal(pairName(t, 'db1', 'osaka', 'tokyo'), 'erp.db1.osaka.tokyo');
  assert.deepEqual(parsePairName(t, 'erp.db1.osaka.tokyo'), { volume: 'db1', sites: ['osaka', 'tokyo'] });
  assert.equal(parsePairName(t, 'other.db1.osaka.tokyo'), undefined);
  assert.equal(parsePairName(t, 'erp.db1'), undefined);
});

test('every mistake is refused with what to fix', () => {
  const bad = (patch: Record<string, unknown>, message: RegExp): void => {
    assert.throws(() => parseTopology({ ...valid, ...patch }), message, JSON.stringify(patch));
  };
  assert.throws(() => parseTopology([]), /must hold a mapping/);
  bad({ extra: 1 }, /unknown key "extra"/);
  bad({ name: 'a.b' }, /"name" must be 1–24 letters/);
  bad({ name: 'x'.repeat(25) }, /"name" must be 1–24 letters/);
  bad({ layout: 'star' }, /"layout" must be multi-target or cascade/);
  bad({ volumes: {} }, /"volumes" must map volume names to sizes/);
  bad({ volumes: { 'bad name': '1GiB' } }, /volume name "bad name"/);
  bad({ volumes: { a: { size: '1GiB', role: 'journal' } } }, /role must be data or log/);
  bad({ volumes: { a: { role: 'log' } } }, /size missing/);
  bad({ volumes: { a: 'ten GiB' } }, /size of volume a/);
  bad({ volumes: { a: { size: '1GiB', mirror: true } } }, /volume a: unknown key "mirror"/);
  bad({ primary: 'tokyo' }, /"primary" must be a mapping/);
  bad({ primary: { site: 'tokyo', node: 'ftp://x' } }, /primary.node "ftp:\/\/x" is not an http\(s\) URL/);
  bad({ primary: { site: 'tokyo' } }, /primary.node must be the node's control API URL/);
  bad({ primary: { site: 'tokyo', node: 'http://127.0.0.1:7801', fence: 'data' } }, /"fence" belongs to the sync site/);
  bad({ sync: { site: 'osaka', node: 'http://127.0.0.1:7811', fence: 'status' } }, /sync.fence must be data or never/);
  bad({ async: { site: 'tokyo', node: 'http://127.0.0.1:7821' } }, /three different sites/);
  bad({ async: { site: 'sapporo', node: 'http://127.0.0.1:7801' } }, /three different nodes/);
  bad({ network: 'r c n' }, /"network" must name a remote copy network/);
  assert.equal(parseTopology({ ...valid, network: 'rcn' }).network, 'rcn', 'a topology through a network');
  assert.equal(parseTopology(valid).network, undefined);
});

test('files: YAML is read and errors name the file', async () => {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'tricopy-topo-'));
  try {
    const file = path.join(dir, 'erp.yaml');
    await fsp.writeFile(file, [
      'name: erp',
      'layout: cascade',
      'volumes: { db1: 1GiB }',
      'primary: { site: tokyo,   node: http://127.0.0.1:7801 }',
      'sync:    { site: osaka,   node: http://127.0.0.1:7811, fence: never }',
      'async:   { site: sapporo, node: http://127.0.0.1:7821 }',
    ].join('\n'));
    const t = await loadTopology(file);
    assert.equal(t.layout, 'cascade');
    assert.equal(t.sync.fence, 'never');
    await fsp.writeFile(file, 'name: [unclosed');
    await assert.rejects(loadTopology(file), /is not valid YAML/);
    await assert.rejects(loadTopology(path.join(dir, 'missing.yaml')), /cannot read topology file/);
    await fsp.writeFile(file, 'name: erp\nlayout: ring\n');
    await assert.rejects(loadTopology(file), (err: Error) => err.message.startsWith(`${file}: "layout" must be`));
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});
