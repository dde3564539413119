'use strict';
// The shards' HTTP API on a whole node (broker and two shards under
// `switchboard run`): POST /api/publish and /api/broadcast reach subscribers
// on both shards with the payload bytes unchanged, a repeated idempotency
// key is delivered once, GET /api/presence answers cluster-wide from a shard
// with or without local subscribers, requests share one keep-alive
// connection, every refusal has its status and error code, and `switchboard
// publish` posts with the URL and key of the config.

const { describe } = require('node:test');
const assert = require('node:assert/strict');
const { execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const WebSocket = require('ws');
const { startCluster, it, metric } = require('./lib/cluster');
const { startWorker } = require('./lib/worker');
const { connect, join, record, next } = require('./lib/phoenix');
const { scopeFor, withTimeout, Inbox, waitUntil } = require('./lib/util');

const MAX_FRAME = 8192;

// A key file readable by its owner only, as the shards require.
function keyFile(s) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-api-'));
  s.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'api-key');
  const key = 'k'.repeat(8) + Math.random().toString(16).slice(2).padEnd(24, '0');
  fs.writeFileSync(file, `${key}\n`, { mode: 0o600 });
  return { dir, file, key };
}

// One HTTP/1.1 connection; request() sends one request and resolves with
// the answer {status, headers, body, json}, so consecutive calls show
// whether the shard kept the connection.
class HttpConn {
  constructor(port) {
    this.port = port;
    this.sock = null;
    this.buf = Buffer.alloc(0);
    this.answers = new Inbox();
    this.closed = false;
  }

  async open() {
    this.sock = net.connect(this.port, '127.0.0.1');
    await withTimeout(new Promise((resolve, reject) => {
      this.sock.once('connect', resolve);
      this.sock.once('error', reject);
    }), 5000, 'the API connection');
    this.sock.on('data', (d) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.parse();
    });
    this.sock.on('error', () => {});
    this.sock.on('close', () => {
      this.closed = true;
      this.answers.push({ closed: true });
    });
    return this;
  }

  parse() {
    for (;;) {
      const end = this.buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buf.subarray(0, end).toString('latin1').split('\r\n');
      const headers = {};
      for (const line of head.slice(1)) {
        const c = line.indexOf(':');
        headers[line.slice(0, c).toLowerCase()] = line.slice(c + 1).trim();
      }
      const length = Number(headers['content-length'] || 0);
      if (this.buf.length < end + 4 + length) return;
      const body = this.buf.subarray(end + 4, end + 4 + length).toString('utf8');
      this.buf = this.buf.subarray(end + 4 + length);
      let json;
      try {
        json = JSON.parse(body);
      } catch {
        json = undefined;
      }
      this.answers.push({ status: Number(head[0].split(' ')[1]), headers, body, json });
    }
  }

  send(raw) {
    this.sock.write(raw);
    return this.answers.take(() => true, { what: 'an API answer' });
  }

  request(method, target, { key, body, headers = {} } = {}) {
    const lines = [`${method} ${target} HTTP/1.1`, 'Host: shard'];
    if (key !== undefined) lines.push(`Authorization: Bearer ${key}`);
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}: ${v}`);
    const data = body === undefined ? Buffer.alloc(0) : Buffer.from(body);
    if (body !== undefined) lines.push('Content-Type: application/json', `Content-Length: ${data.length}`);
    return this.send(Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), data]));
  }

  close() {
    if (this.sock) this.sock.destroy();
  }
}

async function api(s, port) {
  const c = await new HttpConn(port).open();
  s.add(() => c.close());
  return c;
}

// A raw WebSocket joined to `topics`: every text frame it receives, as
// text, in an Inbox.
async function rawSubscriber(s, port, topics) {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/socket/websocket?vsn=2.0.0`);
  s.add(() => ws.terminate());
  const frames = new Inbox();
  ws.on('message', (data) => frames.push(String(data)));
  await withTimeout(new Promise((resolve, reject) => {
    ws.once('open', resolve);
    ws.once('error', reject);
  }), 5000, 'a raw WebSocket to open');
  let ref = 0;
  for (const topic of topics) {
    ref++;
    ws.send(JSON.stringify([String(ref), String(ref), topic, 'phx_join', {}]));
    const r = String(ref);
    await frames.take((f) => JSON.parse(f)[1] === r, { what: `the join reply for ${topic}` });
  }
  return frames;
}

