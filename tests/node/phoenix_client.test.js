'use strict';
// The npm phoenix client (1.8.16, over `ws`) against the real worker:
// connect, join, push/reply, fan-out, payload bytes, binary, leave,
// heartbeat, protocol answers seen with raw frames, and rejoin after the
// server drops the socket (idle timeout, restart on the same port).

const { describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startWorker, freePort, it, metric } = require('./lib/worker');
const { RawClient } = require('./lib/raw');
const { connect, join, push, record, next, Presence } = require('./lib/phoenix');
const { Inbox, scopeFor } = require('./lib/util');

// A raw client connected to `worker`, destroyed when `scope` closes.
async function raw(scope, worker) {
  const c = await RawClient.connect(worker.port);
  scope.add(() => c.destroy());
  return c;
}

// True if a decoded text frame is for `topic`.
const onTopic = (topic) => (m) => m.type === 'text' && Array.isArray(m.json) && m.json[2] === topic;

describe('phoenix.js against one worker', () => {
  let worker;
  before(async () => {
    worker = await startWorker();
  });
  after(async () => {
    await worker.stop();
  });

  it('connects, joins with an ok reply, then receives presence_state', async (t) => {
    const s = scopeFor(t);
    const socket = await connect(s, worker.url);
    const frames = [];
    socket.onMessage((m) => {
      if (m.topic === 'room:join') frames.push(m);
    });
    const ch = socket.channel('room:join');
    const events = record(ch, ['presence_state']);
    assert.deepEqual(await join(ch), { status: 'ok', response: {} });
    const state = await next(events, 'presence_state');
    assert.deepEqual(state.payload, {});
    assert.deepEqual(frames.map((m) => m.event), ['phx_reply', 'presence_state']);
    const [reply, push] = frames;
    assert.equal(reply.join_ref, ch.joinRef());
    assert.equal(reply.ref, ch.joinRef());
    assert.equal(push.join_ref, ch.joinRef(), 'presence_state is a push carrying the join_ref');
    assert.equal(push.ref, null);
  });

  it('answers a push with an ok reply', async (t) => {
    const s = scopeFor(t);
    const socket = await connect(s, worker.url);
    const ch = socket.channel('room:push');
    assert.equal((await join(ch)).status, 'ok');
    for (let i = 0; i < 3; i++) {
      assert.equal((await push(ch, 'ping', { i })).status, 'ok');
    }
  });

  it('relays a push to every other client joined to the topic and not to the sender', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:fanout';
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const socket = await connect(s, worker.url);
      const ch = socket.channel(topic);
      const inbox = record(ch, ['shout']);
      assert.equal((await join(ch)).status, 'ok');
      clients.push({ ch, inbox });
    }
    const [a, b, c] = clients;
    assert.equal((await push(a.ch, 'shout', { m: 'from-a' })).status, 'ok');
    assert.deepEqual((await next(b.inbox, 'shout')).payload, { m: 'from-a' });
    assert.deepEqual((await next(c.inbox, 'shout')).payload, { m: 'from-a' });
    // B pushes after it has seen A's message; if A's own message were echoed
    // back to A, it would reach A before this one.
    assert.equal((await push(b.ch, 'shout', { m: 'from-b' })).status, 'ok');
    assert.deepEqual((await next(a.inbox, 'shout')).payload, { m: 'from-b' });
    assert.deepEqual((await next(c.inbox, 'shout')).payload, { m: 'from-b' });
    assert.ok(!a.inbox.seen((m) => m.payload.m === 'from-a'), 'the sender received its own broadcast');
    assert.ok(!b.inbox.seen((m) => m.payload.m === 'from-b'), 'the sender received its own broadcast');
  });

  it('relays the payload bytes exactly as the client sent them', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:exact';
    const sender = await raw(s, worker);
    const receiver = await raw(s, worker);
    assert.equal((await sender.join(topic))[4].status, 'ok');
    assert.equal((await receiver.join(topic))[4].status, 'ok');
    const socket = await connect(s, worker.url);
    const ch = socket.channel(topic);
    const decoded = record(ch, ['num']);
    assert.equal((await join(ch)).status, 'ok');

    const payload = '{"n":1.000000000000000000001,"big":123456789012345678901234567890,' +
      '"small":1.5e-7, "neg":-0,"s":"caf\\u00e9 \\ud83d\\ude00 é","ws":[ 1 ,\t2 ],"esc":"\\/"}';
    const ref = sender.nextRef();
    sender.sendText(`["1","${ref}","${topic}","num",${payload}]`);
    assert.equal((await sender.reply(ref)).json[4].status, 'ok');

    const got = await receiver.takeJson((j) => j[3] === 'num', { what: 'the relayed num event' });
    assert.deepEqual(got.json.slice(0, 4), [null, null, topic, 'num']);
    assert.ok(got.text.endsWith(`,${payload}]`), `payload bytes changed in transit: ${got.text}`);
    const viaPhoenix = await next(decoded, 'num');
    assert.equal(viaPhoenix.payload.s, 'café 😀 é');
  });

  it('relays a binary push as a binary broadcast', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:binary';
    const a = await connect(s, worker.url);
    const b = await connect(s, worker.url);
    const cha = a.channel(topic);
    const chb = b.channel(topic);
    const got = record(chb, ['bin']);
    assert.equal((await join(cha)).status, 'ok');
    assert.equal((await join(chb)).status, 'ok');
    const observer = await raw(s, worker);
    assert.equal((await observer.join(topic))[4].status, 'ok');

    const bytes = new Uint8Array(300);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 7) & 0xff;
    assert.equal((await push(cha, 'bin', bytes.buffer)).status, 'ok');

    const m = await next(got, 'bin');
    assert.ok(m.payload instanceof ArrayBuffer, 'phoenix.js decoded a binary payload');
    assert.deepEqual(Buffer.from(m.payload), Buffer.from(bytes));

    const frame = (await observer.take((x) => x.type === 'binary', { what: 'a binary frame' })).data;
    assert.equal(frame[0], 2, 'kind 2 (broadcast)');
    const topicLen = frame[1];
    const eventLen = frame[2];
    assert.equal(frame.slice(3, 3 + topicLen).toString(), topic);
    assert.equal(frame.slice(3 + topicLen, 3 + topicLen + eventLen).toString(), 'bin');
    assert.deepEqual(frame.slice(3 + topicLen + eventLen), Buffer.from(bytes));
  });

  it('handles phx_leave: phoenix.js leave is seen by others, and a raw leave gets ok then phx_close', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:leave';
    const watcher = await raw(s, worker);
    assert.equal((await watcher.join(topic))[4].status, 'ok');
    const socket = await connect(s, worker.url);
    const ch = socket.channel(topic, { presence: { key: 'leaver', meta: {} } });
    new Presence(ch);
    assert.equal((await join(ch)).status, 'ok');
    await watcher.takeJson((j) => j[3] === 'presence_diff' && j[4].joins && j[4].joins.leaver,
      { what: 'the join of "leaver"' });
    await new Promise((resolve) => ch.leave().receive('ok', resolve));
    await watcher.takeJson((j) => j[3] === 'presence_diff' && j[4].leaves && j[4].leaves.leaver,
      { what: 'the leave of "leaver" after phoenix.js left the channel' });

    const c = await raw(s, worker);
    const topic2 = 'room:leave-raw';
    const jr = c.nextRef();
    assert.equal((await c.join(topic2, {}, { joinRef: jr }))[4].status, 'ok');
    const leaveRef = c.nextRef();
    c.sendJson([jr, leaveRef, topic2, 'phx_leave', {}]);
    const closeFrame = await c.takeJson((j) => j[2] === topic2 && j[3] === 'phx_close', { what: 'phx_close' });
    assert.deepEqual(closeFrame.json, [jr, jr, topic2, 'phx_close', {}]);
    const events = c.inbox.all.filter(onTopic(topic2)).map((m) => m.json[3]);
    assert.deepEqual(events.slice(-2), ['phx_reply', 'phx_close'], 'the leave reply comes before phx_close');
    const leaveReply = c.inbox.all.find((m) => onTopic(topic2)(m) && m.json[1] === leaveRef);
    assert.deepEqual(leaveReply.json.slice(0, 4), [jr, leaveRef, topic2, 'phx_reply']);
    assert.equal(leaveReply.json[4].status, 'ok');

    const ref = c.nextRef();
    assert.deepEqual(await c.push(topic2, 'shout', { m: 1 }, { ref }),
      [null, ref, topic2, 'phx_reply', { status: 'error', response: { reason: 'unmatched topic' } }]);
  });

  it('answers heartbeats: phoenix.js ping and its periodic heartbeat, and a raw heartbeat before any join', async (t) => {
    const s = scopeFor(t);
    const socket = await connect(s, worker.url, { heartbeatIntervalMs: 100 });
    const rtt = await new Promise((resolve) => socket.ping(resolve));
    assert.equal(typeof rtt, 'number');
    assert.ok(rtt >= 0 && rtt < 5000, `rtt ${rtt}`);
    const beats = new Inbox();
    socket.onMessage((m) => {
      if (m.topic === 'phoenix' && m.event === 'phx_reply') beats.push(m);
    });
    for (let i = 0; i < 3; i++) {
      const m = await beats.take(() => true, { what: `heartbeat reply ${i + 1}` });
      assert.equal(m.payload.status, 'ok');
    }
    assert.equal(socket.closes.all.length, 0, 'the socket stayed open across heartbeats');

    const c = await raw(s, worker);
    const reply = await c.heartbeat('007');
    assert.deepEqual(reply, [null, '007', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  });

  it('on a duplicate join sends phx_close with the old join_ref, then the new join reply', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:dup';
    const c = await raw(s, worker);
    assert.equal((await c.join(topic, {}, { joinRef: '1' }))[4].status, 'ok');
    c.sendJson(['2', '2', topic, 'phx_join', {}]);
    await c.reply('2');
    const events = c.inbox.all.filter(onTopic(topic)).map((m) => m.json);
    const closeAt = events.findIndex((j) => j[3] === 'phx_close');
    const replyAt = events.findIndex((j) => j[3] === 'phx_reply' && j[1] === '2');
    assert.ok(closeAt >= 0, `no phx_close among ${JSON.stringify(events)}`);
    assert.deepEqual(events[closeAt], ['1', '1', topic, 'phx_close', {}]);
    assert.ok(closeAt < replyAt, 'phx_close comes before the new join reply');
    assert.deepEqual(events[replyAt], ['2', '2', topic, 'phx_reply', { status: 'ok', response: {} }]);
    // The new join_ref is the current one.
    assert.equal((await c.push(topic, 'ev', {}, { joinRef: '2' }))[4].status, 'ok');
  });

  it('drops a message with a stale join_ref without a reply or a broadcast', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:stale';
    const c = await raw(s, worker);
    const other = await raw(s, worker);
    assert.equal((await other.join(topic))[4].status, 'ok');
    assert.equal((await c.join(topic, {}, { joinRef: '10' }))[4].status, 'ok');
    const before = await metric(worker, 'switchboard_worker_rejected_messages_total', { reason: 'stale_join_ref' });
    c.sendJson(['9', '11', topic, 'stale', { n: 1 }]);
    // Messages are handled in order: once the heartbeat sent after it is
    // answered, the stale message has been dealt with.
    await c.heartbeat('12');
    assert.ok(!c.inbox.seen((m) => m.json && m.json[1] === '11'), 'a stale message got a reply');
    assert.equal((await c.push(topic, 'fresh', { n: 2 }, { joinRef: '10' }))[4].status, 'ok');
    const first = await other.takeJson((j) => j[2] === topic && (j[3] === 'stale' || j[3] === 'fresh'));
    assert.equal(first.json[3], 'fresh', 'the stale message was relayed');
    const afterCount = await metric(worker, 'switchboard_worker_rejected_messages_total', { reason: 'stale_join_ref' });
    assert.ok(afterCount >= (before || 0) + 1, `stale_join_ref counter ${before} -> ${afterCount}`);
  });

  it('answers a push to a topic the socket has not joined with "unmatched topic"', async (t) => {
    const s = scopeFor(t);
    const c = await raw(s, worker);
    const reply = await c.push('room:not-joined', 'shout', { m: 1 }, { ref: '5' });
    assert.deepEqual(reply,
      [null, '5', 'room:not-joined', 'phx_reply', { status: 'error', response: { reason: 'unmatched topic' } }]);
  });

  it('refuses reserved events from a client and relays none of them', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:reserved';
    const c = await raw(s, worker);
    const other = await raw(s, worker);
    const jr = c.nextRef();
    assert.equal((await c.join(topic, {}, { joinRef: jr }))[4].status, 'ok');
    assert.equal((await other.join(topic))[4].status, 'ok');
    const reserved = ['phx_reply', 'phx_close', 'phx_error', 'presence_state', 'presence_diff'];
    for (const event of reserved) {
      const reply = await c.push(topic, event, { joins: { mallory: { metas: [{}] } }, leaves: {} }, { joinRef: jr });
      assert.deepEqual(reply[4], { status: 'error', response: { reason: 'reserved event' } }, event);
    }
    assert.equal((await c.push(topic, 'sentinel', {}, { joinRef: jr }))[4].status, 'ok');
    await other.takeJson((j) => j[3] === 'sentinel', { what: 'the sentinel broadcast' });
    const relayed = other.inbox.all.filter(onTopic(topic))
      .filter((m) => m.json[0] === null && m.json[1] === null && reserved.includes(m.json[3]))
      .map((m) => m.json[3]);
    assert.deepEqual(relayed, [], 'reserved events reached another socket');
    assert.ok(!other.inbox.seen((m) => m.text && m.text.includes('mallory')), 'forged presence reached another socket');
  });
});

