'use strict';
// Per-topic history and recovery on rejoin (docs/WORKER.md, History), with
// the official phoenix.js client and its channel params closure, on a whole
// node under `switchboard run`: offsets in the ref slot and in the sender's
// ok, a client away for 2 s that rejoins and gets exactly what it missed,
// every recovered:false cause, a broker restart that changes no epoch, a
// shard crash whose clients recover, and the HTTP API's publish and history.

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const { startCluster, it } = require('./lib/cluster');
const { connect, disconnect } = require('./lib/phoenix');
const { HistoryClient } = require('./lib/history');
const { scopeFor, waitUntil, delay } = require('./lib/util');

const HISTORY = ['--history', 'room:*=1000/10m', '--recovery-max', '50'];
const KEY = 'history-test-api-key-0123456789';

async function node(s, { shards = 3 } = {}) {
  const dir = fs.mkdtempSync(path.join(require('node:os').tmpdir(), 'sb-hist-'));
  const keyFile = path.join(dir, 'api-key');
  fs.writeFileSync(keyFile, `${KEY}\n`, { mode: 0o600 });
  s.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const cluster = await startCluster({
    shards: Array.from({ length: shards }, () => ({ args: [...HISTORY, '--api-key-file', keyFile] })),
    brokerArgs: ['--history', 'room:*=1000/10m'],
  });
  s.add(() => cluster.stop());
  return cluster;
}

