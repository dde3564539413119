'use strict';
// `switchboard upgrade` of a shard under the real daemon, with phoenix.js
// clients (docs/UPGRADE.md): the shard's connections and broker session move
// to a new process; no client sees a close or a phx_error, pushes keep their
// replies, history goes on in order, and the daemon counts no restart,
// over 20 upgrades in a row.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe } = require('node:test');
const { startCluster, it } = require('./lib/cluster');
const { connect } = require('./lib/phoenix');
const { HistoryClient } = require('./lib/history');
const { scopeFor, waitUntil } = require('./lib/util');

// A cluster whose shards keep history and hand their clients over on an
// upgrade, with `count` phoenix.js clients joined to `topic` on shard a (they
// would reconnect and rejoin within 10 ms, so a test sees any that had to)
// and one, `other`, on shard b. `errors` names each client whose channel saw
// a phx_error.
async function clusterWithClients(s, topic, count) {
  const history = ['--history', 'room:*=1000/10m'];
  const cluster = await startCluster({
    shards: [{ args: history }, { args: history }], brokerArgs: history, upgrade: 'handoff',
  });
  s.add(() => cluster.stop());
  const [a, b] = cluster.shards;
  const clients = [];
  const errors = [];
  for (let i = 0; i < count; i++) {
    const socket = await connect(s, a.url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
    const c = new HistoryClient(socket, topic, { name: `a${i}` });
    c.channel.onError(() => errors.push(c.name));
    assert.equal((await c.join()).status, 'ok');
    clients.push(c);
  }
  const other = new HistoryClient(await connect(s, b.url), topic, { name: 'b' });
  assert.equal((await other.join()).status, 'ok');
  return { cluster, a, clients, other, errors };
}

describe('upgrade', () => {
  it('switchboard upgrade moves a shard\'s clients to a new process: no close, no phx_error, nothing lost', { timeout: 120000 }, async (t) => {
    const { cluster, a, clients, other, errors } = await clusterWithClients(scopeFor(t), 'room:up', 20);
    const pids = [await cluster.pid(a.id)];
    let n = 0;
    for (let round = 0; round < 20; round++) {
      // Traffic before, during and after each upgrade.
      const during = Promise.all(clients.slice(0, 5).map((c) => c.push({ n: n++ })));
      const out = await cluster.control('upgrade', a.id);
      assert.match(out, /upgraded/, out);
      for (const r of await during) assert.equal(r.status, 'ok');
      for (const c of clients.slice(5, 10)) assert.equal((await c.push({ n: n++ })).status, 'ok');
      assert.equal((await other.push({ n: n++ })).status, 'ok');
      pids.push(await cluster.pid(a.id));
    }
    assert.equal(new Set(pids).size, pids.length, `a new process each time: ${pids}`);
    const top = other.pos.offset;
    for (const c of [...clients, other]) await c.until((x) => x.pos.offset === top, `offset ${top}`);
    t.diagnostic(JSON.stringify(clients.map((c) => [c.name, c.socket.openCount, c.joinReplies.length])));
    t.diagnostic(`channel errors: ${errors.join(' ')}`);
    for (const c of [...clients, other]) {
      assert.deepEqual(c.problems, [], c.name);
      assert.equal(c.joinReplies.length, 1, `${c.name} never rejoined`);
      assert.equal(c.socket.openCount, 1, `${c.name} never reconnected`);
    }
    assert.deepEqual(errors, []);
    const st = JSON.stringify(await cluster.status());
    assert.deepEqual([...new Set(st.match(/"restarts":\d+/g))], ['"restarts":0'], 'no restart counted');
    t.diagnostic(`pids ${pids.join(' ')}`);
  });

  it('an upgrade to a process that cannot start rolls back: every client stays with the old one', { timeout: 60000 }, async (t) => {
    const { cluster, a, clients, other } = await clusterWithClients(scopeFor(t), 'room:rb', 10);
    const pid = await cluster.pid(a.id);
    // The new command fails its start (an unknown flag: exit 2 before READY);
    // a reload whose only change is the command hands over — and rolls back.
    const r = await cluster.reload((yaml) => yaml.replace(
      /(- id: "?shard-0"?\n\s+command: \[)/, '$1"switchboard-worker", "--no-such-flag", '));
    t.diagnostic(r.out);
    assert.match(r.out, /upgrade/i, r.out);
    assert.equal(await cluster.pid(a.id), pid, 'the old process still serves');
    for (const c of clients) assert.equal((await c.push({ from: c.name })).status, 'ok');
    assert.equal((await other.push({ from: 'b' })).status, 'ok');
    const top = other.pos.offset;
    for (const c of [...clients, other]) await c.until((x) => x.pos.offset === top, `offset ${top}`);
    for (const c of [...clients, other]) {
      assert.deepEqual(c.problems, [], c.name);
      assert.equal(c.socket.openCount, 1, `${c.name} never reconnected`);
      assert.equal(c.joinReplies.length, 1, `${c.name} never rejoined`);
    }
    const events = fs.readFileSync(path.join(cluster.dir, 'events'), 'utf8');
    assert.match(events, /upgrade_failed/, 'the daemon says the upgrade failed');
  });
});
