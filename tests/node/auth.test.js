'use strict';
// Token auth (--token-secret-file): HS256 JWTs minted here with node's
// crypto, given as the `token` param or as phoenix.js's authToken
// (subprotocol). Bad tokens are refused at the upgrade with HTTP 403, the
// same bytes whatever check failed (the metric says which); a valid token
// limits joins to its topic patterns. nbf, --token-audience and
// --token-issuer are checked; a secret under 32 bytes stops the shard.

const { describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startWorker, runWorkerToExit, it, metric } = require('./lib/worker');
const { wsUpgrade, httpExchange, upgradeRequest } = require('./lib/raw');
const { makeSocket, connect, disconnect, join } = require('./lib/phoenix');
const { scopeFor } = require('./lib/util');

const SECRET = 'switchboard test secret: not for production';
const TOKEN_REFUSALS = 'switchboard_worker_token_refusals_total';

const b64url = (buf) => Buffer.from(buf).toString('base64').replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_');

function mint(claims, { secret = SECRET, header = { alg: 'HS256', typ: 'JWT' }, sign = true } = {}) {
  const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  if (!sign) return `${input}.`;
  return `${input}.${b64url(crypto.createHmac('sha256', secret).update(input).digest())}`;
}

const now = () => Math.floor(Date.now() / 1000);
const validClaims = (extra = {}) => ({ sub: 'user-1', topics: ['room:*', 'lobby'], exp: now() + 600, ...extra });

// What phoenix.js puts in Sec-WebSocket-Protocol for `authToken`.
const authProtocol = (token) => `base64url.bearer.phx.${Buffer.from(token).toString('base64').replace(/=/g, '')}`;

// A valid token whose base64 form needs padding, which phoenix.js strips:
// the worker must decode unpadded base64.
function tokenNeedingPadding() {
  for (let i = 0; i < 10; i++) {
    const token = mint(validClaims({ sub: `user-${'x'.repeat(i)}` }));
    if (token.length % 3 !== 0) return token;
  }
  throw new Error('no token length needing padding');
}

// Resolves with the HTTP status of a refused upgrade (fails if it opens).
async function refusedStatus(url, opts) {
  const r = await wsUpgrade(url, opts);
  if (r.ws) {
    r.ws.terminate();
    assert.fail(`the upgrade of ${url} was accepted`);
  }
  return r.status;
}

