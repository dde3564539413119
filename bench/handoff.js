'use strict';
// bench/handoff.js: how long `switchboard upgrade` takes to hand N open
// WebSockets from a shard to a new process, and the longest stall a client
// sees meanwhile (docs/UPGRADE.md).
//
// One shard (`upgrade: handoff`) and the broker under `switchboard run`
// (tests/node/lib/cluster.js). N raw WebSocket clients (`ws`) join: 500 of
// them (or N if fewer) the topic "room:m", the rest "room:idle". A
// publisher, also on the shard, pushes to "room:m" every 5 ms. Each round
// runs `switchboard upgrade`; the figures are the daemon's "moved in X ms"
// (the new process: from its accept of the hand-off socket to its
// acknowledgement, the sockets sent ahead included), the command's wall
// time, and per measuring client the largest gap between two deliveries in
// the round's window less the 5 ms period (its stall), as p50 / p99 / max
// over the clients. Every client must see no close and every broadcast
// once, in order. Exits 1 otherwise, 2 on a usage error.
//
// The clients live in --client-threads worker threads (4 by default), each
// with its share of both kinds: after a stall the shard delivers what
// waited to 500 clients at once, and one JavaScript thread parsing all of it
// would itself delay the last clients it gets to (a second gap of 15-34 ms
// was measured after the shard had delivered everything), a stall of
// the bench's, not the shard's. --client-threads 1 measures as one thread.
//
//   SWITCHBOARD_BIN_DIR=build/bin node bench/handoff.js [--connections 1000] [--rounds 5] [--client-threads 4]

const path = require('node:path');
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');

const nodeDir = path.join(__dirname, '..', 'tests', 'node');
const WebSocket = require(path.join(nodeDir, 'node_modules', 'ws'));
const { Scope, delay, positiveArg, quantile, waitUntil } = require(path.join(nodeDir, 'lib', 'util'));

const PERIOD_MS = 5;

