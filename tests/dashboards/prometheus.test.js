'use strict';
// The dashboards and alert rules against a real Prometheus scraping a real
// cluster: config/cluster.yaml under `switchboard run` (free ports, a
// temporary directory), Prometheus with prometheus/prometheus.yml and
// alerts.yml (1 s scrape and evaluation intervals), phoenix.js clients
// joining with presence and broadcasting, the broker killed once and a
// shard killed 8 times in a row (a crash loop: 80 % of its supervisor's
// intensity). Then every panel target of every dashboard but the mesh one
// (mesh.test.js), with its template variables expanded as Grafana expands
// them, must evaluate and return series, and so must every metric selector
// inside it; every alert expression outside the mesh group must evaluate,
// its selectors return series, and the crash loop must fire
// SwitchboardRestartStorm. A metric or
// label renamed in the code and not in the dashboards fails here, naming the
// panel.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const g = require('./lib/grafana');
const stack = require('./lib/stack');
const { panelChecks } = require('./lib/panels');
const { connect, join, push } = require('../node/lib/phoenix');
const { Scope } = require('../node/lib/util');

const CLIENTS = 8; // phoenix.js sockets at first; more (up to MAX_CLIENTS) until both shards have some
const MAX_CLIENTS = 24;
const SHOUTS_PER_CLIENT = 10;
// A node alone has no members: the mesh dashboard and rules are proven by
// mesh.test.js on three nodes.
const dashboards = g.loadDashboards().filter((d) => !g.MESH_DASHBOARDS.has(d.file));
const allRules = g.loadRules();
const rules = allRules.filter((r) => !g.MESH_RULE_GROUPS.has(r.group));

let dir;
let cluster;
let prom;
let promJobs;
let checks; // lib/panels.js on `prom`
const scope = new Scope();
const facts = {}; // what the setup did, for the value checks and failure messages

function logs() {
  return [cluster && cluster.daemon && cluster.daemon.logTail(), prom && prom.proc.logTail(60)].filter(Boolean).join('\n');
}

// Shows the daemon's and Prometheus' logs when an assertion fails.
async function withLogs(fn) {
  try {
    return await fn();
  } catch (e) {
    process.stderr.write(`${logs()}\n`);
    throw e;
  }
}

// A metric of one child, read straight from its endpoint (not through Prometheus).
async function childMetric(id, name, labels = {}) {
  const port = cluster.run.childMetrics[id];
  const r = await stack.httpGet(port, '/metrics');
  let sum;
  for (const line of r.body.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] || '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum = (sum || 0) + Number(m[3]);
  }
  return sum;
}

const shardIds = () => Object.keys(cluster.run.childMetrics).filter((id) => id !== 'broker');

// The broker holds one session per shard and every shard is welcomed. A
// killed shard's session stays on the broker until it expires (heartbeat ×
// misses), beside its successor's, both with the shard's name as `peer`:
// only one credit series per shard means the old ones are gone.
async function meshUp() {
  const shards = shardIds();
  if ((await childMetric('broker', 'switchboard_broker_connected_shards')) !== shards.length) return false;
  const r = await stack.httpGet(cluster.run.childMetrics.broker, '/metrics');
  const peers = r.body.split('\n').filter((l) => l.startsWith('switchboard_broker_credit{'));
  if (peers.length !== shards.length) return false;
  for (const id of shards) if ((await childMetric(id, 'switchboard_worker_broker_up')) !== 1) return false;
  return true;
}

async function connectionsByShard() {
  const out = {};
  for (const id of shardIds()) out[id] = await childMetric(id, 'switchboard_worker_connections');
  return out;
}

