'use strict';
// A whole node under `switchboard run` — broker and shards, each shard on its
// own supervisor-bound port — with real phoenix.js clients: broadcasts and
// presence across shards, a broker killed under load (nothing accepted is
// lost or doubled, nothing refused is delivered, no client is disconnected),
// a shard killed (one presence_diff per topic with all its leaves, its
// clients come back by themselves), and a shard that stops reading (its
// queue on the broker is bounded, the other shards keep up).

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const { startCluster, it } = require('./lib/cluster');
const { connect, join, push, outcome, record, next, Presence } = require('./lib/phoenix');
const { scopeFor, waitUntil, withTimeout, delay } = require('./lib/util');

const HEARTBEAT_MS = 200;

// A node for one test, stopped (SIGTERM, exit 0) when the test ends, after
// the test's clients are gone (they are added to the scope later).
async function node(s, opts) {
  const cluster = await startCluster({ heartbeatMs: HEARTBEAT_MS, ...opts });
  s.add(() => cluster.stop());
  return cluster;
}

const sorted = (xs) => [...xs].sort();

// A phoenix.js socket on `shard`, joined to each of `topics` (with presence
// `key` unless it is null). Per topic: the channel, an Inbox of `events` and
// of raw presence_state / presence_diff pushes, a phoenix.js Presence, and
// waitFor(pred) for its list.
async function member(s, shard, key, topics, { events = [], socketOpts = {} } = {}) {
  const socket = await connect(s, shard.url, socketOpts);
  const m = { key, socket, shard, ch: {} };
  for (const topic of topics) {
    const params = key === null ? {} : { presence: { key, meta: { name: key } } };
    const channel = socket.channel(topic, params);
    const inbox = record(channel, [...events, 'presence_state', 'presence_diff']);
    const presence = new Presence(channel);
    const waiters = new Set();
    presence.onSync(() => {
      for (const w of [...waiters]) w();
    });
    const c = { channel, inbox, presence };
    c.keys = () => sorted(presence.list((k) => k));
    // phx_ref of every meta, by key.
    c.refs = () => Object.fromEntries(presence.list((k, { metas }) => [k, sorted(metas.map((x) => x.phx_ref))]));
    c.waitFor = (pred, what = 'a presence list') => {
      let check;
      const p = new Promise((resolve) => {
        check = () => {
          if (pred(c.keys(), c)) {
            waiters.delete(check);
            resolve(c.keys());
          }
        };
        waiters.add(check);
        check();
      });
      return withTimeout(p, 10000, `${what} on ${topic} at ${key} (now ${JSON.stringify(c.keys())})`)
        .finally(() => waiters.delete(check));
    };
    c.waitKeys = (keys) => c.waitFor((l) => JSON.stringify(l) === JSON.stringify(sorted(keys)), `keys ${sorted(keys)}`);
    const r = await join(channel);
    assert.equal(r.status, 'ok', `join of ${key} to ${topic} on ${shard.id}: ${JSON.stringify(r)}`);
    m.ch[topic] = c;
  }
  return m;
}

// Pushes with a steady rate: `count` pushes of `event` {n} on `channel`, n
// from `first`, one every 1000/rate ms (late ticks are caught up at once).
// `onTick(i)` runs before push i (may push more itself). Returns the pushes'
// outcome promises, by n.
async function steadyPublish(channel, event, { first = 1, count, rate, onTick = () => {}, outcomes = new Map() }) {
  const period = 1000 / rate;
  const t0 = Date.now();
  for (let i = 0; i < count; i++) {
    const due = t0 + i * period;
    const wait = due - Date.now();
    if (wait > 0) await delay(wait);
    await onTick(i);
    const n = first + i;
    outcomes.set(n, outcome(channel.push(event, { n }), { what: `the reply to ${event} ${n}` }));
  }
  return outcomes;
}

// Counts received `event` {n} per n on a channel.
function numberCounter(channel, event) {
  const counts = new Map();
  const order = [];
  channel.on(event, (payload) => {
    counts.set(payload.n, (counts.get(payload.n) || 0) + 1);
    order.push(payload.n);
  });
  return { counts, order, has: (n) => counts.has(n) };
}

// "1-5,7,9-12": numbers as runs (sorted first unless `sort` is false).
function ranges(ns, sort = true) {
  const xs = sort ? [...ns].sort((a, b) => a - b) : [...ns];
  const out = [];
  for (let i = 0; i < xs.length;) {
    let j = i;
    while (j + 1 < xs.length && xs[j + 1] === xs[j] + 1) j++;
    out.push(i === j ? `${xs[i]}` : `${xs[i]}-${xs[j]}`);
    i = j + 1;
  }
  return out.join(',');
}

// The mesh counters of the broker and every shard, for failure messages.
async function meshDiag(cluster) {
  const pick = [/^switchboard_broker_/, /^switchboard_worker_cluster_messages_total/, /^switchboard_worker_broker_/,
    /^switchboard_queue_depth/, /^switchboard_worker_broadcasts_refused_total/];
  const out = [];
  for (const target of [cluster.broker, ...cluster.shards]) {
    try {
      const text = await cluster.scrape(target);
      const lines = text.split('\n').filter((l) => !l.startsWith('#') && pick.some((re) => re.test(l)));
      out.push(`[${target.id}] ${lines.join('; ')}`);
    } catch (e) {
      out.push(`[${target.id}] scrape failed: ${e.message}`);
    }
  }
  return out.join('\n');
}