// Joins `ch` and records every successful (re)join's join_ref in an Inbox.
function joinRecordingRejoins(ch) {
  const joins = new Inbox();
  ch.join().receive('ok', () => joins.push(ch.joinRef()));
  return joins;
}

describe('phoenix.js rejoins by itself after the server drops the socket', () => {
  it('after an idle timeout (close 1001) it reconnects, rejoins with a new join_ref and receives broadcasts', async (t) => {
    const s = scopeFor(t);
    const worker = await startWorker(['--idle-timeout', '1']);
    s.add(() => worker.stop());
    const topic = 'room:idle';
    // The sender's heartbeat keeps it under the idle timeout.
    const sender = await connect(s, worker.url, { heartbeatIntervalMs: 200 });
    const sch = sender.channel(topic);
    assert.equal((await join(sch)).status, 'ok');

    const socket = await connect(s, worker.url, { heartbeatIntervalMs: 60000 });
    const ch = socket.channel(topic);
    const got = record(ch, ['shout', 'presence_state']);
    const joins = joinRecordingRejoins(ch);
    const jr1 = await joins.take(() => true, { what: 'the first join' });
    await next(got, 'presence_state');
    const closed = await socket.closes.take(() => true, { timeout: 5000, what: 'the idle close' });
    assert.equal(closed.code, 1001, `idle close code ${closed.code}`);
    const jr2 = await joins.take(() => true, { timeout: 5000, what: 'the rejoin after the idle close' });
    assert.notEqual(jr2, jr1, 'the rejoin uses a new join_ref');
    await next(got, 'presence_state', () => true, { what: 'presence_state after the rejoin' });

    assert.equal((await push(sch, 'shout', { m: 'after-rejoin' })).status, 'ok');
    assert.deepEqual((await next(got, 'shout')).payload, { m: 'after-rejoin' });
    assert.equal(sender.closes.all.length, 0, 'a socket that sends heartbeats was not closed');
    assert.ok(socket.closes.all.every((c) => c.code !== 1000), 'never closed with 1000');
    assert.ok((await metric(worker, 'switchboard_worker_closes_total', { reason: 'idle_timeout' })) >= 1);
  });

  it('after SIGTERM (close 1012) it reconnects to a new worker on the same port, rejoins and receives broadcasts', async (t) => {
    const s = scopeFor(t);
    const port = await freePort();
    const listen = `127.0.0.1:${port}`;
    const first = await startWorker([], { listen });
    s.add(() => first.kill());
    const topic = 'room:restart';
    const socket = await connect(s, first.url);
    const ch = socket.channel(topic);
    const got = record(ch, ['shout']);
    const joins = joinRecordingRejoins(ch);
    const jr1 = await joins.take(() => true, { what: 'the first join' });

    const stopping = first.stop();
    const closed = await socket.closes.take(() => true, { what: 'the close on SIGTERM' });
    assert.equal(closed.code, 1012, `close code on SIGTERM ${closed.code}`);
    await stopping;

    const second = await startWorker([], { listen });
    s.add(() => second.stop());
    const jr2 = await joins.take(() => true, { timeout: 15000, what: 'the rejoin on the new worker' });
    assert.notEqual(jr2, jr1);

    const sender = await RawClient.connect(second.port);
    s.add(() => sender.destroy());
    assert.equal((await sender.join(topic))[4].status, 'ok');
    assert.equal((await sender.push(topic, 'shout', { m: 'back' }))[4].status, 'ok');
    assert.deepEqual((await next(got, 'shout')).payload, { m: 'back' });
  });
});
