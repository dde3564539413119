'use strict';
// The mesh dashboard (dashboards/cluster-nodes.json) and the mesh alert
// rules (prometheus/alerts.yml, group switchboard-mesh) against a real
// Prometheus scraping three loopback nodes (tests/node/lib/mesh.js: each a
// `switchboard run`, brokers linked over CURVE), every broker and shard
// found through its node's file_sd output with the shipped
// prometheus.yml's job. phoenix.js clients on the three nodes broadcast to
// each other; then every target of every panel, with its variables on "All"
// and on one node and member, must return series, and so must each metric
// selector in it. Then the alerts fire for real: one node's broker stopped
// (SIGSTOP) while broadcasts flow to it makes the others' outboxes to it
// grow (SwitchboardPeerQueueGrowing), and one node killed whole makes the
// others' uplinks to it stay down (SwitchboardPeerDown). The rules' `for`
// is shortened to FOR (1 s evaluations); their expressions are the
// shipped ones.

const { describe, it, before, after } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const g = require('./lib/grafana');
const stack = require('./lib/stack');
const { panelChecks } = require('./lib/panels');
const { startMesh, meshUp } = require('../node/lib/mesh');
const { connect, join, push, record } = require('../node/lib/phoenix');
const { Scope } = require('../node/lib/util');

const NAMES = ['n1', 'n2', 'n3'];
const TOPIC = 'room:lobby';
const SHOUTS = 10; // per client, before the panels are checked
const FOR = '2s'; // the mesh rules' `for` in this run
const PUMP_PACE_MS = 25; // between broadcasts while n3's broker is stopped
const FILE = 'cluster-nodes.json';
const dashboards = g.loadDashboards().filter((d) => g.MESH_DASHBOARDS.has(d.file));
const rules = g.loadRules().filter((r) => g.MESH_RULE_GROUPS.has(r.group));
const MESH_ALERTS = new Set(rules.map((r) => r.name));

let dir;
let nodes; // tests/node/lib/cluster.js Clusters, `node` their name
let prom;
let checks; // lib/panels.js on `prom`
let clients; // one per node: {key, channel, shouts (Inbox)}
const scope = new Scope();
const facts = {};

function logs() {
  return [...(nodes || []).map((c) => c.logTail(60)), prom && prom.proc.logTail(60)].filter(Boolean).join('\n');
}

// Shows the nodes' and Prometheus' logs when an assertion fails.
async function withLogs(fn) {
  try {
    return await fn();
  } catch (e) {
    process.stderr.write(`${logs()}\n`);
    throw e;
  }
}

// A phoenix.js client on node `c`'s shard, joined to TOPIC with presence.
async function client(c) {
  const key = `user@${c.node}`;
  const socket = await connect(scope, c.shards[0].url);
  const channel = socket.channel(TOPIC, { presence: { key, meta: { node: c.node } } });
  const shouts = record(channel, ['shout']);
  const r = await join(channel);
  assert.equal(r.status, 'ok', `join of ${TOPIC} on ${c.node}: ${JSON.stringify(r)}`);
  return { key, channel, shouts };
}

const from = (x, key) => x.shouts.all.filter((m) => m.payload.from === key).length;

async function shout(x, n) {
  const r = await push(x.channel, 'shout', { from: x.key, n });
  assert.equal(r.status, 'ok', `shout ${n} of ${x.key}: ${JSON.stringify(r)}`);
}

// Firing alerts named `name` with these labels.
async function firing(name, labels) {
  return (await checks.firingAlerts()).filter((a) => a.labels.alertname === name
    && Object.entries(labels).every(([k, v]) => a.labels[k] === v));
}

async function waitFiring(name, labels, timeout = 20000) {
  return stack.waitUntil(async () => {
    const f = await firing(name, labels);
    return f.length > 0 ? f : false;
  }, { timeout, interval: 250, what: `${name} to fire for ${JSON.stringify(labels)}` });
}

// The one value of `expr`, as Prometheus has it now (undefined if not one series).
async function brokerValue(expr) {
  const r = await prom.api('query', { query: expr });
  return r.result.length === 1 ? Number(r.result[0].value[1]) : undefined;
}

