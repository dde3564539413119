'use strict';
// bench/mesh_latency.js: publish -> deliver across nodes (issue 14, Bench).
// Three loopback nodes (tests/node/lib/mesh.js: each a whole `switchboard
// run`, brokers linked by their CURVE peer sockets), raw WebSocket clients
// speaking Phoenix Channels v2. A publisher on node n1 pushes "tick" events
// on one topic at a fixed rate for a bounded time; each carries its index k
// and its send time (performance.timeOrigin + performance.now(): one clock,
// every thread of this process). Every subscriber checks it got k = 0..N-1
// once each, in order; the figures are the latencies (arrival - send time)
// of every delivery, p50 / p99 / max, and the delivery rate.
//
//   latency  subscribers on n2 and n3 (--subscribers each, 5 by default) and,
//            as the reference within a node, on n1 (reported apart: local,
//            remote); 1,000 broadcasts/s (--rate) for --seconds (10). Each run starts a mesh "direct"
//            and then one "delayed", whose every link goes through a
//            DelayRelay (tests/node/lib/delay_relay.js) holding bytes
//            --delay-ms (20) each way: the nodes' peers point at the relays.
//            --runs (3) such pairs, interleaved; medians over runs.
//   fanout   one topic, --fanout (1,000) subscribers: first spread over the
//            three nodes (a third each), then all on n1, in the same mesh,
//            one phase after the other at each --rates (100,200) per second
//            for --seconds; the ratio is one node's delivery rate and p99
//            against the spread's. The subscribers live in --client-threads
//            (4) worker threads, so one thread's parsing does not delay them
//            all (bench/handoff.js says why).
//
//   SWITCHBOARD_BIN_DIR=build/bin node bench/mesh_latency.js latency|fanout [flags]
// Prints one line per phase and a JSON line; exits 1 if a subscriber missed,
// repeated or reordered a broadcast, 2 on a usage error.

const path = require('node:path');
const { performance } = require('node:perf_hooks');
const { Worker, isMainThread, parentPort, workerData } = require('node:worker_threads');

const nodeDir = path.join(__dirname, '..', 'tests', 'node');
const WebSocket = require(path.join(nodeDir, 'node_modules', 'ws'));
const { Scope, delay, positiveArg, quantile, waitUntil } = require(path.join(nodeDir, 'lib', 'util'));

const TOPIC = 'room:bench';
const now = () => performance.timeOrigin + performance.now();

