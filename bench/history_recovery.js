'use strict';
// bench/history_recovery.js: how long a rejoin takes to recover N missed
// messages (default 300, the default --recovery-max) on a topic that keeps
// history, with the pinned phoenix.js client.
//
// A node of two shards under `switchboard run` (tests/node/lib/cluster.js),
// every program with --history 'room:*=1000/10m'. A publisher on shard 0; a
// subscriber on shard 1 that remembers its position (the params closure of
// tests/node/lib/history.js). Each round: the subscriber disconnects, the
// publisher sends --missed broadcasts (each acked), the subscriber connects
// again; the figure is the time from connect() to the arrival of the last
// missed message (WebSocket and join round trips, the recovery, the
// pushes), on CLOCK_MONOTONIC. Then one live broadcast checks the seam.
// Prints every round, then p50 / p99 / max; exits 1 if a round did not
// recover exactly what was missed, in order, 2 on a usage error.
//
//   SWITCHBOARD_BIN_DIR=build/bin node bench/history_recovery.js [--rounds 30] [--missed 300]

const path = require('node:path');

const nodeDir = path.join(__dirname, '..', 'tests', 'node');
const { startCluster } = require(path.join(nodeDir, 'lib', 'cluster'));
const { connect, disconnect } = require(path.join(nodeDir, 'lib', 'phoenix'));
const { HistoryClient } = require(path.join(nodeDir, 'lib', 'history'));
const { Scope, delay, positiveArg, quantile } = require(path.join(nodeDir, 'lib', 'util'));

(async () => {
  const rounds = positiveArg('--rounds', 30, { integer: true });
  const missed = positiveArg('--missed', 300, { integer: true });
  const history = ['--history', 'room:*=1000/10m'];
  const shardArgs = [...history, '--recovery-max', String(Math.max(300, missed))];
  const scope = new Scope();
  let failed = false;
  try {
    const cluster = await startCluster({ shards: [{ args: shardArgs }, { args: shardArgs }], brokerArgs: history });
    scope.add(() => cluster.stop());
    const [a, b] = cluster.shards;
    const opts = { reconnectAfterMs: () => 10, rejoinAfterMs: () => 10 };
    const pub = new HistoryClient(await connect(scope, a.url, opts), 'room:bench', { name: 'publisher' });
    await pub.join();
    const sub = new HistoryClient(await connect(scope, b.url, opts), 'room:bench', { name: 'subscriber' });
    await sub.join();
    const ms = [];
    let n = 0;
    for (let r = 0; r < rounds; r++) {
      await disconnect(sub.socket);
      const from = sub.pos.offset;
      const pushes = [];
      for (let i = 0; i < missed; i++) pushes.push(pub.push({ n: n++ }));
      for (const p of await Promise.all(pushes)) if (p.status !== 'ok') throw new Error(`push: ${JSON.stringify(p)}`);
      const want = pub.pos.offset;
      const t0 = process.hrtime.bigint();
      sub.socket.connect();
      await sub.until((x) => x.pos.offset >= want, `offset ${want}`, 30000);
      const took = Number(process.hrtime.bigint() - t0) / 1e6;
      const last = sub.joinReplies[sub.joinReplies.length - 1];
      const got = sub.received.filter((m) => m.offset > from).length;
      const ok = last.recovered && got === want - from && sub.problems.length === 0;
      if (!ok) failed = true;
      ms.push(took);
      console.log(`round ${r + 1}: ${want - from} missed, recovered ${got} in ${took.toFixed(1)} ms${ok ? '' : ' FAILED'}`);
      await delay(50);
    }
    // The seam: one live broadcast after the last recovery.
    await pub.push({ n: n++ });
    await sub.until((x) => x.pos.offset === pub.pos.offset, 'a live one');
    if (sub.problems.length) {
      failed = true;
      for (const p of sub.problems.slice(0, 20)) console.log(p);
    }
    console.log(`recovery of ${missed} messages over ${rounds} rounds: p50 ${quantile(ms, 0.5).toFixed(1)} ms, ` +
      `p99 ${quantile(ms, 0.99).toFixed(1)} ms, max ${Math.max(...ms).toFixed(1)} ms`);
  } finally {
    await scope.close();
  }
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