function client(url, topic, onMessage) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/websocket?vsn=2.0.0`);
    const c = { ws, closed: false, joined: false };
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}])));
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (!c.joined && m[3] === 'phx_reply' && m[1] === '1') {
        c.joined = true;
        resolve(c);
        return;
      }
      onMessage(m);
    });
    ws.on('close', () => { c.closed = true; });
    ws.on('error', reject);
  });
}

// A client thread: `measuring` clients on "room:m" logging each tick's
// arrival, `idle` on "room:idle". Answers the main thread's requests.
async function clientThread({ url, measuring, idle }) {
  const logs = [];
  const clients = [];
  for (let i = 0; i < measuring + idle; i++) {
    const log = [];
    clients.push(client(url, i < measuring ? 'room:m' : 'room:idle', (m) => {
      if (m[3] === 'tick') log.push([process.hrtime.bigint(), m[4].k]);
    }));
    if (i < measuring) logs.push(log);
    if (i % 200 === 199) await Promise.all(clients.slice(i - 199, i + 1));
  }
  const cs = await Promise.all(clients);
  parentPort.on('message', async (req) => {
    if (req.kind === 'stalls') {
      const lo = BigInt(req.lo);
      const hi = BigInt(req.hi);
      const stalls = logs.map((log) => {
        let worst = 0;
        for (let i = 1; i < log.length; i++) {
          if (log[i][0] < lo || log[i - 1][0] > hi) continue;
          worst = Math.max(worst, Number(log[i][0] - log[i - 1][0]) / 1e6 - PERIOD_MS);
        }
        return worst;
      });
      parentPort.postMessage({ kind: 'stalls', stalls });
    } else if (req.kind === 'finish') {
      await waitUntil(() => logs.every((l) => l.length > 0 && l[l.length - 1][1] === req.sent - 1),
        { timeout: 10000, what: 'every tick delivered' }).catch(() => {});
      let inOrder = true;
      for (const log of logs) {
        for (let i = 1; i < log.length; i++) if (log[i][1] !== log[i - 1][1] + 1) { inOrder = false; break; }
        if (log.length === 0 || log[log.length - 1][1] !== req.sent - 1) inOrder = false;
      }
      const closed = cs.filter((c) => c.closed).length;
      for (const c of cs) c.ws.terminate();
      parentPort.postMessage({ kind: 'finish', closed, inOrder });
    }
  });
  parentPort.postMessage({ kind: 'ready' });
}

// Sends `req` to every thread and resolves with their answers.
function ask(threads, req) {
  return Promise.all(threads.map((w) => new Promise((resolve) => {
    w.once('message', resolve);
    w.postMessage(req);
  })));
}

async function main() {
  const { startCluster } = require(path.join(nodeDir, 'lib', 'cluster'));
  const n = positiveArg('--connections', 1000, { integer: true });
  const rounds = positiveArg('--rounds', 5, { integer: true });
  const nThreads = positiveArg('--client-threads', 4, { integer: true });
  const scope = new Scope();
  let failed = false;
  try {
    const cluster = await startCluster({
      shards: [{ args: ['--max-connections', String(n + 1000), '--idle-timeout', '3600'] }],
      upgrade: 'handoff',
    });
    scope.add(() => cluster.stop());
    const [shard] = cluster.shards;
    const measuring = Math.min(500, n);
    const threads = [];
    const ready = [];
    for (let t = 0; t < nThreads; t++) {
      const share = (total) => Math.floor(total / nThreads) + (t < total % nThreads ? 1 : 0);
      const w = new Worker(__filename, { workerData: { url: shard.url, measuring: share(measuring), idle: share(n - measuring) } });
      threads.push(w);
      scope.add(() => w.terminate());
      ready.push(new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); }));
    }
    await Promise.all(ready);
    const pub = await client(shard.url, 'room:m', () => {});
    scope.add(() => pub.ws.terminate());
    let k = 0;
    const timer = setInterval(() => pub.ws.send(JSON.stringify([null, null, 'room:m', 'tick', { k: k++ }])), PERIOD_MS);
    const results = [];
    for (let r = 0; r < rounds; r++) {
      await delay(500);
      const t0 = process.hrtime.bigint();
      const out = await cluster.control('upgrade', 'shard-0');
      const t1 = process.hrtime.bigint();
      await delay(500);
      const moved = /(\d+) connections moved in (\d+) ms/.exec(out);
      const answers = await ask(threads, { kind: 'stalls', lo: String(t0 - 300000000n), hi: String(t1 + 300000000n) });
      const stalls = answers.flatMap((a) => a.stalls);
      const res = {
        moved: moved ? Number(moved[1]) : null, moved_ms: moved ? Number(moved[2]) : null,
        command_ms: Number(t1 - t0) / 1e6,
        stall_p50_ms: quantile(stalls, 0.5), stall_p99_ms: quantile(stalls, 0.99), stall_max_ms: Math.max(...stalls),
      };
      results.push(res);
      console.log(`round ${r + 1}: ${out.trim()} | ${JSON.stringify(res)}`);
    }
    clearInterval(timer);
    await delay(200);
    const ends = await ask(threads, { kind: 'finish', sent: k });
    const closed = ends.reduce((sum, e) => sum + e.closed, 0);
    const inOrder = ends.every((e) => e.inOrder);
    if (closed > 0 || !inOrder) failed = true;
    const med = (key) => quantile(results.map((x) => x[key]), 0.5);
    console.log(JSON.stringify({
      connections: n, rounds, client_threads: nThreads, closed, in_order: inOrder,
      moved_ms_median: med('moved_ms'), command_ms_median: med('command_ms'),
      stall_p99_ms_median: med('stall_p99_ms'), stall_max_ms_median: med('stall_max_ms'),
    }));
  } finally {
    await scope.close();
  }
  process.exit(failed ? 1 : 0);
}

if (isMainThread) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  clientThread(workerData).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
