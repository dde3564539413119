'use strict';
// Hostile and heavy clients, mostly with raw frames: oversized, malformed
// and invalid frames get the contract's close codes; limits (topics, rate,
// outbound buffer, connections) hold; HTTP answers and metrics are sane.
// A phoenix.js bystander stays joined for the whole file and must receive
// every broadcast sent to it in between.

const { describe, before, after, afterEach } = require('node:test');
const assert = require('node:assert/strict');
const net = require('node:net');
const { startWorker, it, httpRequest, metric, waitForMetric } = require('./lib/worker');
const { RawClient, buildFrame, OP } = require('./lib/raw');
const { connect, join, push, record, next } = require('./lib/phoenix');
const { Scope, scopeFor, waitUntil, delay, withTimeout, BOUNDED_MEMORY_ENV, HEAP_FACTOR } = require('./lib/util');

const MAX_FRAME = 65536;

// Opens a raw client, lets `misbehave(client)` send something, and returns
// the close the server answered with ({code, reason, frame}).
async function closeAfter(worker, misbehave) {
  const c = await RawClient.connect(worker.port);
  try {
    await misbehave(c);
    return await c.closeCode({ timeout: 5000 });
  } catch (e) {
    return { code: `still open after 5 s (${e.message})`, frame: true };
  } finally {
    c.destroy();
  }
}

// Runs every case and compares all observed close codes at once, so one
// report lists every mismatch. `cases` maps a name to a misbehave function.
async function expectCloses(worker, expectedCode, cases) {
  const observed = {};
  const expected = {};
  for (const [name, misbehave] of Object.entries(cases)) {
    const c = await closeAfter(worker, misbehave);
    observed[name] = c.frame ? c.code : `no close frame (${c.code})`;
    expected[name] = expectedCode;
  }
  assert.deepEqual(observed, expected);
}

const text = (bytes) => async (c) => c.sendFrame(OP.text, Buffer.from(bytes));
const textStr = (s) => async (c) => c.sendText(s);
const binary = (bytes) => async (c) => c.sendFrame(OP.binary, Buffer.from(bytes));
const frames = (...list) => async (c) => c.write(Buffer.concat(list));

// Waits until `n` messages matched `pred` on raw client `c` (counted by a
// listener, for volumes the inbox should not keep).
function counter(c, pred) {
  const state = { count: 0, waiters: [] };
  c.listen((m) => {
    if (!pred(m)) return;
    state.count += 1;
    state.waiters = state.waiters.filter((w) => (state.count >= w.n ? (w.resolve(), false) : true));
  });
  state.until = (n, what) => (state.count >= n ? Promise.resolve() :
    withTimeout(new Promise((resolve) => state.waiters.push({ n, resolve })), 15000, `${what} (${state.count}/${n})`));
  return state;
}