// A temporary directory holding `secret` (with a trailing newline, which is
// not part of the secret) as the file `secret`; removed after the suite.
function secretDir(secret) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-auth-'));
  const file = path.join(dir, 'secret');
  fs.writeFileSync(file, `${secret}\n`);
  return { dir, file, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

describe('token auth', () => {
  let worker;
  let secret;
  let wsBase;
  before(async () => {
    secret = secretDir(SECRET);
    worker = await startWorker(['--token-secret-file', secret.file]);
    wsBase = `ws://127.0.0.1:${worker.port}/socket/websocket?vsn=2.0.0`;
  });
  after(async () => {
    try {
      await worker.stop();
    } finally {
      secret.remove();
    }
  });

  it('accepts a valid token given as the token param and limits joins to its topic patterns', async (t) => {
    const s = scopeFor(t);
    const socket = await connect(s, worker.url, { params: { token: mint(validClaims()) } });
    assert.equal((await join(socket.channel('room:1'))).status, 'ok', 'prefix pattern room:*');
    assert.equal((await join(socket.channel('lobby'))).status, 'ok', 'exact pattern');
    for (const topic of ['secret:1', 'lobby2', 'lobb', 'roo']) {
      const ch = socket.channel(topic);
      const r = await join(ch);
      ch.leave(); // phoenix.js retries a refused join unless told to stop
      assert.deepEqual(r, { status: 'error', response: { reason: 'unauthorized' } }, topic);
    }
    assert.ok(socket.isConnected(), 'an unauthorized join leaves the socket open');
  });

  it('refuses the upgrade with HTTP 403 for an expired, forged, unsigned, malformed or missing token', async () => {
    const before = (await metric(worker, 'switchboard_worker_upgrades_refused_total', { reason: 'unauthorized' })) || 0;
    const valid = mint(validClaims());
    const [h, c] = valid.split('.');
    const tampered = `${h}.${b64url(JSON.stringify(validClaims({ topics: ['*'] })))}.${valid.split('.')[2]}`;
    const cases = {
      'expired': mint(validClaims({ exp: now() - 60 })),
      'wrong signature': mint(validClaims(), { secret: 'another secret' }),
      'secret with its trailing newline': mint(validClaims(), { secret: `${SECRET}\n` }),
      'alg none': mint(validClaims(), { header: { alg: 'none', typ: 'JWT' }, sign: false }),
      'tampered claims': tampered,
      'two parts': `${h}.${c}`,
      'garbage': 'not-a-token',
      'empty': '',
    };
    for (const [name, token] of Object.entries(cases)) {
      assert.equal(await refusedStatus(`${wsBase}&token=${encodeURIComponent(token)}`), 403, name);
    }
    assert.equal(await refusedStatus(wsBase), 403, 'missing token');
    assert.equal(await refusedStatus(wsBase, { protocols: ['phoenix', authProtocol(cases.expired)] }), 403,
      'expired token as authToken subprotocol');
    const afterCount = await metric(worker, 'switchboard_worker_upgrades_refused_total', { reason: 'unauthorized' });
    assert.ok(afterCount >= before + Object.keys(cases).length + 2, `unauthorized refusals ${before} -> ${afterCount}`);
  });

  it('phoenix.js with an expired token never opens and keeps being refused', async (t) => {
    const s = scopeFor(t);
    const socket = makeSocket(worker.url, { params: { token: mint(validClaims({ exp: now() - 1 })) } });
    s.add(() => disconnect(socket));
    socket.connect();
    // Refused attempts retry on phoenix.js's backoff (10, 50, 100, 150, 200,
    // 250, 500, 1000 ms): nine refusals take a little over two seconds.
    for (let i = 0; i < 9; i++) {
      await socket.errors.take(() => true, { what: `refused connection attempt ${i + 1}` });
    }
    assert.equal(socket.openCount, 0, 'the socket opened with an expired token');
    assert.ok(!socket.isConnected());
  });

  it('accepts a token given through phoenix.js authToken and selects the "phoenix" subprotocol', async (t) => {
    const s = scopeFor(t);
    const token = tokenNeedingPadding();
    const socket = await connect(s, worker.url, { authToken: token });
    assert.equal(socket.conn.protocol, 'phoenix');
    assert.equal((await join(socket.channel('room:via-subprotocol'))).status, 'ok');
    const ch = socket.channel('secret:2');
    const r = await join(ch);
    ch.leave();
    assert.deepEqual(r, { status: 'error', response: { reason: 'unauthorized' } });

    const raw = await wsUpgrade(wsBase, { protocols: ['phoenix', authProtocol(token)] });
    assert.ok(raw.ws, `upgrade refused with HTTP ${raw.status}`);
    assert.equal(raw.ws.protocol, 'phoenix');
    raw.ws.terminate();
  });
  it('answers every token failure with the same bytes and counts it by the check that failed', async () => {
    const cases = {
      missing: { token: undefined, reason: 'missing' },
      expired: { token: mint(validClaims({ exp: now() - 60 })), reason: 'expired' },
      forged: { token: mint(validClaims(), { secret: 'another secret of at least 32 bytes' }), reason: 'signature' },
      'not yet valid': { token: mint(validClaims({ nbf: now() + 600 })), reason: 'not_yet_valid' },
      malformed: { token: 'not-a-token', reason: 'malformed' },
      'alg none': { token: mint(validClaims(), { header: { alg: 'none' }, sign: false }), reason: 'algorithm' },
      'no topics claim': { token: mint({ sub: 'u', exp: now() + 600 }), reason: 'claims' },
    };
    const before = {};
    for (const { reason } of Object.values(cases)) {
      before[reason] = (await metric(worker, TOKEN_REFUSALS, { reason })) || 0;
    }
    const answers = {};
    for (const [name, { token }] of Object.entries(cases)) {
      const query = token === undefined ? '' : `&token=${encodeURIComponent(token)}`;
      const bytes = await httpExchange(worker.port, upgradeRequest(worker.port, `/socket/websocket?vsn=2.0.0${query}`));
      answers[name] = bytes.toString('latin1');
    }
    const first = answers.missing;
    assert.match(first, /^HTTP\/1\.1 403 Forbidden\r\n/);
    for (const [name, answer] of Object.entries(answers)) assert.equal(answer, first, `${name} vs missing`);
    for (const [name, { reason }] of Object.entries(cases)) {
      assert.equal(await metric(worker, TOKEN_REFUSALS, { reason }), before[reason] + 1, `${name}: reason ${reason}`);
    }
  });

  it('accepts a token whose nbf has come', async (t) => {
    const socket = await connect(scopeFor(t), worker.url, { params: { token: mint(validClaims({ nbf: now() - 1 })) } });
    assert.equal((await join(socket.channel('room:nbf'))).status, 'ok');
  });
});

describe('token audience and issuer', () => {
  let worker;
  let secret;
  before(async () => {
    secret = secretDir(SECRET);
    worker = await startWorker(['--token-secret-file', secret.file,
      '--token-audience', 'switchboard', '--token-issuer', 'https://auth.example.com']);
  });
  after(async () => {
    try {
      await worker.stop();
    } finally {
      secret.remove();
    }
  });

  it('accepts only tokens for this audience from this issuer', async (t) => {
    const base = `ws://127.0.0.1:${worker.port}/socket/websocket?vsn=2.0.0`;
    const status = async (claims) => {
      const r = await wsUpgrade(`${base}&token=${encodeURIComponent(mint(validClaims(claims)))}`);
      if (r.ws) {
        r.ws.terminate();
        return 101;
      }
      return r.status;
    };
    const iss = 'https://auth.example.com';
    const observed = {
      'aud and iss': await status({ aud: 'switchboard', iss }),
      'aud in a list': await status({ aud: ['billing', 'switchboard'], iss }),
      'no aud': await status({ iss }),
      'other aud': await status({ aud: 'billing', iss }),
      'no iss': await status({ aud: 'switchboard' }),
      'other iss': await status({ aud: 'switchboard', iss: 'https://evil.example' }),
    };
    assert.deepEqual(observed, {
      'aud and iss': 101, 'aud in a list': 101, 'no aud': 403, 'other aud': 403, 'no iss': 403, 'other iss': 403,
    });
    assert.equal(await metric(worker, TOKEN_REFUSALS, { reason: 'audience' }), 2);
    assert.equal(await metric(worker, TOKEN_REFUSALS, { reason: 'issuer' }), 2);
    const socket = await connect(scopeFor(t), worker.url,
      { params: { token: mint(validClaims({ aud: 'switchboard', iss })) } });
    assert.equal((await join(socket.channel('room:aud'))).status, 'ok');
  });
});

describe('token secret', () => {
  it('refuses to start with a secret shorter than 32 bytes (exit 2)', async () => {
    const secret = secretDir('x'.repeat(31));
    try {
      const r = await runWorkerToExit(['--listen', '127.0.0.1:0', '--token-secret-file', secret.file]);
      assert.equal(r.code, 2, r.stderr);
      assert.match(r.stderr,
        /^switchboard-worker: fatal: unable to use the token secret .*: the secret is 31 bytes, shorter than 32$/m);
    } finally {
      secret.remove();
    }
  });
});