async function client(s, shard, topic, name) {
  const socket = await connect(s, shard.url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
  const c = new HistoryClient(socket, topic, { name });
  const r = await c.join();
  assert.equal(r.status, 'ok', `${name} joins ${topic}: ${JSON.stringify(r)}`);
  return c;
}

function api(shard, method, p, body) {
  const port = shard.port;
  return fetch(`http://127.0.0.1:${port}${p}`, {
    method,
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  }).then(async (r) => ({ status: r.status, body: await r.json() }));
}

const noProblems = (...cs) => {
  for (const c of cs) assert.deepEqual(c.problems, [], `${c.name}'s offsets`);
};

describe('history', () => {
  it('offsets ride in the ref slot and the sender\'s ok, gapless for everyone across shards', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s);
    const [a, b, c] = cluster.shards;
    const alice = await client(s, a, 'room:1', 'alice');
    const bob = await client(s, b, 'room:1', 'bob');
    const carol = await client(s, c, 'room:1', 'carol');
    assert.equal(alice.joinReplies[0].recovered, false);
    assert.equal(alice.joinReplies[0].offset, 0);
    const epoch = alice.joinReplies[0].epoch;
    for (const x of [bob, carol]) assert.equal(x.joinReplies[0].epoch, epoch);
    const pushes = [];
    for (let n = 0; n < 30; n++) {
      const who = [alice, bob, carol][n % 3];
      pushes.push(who.push({ n, from: who.name }));
    }
    for (const r of await Promise.all(pushes)) assert.equal(r.status, 'ok');
    for (const x of [alice, bob, carol]) {
      await x.until((y) => y.pos.offset === 30, 'offset 30');
      // Its own pushes by ok, the others' by delivery: 1..30 once each.
      assert.deepEqual(x.offsets(epoch), Array.from({ length: 30 }, (_, i) => i + 1));
      assert.equal(x.received.filter((m) => m.how === 'ok').length, 10);
    }
    noProblems(alice, bob, carol);
    // Every client saw the same message at each offset.
    const at = (x) => Object.fromEntries(x.received.map((m) => [m.offset, m.payload.n]));
    assert.deepEqual(at(alice), at(bob));
    assert.deepEqual(at(bob), at(carol));
  });

  it('a client away for 2 s rejoins and receives exactly what it missed, then live', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [a, b] = cluster.shards;
    const sender = await client(s, a, 'room:away', 'sender');
    const away = await client(s, b, 'room:away', 'away');
    for (let n = 0; n < 5; n++) assert.equal((await sender.push({ n })).status, 'ok');
    await away.until((x) => x.pos.offset === 5, 'the first five');
    await disconnect(away.socket);
    const t0 = Date.now();
    let n = 5;
    while (Date.now() - t0 < 2000) {
      assert.equal((await sender.push({ n })).status, 'ok');
      n++;
      await delay(50);
    }
    const missed = n - 5;
    away.socket.connect();
    await away.until((x) => x.pos.offset === n, `the ${missed} missed`);
    const last = away.joinReplies[away.joinReplies.length - 1];
    assert.equal(last.recovered, true, JSON.stringify(last));
    assert.equal(last.offset, n);
    const recovered = away.received.filter((m) => m.offset > 5);
    assert.deepEqual(recovered.map((m) => m.payload.n), Array.from({ length: missed }, (_, i) => i + 5));
    // Live again after the recovery.
    assert.equal((await sender.push({ n })).status, 'ok');
    await away.until((x) => x.pos.offset === n + 1, 'a live one');
    noProblems(sender, away);
  });

  it('recovered:false says why not: another epoch, too many, ahead — with the current position', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [a, b] = cluster.shards;
    const sender = await client(s, a, 'room:why', 'sender');
    for (let n = 0; n < 60; n++) sender.push({ n });
    await sender.until((x) => x.pos.offset === 60, '60 acked');
    const socket = await connect(s, b.url);
    const ask = async (recover) => {
      const ch = socket.channel('room:why', recover ? { recover } : {});
      const r = await new Promise((resolve) => ch.join().receive('ok', resolve).receive('error', resolve));
      await new Promise((resolve) => ch.leave().receive('ok', resolve));
      return r;
    };
    const epoch = sender.pos.epoch;
    assert.deepEqual(await ask(null), { epoch, offset: 60, recovered: false });
    assert.deepEqual(await ask({ epoch: 'ffffffffffffffff', offset: 59 }), { epoch, offset: 60, recovered: false });
    // --recovery-max 50: 59 messages is more.
    assert.deepEqual(await ask({ epoch, offset: 1 }), { epoch, offset: 60, recovered: false });
    assert.deepEqual(await ask({ epoch, offset: 61 }), { epoch, offset: 60, recovered: false });
    // Within: recovered, as a string offset too (what a ref slot holds).
    assert.deepEqual(await ask({ epoch, offset: '55' }), { epoch, offset: 60, recovered: true });
    assert.deepEqual(await ask({ epoch, offset: 60 }), { epoch, offset: 60, recovered: true });
  });

  it('a broker restart changes no epoch; a shard crash\'s clients recover what they missed', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [a, b] = cluster.shards;
    const sender = await client(s, a, 'room:crash', 'sender');
    const victim = await client(s, b, 'room:crash', 'victim');
    for (let n = 0; n < 10; n++) assert.equal((await sender.push({ n })).status, 'ok');
    const epoch = sender.pos.epoch;
    await cluster.restartBroker();
    for (let n = 10; n < 20; n++) assert.equal((await sender.push({ n })).status, 'ok');
    assert.equal(sender.pos.epoch, epoch);
    assert.equal(sender.pos.offset, 20);
    await victim.until((x) => x.pos.offset === 20, 'twenty');
    // The victim's shard dies; it reconnects (to the restarted shard) and recovers.
    const old = await cluster.kill(b.id);
    for (let n = 20; n < 40; n++) assert.equal((await sender.push({ n })).status, 'ok');
    await cluster.waitRestarted(b.id, old);
    await victim.until((x) => x.pos.offset === 40, 'forty', 15000);
    assert.ok(victim.joinReplies.length >= 2);
    assert.ok(victim.joinReplies.slice(1).every((r) => r.recovered && r.epoch === epoch), JSON.stringify(victim.joinReplies));
    assert.deepEqual(victim.received.map((m) => m.payload.n), Array.from({ length: 40 }, (_, i) => i));
    noProblems(sender, victim);
  });

  it('the HTTP API publishes with an offset and reads a topic\'s history', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [a, b] = cluster.shards;
    const listener = await client(s, b, 'room:api', 'listener');
    const r1 = await api(a, 'POST', '/api/publish', { topic: 'room:api', event: 'msg', payload: { n: 1 } });
    assert.equal(r1.status, 200, JSON.stringify(r1.body));
    assert.deepEqual(r1.body, { ok: true, offset: 1, epoch: listener.pos.epoch });
    const r2 = await api(a, 'POST', '/api/broadcast', { topics: ['room:api', 'other:x'], event: 'msg', payload: { n: 2 } });
    assert.equal(r2.status, 200, JSON.stringify(r2.body));
    assert.deepEqual(r2.body, { ok: true, offsets: { 'room:api': { offset: 2, epoch: listener.pos.epoch } } });
    await listener.until((x) => x.pos.offset === 2, 'both');
    const h = await api(b, 'GET', '/api/history?topic=room:api&since=0&limit=10');
    assert.equal(h.status, 200, JSON.stringify(h.body));
    assert.deepEqual(h.body, {
      topic: 'room:api',
      epoch: listener.pos.epoch,
      top: 2,
      first: 1,
      messages: [{ offset: 1, event: 'msg', payload: { n: 1 } }, { offset: 2, event: 'msg', payload: { n: 2 } }],
    });
    const since = await api(a, 'GET', '/api/history?topic=room:api&since=1');
    assert.deepEqual(since.body.messages.map((m) => m.offset), [2]);
    const none = await api(a, 'GET', '/api/history?topic=other:x');
    assert.equal(none.status, 404);
    assert.equal(none.body.error.code, 'no_history');
    noProblems(listener);
  });
});