// n3's broker is stopped: broadcasts for it pile up in n1's and n2's
// outboxes to it, the panels show it and the alerts fire.
async function stoppedBroker(t, a, b) {
  const t0 = Date.now();
  // Broadcasts flow to n3 (its client subscribes) until the alert fires,
  // about 40 a second from each of n1 and n2 (paced: unpaced, 2 cores
  // spend themselves on the clients and the links miss heartbeats): n1
  // and n2 keep them for n3 until it acks.
  let pumping = true;
  let n = SHOUTS;
  const pump = (async () => {
    while (pumping) {
      n++;
      await Promise.all([shout(a, n), shout(b, n), stack.delay(PUMP_PACE_MS)]);
    }
  })();
  try {
    await waitFiring('SwitchboardPeerQueueGrowing', { node: 'n1', peer: 'n3' });
    await waitFiring('SwitchboardPeerQueueGrowing', { node: 'n2', peer: 'n3' });
    // n3 does not answer heartbeats either: its links are down.
    await waitFiring('SwitchboardPeerDown', { node: 'n1', peer: 'n3' });
  } finally {
    pumping = false;
    await pump;
  }
  facts.shouts = n;
  t.diagnostic(`SwitchboardPeerQueueGrowing and SwitchboardPeerDown for n3 fired ${Date.now() - t0} ms after its broker stopped; ${n - SHOUTS} broadcasts each from n1 and n2 meanwhile`);
  const outbox = await checks.panelValues(dashboards, FILE, 'Outbox to each member (messages)', 'A', { step: 1 });
  const toN3 = outbox.filter((s) => s.metric.peer === 'n3');
  assert.equal(toN3.length, 2, `outboxes to n3: ${JSON.stringify(outbox)}`);
  for (const s of toN3) assert.ok(Math.max(...s.values) > 0, `outbox ${s.metric.node} → n3: ${JSON.stringify(s.values)}`);
  const uplinks = await checks.panelValues(dashboards, FILE, 'Uplink, node → member', 'A', { step: 1 });
  const n1n3 = uplinks.find((s) => s.metric.node === 'n1' && s.metric.peer === 'n3');
  assert.ok(n1n3 && n1n3.values.includes(1) && n1n3.values.at(-1) === 0, `uplink n1 → n3 up, then down: ${JSON.stringify(n1n3)}`);
}

