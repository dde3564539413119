'use strict';
// Three nodes on loopback, each a whole `switchboard run` (daemon, broker,
// shards) with its own ports, linked by their brokers' peer sockets (static
// membership, CURVE keys from `switchboard keygen`): phoenix.js clients on
// every node see one room — broadcasts from clients on different nodes
// arrive whole, once and in order everywhere; presence tracked on each node
// is seen by joiners on every node — and a node's broker killed with
// SIGKILL (its daemon restarts it) leaves the other nodes' deliveries going
// and every node converging again; a node lost whole leaves in one diff
// within 3 heartbeats; a node cut off (its broker stopped) and back loses
// and doubles nothing.

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const { it, metric } = require('./lib/cluster');
const { startMesh, meshUp: meshUpOf, from, range, publishRound } = require('./lib/mesh');
const { connect, join, Presence } = require('./lib/phoenix');
const { scopeFor, waitUntil } = require('./lib/util');

const HEARTBEAT_MS = 200;
const OUTBOX_BOUND = 100000; // the broker's --peer-outbox-messages default
const NAMES = ['n1', 'n2', 'n3'];

// Three nodes, each knowing the other two (lib/mesh).
const mesh = (s, { shards = [2, 1, 1] } = {}) => startMesh(s, { names: NAMES, shards, heartbeatMs: HEARTBEAT_MS });
const meshUp = (clusters, timeout) => meshUpOf(clusters, NAMES, timeout);

const sorted = (xs) => [...xs].sort();

// Three nodes of one shard each, a client on each joined to room:x (a@n1,
// b@n2, c@n3), every client seeing all three.
async function onePerNode(s) {
  const clusters = await mesh(s, { shards: [1, 1, 1] });
  const clients = [];
  for (const [i, cl] of clusters.entries()) {
    clients.push(await client(s, cl.shards[0], `${'abc'[i]}@${cl.node}`, 'room:x'));
  }
  for (const x of clients) await x.waitKeys(['a@n1', 'b@n2', 'c@n3']);
  return { clusters, clients };
}

// A phoenix.js client on `shard`, joined to `topic` with presence `key`:
// every `msg` {from, n} it receives, in order, and its presence list.
async function client(s, shard, key, topic) {
  const socket = await connect(s, shard.url);
  const channel = socket.channel(topic, { presence: { key, meta: { node: key } } });
  const got = [];
  channel.on('msg', (p) => got.push(p));
  const presence = new Presence(channel);
  const r = await join(channel);
  assert.equal(r.status, 'ok', `join of ${key}: ${JSON.stringify(r)}`);
  return {
    key, channel, got, presence,
    keys: () => sorted(presence.list((k) => k)),
    waitKeys(keys, timeout = 10000) {
      const want = JSON.stringify(sorted(keys));
      return waitUntil(() => JSON.stringify(this.keys()) === want,
        { timeout, what: `${key} to see presence ${want} (sees ${JSON.stringify(this.keys())})` });
    },
  };
}

