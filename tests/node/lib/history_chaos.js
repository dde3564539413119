'use strict';
// History under chaos: clients publishing on a history topic while shards
// and the broker are killed (kill -9) or frozen (SIGSTOP, then SIGCONT) at
// random, every 2–5 s. Shared by the short end-to-end test
// (history_chaos.test.js) and the long bench (bench/history_chaos.js).
//
// Every client is a phoenix.js socket with a params closure that recovers
// from its last position (lib/history.js), and checks as it learns that its
// offsets go up by one per epoch. At the end, once every client has caught
// up, every broadcast acked to its sender must be in every client's log —
// each was subscribed before the first push and still is — and nothing is
// there twice. Bounded: a fixed duration, then a bounded wait.

const { startCluster } = require('./cluster');
const { connect } = require('./phoenix');
const { HistoryClient } = require('./history');
const { delay, waitUntil } = require('./util');

const TOPIC = 'room:chaos';

async function runChaos(scope, {
  seconds = 20, shards = 3, perShard = 10, rate = 5, seed = Date.now(), log = () => {},
  heartbeatMs = 200, stopMs = 1000,
} = {}) {
  // A small deterministic generator: a failing run can be replayed by seed.
  let state = seed >>> 0 || 1;
  const random = () => {
    state ^= state << 13; state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5; state >>>= 0;
    return state / 4294967296;
  };
  const history = ['--history', 'room:*=100000/10m'];
  const cluster = await startCluster({
    shards: Array.from({ length: shards }, () => ({ args: history })),
    brokerArgs: history,
    heartbeatMs,
  });
  scope.add(() => cluster.stop());

  const clients = [];
  for (const shard of cluster.shards) {
    for (let i = 0; i < perShard; i++) {
      const socket = await connect(scope, shard.url, { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 });
      const c = new HistoryClient(socket, TOPIC, { name: `${shard.id}/${i}` });
      const r = await c.join();
      if (r.status !== 'ok') throw new Error(`${c.name}: join ${JSON.stringify(r)}`);
      clients.push(c);
    }
  }

  const events = [];
  let running = true;
  const publishers = clients.map(async (c, k) => {
    let n = 0;
    while (running) {
      const r = await c.push({ from: k, n: n++ }, { timeout: 5000 });
      if (r.status !== 'ok') c.failedPushes = (c.failedPushes || 0) + 1;
      await delay(1000 / rate * (0.5 + random()));
    }
  });
  const chaos = (async () => {
    const t0 = Date.now();
    while (Date.now() - t0 < seconds * 1000) {
      await delay(2000 + random() * 3000);
      if (Date.now() - t0 >= seconds * 1000) break;
      const ids = ['broker', ...cluster.shards.map((s) => s.id)];
      const id = ids[Math.floor(random() * ids.length)];
      const how = random() < 0.7 ? 'kill' : 'stop';
      const at = Date.now() - t0;
      try {
        if (how === 'kill') {
          const old = await cluster.kill(id);
          await cluster.waitRestarted(id, old, { timeout: 15000 });
        } else {
          await cluster.pause(id);
          await delay(stopMs);
          await cluster.resume(id);
        }
        events.push({ at, id, how });
        log(`${(at / 1000).toFixed(1)} s: ${how} ${id}`);
      } catch (e) {
        events.push({ at, id, how, error: e.message });
        log(`${(at / 1000).toFixed(1)} s: ${how} ${id}: ${e.message}`);
      }
    }
  })();
  await chaos;
  running = false;
  await Promise.all(publishers);
  await cluster.waitMeshUp({ timeout: 20000 });

  // Every client catches up to the same position.
  const acked = clients.flatMap((c) => c.acked);
  const epochs = new Set(acked.map((a) => a.epoch));
  const top = Math.max(0, ...acked.map((a) => a.offset));
  await waitUntil(() => clients.every((c) => c.pos && c.pos.offset >= top), {
    timeout: 30000, interval: 100,
    what: `every client at offset ${top} (${clients.filter((c) => !(c.pos && c.pos.offset >= top)).map((c) => `${c.name}@${c.pos && c.pos.offset}`).join(', ')})`,
  });

  const missed = [];
  const duplicates = [];
  for (const c of clients) {
    const seen = new Set();
    for (const m of c.received) {
      const key = `${m.epoch}/${m.offset}`;
      if (seen.has(key)) duplicates.push(`${c.name}: ${key}`);
      seen.add(key);
    }
    for (const a of acked) {
      if (!seen.has(`${a.epoch}/${a.offset}`)) missed.push(`${c.name}: ${a.epoch}/${a.offset}`);
    }
  }
  const notRecovered = clients.reduce(
    (n, c) => n + c.joinReplies.slice(1).filter((r) => !r.recovered).length, 0);
  const rejoins = clients.reduce((n, c) => n + c.joinReplies.length - 1, 0);
  return {
    seed,
    events,
    acked: acked.length,
    epochs: epochs.size,
    top,
    deliveries: clients.reduce((n, c) => n + c.received.length, 0),
    failedPushes: clients.reduce((n, c) => n + (c.failedPushes || 0), 0),
    rejoins,
    notRecovered,
    missed,
    duplicates,
    problems: clients.flatMap((c) => c.problems),
  };
}

module.exports = { runChaos };