describe('the mesh dashboard and alerts against Prometheus scraping three nodes', { timeout: 120000 }, () => {
  before(async () => {
    const t0 = Date.now();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-dash-mesh-'));
    nodes = await startMesh(scope, { names: NAMES, shards: [1, 1, 1] });
    // Each node's daemon writes its targets next to its control socket:
    // <dir>/<node name>.targets.json.
    const files = nodes.map((c) => path.join(path.dirname(c.controlPath), `${c.node}.targets.json`));
    const rulesFile = stack.alertsWithFor(path.join(dir, 'alerts.yml'), g.MESH_RULE_GROUPS, FOR);
    const cfg = stack.meshPrometheusConfig(files, rulesFile);
    prom = await stack.startPrometheus(dir, cfg.yaml);
    checks = panelChecks(prom);
    await withLogs(async () => {
      const want = nodes.flatMap((c) => [`${c.node}/broker`, ...c.shards.map((s) => `${c.node}/${s.id}`)]).sort();
      await stack.waitUntil(async () => {
        const { activeTargets } = await prom.api('targets', { state: 'active' });
        const up = activeTargets.filter((x) => x.labels.job === cfg.childrenJob && x.health === 'up')
          .map((x) => `${x.labels.node}/${x.labels.child}`).sort();
        return JSON.stringify(up) === JSON.stringify(want);
      }, { timeout: 30000, what: `Prometheus to scrape ${want.join(', ')}` });
      facts.ready = Date.now() - t0;

      // One client per node; each one's broadcasts reach the other two.
      clients = [];
      for (const c of nodes) clients.push(await client(c));
      // A broker forwards to a member only what the member said its shards
      // subscribe: every node has heard of the others' joins.
      for (const c of nodes) {
        for (const other of NAMES.filter((x) => x !== c.node)) {
          await c.waitForMetric(c.broker, 'switchboard_broker_peer_interest_topics', { peer: other }, (v) => v >= 1, { timeout: 10000 });
        }
      }
      for (const x of clients) for (let n = 1; n <= SHOUTS; n++) await shout(x, n);
      for (const x of clients) {
        for (const y of clients) {
          if (x === y) continue;
          await stack.waitUntil(() => from(x, y.key) >= SHOUTS, { timeout: 10000, what: `${x.key} to get ${SHOUTS} shouts from ${y.key}` });
        }
      }
      facts.setupMs = Date.now() - t0;
    });
  });

  after(async () => {
    await scope.close().catch((e) => process.stderr.write(`closing the nodes: ${e.message}\n`));
    if (prom) await prom.stop();
    if (dir && process.env.SB_KEEP_TMP) process.stderr.write(`kept ${dir}\n`);
    else if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('finds every node and every member in the template variables', async (t) => {
    t.diagnostic(`setup: three nodes scraped in ${facts.ready} ms, broadcasts across in ${facts.setupMs} ms`);
    for (const d of dashboards) {
      const values = await checks.variableValues(d.json, 'all');
      assert.deepEqual([...values.node].sort(), NAMES, `${d.file}: $node`);
      assert.deepEqual([...values.peer].sort(), NAMES, `${d.file}: $peer`);
    }
  });

  it('every panel target, with every variable on "All", returns series (and so does each selector in it)', async (t) => {
    await withLogs(() => checks.assertDashboards(dashboards, 'all', t));
  });

  it('every panel target, with one node and one member selected, returns series', async (t) => {
    await withLogs(() => checks.assertDashboards(dashboards, 'first', t));
  });

  it('every mesh alert expression evaluates, and each selector in it returns series; none fires on a healthy mesh', async () => {
    await checks.assertRules(rules);
    const mesh = (await checks.firingAlerts()).filter((a) => MESH_ALERTS.has(a.labels.alertname));
    assert.deepEqual(mesh, [], 'mesh alerts firing on a healthy mesh');
    const links = await checks.panelValues(dashboards, FILE, 'Uplinks up', 'A');
    assert.equal(links[0].values.at(-1), NAMES.length * (NAMES.length - 1), `uplinks up: ${JSON.stringify(links)}`);
  });

  it('a stopped broker: the outboxes to it grow on the panels and SwitchboardPeerQueueGrowing fires', async (t) => {
    await withLogs(async () => {
      const [a, b] = clients;
      const [, , c3] = nodes;
      await c3.pause('broker');
      try {
        await stoppedBroker(t, a, b);
      } finally {
        await c3.resume('broker');
      }
      // Back: the links come up and what waited for n3 is acked.
      await meshUp(nodes, NAMES);
      await stack.waitUntil(async () => (await brokerValue('sum(switchboard_broker_peer_queue_messages{peer="n3"})')) === 0,
        { timeout: 20000, what: 'the outboxes to n3 to be acked to 0 (as scraped)' });
      await stack.waitUntil(() => from(clients[2], a.key) >= facts.shouts && from(clients[2], b.key) >= facts.shouts,
        { timeout: 10000, what: `n3's client to get the ${facts.shouts} shouts of n1 and n2` });
    });
  });

  it('a node killed whole: SwitchboardPeerDown fires on every other node for it, and the history owners change', async (t) => {
    await withLogs(async () => {
      const [, c2] = nodes;
      const t0 = Date.now();
      await c2.kill9();
      c2.killedWhole = true;
      await waitFiring('SwitchboardPeerDown', { node: 'n1', peer: 'n2' });
      await waitFiring('SwitchboardPeerDown', { node: 'n3', peer: 'n2' });
      t.diagnostic(`SwitchboardPeerDown for n2 fired on n1 and n3 ${Date.now() - t0} ms after the kill`);
      // Only the mesh alerts fire in this run (the nodes' daemons are not
      // scraped; nothing restarted).
      const other = (await checks.firingAlerts()).filter((a) => !MESH_ALERTS.has(a.labels.alertname));
      assert.deepEqual(other, [], 'alerts other than the mesh ones firing');
      // n1 computes history owners over itself and n3 now.
      await stack.waitUntil(async () => (await brokerValue('switchboard_broker_history_owner_nodes{node="n1"}')) === 2,
        { timeout: 10000, what: 'n1 to count 2 history owner nodes (as scraped)' });
      const owners = await checks.panelValues(dashboards, FILE, 'History owner nodes, by node', 'A', { step: 1 });
      const n1 = owners.find((s) => s.metric.node === 'n1');
      assert.ok(n1 && n1.values.includes(3) && n1.values.at(-1) === 2, `history owner nodes of n1: ${JSON.stringify(n1)}`);
      const changes = await checks.panelValues(dashboards, FILE, 'History owner changes in range, by node');
      const c1 = changes.find((s) => s.metric.node === 'n1');
      assert.ok(c1 && c1.values.at(-1) >= 1, `history owner changes of n1: ${JSON.stringify(changes)}`);
    });
  });
});