describe('three nodes, one cluster (static membership, CURVE, loopback)', () => {
  it('broadcasts arrive whole, once and in order on every node; presence is cluster-wide', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const [c1, c2, c3] = await mesh(s);
    const topic = 'room:x';
    // One client per node, and a second on node 1's other shard.
    const a = await client(s, c1.shards[0], 'a@n1', topic);
    const b = await client(s, c2.shards[0], 'b@n2', topic);
    const c = await client(s, c3.shards[0], 'c@n3', topic);
    const d = await client(s, c1.shards[1], 'd@n1', topic);
    const all = [a, b, c, d];
    const keys = all.map((x) => x.key);
    for (const x of all) await x.waitKeys(keys);

    // 300 broadcasts: 100 from each of a, b and c, interleaved.
    const senders = [a, b, c];
    await publishRound(senders, 1, 100);
    for (const x of all) {
      for (const sender of senders) {
        if (sender === x) continue;
        await waitUntil(() => from(x, sender.key).length >= 100,
          { timeout: 15000, what: `${x.key} to get 100 from ${sender.key} (has ${from(x, sender.key).length})` });
        assert.deepEqual(from(x, sender.key), range(1, 100), `${x.key} from ${sender.key}: whole, once, in order`);
      }
      assert.equal(from(x, x.key).length, 0, 'a sender is not sent its own broadcast');
    }
    // No broker dropped anything from an outbox (no seq was skipped).
    for (const cl of [c1, c2, c3]) {
      assert.equal(await cl.metric(cl.broker, 'switchboard_broker_peer_dropped_total', { reason: 'gap' }), 0, `${cl.node}: no gap`);
      assert.equal(await cl.metric(cl.broker, 'switchboard_broker_peer_dropped_total', { reason: 'outbox_full' }), 0,
        `${cl.node}: nothing dropped`);
    }

    // A client leaving node 3 leaves every node's presence.
    await c.channel.leave();
    for (const x of [a, b, d]) await x.waitKeys(['a@n1', 'b@n2', 'd@n1']);
    // And a joiner on node 2 sees everyone, wherever they are.
    const e = await client(s, c2.shards[0], 'e@n2', topic);
    await e.waitKeys(['a@n1', 'b@n2', 'd@n1', 'e@n2']);
  });

  it('a node\'s broker killed: the others keep delivering, and all converge', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const { clusters: [c1, c2, c3], clients: [a, b, c] } = await onePerNode(s);
    await publishRound([a, b, c], 1, 20);

    // Node 2's broker dies; its daemon starts a new one. Meanwhile a and c
    // go on publishing (for about half a second: across the restart).
    const killed = c2.kill('broker');
    const during = publishRound([a, c], 21, 120, { batch: 10, pauseMs: 25 });
    await c2.waitRestarted('broker', await killed, { timeout: 15000 });
    await during;
    for (const [x, y] of [[a, c], [c, a]]) {
      await waitUntil(() => from(x, y.key).length >= 120,
        { timeout: 15000, what: `${x.key} to get 120 from ${y.key} (has ${from(x, y.key).length})` });
      assert.deepEqual(from(x, y.key), range(1, 120), `${x.key} from ${y.key}: whole, once, in order across the kill`);
    }
    // And b, on the node whose broker died: what the dead broker had not
    // handed to b's shard was not acked to a's and c's brokers, who send it
    // again to the new one; b's shard drops what it already had.
    for (const y of [a, c]) {
      await waitUntil(() => from(b, y.key).length >= 120,
        { timeout: 15000, what: `b@n2 to get 120 from ${y.key} (has ${from(b, y.key).length})` });
      assert.deepEqual(from(b, y.key), range(1, 120), `b@n2 from ${y.key}: whole, once, in order across its broker's kill`);
    }
    await c2.waitMeshUp({ timeout: 15000 });
    await meshUp([c1, c2, c3]);
    // Converged: presence whole everywhere, and broadcasts flow all ways.
    for (const x of [a, b, c]) await x.waitKeys(['a@n1', 'b@n2', 'c@n3'], 15000);
    await publishRound([a, b, c], 121, 150);
    for (const x of [a, b, c]) {
      for (const y of [a, b, c]) {
        if (x === y) continue;
        await waitUntil(() => from(x, y.key).includes(150),
          { timeout: 15000, what: `${x.key} to get 150 from ${y.key}` });
        const ns = from(x, y.key);
        assert.equal(new Set(ns).size, ns.length, `${x.key} from ${y.key}: no duplicate`);
        assert.deepEqual(ns, [...ns].sort((p, q) => p - q), `${x.key} from ${y.key}: in order`);
        assert.deepEqual(ns.slice(-30), range(121, 150), `${x.key} from ${y.key}: everything after convergence`);
      }
    }
  });

  it('a node lost whole: its presences leave every other node within 3 heartbeats, once', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const { clusters: [, , c3], clients: [a, b, c] } = await onePerNode(s);
    const diffs = { a: [], b: [] };
    a.channel.on('presence_diff', (d) => diffs.a.push(d));
    b.channel.on('presence_diff', (d) => diffs.b.push(d));
    // Node 3's daemon dies, its broker and shard with it.
    const t0 = Date.now();
    await c3.kill9();
    c3.killedWhole = true;
    // Down when its link in is silent for 3 heartbeats (checked five times
    // an interval), plus a client's own ride: 3 intervals and slack.
    for (const x of [a, b]) await x.waitKeys(['a@n1', 'b@n2'], 3 * HEARTBEAT_MS + 2000);
    const took = Date.now() - t0;
    t.diagnostic(`node 3's presence left the other nodes ${took} ms after the kill`);
    for (const [who, ds] of Object.entries(diffs)) {
      const leaves = ds.filter((d) => Object.keys(d.leaves || {}).length > 0);
      assert.equal(leaves.length, 1, `${who}: one leave diff for the topic (${JSON.stringify(ds)})`);
      assert.deepEqual(Object.keys(leaves[0].leaves), ['c@n3']);
    }
    // The survivors go on: a broadcast between them arrives.
    await publishRound([a, b], 1, 10);
    await waitUntil(() => from(b, 'a@n1').length === 10, { what: 'b to get 10 from a' });
    await waitUntil(() => from(a, 'b@n2').length === 10, { what: 'a to get 10 from b' });
  });

  it('a node cut off and back (its broker stopped): presence leaves and returns once, nothing lost or doubled', { timeout: 120000 }, async (t) => {
    const s = scopeFor(t);
    const { clients: [a, b, c], clusters: [c1, , c3] } = await onePerNode(s);
    const joinsOfC = { a: 0, b: 0 };
    a.channel.on('presence_diff', (d) => { if (d.joins && d.joins['c@n3']) joinsOfC.a += 1; });
    b.channel.on('presence_diff', (d) => { if (d.joins && d.joins['c@n3']) joinsOfC.b += 1; });
    // Node 3's broker stops (SIGSTOP): to the others it is a partition.
    await c3.pause('broker');
    for (const x of [a, b]) await x.waitKeys(['a@n1', 'b@n2'], 3 * HEARTBEAT_MS + 2000);
    // Meanwhile a and b go on; what is for c waits in their outboxes.
    await publishRound([a, b], 1, 60);
    // Node 1's queue to node 3 holds them (a's 60, and presence), among the
    // queues of the design; its credit is the outbox bound less that.
    const held = await c1.waitForMetric(c1.broker, 'switchboard_queue_depth', { queue: 'peer_out', peer: 'n3' },
      (v) => v >= 60);
    const credit = await metric(c1.broker, 'switchboard_broker_peer_credit', { peer: 'n3' });
    assert.equal(credit, OUTBOX_BOUND - held, 'credit = --peer-outbox-messages less what the outbox holds');
    await c3.resume('broker');
    // Healed: c's presence is back once on each node, and c gets everything.
    for (const x of [a, b]) await x.waitKeys(['a@n1', 'b@n2', 'c@n3'], 15000);
    for (const y of [a, b]) {
      await waitUntil(() => from(c, y.key).length >= 60,
        { timeout: 15000, what: `c@n3 to get 60 from ${y.key} (has ${from(c, y.key).length})` });
      assert.deepEqual(from(c, y.key), range(1, 60), `c@n3 from ${y.key}: whole, once, in order across the partition`);
    }
    assert.deepEqual(from(a, 'b@n2'), range(1, 60));
    assert.deepEqual(from(b, 'a@n1'), range(1, 60));
    // And c's own broadcasts reach the others again.
    await publishRound([c], 1, 10);
    for (const x of [a, b]) {
      await waitUntil(() => from(x, 'c@n3').length >= 10, { what: `${x.key} to get 10 from c@n3` });
      assert.deepEqual(from(x, 'c@n3'), range(1, 10));
    }
    assert.deepEqual(joinsOfC, { a: 1, b: 1 }, 'c joined again once on each node, not twice');
    // Everything acked: the queue is empty, nothing in flight, the credit whole.
    await c1.waitForMetric(c1.broker, 'switchboard_queue_depth', { queue: 'peer_out', peer: 'n3' }, (v) => v === 0);
    assert.equal(await metric(c1.broker, 'switchboard_broker_peer_in_flight', { peer: 'n3' }), 0);
    assert.equal(await metric(c1.broker, 'switchboard_broker_peer_credit', { peer: 'n3' }), OUTBOX_BOUND);
    await c3.waitForMetric(c3.broker, 'switchboard_queue_depth', { queue: 'peer_in', peer: 'n1' }, (v) => v === 0);
  });
});