describe('hostile clients', () => {
  let worker;
  const shared = new Scope();
  let publisher;
  let bystander;
  let bystanderSocket;
  let ticks = 0;

  before(async () => {
    worker = await startWorker(['--max-frame', String(MAX_FRAME), '--rate', '0']);
    bystanderSocket = await connect(shared, worker.url, { heartbeatIntervalMs: 5000 });
    const bch = bystanderSocket.channel('room:bystander');
    bystander = record(bch, ['tick']);
    assert.equal((await join(bch)).status, 'ok');
    const ps = await connect(shared, worker.url, { heartbeatIntervalMs: 5000 });
    publisher = ps.channel('room:bystander');
    assert.equal((await join(publisher)).status, 'ok');
  });

  // After every test: the worker lives and the bystander still gets broadcasts.
  afterEach(async () => {
    assert.ok(worker.alive, `the worker died\n${worker.logTail()}`);
    ticks += 1;
    assert.equal((await push(publisher, 'tick', { n: ticks })).status, 'ok');
    assert.equal((await next(bystander, 'tick')).payload.n, ticks);
  });

  after(async () => {
    try {
      await shared.close();
    } finally {
      await worker.stop();
    }
  });

  it('closes with 1009 a frame over --max-frame and a fragmented message that adds up over it', async () => {
    const big = Buffer.alloc(MAX_FRAME + 5000, 'x');
    Buffer.from('["1","1","room:big","ev",{"p":"').copy(big);
    Buffer.from('"}]').copy(big, big.length - 3);
    const part = Buffer.alloc(30000, 'y');
    await expectCloses(worker, 1009, {
      'one frame': frames(buildFrame(OP.text, big)),
      'three fragments of 30000': frames(buildFrame(OP.text, part, { fin: false }),
        buildFrame(OP.cont, part, { fin: false }), buildFrame(OP.cont, part)),
      'binary frame': frames(buildFrame(OP.binary, big)),
    });
  });

  it('handles a valid message in three fragments with a ping in between, split inside a UTF-8 character', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:frag';
    const c = await RawClient.connect(worker.port);
    s.add(() => c.destroy());
    const other = await RawClient.connect(worker.port);
    s.add(() => other.destroy());
    assert.equal((await other.join(topic))[4].status, 'ok');

    const sendInThree = (msg) => {
      const bytes = Buffer.from(msg, 'utf8');
      const cut = bytes.indexOf(0xc3) + 1; // between the two bytes of "é"
      c.write(Buffer.concat([
        buildFrame(OP.text, bytes.slice(0, 5), { fin: false }),
        buildFrame(OP.ping, Buffer.from('abc')),
        buildFrame(OP.cont, bytes.slice(5, cut), { fin: false }),
        buildFrame(OP.cont, bytes.slice(cut)),
      ]));
    };
    sendInThree(`["1","1","${topic}","phx_join",{"who":"é"}]`);
    const pong = await c.take((m) => m.type === 'pong', { what: 'the pong' });
    assert.equal(pong.data.toString(), 'abc');
    assert.deepEqual((await c.reply('1')).json[4], { status: 'ok', response: {} });

    const payload = '{"name":"café","n":1.50}';
    sendInThree(`["1","2","${topic}","shout",${payload}]`);
    assert.equal((await c.reply('2')).json[4].status, 'ok');
    const got = await other.takeJson((j) => j[3] === 'shout');
    assert.ok(got.text.endsWith(`,${payload}]`), got.text);
  });

  it('closes with 1007 a text frame that is not valid UTF-8', async () => {
    await expectCloses(worker, 1007, {
      'bytes ff fe': text([0x5b, 0x22, 0xff, 0xfe, 0x22, 0x5d]),
      'overlong encoding of "/"': text([0x5b, 0x22, 0xc0, 0xaf, 0x22, 0x5d]),
      'UTF-16 surrogate': text([0x5b, 0x22, 0xed, 0xa0, 0x80, 0x22, 0x5d]),
      'truncated sequence at the end': text([0x5b, 0x22, 0x22, 0x5d, 0xe2, 0x82]),
      'above U+10FFFF': text([0x5b, 0x22, 0xf4, 0x90, 0x80, 0x80, 0x22, 0x5d]),
    });
  });

  it('closes with 1003 a binary message that is not a well-formed push', async () => {
    await expectCloses(worker, 1003, {
      'kind 7': binary([7, 1, 1, 1, 1, 0x31, 0x31, 0x61, 0x62]),
      'kind 1 (reply)': binary([1, 1, 1, 6, 2, 0x31, 0x31, ...Buffer.from('room:1ok')]),
      'kind 2 (broadcast)': binary([2, 6, 1, ...Buffer.from('room:1e')]),
      'truncated push header': binary([0, 1, 1]),
      'push lengths past the end': binary([0, 5, 5, 50, 5, 0x61]),
      'empty message': binary([]),
    });
  });

  it('closes with 1007 text that is not a Phoenix 5-element array', async () => {
    await expectCloses(worker, 1007, {
      'object {}': textStr('{}'),
      '[1,2]': textStr('[1,2]'),
      'string "x"': textStr('"x"'),
      'not json': textStr('not json'),
      'empty array': textStr('[]'),
      'four elements': textStr('[null,"1","room:a","ev"]'),
      'six elements': textStr('[null,"1","room:a","ev",{},"extra"]'),
      'six elements, the sixth null': textStr('[null,"1","room:a","ev",{},null]'),
      'truncated json': textStr('[null,"1","room:a","ev",{}'),
      'empty text': textStr(''),
    });
  });

  it('closes with 1007 a Phoenix array whose elements have the wrong types', async () => {
    await expectCloses(worker, 1007, {
      'topic is a number': textStr('["1","1",5,"phx_join",{}]'),
      'topic is null': textStr('["1","1",null,"phx_join",{}]'),
      'join_ref is an object': textStr('[{},"1","room:a","phx_join",{}]'),
      'ref is a number': textStr('["1",7,"room:a","phx_join",{}]'),
      'event is null': textStr('["1","1","room:a",null,{}]'),
      'event is an array': textStr('["1","1","room:a",["phx_join"],{}]'),
    });
  });

  it('closes with 1002 frames that break RFC 6455', async () => {
    const join = Buffer.from('["1","1","room:a","phx_join",{}]');
    await expectCloses(worker, 1002, {
      'unmasked frame': frames(buildFrame(OP.text, join, { mask: false })),
      'reserved data opcode 0x3': frames(buildFrame(0x3, join)),
      'reserved control opcode 0xB': frames(buildFrame(0xb, Buffer.from('x'))),
      'continuation with no message started': frames(buildFrame(OP.cont, join)),
      'new message inside a fragmented one': frames(buildFrame(OP.text, join.slice(0, 4), { fin: false }),
        buildFrame(OP.text, join)),
      'RSV1 set without an extension': frames(buildFrame(OP.text, join, { rsv: 4 })),
      'ping over 125 bytes': frames(buildFrame(OP.ping, Buffer.alloc(126, 'p'))),
      'fragmented ping': frames(buildFrame(OP.ping, Buffer.from('p'), { fin: false })),
    });
  });

  it('refuses joins past --max-topics (100) among 10,000 joins on one socket, and stays usable', async (t) => {
    const s = scopeFor(t);
    const c = await RawClient.connect(worker.port);
    s.add(() => c.destroy());
    c.discard = true;
    const replies = new Map();
    const count = counter(c, (m) => {
      if (m.type !== 'text' || !m.json || m.json[3] !== 'phx_reply') return false;
      replies.set(m.json[1], m.json[4]);
      return true;
    });
    const refusedBefore = (await metric(worker, 'switchboard_worker_joins_total', { result: 'too_many_topics' })) || 0;
    const total = 10000;
    const batch = 500;
    for (let start = 1; start <= total; start += batch) {
      const chunk = [];
      for (let i = start; i < start + batch; i++) {
        chunk.push(buildFrame(OP.text, Buffer.from(JSON.stringify([`${i}`, `${i}`, `many:${i}`, 'phx_join', {}]))));
      }
      c.write(Buffer.concat(chunk));
      await count.until(start + batch - 1, 'join replies');
    }
    assert.equal(replies.size, total);
    const wrong = [];
    for (let i = 1; i <= total; i++) {
      const r = replies.get(`${i}`);
      const want = i <= 100 ? { status: 'ok', response: {} } :
        { status: 'error', response: { reason: 'too many channels joined' } };
      if (JSON.stringify(r) !== JSON.stringify(want)) wrong.push(`join ${i}: ${JSON.stringify(r)}`);
    }
    assert.deepEqual(wrong.slice(0, 10), [], `${wrong.length} unexpected join replies`);

    c.discard = false;
    assert.deepEqual((await c.heartbeat('hb'))[4], { status: 'ok', response: {} });
    assert.equal((await c.push('many:1', 'phx_leave', {}, { joinRef: '1', ref: 'leave' }))[4].status, 'ok');
    assert.equal((await c.join('many:new', {}, { joinRef: 'new' }))[4].status, 'ok', 'a leave frees a slot');
    assert.deepEqual((await c.join('many:one-too-many', {}, { joinRef: 'more' }))[4],
      { status: 'error', response: { reason: 'too many channels joined' } });
    const refused = await metric(worker, 'switchboard_worker_joins_total', { result: 'too_many_topics' });
    assert.ok(refused >= refusedBefore + 9901, `joins_total{result="too_many_topics"} ${refusedBefore} -> ${refused}`);
  });

  it('answers /healthz 200, other paths 404, non-GET 405, and refuses upgrades without vsn 2.x with 403', async () => {
    assert.equal((await httpRequest(worker.port, { path: '/healthz' })).status, 200);
    assert.equal((await httpRequest(worker.port, { path: '/other' })).status, 404);
    assert.equal((await httpRequest(worker.port, { path: '/socket/websocket/x?vsn=2.0.0' })).status, 404);
    assert.equal((await httpRequest(worker.port, { method: 'POST', path: '/socket/websocket?vsn=2.0.0' })).status, 405);
    const upgradeStatus = async (path) => {
      try {
        const c = await RawClient.connect(worker.port, { path });
        c.destroy();
        return 101;
      } catch (e) {
        if (e.status === undefined) throw e;
        return e.status;
      }
    };
    assert.equal(await upgradeStatus('/other'), 404, 'upgrade on another path');
    assert.equal(await upgradeStatus('/socket/websocket'), 403, 'upgrade without vsn');
    assert.equal(await upgradeStatus('/socket/websocket?vsn=1.0.0'), 403, 'upgrade with vsn 1.0.0');
    assert.equal(await upgradeStatus('/socket/websocket?vsn=3.0.0'), 403, 'upgrade with vsn 3.0.0');
    assert.equal(await upgradeStatus('/socket/websocket?vsn=2.0.0'), 101);
  });

  it('rate limits pushes with an error reply and keeps the socket open (--rate 10 --burst 5)', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--rate', '10', '--burst', '5']);
    s.add(() => w.stop());
    const topic = 'room:rate';
    const c = await RawClient.connect(w.port);
    s.add(() => c.destroy());
    const other = await RawClient.connect(w.port);
    s.add(() => other.destroy());
    assert.equal((await other.join(topic))[4].status, 'ok');
    assert.equal((await c.join(topic, {}, { joinRef: 'j' }))[4].status, 'ok');

    const started = Date.now();
    const refs = [];
    for (let i = 0; i < 50; i++) {
      const ref = `p${i}`;
      refs.push(ref);
      c.sendJson(['j', ref, topic, 'burst', { i }]);
    }
    const outcomes = [];
    for (const ref of refs) outcomes.push((await c.reply(ref)).json[4]);
    const elapsed = (Date.now() - started) / 1000;
    const ok = outcomes.filter((o) => o.status === 'ok').length;
    const limited = outcomes.filter((o) => JSON.stringify(o) ===
      JSON.stringify({ status: 'error', response: { reason: 'rate limited' } })).length;
    assert.equal(ok + limited, 50, `unexpected replies: ${JSON.stringify(outcomes)}`);
    assert.ok(ok >= 1, 'no push got through');
    assert.ok(limited >= 1, 'no push was rate limited');
    assert.ok(ok <= 5 + Math.ceil(10 * elapsed) + 1, `${ok} pushes got through in ${elapsed} s`);
    assert.deepEqual((await c.heartbeat())[4], { status: 'ok', response: {} }, 'heartbeats are not rate limited');
    assert.ok(!c.ended, 'the socket was closed');

    await delay(1100); // the bucket refills with time; nothing to await
    assert.equal((await c.push(topic, 'burst', { i: 'late' }, { joinRef: 'j' }))[4].status, 'ok');
    await other.takeJson((j) => j[3] === 'burst' && j[4].i === 'late', { what: 'the push after the pause' });
    const relayed = other.inbox.all.filter((m) => m.json && m.json[3] === 'burst').length;
    assert.equal(relayed, ok + 1, 'only pushes that were not rate limited are relayed');
    assert.ok((await metric(w, 'switchboard_worker_rejected_messages_total', { reason: 'rate_limited' })) >= limited);
  });

  it('closes a client that never reads (--max-outbound 65536) while normal subscribers get every message in order', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--max-outbound', '65536', '--rate', '0']);
    s.add(() => w.stop());
    const topic = 'room:flood';
    const slow = await RawClient.connect(w.port);
    s.add(() => slow.destroy());
    assert.equal((await slow.join(topic))[4].status, 'ok');
    await slow.takeJson((j) => j[3] === 'presence_state');
    slow.socket.pause();
    slow.discard = true;

    const subs = [];
    for (let i = 0; i < 2; i++) {
      const sub = await RawClient.connect(w.port);
      s.add(() => sub.destroy());
      assert.equal((await sub.join(topic))[4].status, 'ok');
      sub.discard = true;
      sub.seqs = [];
      sub.count = counter(sub, (m) => {
        if (m.type !== 'text' || !m.json || m.json[3] !== 'flood') return false;
        sub.seqs.push(m.json[4].seq);
        return true;
      });
      subs.push(sub);
    }
    const pub = await RawClient.connect(w.port);
    s.add(() => pub.destroy());
    assert.equal((await pub.join(topic, {}, { joinRef: 'p' }))[4].status, 'ok');
    pub.discard = true;
    const pubReplies = counter(pub, (m) => m.type === 'text' && m.json && m.json[3] === 'phx_reply');

    // 2,000 x 4 KiB = 8 MB: more than loopback's kernel buffers can hold for
    // a reader that never reads (send buffer up to 4 MB), so the worker's
    // own queue for it must pass 64 KiB. Batches of 10 wait for the
    // subscribers, so they never have more than ~40 KiB outstanding.
    const pad = 'z'.repeat(4096);
    const total = 2000;
    for (let seq = 0; seq < total; seq += 10) {
      const chunk = [];
      for (let i = seq; i < seq + 10; i++) {
        chunk.push(buildFrame(OP.text, Buffer.from(`["p","r${i}","${topic}","flood",{"seq":${i},"pad":"${pad}"}]`)));
      }
      pub.write(Buffer.concat(chunk));
      for (const sub of subs) await sub.count.until(seq + 10, 'flood messages at a subscriber');
    }
    await pubReplies.until(total, 'replies to the publisher');
    const expected = Array.from({ length: total }, (_, i) => i);
    for (const sub of subs) {
      assert.deepEqual(sub.seqs, expected, 'a subscriber missed or reordered messages');
      assert.ok(!sub.ended, 'a subscriber that reads was closed');
    }
    await waitForMetric(w, 'switchboard_worker_closes_total', { reason: 'slow_consumer' }, (v) => v === 1);

    slow.socket.resume();
    const closed = await slow.closeCode();
    assert.notEqual(closed.code, 1000, 'never close 1000');
    if (closed.frame) assert.equal(closed.code, 1008, 'a slow consumer close frame carries 1008');
  });

  it('answers a third upgrade with 503 under --max-connections 2, and accepts again after a close', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--max-connections', '2']);
    s.add(() => w.stop());
    const a = await RawClient.connect(w.port);
    s.add(() => a.destroy());
    const b = await RawClient.connect(w.port);
    s.add(() => b.destroy());
    await assert.rejects(RawClient.connect(w.port), (e) => e.status === 503);
    assert.deepEqual((await a.heartbeat())[4].status, 'ok', 'existing connections are unaffected');
    await a.close();
    const c = await waitUntil(() => RawClient.connect(w.port), { timeout: 5000, interval: 100, what: 'a free slot' });
    s.add(() => c.destroy());
    assert.ok((await metric(w, 'switchboard_worker_upgrades_refused_total', { reason: 'overloaded' })) >= 1);
  });

  it('reports connections in the metrics gauge as they open and close', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--shard', '3']);
    s.add(() => w.stop());
    const gauge = (pred) => waitForMetric(w, 'switchboard_worker_connections', { shard: '3' }, pred, { timeout: 5000 });
    await gauge((v) => v === 0);
    const clients = [];
    for (let i = 0; i < 3; i++) {
      const c = await RawClient.connect(w.port);
      s.add(() => c.destroy());
      clients.push(c);
    }
    await gauge((v) => v === 3);
    await clients[0].close();
    await clients[1].close();
    await gauge((v) => v === 1);
    assert.ok((await metric(w, 'switchboard_worker_connections_accepted_total')) >= 3);
    assert.ok((await metric(w, 'switchboard_worker_closes_total', { reason: 'client' })) >= 2);
    await clients[2].heartbeat();
    assert.ok((await metric(w, 'switchboard_worker_frames_received_total')) >= 1);
  });

  // A client that never reads and floods pings. Why a first try saw
  // nothing (1 M pings, +0.1 MiB): their 2 MB of pongs fit in loopback's
  // kernel buffers (about 4 MB here), so the shard's queue for them only
  // passed through for a moment, and was freed before the next 1 s RSS
  // sample. Past the kernel's share, a 2-byte pong counted 2 against
  // --max-outbound but held ~42 bytes of heap: 1 MiB let ~21 MiB wait (the
  // peak, VmHWM, shows it). So the kernel buffers are filled first, with
  // broadcasts the client does not read, and then the pings come.
  it('a client that never reads and floods pings holds one pong, is closed as a slow consumer, and the shard stays within its memory bound', async (t) => {
    const s = scopeFor(t);
    const maxOutbound = 1 << 20;
    const w = await startWorker(['--max-outbound', String(maxOutbound), '--idle-timeout', '3', '--rate', '0'],
      { env: BOUNDED_MEMORY_ENV });
    s.add(() => w.stop());
    const topic = 'room:pings';
    const flooder = await RawClient.connect(w.port);
    s.add(() => flooder.destroy());
    assert.equal((await flooder.join(topic))[4].status, 'ok');
    await flooder.takeJson((j) => j[3] === 'presence_state');
    flooder.socket.pause();
    const pub = await RawClient.connect(w.port);
    s.add(() => pub.destroy());
    assert.equal((await pub.join(topic, {}, { joinRef: 'p' }))[4].status, 'ok');
    pub.discard = true;
    const replies = counter(pub, (m) => m.type === 'text' && m.json && m.json[3] === 'phx_reply');

    // 256 KiB of broadcasts at a time until the kernel takes no more for
    // the flooder. The flooder's frames are written before the publisher's
    // reply in the same loop turn, so once the replies are in, the gauge
    // says whether that write found the kernel buffer full.
    const pad = 'f'.repeat(32 * 1024);
    let sent = 0;
    do {
      assert.ok(sent < 2000, `the kernel buffers never filled (${sent} x 32 KiB sent)`);
      for (let i = 0; i < 8; i++) {
        sent += 1;
        pub.sendJson(['p', `f${sent}`, topic, 'fill', { pad }]);
      }
      await replies.until(sent, 'replies to the fill');
    } while ((await metric(w, 'switchboard_worker_blocked_sockets')) !== 1);
    const queuedBefore = await metric(w, 'switchboard_worker_client_queue_max_bytes');
    assert.ok(queuedBefore < maxOutbound / 2, `the fill already queued ${queuedBefore} bytes`);

    // Empty masked pings, 100,000 (600 KB) at a time, until the flooder is
    // closed; a 1 MiB queue counted by payload took ~500,000.
    // VmHWM alone can miss a peak the kernel never recorded: RSS is also
    // sampled between chunks.
    const before = w.memory().rss;
    let peak = before;
    const ping = Buffer.from([0x89, 0x80, 1, 2, 3, 4]);
    const chunk = Buffer.alloc(ping.length * 100000);
    for (let i = 0; i < 100000; i++) ping.copy(chunk, i * ping.length);
    const slowClosed = async () =>
      ((await metric(w, 'switchboard_worker_closes_total', { reason: 'slow_consumer' })) || 0) >= 1;
    let pings = 0;
    const deadline = Date.now() + 30000;
    while (!flooder.socket.destroyed && !(await slowClosed())) {
      assert.ok(Date.now() < deadline, `the flooder was not closed within 30 s (${pings} pings)`);
      if (!flooder.socket.write(chunk)) {
        await new Promise((resolve) => {
          const done = () => {
            flooder.socket.off('drain', done);
            flooder.socket.off('close', done);
            resolve();
          };
          flooder.socket.on('drain', done);
          flooder.socket.on('close', done);
        });
      }
      pings += 100000;
      peak = Math.max(peak, w.memory().rss);
    }
    await waitForMetric(w, 'switchboard_worker_closes_total', { reason: 'slow_consumer' }, (v) => v === 1);
    assert.ok(pings >= maxOutbound / 2, `only ${pings} pings were sent before the close`);
    // The bound: the flooder's queue is within --max-outbound, frames and
    // their overhead (glibc's; more under ASan); 1 MiB more for the rest
    // (read buffer, allocator).
    const grown = Math.max(peak, w.memory().peak) - before;
    assert.ok(grown <= maxOutbound * HEAP_FACTOR + (1 << 20),
      `the shard's peak memory grew by ${(grown / 1048576).toFixed(1)} MiB during ${pings} pings`);
  });

  it('closes with 1008 a fragmented message kept open by pings past --message-timeout', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--message-timeout', '1', '--idle-timeout', '30']);
    s.add(() => w.stop());

    // Each message on its own clock: two joins, each in two fragments 600 ms
    // apart (the second starts as the first ends), take 1.2 s in all.
    const c = await RawClient.connect(w.port);
    s.add(() => c.destroy());
    const join = (ref) => Buffer.from(`["${ref}","${ref}","room:frag${ref}","phx_join",{}]`);
    const a = join('1');
    const b = join('2');
    c.write(buildFrame(OP.text, a.slice(0, 10), { fin: false }));
    await delay(600); // the client's pace is the point: nothing to wait for
    c.write(Buffer.concat([buildFrame(OP.ping, Buffer.from('x')), buildFrame(OP.cont, a.slice(10)),
      buildFrame(OP.text, b.slice(0, 10), { fin: false })]));
    assert.equal((await c.reply('1')).json[4].status, 'ok');
    await delay(600);
    c.write(buildFrame(OP.cont, b.slice(10)));
    assert.equal((await c.reply('2')).json[4].status, 'ok');

    // A message that never ends, kept open by pings every 200 ms.
    const slow = await RawClient.connect(w.port);
    s.add(() => slow.destroy());
    slow.write(buildFrame(OP.text, Buffer.from('["3","3","room:slow",'), { fin: false }));
    const pinger = setInterval(() => slow.sendFrame(OP.ping, Buffer.from('k')), 200);
    s.add(() => clearInterval(pinger));
    const closed = await slow.closeCode({ timeout: 5000 });
    clearInterval(pinger);
    assert.deepEqual(closed, { code: 1008, reason: 'message timeout', frame: true });
    assert.ok(slow.inbox.all.filter((m) => m.type === 'pong').length >= 3, 'pings were answered meanwhile');
    assert.equal(await metric(w, 'switchboard_worker_closes_total', { reason: 'message_timeout' }), 1);
    assert.equal((await c.heartbeat())[4].status, 'ok');
  });

  it('holds at most --max-connections + 64 sockets: connections that never send a request wait in the backlog', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--max-connections', '2']);
    s.add(() => w.stop());
    const probe = await RawClient.connect(w.port);
    s.add(() => probe.destroy());
    const idle = [];
    s.add(() => idle.forEach((sock) => sock.destroy()));
    await Promise.all(Array.from({ length: 200 }, () => new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: w.port }, resolve);
      sock.on('error', reject);
      idle.push(sock);
    })));
    const cap = 2 + 64;
    await waitForMetric(w, 'switchboard_worker_connections_accepted_total', {}, (v) => v >= cap);
    // Round trips through the shard's loop: a shard still accepting would
    // have taken all 200 (64 per turn) by now.
    for (let i = 0; i < 3; i++) assert.equal((await probe.heartbeat())[4].status, 'ok');
    assert.equal(await metric(w, 'switchboard_worker_connections_accepted_total'), cap);
    assert.equal(await metric(w, 'switchboard_worker_sockets'), cap);

    // A newcomer waits in the backlog behind them and gets in once they go.
    const late = RawClient.connect(w.port, { timeout: 15000 });
    for (const sock of idle) sock.destroy();
    const c = await late;
    s.add(() => c.destroy());
    assert.equal((await c.heartbeat())[4].status, 'ok');
    await waitForMetric(w, 'switchboard_worker_sockets', {}, (v) => v === 2);
  });

  it('closes at accept a socket past --max-connections-per-ip from one address, not from another', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--max-connections-per-ip', '2']);
    s.add(() => w.stop());
    const from = async (localAddress) => {
      const c = await RawClient.connect(w.port, { localAddress });
      s.add(() => c.destroy());
      return c;
    };
    const refused = () => metric(w, 'switchboard_worker_upgrades_refused_total', { reason: 'address_limit' });
    const a1 = await from('127.0.0.2');
    await from('127.0.0.2');
    await assert.rejects(from('127.0.0.2'), (e) => e.status === undefined, 'no HTTP answer, no upgrade');
    await from('127.0.0.3');
    const b2 = await from('127.0.0.3');
    assert.equal(await refused(), 1);

    // Counted from accept: two sockets that never send a request fill
    // 127.0.0.4's share.
    await Promise.all([0, 1].map(() => new Promise((resolve, reject) => {
      const sock = net.connect({ host: '127.0.0.1', port: w.port, localAddress: '127.0.0.4' }, resolve);
      sock.on('error', reject);
      s.add(() => sock.destroy());
    })));
    await waitForMetric(w, 'switchboard_worker_sockets', {}, (v) => v === 6);
    await assert.rejects(from('127.0.0.4'), (e) => e.status === undefined);
    assert.equal(await refused(), 2);

    // A socket that goes frees its address's slot.
    await a1.close();
    assert.equal((await (await from('127.0.0.2')).heartbeat())[4].status, 'ok');
    assert.equal((await b2.heartbeat())[4].status, 'ok');
    assert.equal(await refused(), 2);
  });

  it('gives a joiner its presence_state past --max-outbound (30 metas of 3.9 KiB, 64 KiB) and refuses a 100 KiB meta', async (t) => {
    const s = scopeFor(t);
    const w = await startWorker(['--max-outbound', '65536', '--rate', '0']);
    s.add(() => w.stop());
    const topic = 'room:crowd';
    const meta = { pad: 'm'.repeat(3900) };
    for (let i = 0; i < 30; i++) {
      const c = await RawClient.connect(w.port);
      s.add(() => c.destroy());
      assert.equal((await c.join(topic, { presence: { key: `member${i}`, meta } }))[4].status, 'ok');
      c.discard = true;
      c.inbox.clear();
    }
    const joiner = await RawClient.connect(w.port);
    s.add(() => joiner.destroy());
    assert.deepEqual((await joiner.join(topic))[4], { status: 'ok', response: {} });
    const state = await joiner.takeJson((j) => j[3] === 'presence_state');
    assert.ok(state.data.length > 65536, `presence_state of ${state.data.length} bytes`);
    assert.equal(Object.keys(state.json[4]).length, 30);
    assert.equal((await joiner.heartbeat())[4].status, 'ok');
    assert.ok(!joiner.ended, 'the joiner was closed');
    assert.equal(await metric(w, 'switchboard_worker_closes_total', { reason: 'slow_consumer' }), 0);

    const big = await RawClient.connect(w.port);
    s.add(() => big.destroy());
    assert.deepEqual((await big.join(topic, { presence: { key: 'big', meta: { pad: 'b'.repeat(100 * 1024) } } }))[4],
      { status: 'error', response: { reason: 'presence too large' } });
    assert.equal((await big.heartbeat())[4].status, 'ok');
    assert.equal(await metric(w, 'switchboard_worker_joins_total', { result: 'presence_too_large' }), 1);
  });

  it('the bystander received every broadcast in order and was never disconnected', () => {
    const ns = bystander.all.map((m) => m.payload.n);
    assert.deepEqual(ns, Array.from({ length: ticks }, (_, i) => i + 1));
    assert.equal(bystanderSocket.closes.all.length, 0, 'the bystander socket was closed');
    assert.equal(bystanderSocket.openCount, 1, 'the bystander reconnected');
  });
});