// A raw Phoenix client joined to `topic`; `onTick(payload)` for each tick.
function client(url, topic, onTick) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url}/websocket?vsn=2.0.0`);
    const c = { ws, closed: false };
    ws.on('open', () => ws.send(JSON.stringify(['1', '1', topic, 'phx_join', {}])));
    ws.on('message', (data) => {
      const m = JSON.parse(data.toString());
      if (m[3] === 'tick') onTick(m[4]);
      else if (m[3] === 'phx_reply' && m[1] === '1') resolve(c);
    });
    ws.on('close', () => { c.closed = true; });
    ws.on('error', reject);
  });
}

// --- Subscriber threads ------------------------------------------------------

// Holds its clients (one per URL of `urls`); answers the main thread:
// 'warm' (has every client seen a warm-up tick?), 'collect' (waits until
// every client has the phase's N ticks, bounded, then reports), 'close'.
async function subscriberThread({ urls }) {
  const subs = [];
  const connecting = [];
  for (const [i, url] of urls.entries()) {
    const sub = { warm: false, next: 0, bad: 0, lat: [] };
    subs.push(sub);
    connecting.push(client(url, TOPIC, (p) => {
      if (p.warm) {
        sub.warm = true;
        return;
      }
      // Every delivery's latency, then whether k is the one expected.
      sub.lat.push(now() - p.t);
      if (p.k !== sub.next) sub.bad++;
      sub.next = p.k + 1;
    }));
    if (i % 100 === 99) await Promise.all(connecting.slice(i - 99, i + 1));
  }
  const clients = await Promise.all(connecting);
  parentPort.on('message', async (req) => {
    if (req.kind === 'warm') {
      parentPort.postMessage({ kind: 'warm', warm: subs.every((s) => s.warm) });
    } else if (req.kind === 'reset') {
      for (const s of subs) Object.assign(s, { next: 0, bad: 0, lat: [] });
      parentPort.postMessage({ kind: 'reset' });
    } else if (req.kind === 'collect') {
      await waitUntil(() => subs.every((s) => s.lat.length >= req.n), { timeout: req.timeoutMs, what: 'every tick' }).catch(() => {});
      const lastAt = now();
      const total = subs.reduce((n, s) => n + s.lat.length, 0);
      const lat = new Float64Array(total);
      let at = 0;
      for (const s of subs) {
        lat.set(s.lat, at);
        at += s.lat.length;
      }
      const whole = subs.every((s) => s.lat.length === req.n && s.bad === 0 && s.next === req.n);
      parentPort.postMessage({ kind: 'collect', lat, whole, lastAt, closed: clients.filter((c) => c.closed).length }, [lat.buffer]);
    } else if (req.kind === 'close') {
      for (const c of clients) c.ws.terminate();
      parentPort.postMessage({ kind: 'close' });
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

// Starts `nThreads` subscriber threads sharing `urls` (one client each).
async function subscribers(scope, urls, nThreads) {
  const threads = [];
  const ready = [];
  const n = Math.min(nThreads, urls.length);
  for (let t = 0; t < n; t++) {
    const w = new Worker(__filename, { workerData: { urls: urls.filter((_, i) => i % n === t) } });
    threads.push(w);
    scope.add(() => w.terminate());
    ready.push(new Promise((resolve, reject) => { w.once('message', resolve); w.once('error', reject); }));
  }
  await Promise.all(ready);
  return threads;
}

// --- One phase: warm up, publish N at `rate`, collect -------------------------

// Latency quantiles of `lat` (sorted), in ms.
function stats(lat) {
  const q = (x) => (lat.length ? Number(quantile(lat, x).toFixed(2)) : null);
  return { p50_ms: q(0.5), p99_ms: q(0.99), max_ms: lat.length ? Number(lat[lat.length - 1].toFixed(2)) : null };
}

// `groups`: name -> indices in `threads`, each group's latencies reported
// apart besides the whole.
async function phase(pub, threads, { rate, seconds, groups = {} }) {
  // Warm-up: the subscribers' interest has reached n1's broker once a warm
  // tick reaches every one of them.
  await waitUntil(async () => {
    pub.ws.send(JSON.stringify([null, null, TOPIC, 'tick', { warm: true }]));
    await delay(50);
    return (await ask(threads, { kind: 'warm' })).every((a) => a.warm);
  }, { timeout: 20000, interval: 50, what: 'a warm-up tick at every subscriber' });
  await delay(200); // the last warm-up ticks arrive before the phase starts
  await ask(threads, { kind: 'reset' });
  const n = Math.round(rate * seconds);
  const t0 = now();
  let sent = 0;
  while (sent < n) {
    const due = Math.min(n, Math.floor(((now() - t0) * rate) / 1000) + 1);
    for (; sent < due; sent++) pub.ws.send(JSON.stringify([null, null, TOPIC, 'tick', { k: sent, t: now() }]));
    if (sent < n) await delay(1);
  }
  const sendS = (now() - t0) / 1000;
  const answers = await ask(threads, { kind: 'collect', n, timeoutMs: 30000 });
  const merge = (as) => Float64Array.from(as.flatMap((a) => Array.from(a.lat))).sort();
  const lat = merge(answers);
  const lastAt = Math.max(...answers.map((a) => a.lastAt));
  const res = {
    rate, sent: n, send_s: Number(sendS.toFixed(3)),
    deliveries: lat.length, whole: answers.every((a) => a.whole), closed: answers.reduce((s, a) => s + a.closed, 0),
    deliveries_per_s: Math.round(lat.length / ((lastAt - t0) / 1000)),
    ...stats(lat),
  };
  for (const [name, idx] of Object.entries(groups)) res[name] = stats(merge(idx.map((i) => answers[i])));
  return res;
}

const shardArgs = (n) => [{ args: ['--max-connections', String(n + 1000), '--idle-timeout', '3600'] }];

async function startNodes(scope, { delayMs = 0, connections = 100 } = {}) {
  const { startMesh } = require(path.join(nodeDir, 'lib', 'mesh'));
  const { startDelayRelay } = require(path.join(nodeDir, 'lib', 'delay_relay'));
  const peerVia = delayMs > 0 ? async (from, to) => {
    const relay = await startDelayRelay({ targetHost: '127.0.0.1', targetPort: to.port, delayMs });
    scope.add(() => relay.stop());
    return `tcp://127.0.0.1:${relay.port}`;
  } : null;
  return startMesh(scope, { shards: [0, 1, 2].map(() => shardArgs(connections)), heartbeatMs: 1000, peerVia });
}

async function publisher(scope, url) {
  const pub = await client(url, TOPIC, () => {});
  scope.add(() => pub.ws.terminate());
  return pub;
}

