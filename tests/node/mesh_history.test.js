'use strict';
// History across nodes (docs/CLUSTER.md, History across nodes): three nodes
// on loopback, each a whole `switchboard run` with `--history room:*` on its
// broker and shards, phoenix.js clients on every node on one history topic.
// One node's broker — the topic's owner, by rendezvous hashing of the topic
// over the nodes — sequences it: publishes from every node are acked with
// {offset, epoch} of one stream, every client sees offsets 1..N whole, in
// order, once; a client that reconnects to another node recovers what it
// missed; the owner's broker killed (its daemon restarts it) keeps the
// epoch; the owner node lost whole moves the topic to another node, in a
// new epoch the clients recover into (recovered: false, then on).

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const { it } = require('./lib/cluster');
const { startMesh, meshUp: meshUpOf } = require('./lib/mesh');
const { connect } = require('./lib/phoenix');
const { HistoryClient } = require('./lib/history');
const { scopeFor, waitUntil } = require('./lib/util');

const HEARTBEAT_MS = 200;
const NAMES = ['n1', 'n2', 'n3'];
const RULE = 'room:*=1000/10m';

// broker/topic_owner, in JavaScript: FNV-1a 64 over node, a zero byte and
// the topic, then splitmix64's finalizer; the highest score owns the topic.
const M64 = (1n << 64n) - 1n;
function fnv1a(bytes, h = 0xcbf29ce484222325n) {
  for (const b of bytes) h = ((h ^ BigInt(b)) * 0x100000001b3n) & M64;
  return h;
}
function mix(x) {
  x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M64;
  return x ^ (x >> 31n);
}
function ownerOf(nodes, topic) {
  const score = (n) => mix(fnv1a(Buffer.from(topic), fnv1a([0], fnv1a(Buffer.from(n)))));
  return [...nodes].sort().reduce((best, n) => (score(n) > score(best) ? n : best));
}

const mesh = (s) => startMesh(s, {
  names: NAMES,
  shards: NAMES.map(() => [{ args: ['--history', RULE] }]),
  brokerArgs: ['--history', RULE],
  heartbeatMs: HEARTBEAT_MS,
});
const meshUp = (clusters) => meshUpOf(clusters, NAMES);