// phoenix.js clients on the shared gateway port, each joined to two topics
// (one with presence), until every shard holds some (bounded).
async function startClients(url) {
  const clients = [];
  let next = 0;
  const add = async () => {
    const i = next++;
    const socket = await connect(scope, url);
    const lobby = socket.channel('room:lobby', { presence: { key: `user-${i}`, meta: { name: `user ${i}` } } });
    const ops = socket.channel('room:ops', {});
    for (const ch of [lobby, ops]) {
      const r = await join(ch);
      assert.equal(r.status, 'ok', `join of ${ch.topic} by client ${i}: ${JSON.stringify(r)}`);
    }
    clients.push({ socket, lobby, ops });
  };
  // Connected in parallel: one at a time, the shard that accepted the last
  // one tends to win the next accept on the shared port too.
  await Promise.all(Array.from({ length: CLIENTS }, add));
  let spread = await connectionsByShard();
  while (Object.values(spread).some((n) => !n) && clients.length < MAX_CLIENTS) {
    await Promise.all(Array.from({ length: 4 }, add));
    spread = await connectionsByShard();
  }
  facts.spread = spread;
  return clients;
}

async function broadcast(clients, round) {
  const pending = [];
  for (const [i, c] of clients.entries()) {
    for (let n = 0; n < SHOUTS_PER_CLIENT; n++) {
      pending.push(push(c.lobby, 'shout', { from: i, round, n }));
      if (n % 3 === 0) pending.push(push(c.ops, 'status', { from: i, round, n }));
    }
  }
  const outcomes = await Promise.all(pending);
  const bad = outcomes.filter((o) => o.status !== 'ok');
  assert.equal(bad.length, 0, `broadcasts not ok: ${JSON.stringify(bad.slice(0, 5))}`);
}

// ---------------------------------------------------------------------------