function run(args, { timeout = 15000 } = {}) {
  return new Promise((resolve) => {
    execFile(path.join(process.env.SWITCHBOARD_BIN_DIR, 'switchboard'), args, { timeout }, (err, stdout, stderr) => {
      resolve({ code: err ? err.code : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

describe('the HTTP API of a node', () => {
  it('publishes to both shards byte for byte, broadcasts, dedupes, keeps the connection, counts', async (t) => {
    const s = scopeFor(t);
    const { file, key } = keyFile(s);
    const args = ['--api-key-file', file, '--max-frame', String(MAX_FRAME)];
    const cluster = await startCluster({ shards: [{ args }, { args }] });
    s.add(() => cluster.stop());
    const [s0, s1] = cluster.shards;

    const raw0 = await rawSubscriber(s, s0.port, ['room:a', 'room:b']);
    const raw1 = await rawSubscriber(s, s1.port, ['room:a', 'room:c']);
    const socket = await connect(s, s1.url);
    const channel = socket.channel('room:a', {});
    const inbox = record(channel, ['msg']);
    assert.equal((await join(channel)).status, 'ok');

    const conn = await api(s, s0.port);
    // Whitespace, key order, escapes and number spellings the relay must keep.
    const payload = '{ "z" : [1, 2.50, 1e3], "a":"\\u00e9\\n", "n" : null }';
    const body = `{"topic":"room:a","event":"msg","payload":${payload}}`;
    const r = await conn.request('POST', '/api/publish', { key, body });
    assert.equal(r.status, 200, r.body);
    assert.deepEqual(r.json, { ok: true });
    assert.equal(r.headers.connection, 'keep-alive');
    const expected = `[null,null,"room:a","msg",${payload}]`;
    assert.equal(await raw0.take((f) => f.includes('"msg"'), { what: 'the publish on shard 0' }), expected);
    assert.equal(await raw1.take((f) => f.includes('"msg"'), { what: 'the publish on shard 1' }), expected);
    assert.deepEqual((await next(inbox, 'msg')).payload, JSON.parse(payload));

    // Several topics, on the same connection.
    const b = await conn.request('POST', '/api/broadcast', {
      key, body: '{"topics":["room:b","room:c"],"event":"news","payload":[1]}',
    });
    assert.equal(b.status, 200, b.body);
    assert.equal(await raw0.take((f) => f.includes('"news"')), '[null,null,"room:b","news",[1]]');
    assert.equal(await raw1.take((f) => f.includes('"news"')), '[null,null,"room:c","news",[1]]');

    // An idempotency key: the repeat is answered alike and not delivered.
    const once = '{"topic":"room:a","event":"once","payload":{"n":1},"idempotency_key":"order-42"}';
    const first = await conn.request('POST', '/api/publish', { key, body: once });
    const again = await conn.request('POST', '/api/publish', { key, body: once });
    assert.equal(first.status, 200);
    assert.equal(again.status, 200);
    assert.equal(again.body, first.body);
    await raw1.take((f) => f.includes('"once"'), { what: 'the first publish with the key' });
    // A later publish on the same topic arrives after any second copy would have.
    assert.equal((await conn.request('POST', '/api/publish', {
      key, body: '{"topic":"room:a","event":"after","payload":0}',
    })).status, 200);
    await raw1.take((f) => f.includes('"after"'), { what: 'the publish after the repeat' });
    assert.equal(raw1.all.filter((f) => f.includes('"once"')).length, 1, 'delivered once');
    assert.equal(raw0.all.filter((f) => f.includes('"once"')).length, 1, 'delivered once on shard 0');
    assert.equal(conn.closed, false, 'every answer so far on one connection');

    // Pipelined: three requests in one write, three answers in order.
    const one = (n) => {
      const b = `{"topic":"room:a","event":"pipe","payload":${n}}`;
      return `POST /api/publish HTTP/1.1\r\nHost: shard\r\nAuthorization: Bearer ${key}\r\n` +
        `Content-Length: ${b.length}\r\n\r\n${b}`;
    };
    conn.sock.write(one(1) + one(2) + one(3));
    for (let n = 1; n <= 3; n++) {
      assert.equal((await conn.answers.take(() => true, { what: `pipelined answer ${n}` })).status, 200);
      assert.equal(await raw1.take((f) => f.includes('"pipe"')), `[null,null,"room:a","pipe",${n}]`);
    }

    // Expect: 100-continue (curl sends it for bodies over 1 KiB): the shard
    // says go on before the body is sent.
    const big = `{"topic":"room:a","event":"big","payload":"${'y'.repeat(2000)}"}`;
    conn.sock.write(`POST /api/publish HTTP/1.1\r\nHost: shard\r\nAuthorization: Bearer ${key}\r\n` +
      `Content-Length: ${big.length}\r\nExpect: 100-continue\r\n\r\n`);
    assert.equal((await conn.answers.take(() => true, { what: '100 Continue' })).status, 100);
    conn.sock.write(big);
    assert.equal((await conn.answers.take(() => true, { what: 'the answer after the body' })).status, 200);

    // "Connection: close" is honoured.
    const last = await conn.request('GET', '/api/presence?topic=room:a', { key, headers: { Connection: 'close' } });
    assert.equal(last.status, 200);
    assert.equal(last.headers.connection, 'close');
    await conn.answers.take((a) => a.closed, { what: 'the shard to close the connection' });

    assert.equal(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'publish', status: '200' }), 8);
    assert.equal(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'broadcast', status: '200' }), 1);
  });

  it('delivers a key once per node, whichever shard gets it, and across a broker kill -9', async (t) => {
    const s = scopeFor(t);
    const { file, key } = keyFile(s);
    const args = ['--api-key-file', file, '--max-frame', String(MAX_FRAME)];
    const cluster = await startCluster({ shards: [{ args }, { args }] });
    s.add(() => cluster.stop());
    const [s0, s1] = cluster.shards;
    const raw0 = await rawSubscriber(s, s0.port, ['room:a', 'room:b']);
    const raw1 = await rawSubscriber(s, s1.port, ['room:a', 'room:b']);
    const count = (raw, event) => raw.all.filter((f) => f.includes(`"${event}"`)).length;
    // Each request on a connection of its own, as separate curls would be.
    const post = async (port, path, body) => {
      const c = await api(s, port);
      const r = await c.request('POST', path, { key, body });
      assert.equal(r.status, 200, r.body);
      assert.deepEqual(r.json, { ok: true });
      return r;
    };
    // A publish after the others, from `port`: keyed, so it goes through the
    // broker to every shard, its own included, after any second copy of the
    // ones before it would have.
    let marks = 0;
    const settle = async (port) => {
      const event = `mark${++marks}`;
      await post(port, '/api/publish',
        `{"topic":"room:a","event":"${event}","payload":0,"idempotency_key":"${event}"}`);
      await raw0.take((f) => f.includes(`"${event}"`), { what: `${event} on shard 0` });
      await raw1.take((f) => f.includes(`"${event}"`), { what: `${event} on shard 1` });
    };

    const once = '{"topic":"room:a","event":"once","payload":1,"idempotency_key":"order-1"}';
    const first = await post(s0.port, '/api/publish', once);
    const second = await post(s1.port, '/api/publish', once);
    assert.equal(second.body, first.body, 'the repeat is answered alike');
    await settle(s0.port);
    await settle(s1.port);
    assert.equal(count(raw0, 'once'), 1, 'delivered once on shard 0');
    assert.equal(count(raw1, 'once'), 1, 'delivered once on shard 1');

    // Another key is another publish.
    await post(s1.port, '/api/publish', '{"topic":"room:a","event":"other","payload":2,"idempotency_key":"order-2"}');
    await raw0.take((f) => f.includes('"other"'), { what: 'the other key on shard 0' });
    await raw1.take((f) => f.includes('"other"'), { what: 'the other key on shard 1' });

    // A broadcast's key covers each of its topics; a publish of the same key
    // on one of them is a repeat.
    await post(s0.port, '/api/broadcast', '{"topics":["room:a","room:b"],"event":"multi","payload":3,"idempotency_key":"order-3"}');
    await post(s1.port, '/api/publish', '{"topic":"room:b","event":"multi","payload":3,"idempotency_key":"order-3"}');
    await settle(s1.port);
    assert.equal(count(raw0, 'multi'), 2, 'one per topic on shard 0');
    assert.equal(count(raw1, 'multi'), 2, 'one per topic on shard 1');
    assert.equal(await metric(cluster.broker, 'switchboard_broker_idempotent_repeats_total'), 2);

    // A key published on shard 0 only; the broker dies; the new one learns
    // the key from shard 0's hello, and shard 1, which never saw it, sends
    // the repeat to it.
    const late = '{"topic":"room:a","event":"late","payload":4,"idempotency_key":"order-4"}';
    await post(s0.port, '/api/publish', late);
    await settle(s0.port);
    await cluster.restartBroker();
    await post(s1.port, '/api/publish', late);
    await settle(s1.port);
    assert.equal(count(raw0, 'late'), 1, 'once on shard 0 after the broker restart');
    assert.equal(count(raw1, 'late'), 1, 'once on shard 1 after the broker restart');
    assert.equal(await metric(cluster.broker, 'switchboard_broker_idempotent_repeats_total'), 1);
  });

  it('refuses: 401, 400, 404, 405, 413, and 503 with the outbox full', async (t) => {
    const s = scopeFor(t);
    const { file, key } = keyFile(s);
    const args = ['--api-key-file', file, '--max-frame', String(MAX_FRAME), '--max-outbox', '3'];
    const cluster = await startCluster({ shards: [{ args }, { args }] });
    s.add(() => cluster.stop());
    const [s0] = cluster.shards;
    const conn = await api(s, s0.port);
    const good = '{"topic":"t","event":"e","payload":1}';
    const code = (a) => a.json && a.json.error && a.json.error.code;

    // Without the key a body is never read: answered from the header, and
    // the connection closes.
    for (const k of [undefined, `${key}x`, key.slice(1)]) {
      const c = await api(s, s0.port);
      const r = await c.request('POST', '/api/publish', { key: k, body: good });
      assert.equal(r.status, 401);
      assert.equal(code(r), 'unauthorized');
      assert.equal(r.headers['www-authenticate'], 'Bearer');
      assert.equal(r.headers.connection, 'close');
      await c.answers.take((x) => x.closed, { what: 'the shard to close after a 401' });
    }
    // A request without a body is answered 401 and the connection stays.
    let a = await conn.request('GET', '/api/presence?topic=t', { key: 'nope' });
    assert.equal(a.status, 401);
    a = await conn.request('POST', '/api/publish', { key, body: '{"topic":"t","event":"e"' });
    assert.equal(a.status, 400);
    assert.equal(code(a), 'bad_request');
    a = await conn.request('POST', '/api/publish', { key, body: '{"topic":"t","event":"phx_reply","payload":1}' });
    assert.equal(a.status, 400);
    assert.equal(code(a), 'reserved_event');
    a = await conn.request('GET', '/api/history?topic=t', { key });
    assert.equal(a.status, 404, 'history is not routed yet');
    a = await conn.request('GET', '/api/publish', { key });
    assert.equal(a.status, 405);
    assert.equal(conn.closed, false, 'refusals keep the connection');

    // Over --max-frame: refused from Content-Length, the body never read.
    // Megabytes of it already on the way must not reset the connection
    // before the answer is read (the shard half-closes and drains).
    a = await conn.request('POST', '/api/publish', {
      key, body: `{"topic":"t","event":"e","payload":"${'x'.repeat(4 << 20)}"}`,
    });
    assert.equal(a.status, 413);
    assert.equal(code(a), 'too_large');
    await conn.answers.take((x) => x.closed, { what: 'the shard to close after a 413' });

    // The broker stopped: the outbox (--max-outbox 3) fills, then 503.
    await cluster.pause('broker');
    const c2 = await api(s, s0.port);
    let refused;
    for (let i = 0; i < 10 && !refused; i++) {
      const r = await c2.request('POST', '/api/publish', { key, body: good });
      if (r.status === 503) refused = r;
      else assert.equal(r.status, 200, r.body);
    }
    assert.ok(refused, 'a publish refused once the outbox is full');
    assert.equal(code(refused), 'unavailable');
    assert.equal(refused.headers['retry-after'], '1');
    // Presence of a topic without local subscribers needs the broker's
    // snapshot: a stopped broker is a 503 within the wait's bound.
    const t0 = Date.now();
    const p = await c2.request('GET', '/api/presence?topic=room:nobody', { key });
    assert.equal(p.status, 503, p.body);
    assert.ok(['presence_timeout', 'unavailable'].includes(code(p)), p.body);
    assert.ok(Date.now() - t0 < 3000, 'answered within the bound');
    await cluster.resume('broker');
    await waitUntil(async () => (await c2.request('POST', '/api/publish', { key, body: good })).status === 200,
      { what: 'publishes accepted again once the broker acks' });
    assert.ok(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'publish', status: '503' }) >= 1);
    assert.equal(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'publish', status: '401' }), 3);
    assert.equal(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'presence', status: '401' }), 1);
    assert.equal(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'publish', status: '413' }), 1);
  });

  it('is off without --api-key-file: 404', async (t) => {
    const s = scopeFor(t);
    const worker = await startWorker();
    s.add(() => worker.stop());
    const conn = await api(s, worker.port);
    const a = await conn.request('POST', '/api/publish', { key: 'whatever', body: '{}' });
    assert.equal(a.status, 404);
    assert.equal(a.json.error.code, 'not_found');
  });

  it('answers presence cluster-wide from a shard with and without local subscribers', async (t) => {
    const s = scopeFor(t);
    const { file, key } = keyFile(s);
    const args = ['--api-key-file', file];
    const cluster = await startCluster({ shards: [{ args }, { args }] });
    s.add(() => cluster.stop());
    const [s0, s1] = cluster.shards;

    const bob = await connect(s, s1.url);
    const bobChannel = bob.channel('room:p', { presence: { key: 'bob', meta: { name: 'Bob' } } });
    const bobInbox = record(bobChannel, ['presence_state']);
    assert.equal((await join(bobChannel)).status, 'ok');
    await next(bobInbox, 'presence_state');

    // Shard 0 has nobody on room:p: it asks the broker.
    const conn = await api(s, s0.port);
    let a = await conn.request('GET', '/api/presence?topic=room:p', { key });
    assert.equal(a.status, 200, a.body);
    assert.deepEqual(Object.keys(a.json), ['bob']);
    assert.equal(a.json.bob.metas[0].name, 'Bob');
    assert.ok(a.json.bob.metas[0].phx_ref);
    // Again: the broker subscription made for the first query was let go
    // with its answer, and is made again.
    a = await conn.request('GET', '/api/presence?topic=room%3Ap', { key });
    assert.deepEqual(Object.keys(a.json), ['bob']);
    // Nobody anywhere: an empty state.
    a = await conn.request('GET', '/api/presence?topic=room:empty', { key });
    assert.equal(a.status, 200);
    assert.deepEqual(a.json, {});

    // With a local subscriber too: both shards' metas.
    const alice = await connect(s, s0.url);
    const aliceChannel = alice.channel('room:p', { presence: { key: 'alice', meta: { name: 'Alice' } } });
    const aliceInbox = record(aliceChannel, ['presence_state']);
    assert.equal((await join(aliceChannel)).status, 'ok');
    await next(aliceInbox, 'presence_state');
    a = await conn.request('GET', '/api/presence?topic=room:p', { key });
    assert.deepEqual(Object.keys(a.json).sort(), ['alice', 'bob']);
    // And from shard 1.
    const conn1 = await api(s, s1.port);
    a = await conn1.request('GET', '/api/presence?topic=room:p', { key });
    assert.deepEqual(Object.keys(a.json).sort(), ['alice', 'bob']);
    assert.equal(await metric(s0, 'switchboard_worker_api_requests_total', { endpoint: 'presence', status: '200' }), 4);
  });

  it('switchboard publish posts with the URL and key of the config', async (t) => {
    const s = scopeFor(t);
    const { dir, file } = keyFile(s);
    const args = ['--api-key-file', file];
    const cluster = await startCluster({ shards: [{ args }, { args }] });
    s.add(() => cluster.stop());
    const [s0, s1] = cluster.shards;
    const raw1 = await rawSubscriber(s, s1.port, ['room:cli']);
    const config = path.join(dir, 'publish.yaml');
    const yaml = (keyPath) => `node:\n  api: {url: "http://127.0.0.1:${s0.port}", key_file: ${JSON.stringify(keyPath)}}\n` +
      'supervisor: {strategy: one_for_one}\n';
    fs.writeFileSync(config, yaml(file));

    let r = await run(['publish', '--config', config, 'room:cli', 'hello', '{"x": [1, 2]}']);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), '{"ok":true}');
    assert.equal(await raw1.take((f) => f.includes('"hello"')), '[null,null,"room:cli","hello",{"x": [1, 2]}]');

    r = await run(['publish', '--config', config, 'room:cli', 'phx_join', '1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 400.*reserved_event/);

    const wrong = path.join(dir, 'wrong-key');
    fs.writeFileSync(wrong, 'not-the-key-0123456789\n', { mode: 0o600 });
    fs.writeFileSync(config, yaml(wrong));
    r = await run(['publish', '--config', config, 'room:cli', 'hello', '1']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /HTTP 401/);

    r = await run(['publish', '--config', config, 'room:cli', 'hello', '{nope']);
    assert.equal(r.code, 2);
    r = await run(['publish', '--config', config, 'room:cli']);
    assert.equal(r.code, 2);
  });
});