async function client(s, cluster, topic, name) {
  const socket = await connect(s, cluster.shards[0].url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
  const c = new HistoryClient(socket, topic, { name });
  const r = await c.join();
  assert.equal(r.status, 'ok', `${name} joins ${topic}: ${JSON.stringify(r)}`);
  return c;
}

// Each client pushes `count` messages, interleaved; all acked.
async function publish(clients, count, tag) {
  const pending = [];
  for (let i = 1; i <= count; i++) {
    for (const c of clients) pending.push(c.push({ from: c.name, tag, i }));
  }
  for (const r of await Promise.all(pending)) assert.equal(r.status, 'ok', JSON.stringify(r));
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const noProblems = (...cs) => {
  for (const c of cs) assert.deepEqual(c.problems, [], `${c.name}'s offsets`);
};

describe('history across three nodes (one owner broker per topic)', () => {
  it('one stream: offsets 1..N everywhere; a client recovers on another node; the owner\'s broker restart keeps the epoch',
    { timeout: 120000 }, async (t) => {
      const s = scopeFor(t);
      const clusters = await mesh(s);
      const topic = 'room:h';
      const owner = ownerOf(NAMES, topic);
      t.diagnostic(`${topic} is owned by ${owner}`);
      const clients = [];
      for (const c of clusters) clients.push(await client(s, c, topic, `on-${c.node}`));
      const epoch = clients[0].pos.epoch;
      for (const c of clients) assert.equal(c.pos.epoch, epoch, `${c.name} joined the owner's stream`);

      await publish(clients, 20, 'first');
      const n = 60;
      for (const c of clients) {
        await c.until((x) => x.pos.offset === n, `offset ${n}`);
        assert.deepEqual(c.offsets(epoch), range(1, n), `${c.name}: 1..${n} whole, in order, once`);
        for (const a of c.acked) assert.equal(a.epoch, epoch, `${c.name}'s oks name the owner's epoch`);
      }
      noProblems(...clients);
      const ownerCluster = clusters[NAMES.indexOf(owner)];
      assert.equal(await ownerCluster.metric(ownerCluster.broker, 'switchboard_broker_history_sequenced_total'), n);

      // A client of a non-owner node leaves; the others publish; it comes
      // back on the third node with its position and recovers exactly what
      // it missed.
      const [away, other] = NAMES.filter((x) => x !== owner);
      const gone = clients[NAMES.indexOf(away)];
      const last = { ...gone.pos };
      await gone.channel.leave();
      const stay = clients.filter((c) => c !== gone);
      await publish(stay, 5, 'while-away');
      const back = new HistoryClient(await connect(s, clusters[NAMES.indexOf(other)].shards[0].url), topic, { name: 'back' });
      back.pos = last;
      const r = await back.join();
      assert.equal(r.status, 'ok');
      assert.equal(back.joinReplies[0].recovered, true, JSON.stringify(back.joinReplies[0]));
      await back.until((x) => x.pos.offset === n + 10, `recovered up to ${n + 10}`);
      assert.deepEqual(back.offsets(epoch), range(n + 1, n + 10));
      noProblems(back, ...stay);

      // The owner's broker killed: its daemon restarts it, it rebuilds the
      // stream from its shard, and the epoch goes on.
      await ownerCluster.restartBroker();
      await meshUp(clusters);
      const all = [...stay, back];
      await publish(all, 5, 'after-restart');
      const top = n + 10 + 15;
      for (const c of all) {
        await c.until((x) => x.pos.offset === top, `offset ${top} after the owner's broker restart`, 15000);
        assert.equal(c.pos.epoch, epoch, `${c.name}: the same epoch`);
      }
      noProblems(...all);
    });

  it('the owner node lost whole: the topic moves to another node in a new epoch, clients recover into it', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const clusters = await mesh(s);
    const topic = 'room:moves';
    const owner = ownerOf(NAMES, topic);
    const survivors = NAMES.filter((x) => x !== owner);
    const next = ownerOf(survivors, topic);
    t.diagnostic(`${topic}: owned by ${owner}, then by ${next}`);
    const clients = [];
    for (const name of survivors) clients.push(await client(s, clusters[NAMES.indexOf(name)], topic, `on-${name}`));
    await publish(clients, 10, 'before');
    const epoch = clients[0].pos.epoch;
    for (const c of clients) await c.until((x) => x.pos.offset === 20, 'offset 20');
    noProblems(...clients);

    const dead = clusters[NAMES.indexOf(owner)];
    await dead.kill9();
    dead.killedWhole = true;
    // The survivors stop counting it within 3 heartbeats; the next sequenced
    // publish starts the new owner's epoch, which every client rejoins into
    // (phx_error, then recovered: false with the new position).
    const nextCluster = clusters[NAMES.indexOf(next)];
    await nextCluster.waitForMetric(nextCluster.broker, 'switchboard_broker_history_owner_nodes', {}, (v) => v === 2,
      { timeout: 3 * HEARTBEAT_MS + 5000 });
    for (const c of survivors.map((x) => clusters[NAMES.indexOf(x)])) {
      await c.waitForMetric(c.broker, 'switchboard_broker_history_owner_nodes', {}, (v) => v === 2, { timeout: 5000 });
    }
    // The first publish after the move starts the new epoch: each shard
    // that sees it sends phx_error, so pushes racing it may be refused
    // ("unmatched topic") while the channel rejoins — one push, its outcome
    // not counted, then wait for every client to have rejoined.
    clients[survivors.indexOf(next)].channel.push('msg', { from: 'trigger' });
    for (const c of clients) {
      await c.until((x) => x.pos.epoch !== epoch, 'the new epoch', 15000);
    }
    const epoch2 = clients[0].pos.epoch;
    for (const c of clients) {
      assert.equal(c.pos.epoch, epoch2, `${c.name}: one new epoch`);
      assert.ok(c.joinReplies.some((r) => r.recovered === false), `${c.name} was told recovered: false`);
    }
    const from = clients.map((c) => c.received.length);
    await publish(clients, 5, 'after');
    const top = Math.max(...clients.map((c) => c.pos.offset));
    for (const [i, c] of clients.entries()) {
      await c.until((x) => x.pos.offset >= top, `offset ${top} in the new epoch`, 15000);
      assert.equal(c.pos.epoch, epoch2, `${c.name}: still the new epoch`);
      // After the rejoin: whole, in order, once.
      const got = c.received.slice(from[i]).map((m) => m.offset);
      assert.deepEqual(got, range(got[0], c.pos.offset), `${c.name}: offsets whole in the new epoch`);
      assert.ok(c.pos.offset >= 10, `${c.name}: the trigger and 10 more (at ${c.pos.offset})`);
    }
    assert.equal(await nextCluster.metric(nextCluster.broker, 'switchboard_broker_history_taken_over_total'), 1);
  });
});
