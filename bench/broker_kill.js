'use strict';
// bench/broker_kill.js: how long cross-shard delivery stops when the broker
// is killed (kill -9) under load, and that nothing acked is lost or doubled.
//
// Starts the default layout — a broker and three shards under `switchboard
// run`, on free ports, in a runtime directory of its own, with the programs'
// default heartbeat (1 s) — through the end-to-end tests' cluster helper
// (tests/node/lib/cluster.js) and the pinned phoenix.js client. A publisher
// on shard 0 pushes one broadcast every 1 ms; a subscriber on shard 1
// receives them. Then, --kills times: wait until cross-shard delivery has
// resumed, pause --pause-ms, SIGKILL the broker (the pause keeps the
// restarts within the topology's intensity, 20 in 10 s). For each kill, the figure
// is the time from just before the kill to the arrival at the subscriber of
// the first broadcast pushed after the last one pushed before the kill (one
// that no old broker can have carried), on CLOCK_MONOTONIC. The daemon's
// events file splits it: kill to the daemon's `started` (exit detection,
// the restart decision, fork/exec: the supervisor's share), and `started`
// to the delivery (the broker's start, the shards' reconnect and hellos,
// the settle window, the re-sent outboxes).
//
// Prints every kill, then p50 / p99 / max; exits 1 if any broadcast was
// acked and not received exactly once, in order, or if a client socket
// closed, 2 on a usage error. Bounded: every wait has a deadline.
//
// Node rather than C++: the subscriber and publisher are real phoenix.js
// clients, as in the end-to-end tests, and the cluster helper already
// writes the topology, finds free ports and tears the node down; a client
// delivery costs well under a millisecond next to the figure measured.
//
//   SWITCHBOARD_BIN_DIR=build/bin node bench/broker_kill.js [--kills 100] [--pause-ms 600]

const path = require('node:path');
const fs = require('node:fs');

const nodeDir = path.join(__dirname, '..', 'tests', 'node');
const { startCluster } = require(path.join(nodeDir, 'lib', 'cluster'));
const { connect, join, outcome } = require(path.join(nodeDir, 'lib', 'phoenix'));
const { Scope, waitUntil, delay } = require(path.join(nodeDir, 'lib', 'util'));

function parseArgs(argv) {
  const o = { kills: 100, pauseMs: 600, heartbeatMs: 1000 };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], Number(argv[i + 1])];
    if (!Number.isFinite(v) || v <= 0) throw new Error(`bad value for ${k}`);
    if (k === '--kills') o.kills = v;
    else if (k === '--pause-ms') o.pauseMs = v;
    else if (k === '--heartbeat-ms') o.heartbeatMs = v;
    else throw new Error(`unknown option ${k}`);
  }
  return o;
}

const nowMs = () => Number(process.hrtime.bigint()) / 1e6; // CLOCK_MONOTONIC, as the daemon's ts

function percentile(xs, p) {
  const v = [...xs].sort((a, b) => a - b);
  return v[Math.min(v.length - 1, Math.round((p / 100) * (v.length - 1)))];
}

// The daemon's `started` events of the broker, monotonic ms, each with the
// `exited` before it, from the events file.
function brokerStarts(eventsPath) {
  let text = '';
  try {
    text = fs.readFileSync(eventsPath, 'utf8');
  } catch {
    return [];
  }
  const out = [];
  let exited = 0;
  for (const line of text.split('\n')) {
    try {
      const e = JSON.parse(line);
      if (e.id === 'broker' && e.event === 'exited') exited = e.ts * 1000;
      if (e.id === 'broker' && e.event === 'started') out.push({ exited, started: e.ts * 1000 });
    } catch {
      // a partial last line
    }
  }
  return out;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`broker_kill: ${e.message}`);
    return 2;
  }
  const scope = new Scope();
  const cluster = await startCluster({ shards: 3, heartbeatMs: opts.heartbeatMs, name: 'bench' });
  scope.add(() => cluster.stop());
  try {
    return await run(cluster, scope, opts);
  } finally {
    await scope.close();
  }
}

