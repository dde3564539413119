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
// (the new process: the state received, adopted and acknowledged), the
// command's wall time, and per measuring client the largest gap between two
// deliveries in the round's window less the 5 ms period (its stall), as
// p50 / p99 / max over the clients. Every client must see no close and
// every broadcast once, in order. Exits 1 otherwise, 2 on a usage error.
//
//   SWITCHBOARD_BIN_DIR=build/bin node bench/handoff.js [--connections 1000] [--rounds 5]

const path = require('node:path');

const nodeDir = path.join(__dirname, '..', 'tests', 'node');
const WebSocket = require(path.join(nodeDir, 'node_modules', 'ws'));
const { startCluster } = require(path.join(nodeDir, 'lib', 'cluster'));
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

(async () => {
  const n = positiveArg('--connections', 1000, { integer: true });
  const rounds = positiveArg('--rounds', 5, { integer: true });
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
    const logs = [];
    const clients = [];
    for (let i = 0; i < n; i++) {
      const log = [];
      const topic = i < measuring ? 'room:m' : 'room:idle';
      clients.push(client(shard.url, topic, (m) => {
        if (m[3] === 'tick') log.push([process.hrtime.bigint(), m[4].k]);
      }));
      if (i < measuring) logs.push(log);
      if (i % 200 === 199) await Promise.all(clients.slice(i - 199, i + 1));
    }
    const cs = await Promise.all(clients);
    const pub = await client(shard.url, 'room:m', () => {});
    scope.add(() => { for (const c of [...cs, pub]) c.ws.terminate(); });
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
      const lo = t0 - 300000000n;
      const hi = t1 + 300000000n;
      const stalls = logs.map((log) => {
        let worst = 0;
        for (let i = 1; i < log.length; i++) {
          if (log[i][0] < lo || log[i - 1][0] > hi) continue;
          worst = Math.max(worst, Number(log[i][0] - log[i - 1][0]) / 1e6 - PERIOD_MS);
        }
        return worst;
      });
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
    const sent = k;
    await waitUntil(() => logs.every((l) => l.length > 0 && l[l.length - 1][1] === sent - 1), { timeout: 10000, what: 'every tick delivered' }).catch(() => {});
    for (const log of logs) {
      for (let i = 1; i < log.length; i++) if (log[i][1] !== log[i - 1][1] + 1) { failed = true; break; }
    }
    const closed = cs.filter((c) => c.closed).length;
    if (closed > 0) failed = true;
    const med = (key) => quantile(results.map((x) => x[key]), 0.5);
    console.log(JSON.stringify({
      connections: n, rounds, closed, in_order: !failed,
      moved_ms_median: med('moved_ms'), command_ms_median: med('command_ms'),
      stall_p99_ms_median: med('stall_p99_ms'), stall_max_ms_median: med('stall_max_ms'),
    }));
  } finally {
    await scope.close();
  }
  process.exit(failed ? 1 : 0);
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
