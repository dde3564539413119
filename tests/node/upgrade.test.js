'use strict';
// `switchboard upgrade` of a shard under the real daemon, with phoenix.js
// clients (docs/UPGRADE.md): the shard's connections and broker session move
// to a new process; no client sees a close or a phx_error, pushes keep their
// replies, history goes on in order, and the daemon counts no restart,
// over 20 upgrades in a row.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { describe } = require('node:test');
const { startCluster, it } = require('./lib/cluster');
const { connect } = require('./lib/phoenix');
const { HistoryClient } = require('./lib/history');
const { scopeFor, waitUntil } = require('./lib/util');

describe('upgrade', () => {
  it('switchboard upgrade moves a shard\'s clients to a new process: no close, no phx_error, nothing lost', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const history = ['--history', 'room:*=1000/10m'];
    const cluster = await startCluster({
      shards: [{ args: history }, { args: history }], brokerArgs: history, upgrade: 'handoff',
    });
    s.add(() => cluster.stop());
    const [a, b] = cluster.shards;
    const clients = [];
    const errors = [];
    for (let i = 0; i < 20; i++) {
      const socket = await connect(s, a.url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
      const c = new HistoryClient(socket, 'room:up', { name: `a${i}` });
      c.channel.onError(() => errors.push(c.name));
      assert.equal((await c.join()).status, 'ok');
      clients.push(c);
    }
    const other = new HistoryClient(await connect(s, b.url), 'room:up', { name: 'b' });
    assert.equal((await other.join()).status, 'ok');
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
    const s = scopeFor(t);
    const history = ['--history', 'room:*=1000/10m'];
    const cluster = await startCluster({
      shards: [{ args: history }, { args: history }], brokerArgs: history, upgrade: 'handoff',
    });
    s.add(() => cluster.stop());
    const [a, b] = cluster.shards;
    const clients = [];
    for (let i = 0; i < 10; i++) {
      const socket = await connect(s, a.url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
      const c = new HistoryClient(socket, 'room:rb', { name: `a${i}` });
      assert.equal((await c.join()).status, 'ok');
      clients.push(c);
    }
    const other = new HistoryClient(await connect(s, b.url), 'room:rb', { name: 'b' });
    assert.equal((await other.join()).status, 'ok');
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

  it('a keep-alive API client sees no upgrade: its socket moves to the new process, no request fails', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const KEY = 'upgrade-test-api-key-0123456789';
    const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'sb-upgrade-api-'));
    s.add(() => fs.rmSync(dir, { recursive: true, force: true }));
    const keyFile = path.join(dir, 'api-key');
    fs.writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
    const cluster = await startCluster({
      shards: [{ args: ['--api-key-file', keyFile] }], upgrade: 'handoff',
    });
    s.add(() => cluster.stop());
    const [a] = cluster.shards;
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    s.add(() => agent.destroy());
    // One request on the agent's one socket: its answer and the client port it went out on.
    const request = (method, p, body) => new Promise((resolve, reject) => {
      const req = http.request({
        host: '127.0.0.1', port: a.port, method, path: p, agent,
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
      }, (res) => {
        const port = res.socket.localPort;
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode, body: text, port }));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end(body === undefined ? undefined : JSON.stringify(body));
    });
    // /healthz ends its connection: asked apart, on a connection of its own each time.
    const healthz = () => new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: a.port, path: '/healthz', agent: false }, (res) => {
        res.resume();
        res.on('end', () => resolve({ status: res.statusCode, version: res.headers['switchboard-version'] }));
      }).on('error', reject);
    });
    // The pid holding the server's end of the client's connection from `port`
    // (/proc/net/tcp names the socket's inode, /proc/PID/fd the sockets a process holds).
    const holds = (pid, port) => {
      const hex = (n) => n.toString(16).toUpperCase().padStart(4, '0');
      const lines = fs.readFileSync('/proc/net/tcp', 'utf8').split('\n').slice(1);
      const mine = lines.map((l) => l.trim().split(/\s+/))
        .find((f) => f[1] === `0100007F:${hex(a.port)}` && f[2] === `0100007F:${hex(port)}`);
      assert.ok(mine, `the server's end of port ${port}`);
      return fs.readdirSync(`/proc/${pid}/fd`).some((fd) => {
        try { return fs.readlinkSync(`/proc/${pid}/fd/${fd}`) === `socket:[${mine[9]}]`; } catch { return false; }
      });
    };

    const first = await request('POST', '/api/publish', { topic: 'room:api', event: 'e', payload: {} });
    assert.equal(first.status, 200, first.body);
    const port = first.port;
    const pids = [await cluster.pid(a.id)];
    assert.ok(holds(pids[0], port), 'the first process holds the socket');
    const failures = [];
    const ports = new Set([port]);
    let requests = 1;
    let checks = 0;
    for (let round = 0; round < 10; round++) {
      // Requests back to back on the one socket while the upgrade runs, and
      // /healthz on fresh connections.
      let upgrading = true;
      const api = (async () => {
        for (let i = 0; upgrading; i++) {
          // A keyed publish is answered once the broker has claimed its key:
          // the old process waits for its answer before it hands over.
          const publish = { topic: 'room:api', event: 'e', payload: { round, i } };
          if (i % 2 === 1) publish.idempotency_key = `k-${round}-${i}`;
          const r = await request('POST', '/api/publish', publish);
          requests++;
          ports.add(r.port);
          if (r.status !== 200) failures.push(`${r.status} ${r.body}`);
        }
      })().catch((e) => failures.push(`api: ${e.message}`));
      const health = (async () => {
        while (upgrading) {
          const r = await healthz();
          checks++;
          if (r.status !== 200) failures.push(`healthz ${r.status}`);
        }
      })().catch((e) => failures.push(`healthz: ${e.message}`));
      const out = await cluster.control('upgrade', a.id);
      upgrading = false;
      await Promise.all([api, health]);
      assert.match(out, /upgraded/, out);
      const pid = await cluster.pid(a.id);
      const after = await request('POST', '/api/publish', { topic: 'room:api', event: 'e', payload: { round } });
      requests++;
      assert.equal(after.status, 200, after.body);
      assert.equal(after.port, port, `round ${round}: the same client socket`);
      assert.ok(holds(pid, port), `round ${round}: the new process ${pid} holds the socket`);
      assert.throws(() => process.kill(pids[pids.length - 1], 0), /ESRCH/, 'the old process is gone');
      pids.push(pid);
    }
    t.diagnostic(`${requests} API requests, ${checks} /healthz, pids ${pids.join(' ')}`);
    assert.deepEqual(failures, []);
    assert.deepEqual([...ports], [port], 'every API request on one socket');
    // The shard answers "Connection: close" after 10,000 requests on one connection.
    assert.ok(requests < 10000, `${requests} requests stay under the per-connection limit`);
    assert.equal(new Set(pids).size, pids.length, `a new process each time: ${pids}`);
    const version = await healthz();
    assert.equal(version.status, 200);
    assert.ok(version.version, 'the new process says its version');
  });
});
