'use strict';
// The Origin check (--check-origin, --allowed-origins), with the real `ws`
// client sending the Origin header a browser would: a page from another
// site is refused with HTTP 403 and counted as forbidden_origin; a page from
// the shard's own host, an allowed origin, or a client without an Origin
// header (not a browser) connects.

const { describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startWorker, runWorkerToExit, it, metric } = require('./lib/worker');
const { wsUpgrade } = require('./lib/raw');
const { connect, join } = require('./lib/phoenix');
const { scopeFor } = require('./lib/util');

const REFUSED = 'switchboard_worker_upgrades_refused_total';

// Upgrades with `origin` (none when undefined) and resolves with 101 or the
// HTTP status of the refusal.
async function upgradeStatus(worker, origin) {
  const url = `ws://127.0.0.1:${worker.port}/socket/websocket?vsn=2.0.0`;
  const r = await wsUpgrade(url, origin === undefined ? {} : { origin });
  if (r.ws) {
    r.ws.terminate();
    return 101;
  }
  return r.status;
}

// Asserts the status of every origin in `expected` at once, so one report
// lists every mismatch.
async function expectStatuses(worker, expected) {
  const observed = {};
  for (const origin of Object.keys(expected)) observed[origin] = await upgradeStatus(worker, origin);
  assert.deepEqual(observed, expected);
}

async function forbiddenOrigins(worker) {
  return (await metric(worker, REFUSED, { reason: 'forbidden_origin' })) || 0;
}

describe('origin check, default (on, against the Host header)', () => {
  let worker;
  before(async () => {
    worker = await startWorker();
  });
  after(async () => {
    await worker.stop();
  });

  it('refuses a page from another site with 403 and counts it as forbidden_origin', async () => {
    const before = await forbiddenOrigins(worker);
    assert.equal(await upgradeStatus(worker, 'https://evil.example'), 403);
    assert.equal(await upgradeStatus(worker, 'null'), 403, 'an opaque origin (sandboxed page, file://)');
    assert.equal(await forbiddenOrigins(worker), before + 2);
  });

  it('accepts a page from the shard\'s own host, on any port, and a client sending no Origin', async () => {
    const before = await forbiddenOrigins(worker);
    // ws sends Host: 127.0.0.1:<port>.
    await expectStatuses(worker, {
      [`http://127.0.0.1:${worker.port}`]: 101,
      'http://127.0.0.1:3000': 101,
      'https://127.0.0.1': 101,
      'http://localhost:3000': 403,
    });
    assert.equal(await upgradeStatus(worker, undefined), 101, 'no Origin header');
    assert.equal(await forbiddenOrigins(worker), before + 1);
  });

  it('lets phoenix.js (which sends no Origin from Node) connect and join', async (t) => {
    const socket = await connect(scopeFor(t), worker.url);
    assert.equal((await join(socket.channel('room:origin'))).status, 'ok');
  });
});

describe('origin check with --allowed-origins', () => {
  let worker;
  before(async () => {
    worker = await startWorker([
      '--allowed-origins', 'https://app.example.com,//*.example.org',
      '--allowed-origins', '//localhost:3000',
    ]);
  });
  after(async () => {
    await worker.stop();
  });

  it('accepts exactly the listed origins: scheme and port when given, subdomains at a dot boundary', async () => {
    const before = await forbiddenOrigins(worker);
    await expectStatuses(worker, {
      'https://app.example.com': 101,
      'https://app.example.com:443': 101,
      'http://app.example.com': 403, // the entry names https
      'https://app.example.com:8443': 403, // https alone means port 443
      'https://other.example.com': 403,
      'https://a.example.org': 101,
      'http://a.b.example.org:8080': 101, // no scheme or port in the entry: any
      'https://example.org': 101, // as in Phoenix, *.example.org covers example.org
      'https://evilexample.org': 403, // the dot boundary
      'https://example.org.evil.example': 403,
      'http://localhost:3000': 101,
      'https://localhost:3000': 101,
      'http://localhost:3001': 403,
      [`http://127.0.0.1:${worker.port}`]: 403, // with a list, the Host does not count
    });
    assert.equal(await upgradeStatus(worker, undefined), 101, 'no Origin header');
    assert.equal(await forbiddenOrigins(worker), before + 7);
  });
});

describe('origin check off', () => {
  let worker;
  before(async () => {
    worker = await startWorker(['--check-origin', 'off']);
  });
  after(async () => {
    await worker.stop();
  });

  it('accepts any Origin with --check-origin off', async () => {
    await expectStatuses(worker, { 'https://evil.example': 101, 'null': 101 });
    assert.equal(await forbiddenOrigins(worker), 0);
  });
});

describe('origin flags that cannot work', () => {
  for (const [name, args, why] of [
    ['an entry without //', ['--allowed-origins', 'example.com'], /allowed origin 'example\.com'/],
    ['a * inside the host', ['--allowed-origins', '//a.*.example.com'], /'\*' may only start the host/],
    ['a list with the check off', ['--check-origin', 'off', '--allowed-origins', '//example.com'],
      /--allowed-origins given with --check-origin off/],
  ]) {
    it(`refuses to start with ${name} (exit 2)`, async () => {
      const r = await runWorkerToExit(['--listen', '127.0.0.1:0', ...args]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr, /^switchboard-worker: fatal: unable to check origins: /m);
      assert.match(r.stderr, why);
    });
  }
});
