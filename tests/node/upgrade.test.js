'use strict';
// `switchboard upgrade` of a shard under the real daemon, with phoenix.js
// clients (docs/UPGRADE.md): the shard's connections and broker session move
// to a new process; no client sees a close or a phx_error, pushes keep their
// replies, history goes on in order, and the daemon counts no restart,
// over 20 upgrades in a row. The last test is issue 16's acceptance run:
// 1,000 clients under broadcast load, 20 upgrades alternating two builds.

const assert = require('node:assert/strict');
const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { describe } = require('node:test');
const { execFile } = require('node:child_process');
const { promisify } = require('node:util');
const { startCluster, it } = require('./lib/cluster');
const { connect, Presence, WebSocket } = require('./lib/phoenix');
const { HistoryClient } = require('./lib/history');
const { httpRequest } = require('./lib/worker');
const { scopeFor, waitUntil, delay } = require('./lib/util');

// --- The acceptance run of issue 16 (the third test below): many clients,
// two builds, broadcast load.

// The version `bin --version` reports ("switchboard-worker 0.1.0 (commit c)").
async function versionOf(bin) {
  const { stdout } = await promisify(execFile)(bin, ['--version'], { timeout: 10000 });
  const m = /^switchboard-worker(?:-next)? (\S+) \(commit \S+\)\n$/.exec(stdout);
  assert.ok(m, `${bin} --version printed ${JSON.stringify(stdout)}`);
  return m[1];
}