describe('a node: broker and shards under the supervisor', () => {
  it('two shards: broadcasts both ways, presence across shards, a leave is a diff on the other shard', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [s0, s1] = cluster.shards;
    const topic = 'room:pair';

    const alice = await member(s, s0, 'alice', [topic], { events: ['shout'] });
    await alice.ch[topic].waitKeys(['alice']);

    const bob = await member(s, s1, 'bob', [topic], { events: ['shout'] });
    // Bob's shard had no subscriber of the topic: his presence_state waits
    // for the broker's snapshot and holds the whole cluster all the same.
    const bobState = await next(bob.ch[topic].inbox, 'presence_state');
    assert.deepEqual(sorted(Object.keys(bobState.payload)), ['alice', 'bob'],
      `bob's presence_state: ${JSON.stringify(bobState.payload)}`);
    await bob.ch[topic].waitKeys(['alice', 'bob']);
    // (Alice's first diff is her own join: the joiner gets its diff too.)
    const joinDiff = await next(alice.ch[topic].inbox, 'presence_diff', (pl) => 'bob' in pl.joins);
    assert.deepEqual(Object.keys(joinDiff.payload.joins), ['bob'], `diff at alice: ${JSON.stringify(joinDiff.payload)}`);
    assert.deepEqual(joinDiff.payload.leaves, {});
    assert.equal(joinDiff.payload.joins.bob.metas[0].name, 'bob');
    await alice.ch[topic].waitKeys(['alice', 'bob']);

    // A second joiner on shard 1: its presence_state holds the whole cluster.
    const carol = await member(s, s1, 'carol', [topic], { events: ['shout'] });
    const carolState = await next(carol.ch[topic].inbox, 'presence_state');
    assert.deepEqual(sorted(Object.keys(carolState.payload)), ['alice', 'bob', 'carol'],
      `carol's presence_state: ${JSON.stringify(carolState.payload)}`);
    assert.equal(carolState.payload.alice.metas[0].name, 'alice');
    const carolDiff = await next(alice.ch[topic].inbox, 'presence_diff', (pl) => 'carol' in pl.joins);
    assert.deepEqual(Object.keys(carolDiff.payload.joins), ['carol']);
    for (const m of [alice, bob, carol]) await m.ch[topic].waitKeys(['alice', 'bob', 'carol']);
    // Each shard holds the other's presence on the topic: shard 0 bob's and
    // carol's metas, shard 1 alice's.
    const remoteMetas = 'switchboard_worker_remote_presence_metas';
    const remoteBytes = 'switchboard_worker_remote_presence_bytes';
    await cluster.waitForMetric(s0, remoteMetas, {}, (v) => v === 2);
    await cluster.waitForMetric(s1, remoteMetas, {}, (v) => v === 1);
    const bytesBefore = await cluster.metric(s0, remoteBytes);
    // At least each key and its meta's name ("bob", "carol") twice: the text is all held.
    assert.ok(bytesBefore > 2 * 'bobcarol'.length, `shard 0 holds ${bytesBefore} bytes of remote presence`);

    // Broadcasts both ways, payload intact; the sender never gets its own.
    const fromAlice = { from: 'alice', text: 'héllo ✓ "quoted"\n', nested: { list: [1, 2.5, -3, null, true], deep: { x: 'y' } } };
    assert.equal((await push(alice.ch[topic].channel, 'shout', fromAlice)).status, 'ok');
    assert.deepEqual((await next(bob.ch[topic].inbox, 'shout')).payload, fromAlice);
    assert.deepEqual((await next(carol.ch[topic].inbox, 'shout')).payload, fromAlice);
    const fromBob = { from: 'bob', n: 1, big: 'x'.repeat(20000) };
    assert.equal((await push(bob.ch[topic].channel, 'shout', fromBob)).status, 'ok');
    assert.deepEqual((await next(alice.ch[topic].inbox, 'shout')).payload, fromBob);
    assert.deepEqual((await next(carol.ch[topic].inbox, 'shout')).payload, fromBob);
    const fromBob2 = { from: 'bob', n: 2 };
    assert.equal((await push(bob.ch[topic].channel, 'shout', fromBob2)).status, 'ok');
    assert.deepEqual((await next(alice.ch[topic].inbox, 'shout')).payload, fromBob2);
    assert.deepEqual((await next(carol.ch[topic].inbox, 'shout')).payload, fromBob2);
    // Anything the broker had routed back to alice would have come before
    // bob's messages on the same link.
    const shoutsAt = (m) => m.ch[topic].inbox.all.filter((x) => x.event === 'shout').map((x) => x.payload.from);
    assert.deepEqual(shoutsAt(alice), ['bob', 'bob'], 'alice got only bob\'s shouts');
    assert.deepEqual(shoutsAt(bob), ['alice'], 'bob got only alice\'s shout');
    assert.deepEqual(shoutsAt(carol), ['alice', 'bob', 'bob']);
    // Publish → deliver latency of what came from the other shard: one
    // observation per broadcast delivered on a shard (alice's on shard 1,
    // bob's two on shard 0), from the read on the publishing shard.
    const latency = 'switchboard_worker_deliver_latency_seconds';
    const fromOther = { source: 'cluster' };
    await cluster.waitForMetric(s1, `${latency}_count`, fromOther, (v) => v === 1);
    await cluster.waitForMetric(s0, `${latency}_count`, fromOther, (v) => v === 2);
    const sum0 = await cluster.metric(s0, `${latency}_sum`, fromOther);
    assert.ok(sum0 > 0 && sum0 < 10, `shard 0's cross-shard latency sum ${sum0} s`);
    assert.equal(await cluster.metric(s0, `${latency}_bucket`, { ...fromOther, le: '+Inf' }), 2);

    // Bob leaves: a presence_diff leave on shard 0.
    await new Promise((resolve) => bob.ch[topic].channel.leave().receive('ok', resolve));
    const leaveDiff = await next(alice.ch[topic].inbox, 'presence_diff', (pl) => Object.keys(pl.leaves).length > 0);
    assert.deepEqual(leaveDiff.payload.joins, {}, `leave diff at alice: ${JSON.stringify(leaveDiff.payload)}`);
    assert.deepEqual(Object.keys(leaveDiff.payload.leaves), ['bob']);
    await alice.ch[topic].waitKeys(['alice', 'carol']);
    await carol.ch[topic].waitKeys(['alice', 'carol']);
    await cluster.waitForMetric(s0, remoteMetas, {}, (v) => v === 1);
    const bytesAfter = await cluster.metric(s0, remoteBytes);
    assert.ok(bytesAfter > 0 && bytesAfter < bytesBefore, `remote presence bytes ${bytesBefore} → ${bytesAfter}`);
    // Alice's diffs, in order: her own join, bob's, carol's, bob's leave.
    const diffsAtAlice = alice.ch[topic].inbox.all.filter((x) => x.event === 'presence_diff')
      .map((x) => [Object.keys(x.payload.joins), Object.keys(x.payload.leaves)]);
    assert.deepEqual(diffsAtAlice, [[['alice'], []], [['bob'], []], [['carol'], []], [[], ['bob']]]);
  });

  it('three shards: a broadcast reaches each other shard once, a topic reaches only its shards, presence everywhere', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 3 });
    const [s0, s1, s2] = cluster.shards;
    const tri = 'room:tri';
    const duo = 'room:duo';
    const other = 'room:other';

    const p = [];
    for (const [i, shard] of cluster.shards.entries()) p.push(await member(s, shard, `p${i}`, [tri], { events: ['shout'] }));
    for (const m of p) await m.ch[tri].waitKeys(['p0', 'p1', 'p2']);

    const d0 = await member(s, s0, 'd0', [duo, other], { events: ['shout'] });
    const d1 = await member(s, s1, 'd1', [duo], { events: ['shout'] });
    const q2 = await member(s, s2, 'q2', [other], { events: ['shout'] });
    const seenAtQ2 = [];
    q2.socket.onMessage((msg) => seenAtQ2.push(msg));
    await d1.ch[duo].waitKeys(['d0', 'd1']);
    await q2.ch[other].waitKeys(['d0', 'q2']);

    // Five numbered broadcasts from shard 0, then a sentinel: every number
    // exactly once at shards 1 and 2.
    const counts = [new Map(), new Map()];
    for (const [j, m] of [p[1], p[2]].entries()) {
      m.ch[tri].channel.on('shout', (pl) => counts[j].set(pl.n, (counts[j].get(pl.n) || 0) + 1));
    }
    for (let n = 1; n <= 5; n++) assert.equal((await push(p[0].ch[tri].channel, 'shout', { n })).status, 'ok');
    assert.equal((await push(p[0].ch[tri].channel, 'shout', { n: 'end' })).status, 'ok');
    await next(p[1].ch[tri].inbox, 'shout', (pl) => pl.n === 'end');
    await next(p[2].ch[tri].inbox, 'shout', (pl) => pl.n === 'end');
    for (const c of counts) {
      assert.deepEqual([...c.entries()], [[1, 1], [2, 1], [3, 1], [4, 1], [5, 1], ['end', 1]]);
    }
    assert.ok(!p[0].ch[tri].inbox.seen((x) => x.event === 'shout'), 'the sender got its own broadcast');

    // The duo topic is joined on shards 0 and 1 only: shard 2 hears nothing
    // of it. A sentinel on another topic that shard 2 subscribes, sent after
    // the duo messages arrived, must be the only delivery shard 2 gets.
    const deliveredBefore = await cluster.metric(s2, 'switchboard_worker_cluster_messages_total', { kind: 'delivered' });
    for (let n = 1; n <= 3; n++) assert.equal((await push(d0.ch[duo].channel, 'shout', { n })).status, 'ok');
    for (let n = 1; n <= 3; n++) assert.equal((await next(d1.ch[duo].inbox, 'shout')).payload.n, n);
    assert.equal((await push(d0.ch[other].channel, 'shout', { n: 'sentinel' })).status, 'ok');
    assert.equal((await next(q2.ch[other].inbox, 'shout')).payload.n, 'sentinel');
    const deliveredAfter = await cluster.metric(s2, 'switchboard_worker_cluster_messages_total', { kind: 'delivered' });
    assert.equal(deliveredAfter - deliveredBefore, 1, 'deliveries to shard 2 besides the sentinel');
    assert.deepEqual(seenAtQ2.filter((msg) => msg.topic === duo), [], 'shard 2\'s client got frames of the duo topic');
    assert.deepEqual(seenAtQ2.filter((msg) => msg.event === 'shout').map((msg) => msg.payload.n), ['sentinel']);

    // Presence: all three keys everywhere.
    for (const m of p) assert.deepEqual(m.ch[tri].keys(), ['p0', 'p1', 'p2'], `presence at ${m.key}`);
  });

  it('a stream of broadcasts that starts with the node arrives whole and in order on the other shard', async (t) => {
    // A new broker settles first (it holds publishes until every live shard
    // had time to say hello); a stream that runs across the end of that
    // window must come out whole and in order.
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [A, B] = cluster.shards;
    const topic = 'room:stream';
    const COUNT = 300;
    const pub = await member(s, A, null, [topic], { events: ['warm'] });
    const sub = await member(s, B, null, [topic]);
    const atB = numberCounter(sub.ch[topic].channel, 'num');
    const started = Date.now();
    const outcomes = await steadyPublish(pub.ch[topic].channel, 'num', { count: COUNT, rate: 200 });
    for (const [n, p] of outcomes) assert.equal((await p).status, 'ok', `num ${n}`);
    const publishedAt = Date.now();
    try {
      await waitUntil(() => atB.counts.size === COUNT, { timeout: 5000, interval: 20, what: `all ${COUNT} at shard 1` });
    } catch (e) {
      throw new Error(`${e.message}: published from ${started - cluster.startedAt} ms after the node was launched, ` +
        `for ${publishedAt - started} ms; shard 1's subscriber got ${ranges(atB.order, false)}\n${await meshDiag(cluster)}`);
    }
    assert.deepEqual(atB.order, Array.from({ length: COUNT }, (_, i) => i + 1), 'every number once, in order');
  });

  // Refusals: shard A runs with --max-outbox 20 and the publisher pushes a
  // burst of 60 in the same tick as the broker's SIGKILL, on top of its
  // steady 150/s. Nothing can ack them before a new broker is up (that takes
  // a fork, an exec and a hello), so at least 40 of the burst are refused:
  // refused > 0 is asserted.
  it('kill -9 of the broker under load: no client disconnected, every accepted broadcast delivered exactly once', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: [{ args: ['--max-outbox', '20'] }, {}] });
    const [A, B] = cluster.shards;
    const topic = 'room:load';
    const STEADY = 450; // at 150/s: 3 s
    const RATE = 150;
    const KILL_AT = 150; // ~1 s in
    const BURST = 60;

    const pub = await member(s, A, 'pub', [topic], { events: ['shout'] });
    const subA = await member(s, A, 'subA', [topic], { events: ['shout'] });
    const subB = await member(s, B, 'subB', [topic], { events: ['shout'] });
    for (const m of [pub, subA, subB]) await m.ch[topic].waitKeys(['pub', 'subA', 'subB']);
    const got = { subA: numberCounter(subA.ch[topic].channel, 'num'), subB: numberCounter(subB.ch[topic].channel, 'num'),
      pub: numberCounter(pub.ch[topic].channel, 'num') };
    const sockets = [pub.socket, subA.socket, subB.socket];
    const connsBefore = [await cluster.metric(A, 'switchboard_worker_connections'),
      await cluster.metric(B, 'switchboard_worker_connections')];
    assert.deepEqual(connsBefore, [2, 1]);
    const epochBefore = await cluster.metric(A, 'switchboard_worker_broker_epoch');
    assert.equal(await cluster.metric(B, 'switchboard_worker_broker_epoch'), epochBefore);
    const brokerPid = await cluster.pid('broker');

    // A's outbox to the broker (unacked publishes), sampled throughout.
    const outbox = [];
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        outbox.push(await cluster.metric(A, 'switchboard_queue_depth', { queue: 'broker_out' }));
        await delay(50);
      }
    })();

    let next_n = STEADY + 1; // burst numbers follow the steady ones
    const started = Date.now();
    let killedAt = 0;
    const outcomes = new Map();
    await steadyPublish(pub.ch[topic].channel, 'num', {
      count: STEADY,
      rate: RATE,
      onTick: (i) => {
        if (i !== KILL_AT) return;
        process.kill(brokerPid, 'SIGKILL');
        killedAt = Date.now();
        for (let k = 0; k < BURST; k++) {
          const n = next_n++;
          outcomes.set(n, outcome(pub.ch[topic].channel.push('num', { n }), { what: `the reply to num ${n}` }));
        }
      },
      outcomes,
    });
    const published = outcomes.size;
    const results = new Map();
    for (const [n, p] of outcomes) results.set(n, await p);
    const publishMs = Date.now() - started;
    sampling = false;
    await sampler;

    const ok = [];
    const refused = [];
    const odd = [];
    for (const [n, r] of results) {
      if (r.status === 'ok') ok.push(n);
      else if (r.status === 'error' && r.response && r.response.reason === 'unavailable') refused.push(n);
      else odd.push([n, r]);
    }
    assert.deepEqual(odd, [], 'every push gets ok or error "unavailable"');

    // Every ok'd number reaches both subscribers (stragglers come after the
    // new broker welcomed both shards and the outbox was re-sent).
    const missing = () => ['subA', 'subB'].map((k) => ok.filter((n) => !got[k].has(n)));
    try {
      await waitUntil(() => missing().every((l) => l.length === 0), { timeout: 15000, interval: 50, what: 'every accepted number at both subscribers' });
    } catch (e) {
      const [ma, mb] = missing();
      throw new Error(`${e.message}: missing at subA ${ma.length} (${ranges(ma)}), at subB ${mb.length} (${ranges(mb)}); ` +
        `ok ${ranges(ok)}; refused ${ranges(refused)}; received at subB in order ${ranges(got.subB.order, false)}\n` +
        `${await meshDiag(cluster)}`);
    }
    await delay(500); // room for a duplicate to show up
    console.log(`broker kill under load: published ${published} in ${publishMs} ms, ok ${ok.length}, ` +
      `refused ${refused.length}, received subA ${got.subA.counts.size} subB ${got.subB.counts.size}, ` +
      `first refused ${refused.length ? Math.min(...refused) : '-'}, broker killed ${killedAt - started} ms in, ` +
      `A's outbox sampled up to ${Math.max(...outbox.filter((x) => x !== undefined))}`);

    const refusedSet = new Set(refused);
    for (const k of ['subA', 'subB']) {
      const dups = [...got[k].counts].filter(([, c]) => c !== 1);
      assert.deepEqual(dups, [], `numbers received more than once at ${k}`);
      const stray = [...got[k].counts.keys()].filter((n) => refusedSet.has(n));
      assert.deepEqual(stray, [], `refused numbers received at ${k}`);
      const unknown = [...got[k].counts.keys()].filter((n) => !results.has(n));
      assert.deepEqual(unknown, [], `numbers never published received at ${k}`);
      assert.equal(got[k].counts.size, ok.length, `${k} received every accepted number`);
    }
    assert.equal(got.pub.counts.size, 0, 'the publisher received its own broadcasts');
    assert.equal(ok.length + refused.length, published, 'delivered + refused == published');
    assert.ok(refused.length > 0, 'some broadcasts were refused while the broker was down');
    assert.ok(refused.length >= BURST - 20, `at least ${BURST - 20} of the burst refused (refused ${refused.length})`);
    assert.ok(ok.length > STEADY / 2, `most steady broadcasts accepted (ok ${ok.length})`);
    assert.equal(await cluster.metric(A, 'switchboard_worker_broadcasts_refused_total'), refused.length);

    // The supervisor restarted the broker; both shards were welcomed by it.
    const restarted = await cluster.waitRestarted('broker', brokerPid);
    assert.equal(restarted.restarts, 1);
    assert.equal(restarted.last_exit.signal, 'SIGKILL');
    const epochAfter = await cluster.metric(cluster.broker, 'switchboard_broker_epoch');
    assert.notEqual(epochAfter, epochBefore);
    for (const sh of [A, B]) {
      await cluster.waitForMetric(sh, 'switchboard_worker_broker_epoch', {}, (v) => v === epochAfter);
      await cluster.waitForMetric(sh, 'switchboard_worker_broker_up', {}, (v) => v === 1);
    }

    // Presence resynced: the new broker holds all three, a fresh client on B
    // gets A's clients in its presence_state, and B's old client still lists
    // everyone.
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_presences', {}, (v) => v === 3);
    const fresh = await member(s, B, 'fresh', [topic], { events: ['shout'] });
    const state = await next(fresh.ch[topic].inbox, 'presence_state');
    assert.deepEqual(sorted(Object.keys(state.payload)), ['fresh', 'pub', 'subA', 'subB'],
      `fresh client's presence_state: ${JSON.stringify(state.payload)}`);
    for (const m of [pub, subA, subB, fresh]) await m.ch[topic].waitKeys(['fresh', 'pub', 'subA', 'subB']);

    // Broadcasts flow both ways again.
    const from = (who) => (pl) => pl.from === who;
    assert.equal((await push(fresh.ch[topic].channel, 'shout', { from: 'B' })).status, 'ok');
    await next(subA.ch[topic].inbox, 'shout', from('B'));
    await next(pub.ch[topic].inbox, 'shout', from('B'));
    assert.equal((await push(subA.ch[topic].channel, 'shout', { from: 'A' })).status, 'ok');
    await next(subB.ch[topic].inbox, 'shout', from('A'));
    await next(fresh.ch[topic].inbox, 'shout', from('A'));

    // A's outbox: never over --max-outbox, empty once everything is acked.
    assert.ok(outbox.every((d) => d !== undefined), `switchboard_queue_depth{queue="broker_out"} missing from shard A's metrics: ${JSON.stringify(outbox)}`);
    assert.ok(outbox.every((d) => d <= 20), `A's outbox over 20: ${JSON.stringify(outbox)}`);
    await cluster.waitForMetric(A, 'switchboard_queue_depth', { queue: 'broker_out' }, (v) => v === 0);

    // No client socket was closed at any point.
    for (const [i, sock] of sockets.entries()) {
      assert.deepEqual(sock.closes.all, [], `socket ${i} closed`);
      assert.deepEqual(sock.errors.all.map(String), [], `socket ${i} errors`);
      assert.equal(sock.openCount, 1, `socket ${i} opened again`);
    }
    assert.equal(await cluster.metric(A, 'switchboard_worker_connections'), 2);
    assert.equal(await cluster.metric(B, 'switchboard_worker_connections'), 2); // subB and fresh
    assert.equal(await cluster.metric(A, 'switchboard_worker_closes_total'), 0);
    assert.equal(await cluster.metric(B, 'switchboard_worker_closes_total'), 0);
  });

  it('kill -9 of a shard: one presence_diff per topic with all its leaves, then its clients come back', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 2 });
    const [A, C] = cluster.shards;
    const k1 = 'room:k1';
    const k2 = 'room:k2';
    const misses = 3; // the broker's default

    const obs = await member(s, A, 'obs', [k1, k2]);
    const onC = [];
    for (const key of ['c1', 'c2', 'c3']) onC.push(await member(s, C, key, [k1, k2]));
    onC.push(await member(s, C, 'c4', [k1]));
    const expected = { [k1]: ['c1', 'c2', 'c3', 'c4', 'obs'], [k2]: ['c1', 'c2', 'c3', 'obs'] };
    for (const topic of [k1, k2]) await obs.ch[topic].waitKeys(expected[topic]);
    for (const m of onC) for (const topic of Object.keys(m.ch)) await m.ch[topic].waitKeys(expected[topic]);

    // What the observer knows of C's metas before the kill.
    const oldRefs = {};
    for (const topic of [k1, k2]) {
      const refs = obs.ch[topic].refs();
      delete refs.obs;
      oldRefs[topic] = refs;
      for (const r of Object.values(refs)) assert.equal(r.length, 1);
    }
    // Raw presence_diff pushes from now on.
    const diffs = { [k1]: [], [k2]: [] };
    for (const topic of [k1, k2]) {
      obs.ch[topic].channel.on('presence_diff', (payload) => diffs[topic].push({ at: Date.now(), payload }));
    }

    const oldPid = await cluster.kill(C.id);
    const killedAt = Date.now();
    const leaveDiffs = (topic) => diffs[topic].filter((d) => Object.keys(d.payload.leaves).length > 0);
    const bound = HEARTBEAT_MS * misses + 2000;
    await waitUntil(() => leaveDiffs(k1).length > 0 && leaveDiffs(k2).length > 0,
      { timeout: bound, interval: 20, what: `a leave diff on both topics within ${bound} ms of the kill` });

    // C comes back (same port, held by the supervisor); its phoenix.js
    // clients reconnect and rejoin by themselves.
    const restarted = await cluster.waitRestarted(C.id, oldPid);
    assert.equal(restarted.last_exit.signal, 'SIGKILL');
    for (const m of onC) {
      await m.socket.opens.take((n) => n === 2, { what: `${m.key} to reconnect` });
    }
    for (const topic of [k1, k2]) {
      await obs.ch[topic].waitFor((keys, c) => {
        const refs = c.refs();
        return JSON.stringify(keys) === JSON.stringify(expected[topic]) &&
          Object.entries(oldRefs[topic]).every(([key, old]) => refs[key].length === 1 && refs[key][0] !== old[0]);
      }, `C's clients back with new metas`);
    }
    for (const m of onC) {
      for (const topic of Object.keys(m.ch)) {
        assert.equal(m.ch[topic].channel.state, 'joined', `${m.key} rejoined ${topic}`);
        await m.ch[topic].waitKeys(expected[topic]);
      }
    }
    await delay(HEARTBEAT_MS * misses); // room for a second leave diff

    for (const topic of [k1, k2]) {
      const leaves = leaveDiffs(topic);
      assert.equal(leaves.length, 1, `leave diffs on ${topic}: ${JSON.stringify(leaves.map((d) => d.payload))}`);
      const [d] = leaves;
      assert.deepEqual(d.payload.joins, {}, `the leave diff on ${topic} has joins`);
      const got = Object.fromEntries(Object.entries(d.payload.leaves).map(([key, { metas }]) => [key, sorted(metas.map((x) => x.phx_ref))]));
      assert.deepEqual(got, oldRefs[topic], `the leave diff on ${topic} holds all of C's metas`);
      assert.ok(d.at - killedAt <= bound, `leave diff on ${topic} ${d.at - killedAt} ms after the kill`);
      // Every other diff is a rejoin: joins only.
      for (const other of diffs[topic].filter((x) => x !== d)) {
        assert.deepEqual(other.payload.leaves, {}, `another diff on ${topic}: ${JSON.stringify(other.payload)}`);
      }
      console.log(`shard kill: leave diff on ${topic} ${d.at - killedAt} ms after the kill; ${diffs[topic].length} diffs in all`);
    }
  });

  // One broadcast from `pub` that every member of `subs` receives: the
  // subscriptions are in place and the broker has settled (a publish held
  // while it settles is released only when it has).
  async function warmUp(pub, subs, topic) {
    assert.equal((await push(pub.ch[topic].channel, 'warm', {})).status, 'ok');
    for (const m of subs) await next(m.ch[topic].inbox, 'warm', () => true, { timeout: 5000 });
  }

  // Waits until `counter` holds 1..count, at the latest at `deadline`.
  async function receivedBy(cluster, counter, count, deadline, who) {
    try {
      await waitUntil(() => counter.counts.size === count, { timeout: Math.max(100, deadline - Date.now()), interval: 20,
        what: `${who} to receive all ${count} within the publishing time + 2 s` });
    } catch (e) {
      throw new Error(`${e.message}: got ${ranges(counter.order, false)}\n${await meshDiag(cluster)}`);
    }
  }

  // Publishes `count` broadcasts from `pub` at `rate` while shard C is
  // stopped, polling the broker's queue for C; returns what it saw.
  async function publishWhileStopped(cluster, C, channel, { first, count, rate }) {
    const depth = [];
    let polling = true;
    const poller = (async () => {
      while (polling) {
        depth.push(await cluster.metric(cluster.broker, 'switchboard_queue_depth', { queue: 'shard_out', peer: C.name }));
        await delay(100);
      }
    })();
    const started = Date.now();
    const outcomes = await steadyPublish(channel, 'num', { first, count, rate });
    for (const [n, p] of outcomes) {
      const r = await p;
      assert.equal(r.status, 'ok', `num ${n}: ${JSON.stringify(r)}`);
    }
    const publishedAt = Date.now();
    polling = false;
    await poller;
    return { depth, started, publishedAt };
  }

  it('a stopped shard (shed_oldest): its broker queue is bounded and shed, the other shards keep up', async (t) => {
    const s = scopeFor(t);
    const QUEUE = 100;
    const WINDOW = 20;
    const cluster = await node(s, {
      shards: [{}, {}, { args: ['--credit-window', String(WINDOW)] }],
      // 50 misses of 200 ms: the stopped shard is not expired during the test.
      brokerArgs: ['--queue-max-messages', String(QUEUE), '--overload', 'shed_oldest', '--misses', '50'],
    });
    const [A, B, C] = cluster.shards;
    const topic = 'room:slow';
    const COUNT = 400;
    const RATE = 200; // 2 s

    const pub = await member(s, A, null, [topic], { events: ['warm'] });
    const subB = await member(s, B, null, [topic], { events: ['warm'] });
    const subC = await member(s, C, null, [topic], { events: ['warm'] });
    const atB = numberCounter(subB.ch[topic].channel, 'num');
    const atC = numberCounter(subC.ch[topic].channel, 'num');
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 3);
    await warmUp(pub, [subB, subC], topic);
    const shedBefore = await cluster.metric(cluster.broker, 'switchboard_broker_dropped_total', { reason: 'shed' });
    assert.equal(shedBefore, 0);

    const cPid = await cluster.pause(C.id);
    const { depth, started, publishedAt } = await publishWhileStopped(cluster, C, pub.ch[topic].channel,
      { first: 1, count: COUNT, rate: RATE });
    // B keeps up: everything within the publishing time + 2 s.
    const deadline = started + (publishedAt - started) + 2000;
    await receivedBy(cluster, atB, COUNT, deadline, 'subB');
    const bDone = Date.now();
    assert.deepEqual(atB.order, Array.from({ length: COUNT }, (_, i) => i + 1), 'subB got every number once, in order');
    assert.equal(atC.counts.size, 0, 'the stopped shard delivered something');

    const shed = await cluster.metric(cluster.broker, 'switchboard_broker_dropped_total', { reason: 'shed' });
    const finalDepth = await cluster.metric(cluster.broker, 'switchboard_queue_depth', { queue: 'shard_out', peer: C.name });
    console.log(`stopped shard (shed_oldest): published ${COUNT} in ${publishedAt - started} ms, subB had all ` +
      `${bDone - publishedAt} ms after; broker queue for C polled ${JSON.stringify(depth)}, final ${finalDepth}, shed ${shed}`);

    // C resumes: still the same process, and gets what is published now.
    await cluster.resume(C.id);
    const childNode = await cluster.child(C.id);
    assert.equal(childNode.pid, cPid);
    assert.equal(childNode.state, 'running');
    assert.equal(childNode.restarts, 0);
    // Shedding drops the oldest: the last number is always delivered, and
    // once it is, C's queue on the broker is empty.
    await waitUntil(() => atC.has(COUNT), { timeout: 10000, what: `subC to receive ${COUNT} after SIGCONT` });
    const outcomes = await steadyPublish(pub.ch[topic].channel, 'num', { first: COUNT + 1, count: 10, rate: 50 });
    for (const [n, p] of outcomes) assert.equal((await p).status, 'ok', `num ${n}`);
    await waitUntil(() => [...outcomes.keys()].every((n) => atC.has(n)), { timeout: 10000,
      what: 'subC to receive the broadcasts published after SIGCONT' });
    await waitUntil(() => atB.counts.size === COUNT + 10, { timeout: 10000, what: 'subB to receive them too' });
    // C got, once and in order, every phase-1 number that was not shed.
    // (After SIGCONT the shard has heard nothing for longer than
    // heartbeat x misses and says hello again; the snapshot the broker
    // queues for it may shed one more delivery, counted like the others.)
    const shedFinal = await cluster.metric(cluster.broker, 'switchboard_broker_dropped_total', { reason: 'shed' });
    const cOld = atC.order.filter((n) => n <= COUNT);
    assert.equal(new Set(atC.order).size, atC.order.length, 'subC got a number twice');
    assert.deepEqual(atC.order, [...atC.order].sort((a, b) => a - b), 'subC got numbers out of order');
    assert.equal(cOld.length, COUNT - shedFinal, `subC got every phase-1 number that was not shed (got ${cOld.length}: ` +
      `${ranges(cOld, false)}; shed ${shedFinal})\n${await meshDiag(cluster)}`);
    // While C was stopped: at most WINDOW sent ahead of credit, QUEUE kept,
    // the rest shed.
    assert.ok(shed >= COUNT - QUEUE - WINDOW && shed <= COUNT - QUEUE,
      `shed while C was stopped ${shed}: between ${COUNT - QUEUE - WINDOW} and ${COUNT - QUEUE}`);

    // The broker's queue for C was observed filling up to its bound.
    assert.ok(depth.some((d) => d > 0), `switchboard_queue_depth{queue="shard_out",peer="${C.name}"} never above 0 while C was stopped: ${JSON.stringify(depth)}`);
    assert.ok(depth.some((d) => d === QUEUE) || finalDepth === QUEUE,
      `the queue for C never reached its bound ${QUEUE}: ${JSON.stringify(depth)}`);
    assert.ok(depth.every((d) => d === undefined || d <= QUEUE), `the queue for C went over its bound: ${JSON.stringify(depth)}`);
  });

  it('a stopped shard (disconnect): the broker drops its link, it resyncs after SIGCONT', async (t) => {
    const s = scopeFor(t);
    const QUEUE = 100;
    const cluster = await node(s, {
      shards: [{}, {}, { args: ['--credit-window', '20'] }],
      brokerArgs: ['--queue-max-messages', String(QUEUE), '--overload', 'disconnect', '--misses', '50'],
    });
    const [A, B, C] = cluster.shards;
    const topic = 'room:slow';
    const COUNT = 300;
    const RATE = 200;

    const pub = await member(s, A, null, [topic], { events: ['warm'] });
    const subB = await member(s, B, null, [topic], { events: ['warm'] });
    const subC = await member(s, C, 'c', [topic], { events: ['warm'] });
    const atB = numberCounter(subB.ch[topic].channel, 'num');
    const atC = numberCounter(subC.ch[topic].channel, 'num');
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 3);
    await warmUp(pub, [subB, subC], topic);
    const hellosBefore = await cluster.metric(cluster.broker, 'switchboard_broker_link_events_total', { event: 'hello' });

    const cPid = await cluster.pause(C.id);
    const started = Date.now();
    const outcomes = await steadyPublish(pub.ch[topic].channel, 'num', { first: 1, count: COUNT, rate: RATE });
    for (const [n, p] of outcomes) assert.equal((await p).status, 'ok', `num ${n}`);
    const publishedAt = Date.now();
    await receivedBy(cluster, atB, COUNT, publishedAt + 2000, 'subB');
    assert.deepEqual(atB.order, Array.from({ length: COUNT }, (_, i) => i + 1));
    const disconnected = await cluster.waitForMetric(cluster.broker, 'switchboard_broker_link_events_total',
      { event: 'disconnected' }, (v) => v >= 1);
    assert.equal(disconnected, 1);
    assert.ok(await cluster.metric(cluster.broker, 'switchboard_broker_dropped_total', { reason: 'disconnect' }) > 0);
    assert.equal(await cluster.metric(cluster.broker, 'switchboard_broker_connected_shards'), 2);
    // C's presence left with its link.
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_presences', {}, (v) => v === 0);
    console.log(`stopped shard (disconnect): published ${COUNT} in ${publishedAt - started} ms`);

    await cluster.resume(C.id);
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_link_events_total', { event: 'hello' }, (v) => v > hellosBefore);
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_connected_shards', {}, (v) => v === 3);
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 3);
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_presences', {}, (v) => v === 1);
    const childNode = await cluster.child(C.id);
    assert.equal(childNode.pid, cPid);
    assert.equal(childNode.restarts, 0);

    const after = await steadyPublish(pub.ch[topic].channel, 'num', { first: COUNT + 1, count: 10, rate: 50 });
    for (const [n, p] of after) assert.equal((await p).status, 'ok', `num ${n}`);
    await waitUntil(() => [...after.keys()].every((n) => atC.has(n)), { timeout: 10000,
      what: 'subC to receive the broadcasts published after it resynced' });
    assert.equal(new Set(atC.order).size, atC.order.length, 'subC got a number twice');
    assert.deepEqual(atC.order, [...atC.order].sort((a, b) => a - b), 'subC got numbers out of order');
    assert.deepEqual(subC.socket.closes.all, [], 'subC\'s socket was closed');
  });
  it('SIGTERM of a shard while the broker is stopped: its drain waits for the acks, every ok broadcast arrives once', async (t) => {
    const s = scopeFor(t);
    // 50 misses of 200 ms: the stopped broker expires nobody when it resumes.
    const cluster = await node(s, { brokerArgs: ['--misses', '50'] });
    const [A, B] = cluster.shards;
    const topic = 'room:drain';
    const COUNT = 40;

    const pub = await member(s, A, null, [topic], { events: ['warm'] });
    const sub = await member(s, B, null, [topic], { events: ['warm'] });
    const atB = numberCounter(sub.ch[topic].channel, 'num');
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 2);
    assert.equal((await push(pub.ch[topic].channel, 'warm', {})).status, 'ok');
    await next(sub.ch[topic].inbox, 'warm', () => true, { timeout: 5000 });

    // Once A has noticed the broker is gone, what is published stays in its
    // outbox: only a drain that waits for the broker's acks keeps it.
    await cluster.pause('broker');
    await cluster.waitForMetric(A, 'switchboard_worker_broker_up', {}, (v) => v === 0);
    const outcomes = await steadyPublish(pub.ch[topic].channel, 'num', { first: 1, count: COUNT, rate: 200 });
    for (const [n, p] of outcomes) assert.equal((await p).status, 'ok', `num ${n}`);
    assert.equal(await cluster.metric(A, 'switchboard_queue_depth', { queue: 'broker_out' }), COUNT);

    const aPid = await cluster.signal(A.id, 'SIGTERM');
    await waitUntil(() => pub.socket.closes.all.length > 0, { timeout: 5000, what: 'the publisher\'s socket to close' });
    assert.equal(pub.socket.closes.all[0].code, 1012, `close: ${JSON.stringify(pub.socket.closes.all)}`);
    // Its clients are gone, yet it lives on: the outbox is not acked. (A
    // while, not a condition: what is checked is that nothing happens; the
    // drain used to end as soon as the last socket closed.)
    await delay(300);
    const during = await cluster.child(A.id);
    assert.equal(during.pid, aPid, 'shard A exited before the broker acked its outbox');

    await cluster.resume('broker');
    await receivedBy(cluster, atB, COUNT, Date.now() + 5000, 'sub');
    const restarted = await cluster.waitRestarted(A.id, aPid);
    assert.equal(restarted.last_exit.status, 0, `A's exit: ${JSON.stringify(restarted.last_exit)}`);
    // Exactly once: A re-sent after the broker's welcome, B dropped nothing twice.
    assert.deepEqual(atB.order, Array.from({ length: COUNT }, (_, i) => i + 1), 'sub got every number once, in order');
  });
  it('a broker killed faster than it settles, under load, then left up: every ok broadcast arrives once, none shed', async (t) => {
    const s = scopeFor(t);
    // Small windows and queue so the backlog of a few seconds is enough: each
    // shard has at most 100 publishes unacked, so the 2 other shards put at
    // most 200 deliveries in a shard's queue of 250; sent at once, the
    // backlogs (about 450 each) would overflow it.
    const shardArgs = ['--max-unacked', '100', '--credit-window', '50'];
    const cluster = await node(s, {
      shards: [{ args: shardArgs }, { args: shardArgs }, { args: shardArgs }],
      brokerArgs: ['--queue-max-messages', '250', '--overload', 'shed_oldest'],
    });
    const topic = 'room:storm';
    const COUNT = 600;
    const RATE = 150; // 4 s
    const pubs = [];
    const subs = [];
    for (const sh of cluster.shards) {
      pubs.push(await member(s, sh, null, [topic], { events: ['warm'] }));
      subs.push(await member(s, sh, null, [topic], { events: ['warm'] }));
    }
    const got = subs.map((m) => numberCounter(m.ch[topic].channel, 'num'));
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 3);

    // The broker is killed again 400 ms after each restart, before the
    // bound of its settle window (2 × 200 ms + 500 ms): each window that ends
    // does so because every listed shard said hello (the shards' member
    // lists), and the re-sent outboxes of three shards meet in one queue.
    let killing = true;
    let kills = 0;
    const killer = (async () => {
      await delay(500);
      while (killing) {
        const pid = await cluster.pid('broker');
        process.kill(pid, 'SIGKILL');
        kills++;
        await cluster.waitRestarted('broker', pid);
        await delay(400);
      }
    })();
    const outcomes = await Promise.all(pubs.map((p, i) =>
      steadyPublish(p.ch[topic].channel, 'num', { first: 10000 * i + 1, count: COUNT, rate: RATE })));
    killing = false;
    await killer;
    const ok = [];
    for (const m of outcomes) {
      for (const [n, p] of m) {
        const r = await p;
        assert.equal(r.status, 'ok', `num ${n}: ${JSON.stringify(r)}`);
        ok.push(n);
      }
    }
    assert.ok(kills >= 4, `the broker was killed ${kills} times`);

    // The last broker stays up: every sub gets every ok broadcast once.
    for (const [i, c] of got.entries()) {
      try {
        await waitUntil(() => c.counts.size === ok.length, { timeout: 20000, interval: 50,
          what: `sub ${i} to receive all ${ok.length}` });
      } catch (e) {
        throw new Error(`${e.message}: got ${c.counts.size}\n${await meshDiag(cluster)}`);
      }
      assert.deepEqual([...c.counts.values()].filter((k) => k !== 1), [], `sub ${i} got a number twice`);
    }
    assert.equal(await cluster.metric(cluster.broker, 'switchboard_broker_dropped_total', { reason: 'shed' }), 0);
    console.log(`broker killed ${kills} times under load: ${ok.length} ok broadcasts, each delivered once at every shard`);
  });
  it('three shards, the broker killed ten times: each new broker settles by all_hello, every ok broadcast arrives once and in order everywhere', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: 3 });
    const topic = 'room:kills';
    const KILLS = 10;
    const PERIOD_MS = 5; // per publisher
    const pubs = [];
    const subs = [];
    for (const sh of cluster.shards) {
      pubs.push(await member(s, sh, null, [topic]));
      subs.push(await member(s, sh, null, [topic]));
    }
    // Per subscriber, per publisher: the numbers received, in arrival order.
    const got = subs.map((m) => pubs.map((_, p) => numberCounter(m.ch[topic].channel, `num${p}`)));
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 3);
    await cluster.waitMeshUp();
    // A cold start: no shard knew the others, so the first broker's window
    // ended by its bound.
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_settles_total', { end: 'timeout' }, (v) => v === 1);

    // Every publisher pushes one broadcast every PERIOD_MS until the kills are done.
    let publishing = true;
    const outcomes = pubs.map(() => new Map());
    const publishers = pubs.map(async (p, i) => {
      for (let n = 1; publishing; n++) {
        outcomes[i].set(n, outcome(p.ch[topic].channel.push(`num${i}`, { n }), { what: `num${i} ${n}` }));
        await delay(PERIOD_MS);
      }
    });

    const ends = [];
    for (let k = 0; k < KILLS; k++) {
      await delay(100); // broadcasts flow through this broker for a while
      const epoch = await cluster.metric(cluster.broker, 'switchboard_broker_epoch');
      const pid = await cluster.kill('broker');
      await cluster.waitRestarted('broker', pid);
      // Each shard welcomed by the new broker before the next kill.
      const fresh = await cluster.waitForMetric(cluster.broker, 'switchboard_broker_epoch', {}, (v) => v !== undefined && v !== epoch);
      for (const sh of cluster.shards) {
        await cluster.waitForMetric(sh, 'switchboard_worker_broker_epoch', {}, (v) => v === fresh);
        await cluster.waitForMetric(sh, 'switchboard_worker_broker_up', {}, (v) => v === 1);
      }
      const ended = async (end) => cluster.metric(cluster.broker, 'switchboard_broker_settles_total', { end });
      await waitUntil(async () => (await ended('all_hello')) === 1 || (await ended('timeout')) === 1,
        { timeout: 10000, interval: 20, what: `broker ${k + 1}'s settle window to end` });
      ends.push((await ended('all_hello')) === 1 ? 'all_hello' : 'timeout');
    }
    publishing = false;
    await Promise.all(publishers);

    const ok = [];
    for (const [i, m] of outcomes.entries()) {
      for (const [n, pr] of m) {
        const r = await pr;
        assert.equal(r.status, 'ok', `num${i} ${n}: ${JSON.stringify(r)}`);
        ok.push([i, n]);
      }
    }
    // Every subscriber gets every other shard's broadcasts (its own shard's
    // too: delivered locally), each once, in the order they were sent.
    const want = outcomes.map((m) => m.size);
    for (const [j, perPub] of got.entries()) {
      for (const [i, c] of perPub.entries()) {
        try {
          await waitUntil(() => c.counts.size === want[i], { timeout: 15000, interval: 50,
            what: `sub on shard ${j} to receive all ${want[i]} of num${i}` });
        } catch (e) {
          throw new Error(`${e.message}: got ${c.counts.size}\n${await meshDiag(cluster)}`);
        }
      }
    }
    await delay(300); // room for a duplicate to show up
    for (const [j, perPub] of got.entries()) {
      for (const [i, c] of perPub.entries()) {
        assert.deepEqual([...c.counts].filter(([, x]) => x !== 1), [], `sub on shard ${j}: num${i} received twice`);
        assert.deepEqual(c.order, [...Array(want[i]).keys()].map((x) => x + 1), `sub on shard ${j}: num${i} out of order`);
      }
    }
    assert.deepEqual(ends, Array(KILLS).fill('all_hello'), 'how each new broker\'s settle window ended');
    // Each shard noticed each new broker by its connection (the socket
    // monitor), not by a heartbeat answered with a reset.
    for (const sh of cluster.shards) {
      const connects = await cluster.metric(sh, 'switchboard_worker_cluster_messages_total', { kind: 'connect' });
      assert.ok(connects >= KILLS + 1, `shard ${sh.id}: ${connects} connections to the broker for ${KILLS} kills`);
    }
    for (const [i, m] of [...pubs, ...subs].entries()) {
      assert.deepEqual(m.socket.closes.all, [], `socket ${i} closed`);
      assert.deepEqual(m.socket.errors.all.map(String), [], `socket ${i} errors`);
    }
    console.log(`broker killed ${KILLS} times: ${ok.length} ok broadcasts from 3 shards, each delivered once, in order, ` +
      `on every shard; windows ended ${ends.join(',')}`);
  });
  it('a drain that outlasts --shutdown-timeout with broadcasts unacked exits 1', async (t) => {
    const s = scopeFor(t);
    const cluster = await node(s, { shards: [{ args: ['--shutdown-timeout', '1'] }, {}], brokerArgs: ['--misses', '50'] });
    const [A] = cluster.shards;
    const topic = 'room:lost';
    const pub = await member(s, A, null, [topic]);
    await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 1);
    await cluster.pause('broker');
    s.add(() => cluster.resume('broker'));
    await cluster.waitForMetric(A, 'switchboard_worker_broker_up', {}, (v) => v === 0);
    assert.equal((await push(pub.ch[topic].channel, 'num', { n: 1 })).status, 'ok');
    const aPid = await cluster.signal(A.id, 'SIGTERM');
    const restarted = await cluster.waitRestarted(A.id, aPid);
    assert.equal(restarted.last_exit.status, 1, `A's exit: ${JSON.stringify(restarted.last_exit)}`);
  });
});
