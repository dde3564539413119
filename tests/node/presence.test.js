'use strict';
// Presence with phoenix.js's own `Presence` object: every member converges
// to the same list, members disappear however they go (leave, disconnect,
// dropped TCP connection), a late joiner gets the whole state, and a
// malformed presence is refused at join.

const { describe, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startWorker, it } = require('./lib/worker');
const { RawClient } = require('./lib/raw');
const { connect, join, record, next, Presence } = require('./lib/phoenix');
const { scopeFor, withTimeout } = require('./lib/util');

// A phoenix.js client joined to `topic` with presence `key`/`meta`.
// `waitFor(pred)` resolves once pred(list) holds after a sync (or now).
async function member(scope, worker, topic, key, meta, socketOpts = {}) {
  const socket = await connect(scope, worker.url, socketOpts);
  const channel = socket.channel(topic, { presence: { key, meta } });
  const presence = new Presence(channel);
  const states = record(channel, ['presence_state']);
  const waiters = new Set();
  let synced = false;
  presence.onSync(() => {
    synced = true;
    for (const w of [...waiters]) w();
  });
  const m = { key, socket, channel, presence, states };
  m.list = () => normalize(presence);
  m.waitFor = (pred, what = 'a presence list') => {
    let check;
    const p = new Promise((resolve) => {
      check = () => {
        if (synced && pred(m.list())) {
          waiters.delete(check);
          resolve(m.list());
        }
      };
      waiters.add(check);
      check();
    });
    return withTimeout(p, 10000, `${what} at ${key} (now ${JSON.stringify(m.list())})`)
      .finally(() => waiters.delete(check));
  };
  const r = await join(channel);
  assert.equal(r.status, 'ok', `join of ${key}: ${JSON.stringify(r)}`);
  return m;
}

// {key: [{name, phx_ref}, ...]} with keys and metas in a stable order.
function normalize(presence) {
  const out = {};
  const entries = presence.list((key, { metas }) => [key, metas]);
  entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  for (const [key, metas] of entries) {
    out[key] = metas.map((m) => ({ name: m.name, phx_ref: m.phx_ref }))
      .sort((a, b) => (a.phx_ref < b.phx_ref ? -1 : a.phx_ref > b.phx_ref ? 1 : 0));
  }
  return out;
}

const keysAre = (keys) => (list) => JSON.stringify(Object.keys(list)) === JSON.stringify(keys);