// A raw `ws` client joined to a history topic (with a presence to track, if
// given), as bench/handoff.js's: every `msg` delivery's offset (the ref
// slot) must follow the last one by exactly one, and its payload must be
// the one every other subscriber saw at that offset (`seen`: topic →
// offset → payload id). Anything else — a close, an error, a phx_error, a
// presence leave — goes into `problems`.
function rawSubscriber(url, topic, { name, presence, seen }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/websocket?vsn=2.0.0`);
    const c = { name, topic, ws, offset: null, deliveries: 0, problems: [], closed: false };
    const truth = seen.get(topic);
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', topic, 'phx_join', presence ? { presence } : {}])));
    ws.on('message', (data) => {
      const [, ref, , event, payload] = JSON.parse(data.toString());
      if (event === 'msg') {
        const offset = Number(ref);
        if (c.offset === null || offset !== c.offset + 1) c.problems.push(`${name}: offset ${offset} after ${c.offset}`);
        c.offset = Math.max(c.offset || 0, offset);
        c.deliveries += 1;
        const id = truth.get(offset);
        if (id === undefined) truth.set(offset, payload.id);
        else if (id !== payload.id) c.problems.push(`${name}: offset ${offset} is ${payload.id}, elsewhere ${id}`);
      } else if (event === 'phx_reply' && ref === '1' && c.offset === null) {
        if (payload.status !== 'ok' || !Number.isInteger(payload.response.offset)) {
          reject(new Error(`${name}: join ${JSON.stringify(payload)}`));
          return;
        }
        c.offset = payload.response.offset;
        resolve(c);
      } else if (event === 'presence_diff') {
        const leaves = Object.keys(payload.leaves || {});
        if (c.watchLeaves && leaves.length > 0) c.problems.push(`${name}: presence leaves ${leaves}`);
      } else if (event === 'phx_error' || event === 'phx_close') {
        c.problems.push(`${name}: ${event}`);
      }
    });
    ws.on('close', (code) => {
      c.closed = true;
      c.problems.push(`${name}: closed (${code})`);
    });
    ws.on('error', (e) => {
      c.problems.push(`${name}: ${e.message}`);
      reject(e);
    });
  });
}

// {key: [phx_ref, ...]} of a phoenix.js Presence, in a stable order.
function presenceList(presence) {
  const out = {};
  const entries = presence.list((key, { metas }) => [key, metas.map((m) => m.phx_ref).sort()]);
  entries.sort(([x], [y]) => (x < y ? -1 : x > y ? 1 : 0));
  for (const [key, refs] of entries) out[key] = refs;
  return out;
}

// A scope for `connect` whose closers run together when `scope` closes:
// phoenix.js takes 150 ms or more to tear a socket down, 30 s for 200 in turn.
function closedTogether(scope) {
  const closers = [];
  scope.add(() => Promise.all(closers.map((close) => close())));
  return { add: (close) => closers.push(close) };
}

// Runs `count` calls of `make(i)`, `width` at a time; resolves with the results in order.
async function inBatches(count, width, make) {
  const out = [];
  for (let i = 0; i < count; i += width) {
    out.push(...await Promise.all(Array.from({ length: Math.min(width, count - i) }, (_, j) => make(i + j))));
  }
  return out;
}

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

  it('20 upgrades alternating two builds, 1,000 clients under broadcast load: no close, every acked broadcast once and in order, presence unchanged', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const started = Date.now();
    const TOPICS = ['room:e2e0', 'room:e2e1', 'room:e2e2', 'room:e2e3'];
    const PHOENIX = 200;
    const RAW = 800;
    const TRACKED_EVERY = 8; // every 8th client tracks a presence: 125 of them
    const ROUNDS = 20;
    const PUSH_GAP_MS = 10;
    const ACKS_BETWEEN = 5; // per publisher, after each upgrade, before the next

    const baseBin = path.join(process.env.SWITCHBOARD_BIN_DIR, 'switchboard-worker');
    const nextBin = process.env.SWITCHBOARD_WORKER_NEXT ||
      path.join(process.env.SWITCHBOARD_BIN_DIR, 'switchboard-worker-next');
    const baseVersion = await versionOf(baseBin);
    const nextVersion = await versionOf(nextBin);
    assert.equal(nextVersion, `${baseVersion}+next`);

    // History topics: every broadcast has an offset, in its ack and in each
    // delivery. The raw clients send nothing after their join (no
    // heartbeat): the idle timeout must not close them during the run.
    const history = ['--history', 'room:*=1000/10m'];
    const cluster = await startCluster({
      shards: [{ args: [...history, '--idle-timeout', '600'] }, { args: history }],
      brokerArgs: history, upgrade: 'handoff',
    });
    s.add(() => cluster.stop());
    const [a, b] = cluster.shards;
    const seen = new Map(TOPICS.map((topic) => [topic, new Map()]));
    const tracked = new Map(TOPICS.map((topic) => [topic, []])); // topic → presence keys
    const presenceOf = (name, topic) => {
      tracked.get(topic).push(name);
      return { key: name, meta: { name } };
    };

    // 200 phoenix.js clients and 800 raw ones on shard a, over the topics.
    const sockOpts = { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 };
    const channelErrors = [];
    const phxScope = closedTogether(s);
    const phx = await inBatches(PHOENIX, 50, async (i) => {
      const topic = TOPICS[i % TOPICS.length];
      const name = `p${i}`;
      const params = i % TRACKED_EVERY === 0 ? { presence: presenceOf(name, topic) } : {};
      const c = new HistoryClient(await connect(phxScope, a.url, sockOpts), topic, { name, params });
      c.channel.onError(() => channelErrors.push(name));
      assert.equal((await c.join()).status, 'ok', name);
      return c;
    });
    const raw = await inBatches(RAW, 100, (i) => {
      const topic = TOPICS[i % TOPICS.length];
      const name = `r${i}`;
      return rawSubscriber(a.url, topic, { name, seen, presence: i % TRACKED_EVERY === 0 ? presenceOf(name, topic) : null });
    });
    s.add(() => { for (const c of raw) c.ws.terminate(); });

    const joinedMs = Date.now();

    // One publisher per topic on each shard; and on shard b an observer of
    // every topic's presence.
    const pubs = [];
    for (const [shard, tag] of [[a, 'A'], [b, 'B']]) {
      for (const topic of TOPICS) {
        const c = new HistoryClient(await connect(s, shard.url, sockOpts), topic, { name: `pub${tag}-${topic}` });
        c.channel.onError(() => channelErrors.push(c.name));
        assert.equal((await c.join()).status, 'ok', c.name);
        pubs.push(c);
      }
    }
    const observerSocket = await connect(s, b.url);
    const observed = [];
    const diffs = [];
    for (const topic of TOPICS) {
      const channel = observerSocket.channel(topic, {});
      const presence = new Presence(channel);
      channel.on('presence_diff', (d) => diffs.push({ topic, joins: Object.keys(d.joins), leaves: Object.keys(d.leaves) }));
      const r = await new Promise((resolve) => channel.join().receive('ok', () => resolve('ok')).receive('error', resolve));
      assert.equal(r, 'ok');
      observed.push({ topic, presence });
    }
    const lists = () => Object.fromEntries(observed.map(({ topic, presence }) => [topic, presenceList(presence)]));
    const keysOf = (l) => Object.fromEntries(Object.entries(l).map(([topic, list]) => [topic, Object.keys(list)]));
    const wanted = Object.fromEntries(TOPICS.map((topic) => [topic, [...tracked.get(topic)].sort()]));
    await waitUntil(() => JSON.stringify(keysOf(lists())) === JSON.stringify(wanted),
      { timeout: 20000, what: 'every tracked presence at the observer on shard b' });
    const baseline = lists();
    for (const topic of TOPICS) for (const refs of Object.values(baseline[topic])) assert.equal(refs.length, 1);
    const diffsBefore = diffs.length;
    for (const c of raw) c.watchLeaves = true;
    const setupMs = Date.now() - started;
    t.diagnostic(`setup: clients joined in ${joinedMs - started} ms, presence seen in ${setupMs} ms`);

    // Broadcast load: each publisher pushes every few ms, not waiting for
    // the ok, so that some pushes are always unanswered when a hand-off starts.
    const stop = { done: false };
    const pushFailures = [];
    const loops = pubs.map(async (p) => {
      const replies = [];
      for (let k = 0; !stop.done && k < 100000; k++) {
        replies.push(p.push({ id: `${p.name}:${k}` }).then((r) => {
          if (r.status !== 'ok') pushFailures.push(`${p.name}:${k} ${JSON.stringify(r)}`);
        }));
        await delay(PUSH_GAP_MS);
      }
      await Promise.all(replies);
    });
    const acks = () => pubs.map((p) => p.acked.length);
    const mark = acks();
    await waitUntil(() => acks().every((n, i) => n >= mark[i] + ACKS_BETWEEN), { what: 'load before the first upgrade' });

    // 20 upgrades: a reload whose only change is shard a's command hands it
    // over to the other build, which /healthz then names.
    const health = await httpRequest(a.port, { path: '/healthz' });
    const versions = [health.headers['switchboard-version']];
    assert.equal(versions[0], baseVersion);
    const pids = [await cluster.pid(a.id)];
    const reloadMs = [];
    for (let round = 0; round < ROUNDS; round++) {
      const [bin, version] = round % 2 === 0 ? [nextBin, nextVersion] : ['switchboard-worker', baseVersion];
      const swap = (yaml) => {
        const out = yaml.replace(new RegExp(`(- id: "${a.id}"\\n\\s+command: \\[)"[^"]*"`), `$1${JSON.stringify(bin)}`);
        assert.notEqual(out, yaml, 'the shard\'s command in the YAML');
        return out;
      };
      const t0 = Date.now();
      const r = await cluster.reload(swap);
      reloadMs.push(Date.now() - t0);
      assert.ok(r.ok, r.out);
      assert.equal(r.out, `shards: upgrade ${a.id} (command changed)`);
      pids.push(await cluster.pid(a.id));
      const h = await httpRequest(a.port, { path: '/healthz' });
      assert.equal(h.status, 200);
      versions.push(h.headers['switchboard-version']);
      assert.equal(versions[versions.length - 1], version, `/healthz after upgrade ${round + 1}`);
      assert.deepEqual(lists(), baseline, `presence at the observer after upgrade ${round + 1}`);
      const since = acks();
      await waitUntil(() => acks().every((n, i) => n >= since[i] + ACKS_BETWEEN),
        { what: `pushes acked after upgrade ${round + 1}` });
    }
    stop.done = true;
    await Promise.all(loops);

    // Every subscriber reaches its topic's last acked offset, having seen
    // each one once, in order.
    const top = Object.fromEntries(TOPICS.map((topic) => [topic,
      Math.max(...pubs.filter((p) => p.topic === topic).flatMap((p) => p.acked.map((x) => x.offset)))]));
    const subscribers = [...phx, ...pubs];
    await waitUntil(() => raw.every((c) => c.offset === top[c.topic]) &&
      subscribers.every((c) => c.pos.offset === top[c.topic]), { timeout: 20000, what: 'every subscriber at its topic\'s top' });
    let acked = 0;
    for (const p of pubs) {
      const truth = seen.get(p.topic);
      for (const x of p.acked) {
        acked += 1;
        assert.equal(truth.get(x.offset), x.payload.id, `what raw subscribers saw at ${p.topic} ${x.offset}`);
      }
    }
    for (const c of subscribers) {
      const truth = seen.get(c.topic);
      for (const m of c.received) assert.equal(m.payload.id, truth.get(m.offset), `${c.name} at ${m.offset}`);
    }
    const deliveries = raw.reduce((n, c) => n + c.deliveries, 0) +
      subscribers.reduce((n, c) => n + c.received.filter((m) => m.how === 'delivery').length, 0);
    t.diagnostic(`setup ${setupMs} ms, run ${Date.now() - started} ms; ${acked} acked broadcasts, ${deliveries} deliveries; ` +
      `reload ms ${reloadMs.join(' ')}`);
    t.diagnostic(`versions ${versions.join(' ')}; pids ${pids.join(' ')}`);

    assert.deepEqual(pushFailures, []);
    assert.deepEqual(raw.flatMap((c) => c.problems), []);
    for (const c of subscribers) {
      assert.deepEqual(c.problems, [], c.name);
      assert.equal(c.joinReplies.length, 1, `${c.name} never rejoined`);
      assert.equal(c.socket.openCount, 1, `${c.name} never reconnected`);
      assert.deepEqual(c.socket.closes.all, [], `${c.name} saw no close`);
    }
    assert.deepEqual(channelErrors, []);
    assert.equal(new Set(pids).size, pids.length, `a new process each time: ${pids}`);
    for (let i = 1; i < versions.length; i++) assert.notEqual(versions[i], versions[i - 1], `versions ${versions}`);

    // Presence: nothing changed at the observer, and a newcomer on the
    // upgraded shard gets the same state.
    assert.deepEqual(diffs.slice(diffsBefore), [], 'no presence_diff during the upgrades');
    assert.deepEqual(lists(), baseline);
    const late = await connect(s, a.url);
    for (const topic of TOPICS) {
      const channel = late.channel(topic, {});
      const presence = new Presence(channel);
      let synced = false;
      presence.onSync(() => { synced = true; });
      await new Promise((resolve) => channel.join().receive('ok', resolve));
      await waitUntil(() => synced, { what: `presence_state of ${topic} on the upgraded shard` });
      assert.deepEqual(presenceList(presence), baseline[topic], `presence of ${topic} on the upgraded shard`);
    }

    // The daemon: 20 upgrades, each moving every connection of shard a; no restart.
    const events = fs.readFileSync(path.join(cluster.dir, 'events'), 'utf8').trim().split('\n').map((l) => JSON.parse(l))
      .filter((e) => e.id === a.id);
    assert.deepEqual(events.filter((e) => e.event === 'upgrade_failed'), []);
    const upgraded = events.filter((e) => e.event === 'upgraded');
    assert.equal(upgraded.length, ROUNDS);
    t.diagnostic(`moved ms ${upgraded.map((e) => e.ms).join(' ')}`);
    for (const e of upgraded) assert.equal(e.connections, PHOENIX + RAW + TOPICS.length, JSON.stringify(e));
    const st = JSON.stringify(await cluster.status());
    assert.deepEqual([...new Set(st.match(/"restarts":\d+/g))], ['"restarts":0'], 'no restart counted');
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
          // Every third request is a presence query of a topic nobody on
          // this shard joined: it needs the broker's snapshot, also right
          // after the hand-off, before the new process has met the broker.
          const publish = { topic: 'room:api', event: 'e', payload: { round, i } };
          if (i % 3 === 1) publish.idempotency_key = `k-${round}-${i}`;
          const r = i % 3 === 2
            ? await request('GET', '/api/presence?topic=room:nobody')
            : await request('POST', '/api/publish', publish);
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