async function run(cluster, scope, opts) {
  const [s0, s1] = cluster.shards;
  const topic = 'room:bench';
  const pubSocket = await connect(scope, s0.url);
  const subSocket = await connect(scope, s1.url);
  const pub = pubSocket.channel(topic, {});
  const sub = subSocket.channel(topic, {});
  if ((await join(pub)).status !== 'ok' || (await join(sub)).status !== 'ok') throw new Error('join failed');
  await cluster.waitForMetric(cluster.broker, 'switchboard_broker_subscriptions', {}, (v) => v === 2, { timeout: 20000 });
  await cluster.waitMeshUp({ timeout: 20000 });

  const counts = new Map();
  const order = [];
  let lastArrival = { n: 0, at: 0 };
  let waiter = null; // {after, resolve}: resolves at the first n > after
  sub.on('num', ({ n }) => {
    const at = nowMs();
    counts.set(n, (counts.get(n) || 0) + 1);
    order.push(n);
    lastArrival = { n, at };
    if (waiter && n > waiter.after) {
      const w = waiter;
      waiter = null;
      w.resolve(at);
    }
  });
  const firstAfter = (after, timeout) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no broadcast after ${after} within ${timeout} ms`)), timeout);
    waiter = { after, resolve: (at) => { clearTimeout(timer); resolve(at); } };
  });

  // The publisher: one push every 1 ms (as close as the timer allows).
  let publishing = true;
  let pushed = 0;
  const replies = [];
  const publisher = (async () => {
    while (publishing) {
      const n = ++pushed;
      replies.push(outcome(pub.push('num', { n }), { timeout: 30000, what: `num ${n}` }).then((r) => [n, r.status]));
      await delay(1);
    }
  })();

  await firstAfter(0, 10000); // delivery flows
  const eventsPath = path.join(cluster.dir, 'events');
  const figures = [];
  const restarts = [];
  const exits = [];
  for (let k = 0; k < opts.kills; k++) {
    await delay(opts.pauseMs);
    const pid = await cluster.pid('broker');
    const startsBefore = brokerStarts(eventsPath).length;
    const last = pushed;
    const t0 = nowMs();
    process.kill(pid, 'SIGKILL');
    const resumed = firstAfter(last, 20000);
    const at = await resumed;
    figures.push(at - t0);
    await waitUntil(() => brokerStarts(eventsPath).length > startsBefore, { timeout: 10000, interval: 5, what: 'the broker started again' });
    const { exited, started } = brokerStarts(eventsPath)[startsBefore];
    restarts.push(started - t0);
    exits.push(exited - t0);
    console.log(`kill ${k + 1}: ${(at - t0).toFixed(2)} ms to the first cross-shard delivery ` +
      `(the daemon saw the broker exit ${(exited - t0).toFixed(2)} ms and started it ${(started - t0).toFixed(2)} ms after the kill)`);
  }
  publishing = false;
  await publisher;

  // Every acked broadcast arrives once, in order.
  const results = await Promise.all(replies);
  const acked = results.filter(([, st]) => st === 'ok').map(([n]) => n);
  const refused = results.length - acked.length;
  try {
    await waitUntil(() => acked.every((n) => counts.has(n)), { timeout: 30000, interval: 50, what: 'every acked broadcast' });
  } catch {
    // counted below
  }
  await delay(300); // room for a duplicate
  const lost = acked.filter((n) => !counts.has(n)).length;
  const dup = [...counts.values()].filter((c) => c > 1).length;
  const inOrder = order.every((n, i) => i === 0 || n > order[i - 1]);
  const closed = pubSocket.closes.all.length + subSocket.closes.all.length;

  const f = (x) => x.toFixed(2);
  console.log(`kills ${figures.length}: kill -> first cross-shard delivery p50 ${f(percentile(figures, 50))} ms, ` +
    `p99 ${f(percentile(figures, 99))} ms, max ${f(Math.max(...figures))} ms`);
  const after = figures.map((x, i) => x - restarts[i]);
  console.log(`  broker started (daemon) -> first cross-shard delivery: p50 ${f(percentile(after, 50))} ms, ` +
    `p99 ${f(percentile(after, 99))} ms, max ${f(Math.max(...after))} ms`);
  console.log(`  of which kill -> exit seen (daemon): p50 ${f(percentile(exits, 50))} ms, ` +
    `p99 ${f(percentile(exits, 99))} ms, max ${f(Math.max(...exits))} ms`);
  console.log(`  of which kill -> broker started (daemon): p50 ${f(percentile(restarts, 50))} ms, ` +
    `p99 ${f(percentile(restarts, 99))} ms, max ${f(Math.max(...restarts))} ms`);
  console.log(`broadcasts pushed ${results.length}, acked ${acked.length}, refused ${refused}, lost ${lost}, ` +
    `duplicated ${dup}, in order ${inOrder}, client sockets closed ${closed}; last arrival n=${lastArrival.n}`);
  return lost === 0 && dup === 0 && inOrder && closed === 0 ? 0 : 1;
}

main().then((code) => process.exit(code), (e) => {
  console.error(`broker_kill: ${e.stack || e.message}`);
  process.exit(1);
});
