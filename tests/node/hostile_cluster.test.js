'use strict';
// Hostile clients against a whole node (broker and two shards under
// `switchboard run`), each attack followed by a broker restart (SIGKILL; the
// daemon starts a new one and the shards say hello again with everything
// they hold). The attacks come from clients on shard 0 (and one at the
// broker's own socket): an empty topic, metas nested past the limits, a
// 1 MiB topic, a ping flood from a client that never reads, a 100 KiB
// presence meta, a foreign Origin, a fake shard writing garbage to the
// broker's ipc socket, a fake shard (a real ZeroMQ DEALER) saying hello as
// shard 0. After each restart the cluster must work for everyone
// else: broadcasts cross between the shards both ways, presence is the same
// on both, a bystander joined since the start still gets and sends
// broadcasts, neither shard restarted, the broker left no hello entry out,
// and shard 0's peak resident memory stays within what docs/WORKER.md
// ("Limits and memory") allows for the sockets it held.

const { describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const crypto = require('node:crypto');
const { startCluster, it, metric, waitForMetric } = require('./lib/cluster');
const { RawClient, httpExchange, upgradeRequest } = require('./lib/raw');
const { waitUntil, withTimeout, BOUNDED_MEMORY_ENV } = require('./lib/util');
const zmq = require('zeromq');

// --- A fake shard: the mesh protocol by hand (docs/PROTOCOL.md) over a
// real ZeroMQ DEALER. A message is frames; the first is the header "SB",
// version 1, the type, then the type's little-endian fields.
const T = { hello: 1, welcome: 2, reset: 3, heartbeat: 4, subscribe: 5, deliver: 11, batch: 14 };

function header(type, fields = Buffer.alloc(0)) {
  return Buffer.concat([Buffer.from([0x53, 0x42, 1, type]), fields]);
}

// The messages in one multipart message: itself, or a kBatch's (each a u32
// length, then its frames, each a u32 length and the bytes).
function messagesOf(frames) {
  const type = frames[0][3];
  if (type !== T.batch) return [frames];
  const out = [];
  const body = frames[1];
  for (let at = 0; at < body.length;) {
    const n = body.readUInt32LE(at);
    const packed = body.subarray(at + 4, at + 4 + n);
    at += 4 + n;
    const inner = [];
    for (let p = 0; p < packed.length;) {
      const m = packed.readUInt32LE(p);
      inner.push(packed.subarray(p + 4, p + 4 + m));
      p += 4 + m;
    }
    out.push(inner);
  }
  return out;
}

class FakeShard {
  constructor(endpoint) {
    this.dealer = new zmq.Dealer({ linger: 0 });
    this.dealer.connect(endpoint);
    this.received = []; // [{type, frames}]
    this.waiters = [];
    this.closed = false;
    this.reader = (async () => {
      try {
        for await (const frames of this.dealer) {
          for (const m of messagesOf(frames)) {
            const msg = { type: m[0][3], frames: m };
            this.received.push(msg);
            this.waiters = this.waiters.filter((w) => (w.pred(msg) ? (w.resolve(msg), false) : true));
          }
        }
      } catch (e) {
        if (!this.closed) throw e;
      }
    })();
    // A link silent for 3 heartbeats is expired: keep this one alive.
    this.timer = setInterval(() => {
      this.dealer.send([header(T.heartbeat, Buffer.alloc(8))]).catch(() => {});
    }, 100);
  }

  hello({ shard, instance, token, topics = [] }) {
    const body = { shard, instance, window: 1000, topics, presence: [] };
    if (token) body.token = token;
    return this.dealer.send([header(T.hello), Buffer.from(JSON.stringify(body))]);
  }

  next(pred, what) {
    const seen = this.received.find(pred);
    if (seen) return Promise.resolve(seen);
    return withTimeout(new Promise((resolve) => this.waiters.push({ pred, resolve })), 5000, what);
  }

  close() {
    this.closed = true;
    clearInterval(this.timer);
    this.dealer.close();
  }
}

// Shard 0's flags: a small outbound bound (the ping flood), a stall of 3 s
// closes a client that never reads, and a frame bound past 1 MiB so that a
// 1 MiB topic reaches the hub's check rather than the frame check.
const MAX_OUTBOUND = 65536;
const MAX_FRAME = (1 << 20) + 65536;
const IDLE_TIMEOUT_S = 3;
// The shard's defaults that enter the bound.
const MAX_TOPICS = 100;
const MAX_PRESENCE_META = 4096;
// The most presences a topic has cluster-wide in this file (a checker on
// each shard and the bystander), and the most sockets shard 0 holds at once
// (an attacker, a checker, an observer).
const PRESENCES_PER_TOPIC = 3;
const SOCKETS_AT_ONCE = 3;

// docs/WORKER.md, "Limits and memory": one socket costs at most about
// 1 KiB + 2 x --max-frame + --max-outbound + --max-topics x
// (--max-presence-meta + 152 + S), S the largest presence_state, at most
// (presences on the topic) x (--max-presence-meta + 64).
const PER_SOCKET = 1024 + 2 * MAX_FRAME + MAX_OUTBOUND +
  MAX_TOPICS * (MAX_PRESENCE_META + 152 + PRESENCES_PER_TOPIC * (MAX_PRESENCE_META + 64));
// What the allocator and the loop keep besides (as tests/node/hostile.test.js allows).
const SLACK = 1 << 20;

const nested = (depth) => {
  let meta = { leaf: 1 }; // depth 1
  for (let d = 1; d < depth; d++) meta = { n: meta };
  return meta;
};

describe('hostile clients against a cluster, each followed by a broker restart', { timeout: 120000 }, () => {
  let cluster;
  let bystander; // on shard 1, joined to room:all for the whole file
  let pids; // the shards' pids at the start: neither may restart
  let baseline; // shard 0's resident memory before the attacks
  let round = 0;

  before(async () => {
    const shard0 = ['--max-outbound', String(MAX_OUTBOUND), '--max-frame', String(MAX_FRAME),
      '--idle-timeout', String(IDLE_TIMEOUT_S)];
    const shard1 = ['--max-outbound', String(MAX_OUTBOUND)];
    cluster = await startCluster({
      shards: [{ args: shard0 }, { args: shard1 }], name: 'hostile', env: BOUNDED_MEMORY_ENV,
    });
    pids = [await cluster.pid('shard-0'), await cluster.pid('shard-1')];
    bystander = await RawClient.connect(cluster.shards[1].port);
    const r = await bystander.join('room:all', { presence: { key: 'bystander', meta: { role: 'watch' } } },
      { joinRef: 'by' });
    assert.equal(r[4].status, 'ok');
    baseline = (await cluster.memory('shard-0')).rss;
  });

  after(async () => {
    if (bystander) bystander.destroy();
    if (cluster) await cluster.stop();
  });

  // A raw client on shard `i`, destroyed when the test ends.
  async function client(t, i) {
    const c = await RawClient.connect(cluster.shards[i].port);
    t.after(() => c.destroy());
    return c;
  }

  // The keys of `topic`'s presence_state as a new joiner on shard `i` sees it.
  async function keysSeenFrom(t, i, topic) {
    const o = await client(t, i);
    assert.equal((await o.join(topic, {}, { joinRef: 'o' }))[4].status, 'ok');
    const state = await o.takeJson((j) => j[3] === 'presence_state' && j[2] === topic,
      { timeout: 5000, what: `presence_state of ${topic}` });
    o.destroy();
    return Object.keys(state.json[4]).sort();
  }

  async function waitForKeys(t, i, topic, keys) {
    let seen;
    await waitUntil(async () => {
      seen = await keysSeenFrom(t, i, topic);
      return JSON.stringify(seen) === JSON.stringify([...keys].sort());
    }, { timeout: 10000, interval: 100, what: `shard ${i} to see presence ${keys} on ${topic} (saw ${seen})` });
  }

  // One push from `from` on `topic` (joined with `joinRef`) must reach `to`.
  async function crosses(from, joinRef, to, topic, n) {
    const r = await from.push(topic, 'hello', { n }, { joinRef });
    assert.equal(r[4].status, 'ok', `push on ${topic}: ${JSON.stringify(r)}`);
    await to.takeJson((j) => j[3] === 'hello' && j[2] === topic && j[4].n === n,
      { timeout: 5000, what: `broadcast ${n} on ${topic} across the broker` });
  }

  // A broadcast from shard 0 reaches shard 1 on `topic`.
  async function crossOnce(t, topic) {
    const a = await client(t, 0);
    const b = await client(t, 1);
    assert.equal((await a.join(topic, {}, { joinRef: 'a' }))[4].status, 'ok');
    assert.equal((await b.join(topic, {}, { joinRef: 'b' }))[4].status, 'ok');
    await waitUntil(async () => {
      await a.push(topic, 'probe', {}, { joinRef: 'a' });
      return b.inbox.seen((m) => m.type === 'text' && m.json && m.json[3] === 'probe');
    }, { timeout: 10000, interval: 200, what: `a broadcast on ${topic} from shard 0 to reach shard 1` });
    a.destroy();
    b.destroy();
  }

  // Kills the broker, waits until a new one has welcomed both shards, and
  // checks that the cluster works for everyone else.
  async function restartAndCheck(t) {
    round += 1;
    const brokerPid = await cluster.pid('broker');
    const newPid = await cluster.restartBroker({ timeout: 15000 });
    assert.notEqual(newPid, brokerPid);
    assert.deepEqual([await cluster.pid('shard-0'), await cluster.pid('shard-1')], pids,
      'a shard restarted');

    const topic = `room:check-${round}`;
    const a = await client(t, 0);
    const b = await client(t, 1);
    assert.equal((await a.join(topic, { presence: { key: `a${round}`, meta: { shard: 0 } } },
      { joinRef: 'a' }))[4].status, 'ok');
    assert.equal((await a.join('room:all', {}, { joinRef: 'a-all' }))[4].status, 'ok');
    assert.equal((await b.join(topic, { presence: { key: `b${round}`, meta: { shard: 1 } } },
      { joinRef: 'b' }))[4].status, 'ok');
    // Presence is the same from both shards, and the bystander's is intact.
    await waitForKeys(t, 0, topic, [`a${round}`, `b${round}`]);
    await waitForKeys(t, 1, topic, [`a${round}`, `b${round}`]);
    await waitForKeys(t, 0, 'room:all', ['bystander']);
    // Broadcasts cross both ways, the bystander's too.
    await crosses(a, 'a', b, topic, round * 10 + 1);
    await crosses(b, 'b', a, topic, round * 10 + 2);
    await crosses(a, 'a-all', bystander, 'room:all', round * 10 + 3);
    await crosses(bystander, 'by', a, 'room:all', round * 10 + 4);

    // The new broker took every hello whole.
    assert.equal((await metric(cluster.broker, 'switchboard_broker_hello_entries_dropped_total')) || 0, 0);

    const m = await cluster.memory('shard-0');
    const bound = baseline + SOCKETS_AT_ONCE * PER_SOCKET + SLACK;
    assert.ok(m.peak <= bound, `shard 0's peak resident memory ${(m.peak / 1048576).toFixed(1)} MiB passes ` +
      `${(bound / 1048576).toFixed(1)} MiB (baseline ${(baseline / 1048576).toFixed(1)} MiB)`);
    t.diagnostic(`round ${round}: shard 0 resident ${(m.rss / 1048576).toFixed(1)} MiB, peak ` +
      `${(m.peak / 1048576).toFixed(1)} MiB, bound ${(bound / 1048576).toFixed(1)} MiB`);
    a.destroy();
    b.destroy();
  }

  async function joinReason(t, topic, payload) {
    const c = await client(t, 0);
    const r = await c.join(topic, payload);
    assert.equal(r[4].status, 'error', `join answered ${JSON.stringify(r).slice(0, 200)}`);
    return r[4].response.reason;
  }

  it('an empty topic is refused as an invalid topic', async (t) => {
    assert.equal(await joinReason(t, '', {}), 'invalid topic');
    await restartAndCheck(t);
  });

  it('a meta nested 70 deep closes the socket (1007); 61 deep is refused; 60 deep crosses the mesh', async (t) => {
    const c = await client(t, 0);
    c.sendJson(['1', '1', 'room:deep', 'phx_join', { presence: { key: 'deep70', meta: nested(70) } }]);
    const closed = await c.closeCode({ timeout: 5000 });
    assert.equal(closed.code, 1007);
    assert.equal(await joinReason(t, 'room:deep', { presence: { key: 'deep61', meta: nested(61) } }),
      'invalid presence');
    const ok = await client(t, 0);
    assert.equal((await ok.join('room:deep', { presence: { key: 'deep60', meta: nested(60) } }))[4].status, 'ok');
    await waitForKeys(t, 1, 'room:deep', ['deep60']);
    // Held by the shard across the restart: its hello carries it to the new broker.
    await restartAndCheck(t);
    await waitForKeys(t, 1, 'room:deep', ['deep60']);
    ok.destroy();
  });

  it('a 1 MiB topic is refused as an invalid topic', async (t) => {
    const shard = cluster.shards[0];
    const refused = (await metric(shard, 'switchboard_worker_joins_total', { result: 'invalid_topic' })) || 0;
    const topic = `room:${'x'.repeat((1 << 20) - 5)}`;
    const c = await client(t, 0);
    const jr = 'big';
    c.sendJson([jr, jr, topic, 'phx_join', {}]);
    await waitForMetric(shard, 'switchboard_worker_joins_total', { result: 'invalid_topic' },
      (v) => v === refused + 1, { timeout: 10000 });
    // The error reply repeats the topic, 1 MiB, past --max-outbound: a
    // refused join's reason is owed, so the client gets it all the same.
    const outcome = await Promise.race([
      c.reply(jr, { timeout: 10000 }).then((r) => `reply ${r.json[4].status} ${r.json[4].response.reason}`),
      c.closeCode({ timeout: 10000 }).then((cl) => `close ${cl.code}`),
    ]);
    assert.equal(outcome, 'reply error invalid topic');
    t.diagnostic(`a 1 MiB topic: ${outcome}`);
    c.destroy();
    await restartAndCheck(t);
  });

  // The shard answers a flood of pings with one pong at a time (a newer
  // ping's pong replaces one not yet written), so a client that never reads
  // pins neither its queue nor the kernel's buffers. The flood goes on
  // through the broker restart and the checks.
  it('a ping flood from a client that never reads holds one pong while the cluster restarts its broker', async (t) => {
    const shard = cluster.shards[0];
    const sentBefore = await metric(shard, 'switchboard_worker_sent_bytes_total');
    const flooder = await client(t, 0);
    flooder.socket.pause();
    const ping = Buffer.from([0x89, 0x80, 1, 2, 3, 4]);
    const chunk = Buffer.alloc(ping.length * 100000);
    for (let i = 0; i < 100000; i++) ping.copy(chunk, i * ping.length);
    let pings = 0;
    let stop = false;
    const flood = (async () => {
      while (!stop && !flooder.socket.destroyed && !flooder.ended) {
        if (!flooder.socket.write(chunk)) {
          // Bounded: the test stops the flood, or the shard closes the socket.
          await new Promise((resolve) => {
            const done = () => {
              clearTimeout(timer);
              flooder.socket.off('drain', done);
              flooder.socket.off('close', done);
              resolve();
            };
            const timer = setTimeout(done, 1000);
            flooder.socket.on('drain', done);
            flooder.socket.on('close', done);
          });
        }
        pings += 100000;
      }
    })();
    try {
      await waitUntil(() => pings >= 5000000, { timeout: 20000, what: 'five million pings sent' });
      await restartAndCheck(t);
      const queued = await metric(shard, 'switchboard_worker_client_queue_max_bytes');
      assert.ok(queued <= MAX_OUTBOUND, `a queue of ${queued} bytes`);
    } finally {
      stop = true;
      await flood;
    }
    assert.ok(pings >= 5000000, `${pings} pings`);
    // Not a pong per ping: far less than 2 bytes each went out.
    const sent = (await metric(shard, 'switchboard_worker_sent_bytes_total')) - sentBefore;
    assert.ok(sent < pings / 10, `${sent} bytes sent for ${pings} pings`);
    t.diagnostic(`${pings} pings, ${sent} bytes sent meanwhile`);
    flooder.destroy();
  });

  it('a 100 KiB presence meta is refused as too large', async (t) => {
    const meta = { pad: 'm'.repeat(100 * 1024) };
    assert.equal(await joinReason(t, 'room:fat', { presence: { key: 'fat', meta } }), 'presence too large');
    await restartAndCheck(t);
  });

  it('an upgrade with a foreign Origin gets 403', async (t) => {
    const port = cluster.shards[0].port;
    const res = await httpExchange(port, upgradeRequest(port, '/socket/websocket?vsn=2.0.0',
      { Origin: 'https://evil.example' }));
    assert.match(res.toString('latin1'), /^HTTP\/1\.1 403 /);
    await waitForMetric(cluster.shards[0], 'switchboard_worker_upgrades_refused_total',
      { reason: 'forbidden_origin' }, (v) => v >= 1);
    await restartAndCheck(t);
  });

  it('the broker\'s ipc socket is owner-only, and garbage written to it changes nothing', async (t) => {
    const sock = cluster.brokerSocketPath;
    const st = fs.statSync(sock);
    assert.ok(st.isSocket(), `${sock} is not a socket`);
    assert.equal(st.mode & 0o777, 0o600, `socket mode ${(st.mode & 0o777).toString(8)}`);
    assert.equal(st.uid, process.getuid());
    const dir = fs.statSync(path.dirname(sock));
    assert.equal(dir.mode & 0o022, 0, `directory mode ${(dir.mode & 0o777).toString(8)}`);
    assert.equal(dir.uid, process.getuid());

    const brokerPid = await cluster.pid('broker');
    // A ZMTP greeting's signature, then garbage: not a peer the broker knows.
    const fake = net.connect({ path: sock });
    t.after(() => fake.destroy());
    fake.on('error', () => {});
    await withTimeout(new Promise((resolve) => fake.on('connect', resolve)), 5000, 'a connection to the broker');
    fake.write(Buffer.concat([Buffer.from([0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f]), crypto.randomBytes(64 * 1024)]));
    // libzmq keeps or drops a peer whose greeting is wrong as it likes;
    // what counts is that the broker and its shards carry on meanwhile.
    await crossOnce(t, 'room:garbage');
    assert.equal(await cluster.pid('broker'), brokerPid, 'the broker restarted after garbage');
    await cluster.waitMeshUp({ timeout: 5000 });
    await restartAndCheck(t);
  });

  // A fake shard learns shard 0's instance the way any peer of the broker
  // can (every delivery carries its origin's instance), then says hello as
  // that instance from its own connection, with a made-up token and with
  // none. The broker must refuse both: shard 0 keeps its session, and the
  // impostor gets none of shard 0's deliveries.
  it('a fake shard on the broker endpoint cannot take over a shard\'s session', async (t) => {
    const spy = new FakeShard(cluster.brokerEndpoint);
    t.after(() => spy.close());
    await spy.hello({ shard: 'spy', instance: 'f00df00df00df00d', token: 'ab'.repeat(16), topics: ['room:spy'] });
    await spy.next((m) => m.type === T.welcome, 'a welcome for the fake shard');
    // A broadcast from shard 0 on room:spy reaches the spy with shard 0's instance.
    const a = await client(t, 0);
    assert.equal((await a.join('room:spy', {}, { joinRef: 'a' }))[4].status, 'ok');
    let deliver;
    await waitUntil(async () => {
      await a.push('room:spy', 'leak', {}, { joinRef: 'a' });
      deliver = spy.received.find((m) => m.type === T.deliver);
      return deliver !== undefined;
    }, { timeout: 10000, interval: 200, what: 'a delivery from shard 0 at the fake shard' });
    const instance = deliver.frames[0].readBigUInt64LE(4).toString(16).padStart(16, '0');

    const refused = async () => (await metric(cluster.broker, 'switchboard_broker_refused_frames_total',
      { reason: 'bad_rebind' })) || 0;
    const rebinds = async () => (await metric(cluster.broker, 'switchboard_broker_link_events_total',
      { event: 'rebind' })) || 0;
    const refusedBefore = await refused();
    const rebindsBefore = await rebinds();
    const impostor = new FakeShard(cluster.brokerEndpoint);
    t.after(() => impostor.close());
    await impostor.hello({ shard: '0', instance, token: '00'.repeat(16), topics: ['room:spy'] });
    await impostor.hello({ shard: '0', instance, topics: ['room:spy'] });
    await waitUntil(async () => (await refused()) === refusedBefore + 2,
      { timeout: 5000, what: 'the broker to refuse both rebinds' });
    assert.equal(await rebinds(), rebindsBefore);
    assert.ok(!impostor.received.some((m) => m.type === T.welcome), 'the impostor was welcomed');

    // Shard 0 still has its session: shard 1's broadcast on its topic
    // reaches its client, and not the impostor.
    const b = await client(t, 1);
    assert.equal((await b.join('room:spy', {}, { joinRef: 'b' }))[4].status, 'ok');
    await crosses(b, 'b', a, 'room:spy', 99);
    assert.ok(!impostor.received.some((m) => m.type === T.deliver), 'the impostor got a delivery');
    spy.close();
    impostor.close();
    a.destroy();
    b.destroy();
    await restartAndCheck(t);
  });
});