async function latency() {
  const runs = positiveArg('--runs', 3, { integer: true });
  const perNode = positiveArg('--subscribers', 5, { integer: true });
  const rate = positiveArg('--rate', 1000);
  const seconds = positiveArg('--seconds', 10);
  const delayMs = positiveArg('--delay-ms', 20);
  const results = { direct: [], delayed: [] };
  let ok = true;
  for (let run = 1; run <= runs; run++) {
    for (const kind of ['direct', 'delayed']) {
      const scope = new Scope();
      try {
        const nodes = await startNodes(scope, { delayMs: kind === 'delayed' ? delayMs : 0 });
        const urls = (i) => Array.from({ length: perNode }, () => nodes[i].shards[0].url);
        // One thread per node's subscribers: n1 (local reference), n2, n3.
        const threads = [];
        for (const i of [0, 1, 2]) threads.push(...await subscribers(scope, urls(i), 1));
        const pub = await publisher(scope, nodes[0].shards[0].url);
        const res = await phase(pub, threads, { rate, seconds, groups: { local: [0], remote: [1, 2] } });
        results[kind].push(res);
        ok = ok && res.whole && res.closed === 0;
        console.log(`run ${run} ${kind}: ${JSON.stringify(res)}`);
        await ask(threads, { kind: 'close' });
      } finally {
        await scope.close();
      }
    }
  }
  // Medians over runs of each run's figures, for n1's own subscribers
  // (local) and those of n2 and n3 (remote: across a link).
  const med = (kind, group, key) => quantile(results[kind].map((r) => r[group][key]), 0.5);
  const summary = { scenario: 'latency', runs, subscribers_per_node: perNode, rate, seconds, delay_ms: delayMs };
  for (const kind of ['direct', 'delayed']) {
    summary[kind] = {};
    for (const group of ['local', 'remote']) {
      summary[kind][group] = { p50_ms: med(kind, group, 'p50_ms'), p99_ms: med(kind, group, 'p99_ms'), max_ms: med(kind, group, 'max_ms') };
    }
  }
  summary.ok = ok;
  console.log(JSON.stringify(summary));
  return ok;
}

async function fanout() {
  const total = positiveArg('--fanout', 1000, { integer: true });
  const seconds = positiveArg('--seconds', 10);
  const nThreads = positiveArg('--client-threads', 4, { integer: true });
  const ri = process.argv.indexOf('--rates');
  const rates = ri < 0 ? [100, 200] : process.argv[ri + 1].split(',').map(Number);
  if (rates.some((r) => !(r > 0))) {
    console.error('--rates needs positive numbers, comma-separated');
    process.exit(2);
  }
  const scope = new Scope();
  const out = { scenario: 'fanout', subscribers: total, seconds, client_threads: nThreads, phases: [] };
  let ok = true;
  try {
    const nodes = await startNodes(scope, { connections: total });
    const pub = await publisher(scope, nodes[0].shards[0].url);
    for (const layout of ['spread', 'one-node']) {
      const urls = Array.from({ length: total }, (_, i) => nodes[layout === 'spread' ? i % 3 : 0].shards[0].url);
      const threads = await subscribers(scope, urls, nThreads);
      for (const rate of rates) {
        const res = { layout, ...await phase(pub, threads, { rate, seconds }) };
        ok = ok && res.whole && res.closed === 0;
        out.phases.push(res);
        console.log(JSON.stringify(res));
      }
      await ask(threads, { kind: 'close' });
      for (const w of threads) await w.terminate();
    }
  } finally {
    await scope.close();
  }
  out.ratios = rates.map((rate) => {
    const [spread, one] = ['spread', 'one-node'].map((l) => out.phases.find((p) => p.layout === l && p.rate === rate));
    return { rate, deliveries_per_s_spread_over_one: Number((spread.deliveries_per_s / one.deliveries_per_s).toFixed(3)),
      p99_spread_ms: spread.p99_ms, p99_one_ms: one.p99_ms };
  });
  out.ok = ok;
  console.log(JSON.stringify(out));
  return ok;
}

async function main() {
  const scenario = process.argv[2];
  if (!['latency', 'fanout'].includes(scenario)) {
    console.error('usage: node bench/mesh_latency.js latency|fanout [flags]');
    process.exit(2);
  }
  const ok = await (scenario === 'latency' ? latency() : fanout());
  process.exit(ok ? 0 : 1);
}

if (isMainThread) {
  main().catch((e) => {
    console.error(e);
    process.exit(1);
  });
} else {
  subscriberThread(workerData).catch((e) => {
    console.error(e);
    process.exit(1);
  });
}
