'use strict';
// A hand-off whose new process is killed (docs/UPGRADE.md, "Failures"):
// before it has acknowledged the end it has touched no socket, so every
// client stays with the old process and notices nothing; once it has, the
// clients are its own, and killing it makes them reconnect (and recover
// what they missed). The new process is stopped at the right moment by
// SWITCHBOARD_HANDOFF_PAUSE, set through the child's env in a reload (a
// reload that changes only env hands over).

const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { describe } = require('node:test');
const WebSocket = require('ws');
const { startCluster, it } = require('./lib/cluster');
const { connect } = require('./lib/phoenix');
const { HistoryClient } = require('./lib/history');
const { scopeFor, waitUntil } = require('./lib/util');

const HISTORY = ['--history', 'room:*=5000/10m'];
// More raw clients than one chunk holds (253), so that the pause after the
// first chunk falls mid-hand-off.
const RAW = 600;

// A raw WebSocket joined to `topic`: counts closes and the payloads of
// `event` broadcasts.
function rawClient(s, url, topic) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/websocket?vsn=2.0.0`);
    const c = { ws, closes: 0, got: [] };
    s.add(() => ws.terminate());
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}])));
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m[3] === 'phx_reply' && m[1] === '1') resolve(c);
      else if (m[3] === 'msg') c.got.push(m[4].n);
    });
    ws.on('close', () => { c.closes += 1; });
    ws.on('error', reject);
  });
}

async function setUp(t, topic) {
  const s = scopeFor(t);
  const cluster = await startCluster({
    shards: [{ args: HISTORY }, { args: HISTORY }], brokerArgs: HISTORY, upgrade: 'handoff',
  });
  s.add(() => cluster.stop());
  const [a, b] = cluster.shards;
  const clients = [];
  for (let i = 0; i < 10; i++) {
    const socket = await connect(s, a.url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
    const c = new HistoryClient(socket, topic, { name: `a${i}` });
    assert.equal((await c.join()).status, 'ok');
    clients.push(c);
  }
  const raws = [];
  for (let i = 0; i < RAW; i += 100) {
    raws.push(...await Promise.all(Array.from({ length: Math.min(100, RAW - i) }, () => rawClient(s, a.url, topic))));
  }
  const other = new HistoryClient(await connect(s, b.url), topic, { name: 'b' });
  assert.equal((await other.join()).status, 'ok');
  return { s, cluster, a, clients, raws, other };
}

// The reload that starts a hand-off to a new process told to pause `where`;
// resolves once that process has paused there, with its pid and the
// reload's pending result.
async function upgradePausing(cluster, id, where) {
  const mark = cluster.lines.length;
  const reload = cluster.reload((yaml) => yaml.replace(
    new RegExp(`(- id: "?${id}"?\\n)`), `$1          env: {SWITCHBOARD_HANDOFF_PAUSE: "${where}"}\n`));
  await waitUntil(() => cluster.lines.slice(mark).some((l) => /hand-off paused/.test(l)),
    { timeout: 20000, what: 'the new process paused mid-hand-off' });
  const node = await cluster.child(id);
  return { reload, node };
}

// Traffic both ways after: every phoenix.js client pushes, the other
// shard's client broadcasts 20 messages; every client gets all of them in
// order without having reconnected or rejoined, every raw client without a
// close.
async function assertNobodyNoticed({ clients, raws, other }) {
  for (const c of clients) assert.equal((await c.push({ n: c.name })).status, 'ok');
  for (let n = 0; n < 20; n++) assert.equal((await other.push({ n })).status, 'ok');
  const top = other.pos.offset;
  for (const c of [...clients, other]) await c.until((x) => x.pos.offset === top, `offset ${top}`);
  await waitUntil(() => raws.every((c) => c.got.filter((n) => typeof n === 'number').length === 20),
    { timeout: 10000, what: 'every raw client got the 20 broadcasts' });
  for (const c of [...clients, other]) {
    assert.deepEqual(c.problems, [], c.name);
    assert.equal(c.socket.openCount, 1, `${c.name} never reconnected`);
    assert.equal(c.joinReplies.length, 1, `${c.name} never rejoined`);
  }
  for (const c of raws) {
    assert.equal(c.closes, 0);
    assert.deepEqual(c.got.filter((n) => typeof n === 'number'), [...Array(20).keys()]);
  }
}

describe('upgrade faults', () => {
  it('kill -9 of the new process before its acknowledgement: every client stays with the old one, none notices', { timeout: 120000 }, async (t) => {
    const { cluster, a, clients, raws, other } = await setUp(t, 'room:k1');
    const oldPid = await cluster.pid(a.id);
    const { reload, node } = await upgradePausing(cluster, a.id, 'chunks:1');
    assert.equal(node.state, 'upgrading');
    assert.ok(node.upgrade_pid && node.upgrade_pid !== oldPid, JSON.stringify(node));
    process.kill(node.upgrade_pid, 'SIGKILL');
    const r = await reload;
    t.diagnostic(r.out);
    assert.match(r.out, /upgrade/i);
    assert.equal(await cluster.pid(a.id), oldPid, 'the old process is still the child');
    await assertNobodyNoticed({ clients, raws, other });
    const events = fs.readFileSync(path.join(cluster.dir, 'events'), 'utf8');
    assert.match(events, /upgrade_failed/);
    const st = JSON.stringify(await cluster.status());
    assert.deepEqual([...new Set(st.match(/"restarts":\d+/g))], ['"restarts":0'], 'no restart counted');
  });

  it('kill -9 of the new process while the sockets go ahead: the old one serves on, none notices', { timeout: 120000 }, async (t) => {
    const { cluster, a, clients, raws, other } = await setUp(t, 'room:k4');
    const oldPid = await cluster.pid(a.id);
    // The first 253 fds have come ahead of their state; the old process
    // serves on meanwhile, with the rest still to send.
    const { reload, node } = await upgradePausing(cluster, a.id, 'sockets:253');
    assert.ok(node.upgrade_pid && node.upgrade_pid !== oldPid, JSON.stringify(node));
    // Still serving: a broadcast from the other shard reaches every client
    // while the new process holds copies of their sockets.
    assert.equal((await other.push({ n: 'during' })).status, 'ok');
    await waitUntil(() => raws.every((c) => c.got.includes('during')),
      { timeout: 10000, what: 'the old process serving while the sockets go ahead' });
    process.kill(node.upgrade_pid, 'SIGKILL');
    const r = await reload;
    t.diagnostic(r.out);
    assert.equal(await cluster.pid(a.id), oldPid, 'the old process is still the child');
    await assertNobodyNoticed({ clients, raws, other });
    const events = fs.readFileSync(path.join(cluster.dir, 'events'), 'utf8');
    assert.match(events, /upgrade_failed/);
  });

  it('kill -9 of the old process mid-hand-off: the new one serves what it received and becomes the child', { timeout: 120000 }, async (t) => {
    const { cluster, a, clients, raws, other } = await setUp(t, 'room:k3');
    const oldPid = await cluster.pid(a.id);
    // The new process stops reading for 2 s after the first chunk; the old
    // one has sent the rest by then and waits for the acknowledgement.
    const { reload, node } = await upgradePausing(cluster, a.id, 'chunks:1:2');
    const newPid = node.upgrade_pid;
    assert.ok(newPid && newPid !== oldPid, JSON.stringify(node));
    process.kill(oldPid, 'SIGKILL');
    const r = await reload;
    t.diagnostic(r.out);
    await waitUntil(async () => (await cluster.pid(a.id)) === newPid,
      { timeout: 10000, what: 'the new process is the child' });
    await waitUntil(() => cluster.lines.some((l) => /the old process ended mid-hand-off/.test(l)),
      { timeout: 10000, what: 'the new process took what came' });
    await assertNobodyNoticed({ clients, raws, other });
    const events = fs.readFileSync(path.join(cluster.dir, 'events'), 'utf8');
    assert.match(events, /mid-hand-off/);
  });

  it('kill -9 of the new process after its acknowledgement: its clients reconnect and recover what they missed', { timeout: 120000 }, async (t) => {
    const { cluster, a, clients, raws, other } = await setUp(t, 'room:k2');
    const oldPid = await cluster.pid(a.id);
    const { reload, node } = await upgradePausing(cluster, a.id, 'acked');
    const newPid = node.upgrade_pid || node.pid;
    assert.notEqual(newPid, oldPid);
    const r = await reload;
    t.diagnostic(r.out);
    await waitUntil(async () => (await cluster.pid(a.id)) === newPid,
      { timeout: 10000, what: 'the new process is the child' });
    // Messages while the clients' process is stopped, then killed.
    for (let n = 0; n < 10; n++) assert.equal((await other.push({ n })).status, 'ok');
    process.kill(newPid, 'SIGKILL');
    await cluster.waitRestarted(a.id, newPid);
    for (let n = 10; n < 20; n++) assert.equal((await other.push({ n })).status, 'ok');
    const top = other.pos.offset;
    for (const c of [...clients, other]) await c.until((x) => x.pos.offset === top, `offset ${top}`, 20000);
    for (const c of clients) {
      assert.deepEqual(c.problems, [], c.name);
      assert.equal(c.socket.openCount, 2, `${c.name} reconnected once`);
      assert.equal(c.joinReplies.at(-1).recovered, true, `${c.name} recovered`);
    }
    assert.deepEqual(other.problems, []);
    assert.equal(other.socket.openCount, 1, 'the other shard\'s client never noticed');
    await waitUntil(() => raws.every((c) => c.closes === 1), { timeout: 10000, what: 'every raw client closed once' });
  });
});
