'use strict';
// Several nodes on loopback, each a whole `switchboard run` (daemon, broker,
// shards) with its own ports, linked by their brokers' peer sockets: static
// membership, CURVE keys from `switchboard keygen`, each broker's flags
// naming the others. Shared by the mesh tests.

const assert = require('node:assert/strict');
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { startCluster } = require('./cluster');
const { freePort } = require('./worker');
const { push } = require('./phoenix');
const { delay } = require('./util');

// Starts one node per name (`shards[i]`: node i's shards, as startCluster
// takes them; `brokerArgs`: more flags for every broker) and waits until
// every uplink is up. Each cluster gets `node` (its name); one the test
// killed whole (`killedWhole`) is not stopped, only its files removed.
// `peerVia(from, to)` (each {name, port}; may be async) gives the endpoint
// `from`'s broker dials for `to`'s peer socket: something between them,
// such as a DelayRelay to 127.0.0.1:to.port; by default the socket itself.
async function startMesh(s, { names = ['n1', 'n2', 'n3'], shards = [1, 1, 1], brokerArgs = [], heartbeatMs = 200, peerVia = null } = {}) {
  const bin = process.env.SWITCHBOARD_BIN_DIR;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-mesh-'));
  s.add(() => fs.rmSync(dir, { recursive: true, force: true }));
  const nodes = [];
  for (const name of names) {
    const keyFile = path.join(dir, `${name}.key`);
    const pub = execFileSync(path.join(bin, 'switchboard'), ['keygen', '--secret-file', keyFile], { encoding: 'utf8' }).trim();
    nodes.push({ name, keyFile, pub, port: await freePort() });
  }
  const clusters = [];
  for (const [i, n] of nodes.entries()) {
    const args = [...brokerArgs, '--node', n.name, '--peer-bind', `tcp://127.0.0.1:${n.port}`, '--curve-secret-file', n.keyFile];
    for (const o of nodes) {
      if (o === n) continue;
      const endpoint = peerVia ? await peerVia({ name: n.name, port: n.port }, { name: o.name, port: o.port }) : `tcp://127.0.0.1:${o.port}`;
      args.push('--peer', `${o.name}=${endpoint}=${o.pub}`);
    }
    const c = await startCluster({ shards: shards[i], heartbeatMs, brokerArgs: args, name: n.name });
    s.add(() => (c.killedWhole ? fs.rmSync(c.dir, { recursive: true, force: true }) : c.stop()));
    c.node = n.name;
    clusters.push(c);
  }
  await meshUp(clusters, names);
  return clusters;
}

// Every broker's uplink to every other of `names` is up.
async function meshUp(clusters, names, timeout = 15000) {
  for (const c of clusters) {
    for (const other of names.filter((n) => n !== c.node)) {
      await c.waitForMetric(c.broker, 'switchboard_broker_peer_up', { peer: other }, (v) => v === 1, { timeout });
    }
  }
}

// What `c` received from `from`, as the list of n in arrival order.
const from = (c, sender) => c.got.filter((p) => p.from === sender).map((p) => p.n);
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

// Publishes n = first..last from each sender, round robin, each push's ok
// awaited in batches of `batch` (every send is acked: in every interested
// outbox), `pauseMs` between batches.
async function publishRound(senders, first, last, { batch = 30, pauseMs = 0 } = {}) {
  const pending = [];
  for (let n = first; n <= last; n++) {
    for (const c of senders) pending.push(push(c.channel, 'msg', { from: c.key, n, t: Date.now() }, { what: `ok of ${c.key} ${n}` }));
    if (pending.length >= batch) {
      await Promise.all(pending.splice(0));
      if (pauseMs > 0) await delay(pauseMs);
    }
  }
  for (const r of await Promise.all(pending)) assert.equal(r.status, 'ok', JSON.stringify(r));
}

module.exports = { startMesh, meshUp, from, range, publishRound };
