'use strict';
// Versions, as an operator watching a rolling upgrade sees them: every
// program's --version, a shard's /healthz (headers Switchboard-Version and
// Switchboard-Commit, the body still "ok") and switchboard_build_info on
// every process that serves metrics (the daemon, the broker, a shard) name
// one version and one commit.

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const path = require('node:path');
const { execFile } = require('node:child_process');
const { promisify } = require('node:util');
const { startCluster, it, scrape, sampleValue } = require('./lib/cluster');
const { httpRequest, startWorker } = require('./lib/worker');
const { scopeFor } = require('./lib/util');

const PROGRAMS = ['switchboard', 'switchboard-broker', 'switchboard-worker'];

// {version, commit} from `bin --version`, which must be exactly
// "<program> <version> (commit <commit>)".
function versionOf(program) {
  return versionOfBinary(program, path.join(process.env.SWITCHBOARD_BIN_DIR, program));
}

async function versionOfBinary(program, bin) {
  const { stdout } = await promisify(execFile)(bin, ['--version'], { timeout: 10000 });
  const m = /^(\S+) (\S+) \(commit (\S+)\)\n$/.exec(stdout);
  assert.ok(m, `${program} --version printed ${JSON.stringify(stdout)}`);
  assert.equal(m[1], program);
  return { version: m[2], commit: m[3] };
}

describe('versions', () => {
  it('--version, /healthz and switchboard_build_info agree on every process', async (t) => {
    const s = scopeFor(t);
    const versions = await Promise.all(PROGRAMS.map(versionOf));
    for (const v of versions) assert.deepEqual(v, versions[0], 'one build, one version');
    const { version, commit } = versions[0];
    assert.match(commit, /^([0-9a-f]{12,}(-dirty)?|unknown)$/);

    // `balance` makes the daemon serve its own metrics too.
    const cluster = await startCluster({ shards: 1, balance: 'round_robin', name: 'versions' });
    s.add(() => cluster.stop());

    const health = await httpRequest(cluster.shards[0].port, { path: '/healthz' });
    assert.deepEqual([health.status, health.body], [200, 'ok\n']);
    assert.equal(health.headers['switchboard-version'], version);
    assert.equal(health.headers['switchboard-commit'], commit);

    const build = { version, commit };
    for (const [what, target, labels] of [
      ['daemon', cluster.daemon, { node: 'versions' }],
      ['broker', cluster.broker, {}],
      ['shard', cluster.shards[0], { shard: '0' }],
    ]) {
      const text = await scrape(target);
      assert.equal(sampleValue(text, 'switchboard_build_info', { ...labels, ...build }), 1,
        `${what}: switchboard_build_info{version="${version}",commit="${commit}"}\n` +
        text.split('\n').filter((l) => l.includes('build_info')).join('\n'));
    }
  });

  // The second build of the worker that the upgrade test alternates with the
  // first (tests/node/upgrade.test.js): the same commit, its own version.
  it('switchboard-worker-next reports <version>+next on --version, /healthz and switchboard_build_info', async (t) => {
    const s = scopeFor(t);
    const bin = process.env.SWITCHBOARD_WORKER_NEXT;
    assert.ok(bin, 'SWITCHBOARD_WORKER_NEXT is set (path to switchboard-worker-next)');
    const base = await versionOf('switchboard-worker');
    const next = await versionOfBinary('switchboard-worker-next', bin);
    assert.deepEqual(next, { version: `${base.version}+next`, commit: base.commit });

    const worker = await startWorker([], { bin });
    s.add(() => worker.stop());
    const health = await httpRequest(worker.port, { path: '/healthz' });
    assert.equal(health.status, 200);
    assert.equal(health.headers['switchboard-version'], next.version);
    assert.equal(health.headers['switchboard-commit'], next.commit);
    const text = await scrape(worker);
    assert.equal(sampleValue(text, 'switchboard_build_info', { ...next }), 1,
      text.split('\n').filter((l) => l.includes('build_info')).join('\n'));
  });
});