describe('presence with phoenix.js', () => {
  let worker;
  before(async () => {
    worker = await startWorker();
  });
  after(async () => {
    await worker.stop();
  });

  it('converges: every member sees alice (two sockets), bob and carol with the same metas', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:converge';
    const members = [];
    members.push(await member(s, worker, topic, 'alice', { name: 'A' }));
    members.push(await member(s, worker, topic, 'bob', { name: 'B' }));
    members.push(await member(s, worker, topic, 'carol', { name: 'C' }));
    members.push(await member(s, worker, topic, 'alice', { name: 'A2' }));
    const full = (list) => keysAre(['alice', 'bob', 'carol'])(list) && list.alice.length === 2;
    const lists = [];
    for (const m of members) lists.push(await m.waitFor(full, 'alice x2, bob, carol'));
    for (const l of lists) assert.deepEqual(l, lists[0], 'members disagree on the presence list');
    const list = lists[0];
    assert.deepEqual(list.alice.map((x) => x.name).sort(), ['A', 'A2']);
    assert.deepEqual(list.bob.map((x) => x.name), ['B']);
    assert.deepEqual(list.carol.map((x) => x.name), ['C']);
    const refs = Object.values(list).flat().map((x) => x.phx_ref);
    for (const r of refs) assert.equal(typeof r, 'string', 'phx_ref is a string');
    assert.equal(new Set(refs).size, refs.length, 'phx_refs are unique');
  });

  it('a member disappears from the others when it leaves, disconnects, or its TCP connection is dropped', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:departures';
    const stayer = await member(s, worker, topic, 'stayer', { name: 'S' });
    const leaver = await member(s, worker, topic, 'leaver', { name: 'L' });
    const quitter = await member(s, worker, topic, 'quitter', { name: 'Q' });
    // This one must not come back by itself once its connection is dropped.
    const dropped = await member(s, worker, topic, 'dropped', { name: 'D' }, { reconnectAfterMs: () => 60000 });
    const everyone = ['dropped', 'leaver', 'quitter', 'stayer'];
    for (const m of [stayer, leaver, quitter, dropped]) await m.waitFor(keysAre(everyone), 'all four');

    await new Promise((resolve) => leaver.channel.leave().receive('ok', resolve));
    const afterLeave = ['dropped', 'quitter', 'stayer'];
    for (const m of [stayer, quitter, dropped]) await m.waitFor(keysAre(afterLeave), 'leaver gone');

    await new Promise((resolve) => quitter.socket.disconnect(resolve));
    const afterDisconnect = ['dropped', 'stayer'];
    for (const m of [stayer, dropped]) await m.waitFor(keysAre(afterDisconnect), 'quitter gone');

    const tcp = dropped.socket.conn._socket;
    if (typeof tcp.resetAndDestroy === 'function') tcp.resetAndDestroy();
    else tcp.destroy();
    await stayer.waitFor(keysAre(['stayer']), 'dropped gone');
  });

  it('a late joiner gets the whole state, itself included, in presence_state', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:late';
    const early = [];
    for (const key of ['p1', 'p2', 'p3']) early.push(await member(s, worker, topic, key, { name: key }));
    for (const m of early) await m.waitFor(keysAre(['p1', 'p2', 'p3']), 'p1..p3');
    const late = await member(s, worker, topic, 'late', { name: 'late' });
    const state = await next(late.states, 'presence_state');
    assert.deepEqual(Object.keys(state.payload).sort(), ['late', 'p1', 'p2', 'p3']);
    for (const [key, entry] of Object.entries(state.payload)) {
      assert.ok(Array.isArray(entry.metas) && entry.metas.length === 1, `metas of ${key}`);
      assert.equal(entry.metas[0].name, key);
      assert.equal(typeof entry.metas[0].phx_ref, 'string');
    }
    await late.waitFor(keysAre(['late', 'p1', 'p2', 'p3']), 'the late joiner sees everyone');
    for (const m of early) await m.waitFor(keysAre(['late', 'p1', 'p2', 'p3']), 'everyone sees the late joiner');
    assert.deepEqual(late.list(), early[0].list());
  });

  it('refuses a join whose presence is malformed, and tracks nothing for it', async (t) => {
    const s = scopeFor(t);
    const topic = 'room:malformed';
    const watcher = await member(s, worker, topic, 'watcher', { name: 'W' });
    await watcher.waitFor(keysAre(['watcher']), 'the watcher alone');

    const socket = await connect(s, worker.url);
    const ch = socket.channel(topic, { presence: { key: 42, meta: {} } });
    const r = await join(ch);
    ch.leave(); // phoenix.js would otherwise retry the refused join forever
    assert.equal(r.status, 'error', `join with a numeric key: ${JSON.stringify(r)}`);
    assert.equal(typeof r.response.reason, 'string');

    const c = await RawClient.connect(worker.port);
    s.add(() => c.destroy());
    const bad = [
      { presence: 'alice' },
      { presence: ['alice'] },
      { presence: { meta: { name: 'no key' } } },
      { presence: { key: null, meta: {} } },
      { presence: { key: { k: 1 }, meta: {} } },
      { presence: { key: 'alice', meta: 'not an object' } },
      { presence: { key: 'alice', meta: [1, 2] } },
    ];
    for (const payload of bad) {
      const reply = await c.join(topic, payload);
      assert.equal(reply[4].status, 'error', `join with ${JSON.stringify(payload)}: ${JSON.stringify(reply)}`);
      assert.equal(typeof reply[4].response.reason, 'string');
    }
    // A refused join leaves the socket unjoined, and the socket stays usable.
    const ref = c.nextRef();
    const unmatched = await c.push(topic, 'shout', {}, { ref });
    assert.deepEqual(unmatched[4], { status: 'error', response: { reason: 'unmatched topic' } });
    assert.deepEqual((await c.heartbeat())[4], { status: 'ok', response: {} });

    // The watcher still sees only itself: a later valid join is the next change.
    await member(s, worker, topic, 'valid', { name: 'V' });
    const list = await watcher.waitFor((l) => Object.keys(l).length === 2, 'the valid joiner');
    assert.deepEqual(Object.keys(list), ['valid', 'watcher']);
  });
});