describe('dashboards and alerts against Prometheus scraping the default cluster', { timeout: 240000 }, () => {
  before(async () => {
    const t0 = Date.now();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-dash-'));
    cluster = await stack.startCluster(dir);
    const cfg = stack.prometheusConfig(cluster.topo.shipped, cluster.run);
    promJobs = cfg;
    prom = await stack.startPrometheus(dir, cfg.yaml);
    checks = panelChecks(prom);
    await withLogs(async () => {
      // Every child with a metrics endpoint, and the daemon, scraped and up.
      const wantChildren = Object.keys(cluster.run.childMetrics).sort();
      await stack.waitUntil(async () => {
        const { activeTargets } = await prom.api('targets', { state: 'active' });
        const up = (job) => activeTargets.filter((x) => x.labels.job === job && x.health === 'up');
        const children = up(cfg.childrenJob).map((x) => x.labels.child).sort();
        return up(cfg.daemonJob).length === 1 && JSON.stringify(children) === JSON.stringify(wantChildren);
      }, { timeout: 30000, what: `Prometheus to scrape the daemon and ${wantChildren.join(', ')}` });
      await stack.waitUntil(meshUp, { timeout: 20000, what: 'the broker and every shard to be connected' });
      facts.ready = Date.now() - t0;

      const sockets = Object.values(cluster.run.sockets);
      const clients = await startClients(`ws://127.0.0.1:${sockets[0]}/socket`);
      facts.clients = clients.length;
      await broadcast(clients, 1);

      // The broker crashes once: the shards resync with its new epoch.
      await cluster.crash('broker');
      await stack.waitUntil(meshUp, { timeout: 20000, what: 'the shards to resync with the restarted broker' });
      await broadcast(clients, 2);

      // A crash loop: the last shard killed as soon as it runs again, 80 %
      // of its supervisor's intensity times (8 for config/cluster.yaml's
      // 10): more than the storm alert's 5 a minute, and the near-intensity
      // alert's 80 %, without making the supervisor give up.
      const crashed = shardIds()[shardIds().length - 1];
      const intensity = cluster.run.intensity[crashed];
      facts.crashLoop = crashed;
      facts.crashes = Math.ceil((8 * intensity) / 10);
      assert.ok(facts.crashes > 5 && facts.crashes <= intensity,
        `the shards' supervisor has intensity ${intensity}: a crash loop of more than 5 restarts within its period makes it give up`);
      const t1 = Date.now();
      for (let i = 0; i < facts.crashes; i++) await cluster.crash(crashed);
      facts.crashLoopMs = Date.now() - t1;
      await stack.waitUntil(meshUp, { timeout: 20000, what: 'the mesh to be up after the crash loop' });
      // ... and Prometheus has scraped it so.
      await stack.waitUntil(async () => {
        const r = await prom.api('query', { query: 'count(switchboard_broker_credit) == max(switchboard_broker_connected_shards)' });
        return r.result.length === 1 && Number(r.result[0].value[1]) === shardIds().length;
      }, { timeout: 10000, what: 'Prometheus to scrape one broker session per shard' });

      // The storm alert fires from what Prometheus scraped.
      await stack.waitUntil(async () => (await checks.firingAlerts()).some((a) => a.labels.alertname === 'SwitchboardRestartStorm'
        && a.labels.child === crashed), { timeout: 30000, what: `SwitchboardRestartStorm to fire for ${crashed}` });
      facts.setupMs = Date.now() - t0;
    });
  });

  after(async () => {
    await scope.close().catch(() => {});
    if (prom) await prom.stop();
    if (cluster) {
      const r = await cluster.stop();
      if (r && r.code !== 0) process.stderr.write(`switchboard run exited with ${JSON.stringify(r)}\n${cluster.daemon.logTail()}\n`);
    }
    // SB_KEEP_TMP=1 keeps the topology, the Prometheus configuration and data.
    if (dir && process.env.SB_KEEP_TMP) process.stderr.write(`kept ${dir}\n`);
    else if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('scrapes the daemon by its own job and every child through file_sd, with node/child/supervisor labels', async (t) => {
    t.diagnostic(`setup: cluster ready and scraped in ${facts.ready} ms, clients ${facts.clients} ` +
      `(connections by shard ${JSON.stringify(facts.spread)}), crash loop of ${facts.crashLoop} (${facts.crashes} kills) ${facts.crashLoopMs} ms, ` +
      `storm alert firing ${facts.setupMs} ms after start`);
    const { activeTargets, droppedTargets } = await prom.api('targets');
    const children = activeTargets.filter((x) => x.labels.job === promJobs.childrenJob);
    for (const x of children) {
      assert.equal(x.labels.node, cluster.run.name, `target ${x.scrapeUrl}: node label`);
      assert.ok(x.labels.child && x.labels.supervisor, `target ${x.scrapeUrl}: child and supervisor labels ${JSON.stringify(x.labels)}`);
      assert.notEqual(x.labels.child, 'switchboard', 'the daemon must not be scraped by the children job');
    }
    // The daemon's own file_sd entry is dropped by the children job, not scraped twice.
    assert.ok(droppedTargets.some((x) => x.discoveredLabels.job === promJobs.childrenJob
      && x.discoveredLabels.child === 'switchboard'), 'the daemon\'s own file_sd entry is dropped by the children job');
    // `node` is on every series Prometheus holds.
    const noNode = await prom.api('query', { query: 'count by (job) ({__name__=~"switchboard_.+", node=""})' });
    assert.deepEqual(noNode.result, [], `switchboard series without a node label: ${JSON.stringify(noNode.result)}`);
  });

  it('finds values for every template variable', async () => {
    for (const d of dashboards) {
      const values = await checks.variableValues(d.json, 'all');
      assert.ok(values.node.includes(cluster.run.name), `${d.file}: $node values ${values.node}`);
      const shards = shardIds().map((id) => id.slice(id.lastIndexOf('.') + 1));
      assert.deepEqual([...values.shard].sort(), shards.sort(), `${d.file}: $shard values`);
    }
  });

  it('every panel target, with every variable on "All", returns series (and so does each selector in it)', async (t) => {
    await withLogs(() => checks.assertDashboards(dashboards, 'all', t));
  });

  it('every panel target, with one node and one shard selected, returns series', async (t) => {
    await withLogs(() => checks.assertDashboards(dashboards, 'first', t));
  });

  it('every alert expression evaluates, and each selector in it returns series', async () => {
    await checks.assertRules(rules);
  });

  it('Prometheus loaded every rule of alerts.yml and evaluates each without error', async () => {
    const all = await stack.waitUntil(async () => {
      const groups = (await prom.api('rules')).groups;
      const loaded = groups.flatMap((gr) => gr.rules);
      return loaded.every((r) => r.health !== 'unknown') ? loaded : false;
    }, { timeout: 10000, what: 'every rule to be evaluated once' });
    assert.deepEqual(all.map((r) => r.name).sort(), allRules.map((r) => r.name).sort());
    const bad = all.filter((r) => r.health !== 'ok').map((r) => `${r.name}: ${r.health} ${r.lastError}`);
    assert.deepEqual(bad, []);
  });

  it('the crash loop fires SwitchboardRestartStorm and SwitchboardSupervisorNearIntensity, the broker crash SwitchboardBrokerEpochChanged, and nothing else fires', async () => {
    const firing = await checks.firingAlerts();
    const names = (n) => firing.filter((a) => a.labels.alertname === n);
    const storm = names('SwitchboardRestartStorm');
    assert.deepEqual(storm.map((a) => a.labels.child), [facts.crashLoop], `storm alerts: ${JSON.stringify(storm)}`);
    assert.equal(storm[0].labels.node, cluster.run.name);
    assert.equal(storm[0].labels.supervisor, 'root/shards');
    assert.ok(Number(storm[0].value) > 5, `storm alert value ${storm[0].value}`);
    // 80 % of the intensity within the period.
    await stack.waitUntil(async () => (await checks.firingAlerts()).some((a) => a.labels.alertname === 'SwitchboardSupervisorNearIntensity'
      && a.labels.supervisor === 'root/shards'), { timeout: 30000, what: 'SwitchboardSupervisorNearIntensity for root/shards' });
    await stack.waitUntil(async () => (await checks.firingAlerts()).some((a) => a.labels.alertname === 'SwitchboardBrokerEpochChanged'
      && a.labels.child === 'broker'), { timeout: 10000, what: 'SwitchboardBrokerEpochChanged' });
    const expected = new Set(['SwitchboardRestartStorm', 'SwitchboardSupervisorNearIntensity', 'SwitchboardBrokerEpochChanged']);
    const unexpected = (await checks.firingAlerts()).filter((a) => !expected.has(a.labels.alertname));
    assert.deepEqual(unexpected, [], 'alerts firing that nothing in this run should fire');
  });

  it('the panels show what happened', async () => {
    const one = async (file, title, refId) => {
      const r = await checks.panelValues(dashboards, file, title, refId);
      assert.equal(r.length, 1, `${title} ${refId}: ${JSON.stringify(r)}`);
      return r[0].values[r[0].values.length - 1];
    };
    // Gauges of state that the crashes just changed: the last restart may
    // still be starting (slowly under ASan) or not scraped yet, so wait for
    // them (bounded); a wrong query still fails, with the last mismatch.
    const settled = (what, check) =>
      stack.waitUntil(async () => {
        await check();
        return true;
      }, { timeout: 15000, what });
    const workersUp = Object.keys(cluster.run.childMetrics).length;
    await settled('"Children up" to count every child', async () => {
      assert.equal(await one('cluster-overview.json', 'Children up', 'A'), workersUp);
      assert.equal(await one('cluster-overview.json', 'Children up', 'B'), workersUp);
    });
    assert.ok(await one('cluster-overview.json', 'Restarts in range') >= 1 + facts.crashes, 'Restarts in range');
    assert.ok(await one('cluster-overview.json', 'Connections') > 0, 'Connections');
    const perChild = await checks.panelValues(dashboards, 'cluster-overview.json', 'Restarts per minute, by child');
    const crashed = perChild.find((s) => s.metric.child === facts.crashLoop);
    assert.ok(crashed && Math.max(...crashed.values) > 0, `restarts per minute of ${facts.crashLoop}: ${JSON.stringify(perChild)}`);
    const broadcasts = await checks.panelValues(dashboards, 'cluster-overview.json', 'Client broadcasts per second, by shard');
    assert.ok(broadcasts.some((s) => Math.max(...s.values) > 0), `broadcast rate: ${JSON.stringify(broadcasts)}`);
    const mesh = 'broker-mesh.json';
    await settled('"Shards with a broker session" to count every shard', async () => {
      assert.equal(await one(mesh, 'Shards with a broker session'), shardIds().length);
    });
    assert.ok(await one(mesh, 'Broker restarts in range (epoch changes)') >= 1, 'epoch changes');
    const subs = await checks.panelValues(dashboards, mesh, 'Topics, subscriptions and presences', 'A');
    assert.ok(subs.length === 1 && subs[0].values[subs[0].values.length - 1] >= 1, `topics: ${JSON.stringify(subs)}`);
  });
});
