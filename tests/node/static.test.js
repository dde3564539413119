'use strict';
// --static DIR on a real shard: files under / with their type and
// validators, HEAD and 304, refusals (method, traversal, hidden names), the
// shard's own paths (/healthz, /socket, /api) never shadowed by files of
// those names, and the answers counted by status. Node built-ins only.

const { describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const { startWorker, it, httpRequest, metric } = require('./lib/worker');
const { withTimeout } = require('./lib/util');

const STATIC = 'switchboard_worker_static_requests_total';

// One raw request line, as sent (no client normalises "..": that is the
// point); resolves with the status of the answer.
function rawStatus(port, target) {
  return withTimeout(new Promise((resolve, reject) => {
    const s = net.connect(port, '127.0.0.1', () => s.write(`GET ${target} HTTP/1.1\r\nHost: x\r\n\r\n`));
    let data = '';
    s.setEncoding('utf8');
    s.on('data', (c) => { data += c; });
    s.on('end', () => resolve(Number(/^HTTP\/1\.1 (\d+)/.exec(data)?.[1])));
    s.on('error', reject);
  }), 10000, `an answer to GET ${target}`);
}

describe('--static', () => {
  let dir;
  let worker;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-static-'));
    const root = path.join(dir, 'root');
    for (const d of ['socket', 'api', 'sub']) fs.mkdirSync(path.join(root, d), { recursive: true });
    fs.writeFileSync(path.join(root, 'index.html'), '<h1>page</h1>\n');
    fs.writeFileSync(path.join(root, 'app.js'), 'export const x = 1;\n');
    // Files named like the shard's own paths: never served.
    fs.writeFileSync(path.join(root, 'healthz'), 'FILE\n');
    fs.writeFileSync(path.join(root, 'socket', 'websocket'), 'FILE\n');
    fs.writeFileSync(path.join(root, 'api', 'topics'), 'FILE\n');
    fs.writeFileSync(path.join(root, '.env'), 'SECRET\n');
    fs.writeFileSync(path.join(dir, 'outside.txt'), 'SECRET\n');
    fs.symlinkSync(path.join(dir, 'outside.txt'), path.join(root, 'link.txt'));
    worker = await startWorker(['--static', root]);
  });

  after(async () => {
    if (worker) await worker.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('serves the index and files with their type, validators and caching', async () => {
    const index = await httpRequest(worker.port, { path: '/' });
    assert.equal(index.status, 200);
    assert.equal(index.body, '<h1>page</h1>\n');
    assert.equal(index.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(index.headers['cache-control'], 'no-cache');
    assert.equal(index.headers['x-content-type-options'], 'nosniff');
    assert.match(index.headers['last-modified'], /GMT$/);

    const js = await httpRequest(worker.port, { path: '/app.js?v=2' });
    assert.equal(js.status, 200);
    assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
    assert.equal(js.headers['cache-control'], 'max-age=60');
    assert.match(js.headers.etag, /^"[0-9a-f]+-[0-9a-f]+"$/);

    const again = await httpRequest(worker.port, { path: '/app.js', headers: { 'if-none-match': js.headers.etag } });
    assert.equal(again.status, 304);
    assert.equal(again.body, '');

    const head = await httpRequest(worker.port, { method: 'HEAD', path: '/app.js' });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-length'], String('export const x = 1;\n'.length));
    assert.equal(head.body, '');

    const post = await httpRequest(worker.port, { method: 'POST', path: '/app.js' });
    assert.equal(post.status, 405);
    assert.equal(post.headers.allow, 'GET, HEAD');
  });

  it('never lets a file shadow /healthz, /socket or /api', async () => {
    const health = await httpRequest(worker.port, { path: '/healthz' });
    assert.deepEqual([health.status, health.body], [200, 'ok\n']);
    const socket = await httpRequest(worker.port, { path: '/socket/websocket?vsn=2.0.0' });
    assert.equal(socket.status, 400, 'the shard\'s answer to a GET that is not an upgrade');
    assert.notEqual(socket.body, 'FILE\n');
    const api = await httpRequest(worker.port, { path: '/api/topics' });
    assert.notEqual(api.body, 'FILE\n');
  });

  it('refuses traversal, hidden names, symlinks out of the root and listings', async () => {
    const statuses = {};
    for (const target of ['/../outside.txt', '/sub/../../outside.txt', '/%2e%2e/outside.txt', '/..%2foutside.txt',
      '/a\\..\\outside.txt', '/.env', '/link.txt', '/sub/', '/nope.js']) {
      statuses[target] = await rawStatus(worker.port, target);
    }
    assert.deepEqual(statuses, {
      '/../outside.txt': 403,
      '/sub/../../outside.txt': 403,
      '/%2e%2e/outside.txt': 403,
      '/..%2foutside.txt': 400,
      '/a\\..\\outside.txt': 400,
      '/.env': 404,
      '/link.txt': 403,
      '/sub/': 404,
      '/nope.js': 404,
    });
  });

  it('counts its answers by status', async () => {
    const counts = {};
    for (const status of ['200', '304', '400', '403', '404', '405', '500']) {
      counts[status] = await metric(worker, STATIC, { status });
    }
    // The tests above: 200 for /, /app.js and HEAD, 304, 405, then 403 ×4,
    // 400 ×2, 404 ×3; the shard's own paths are not static requests.
    assert.deepEqual(counts, { 200: 3, 304: 1, 400: 2, 403: 4, 404: 3, 405: 1, 500: 0 });
  });
});

describe('without --static', () => {
  it('answers 404 at / as before', async () => {
    const worker = await startWorker();
    try {
      const res = await httpRequest(worker.port, { path: '/' });
      assert.equal(res.status, 404);
      assert.equal(await metric(worker, STATIC, { status: '404' }), 0);
    } finally {
      await worker.stop();
    }
  });
});
