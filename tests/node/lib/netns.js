'use strict';
// Nodes as on separate machines: each `switchboard run` in its own network
// namespace, joined by veth pairs to a bridge whose host side holds etcd
// (Debian's etcd-server, the nodes' membership) and the test itself — the
// network tools/cluster-demo makes, with names and a /24 of its own per run
// so that runs, and the demo's 10.77.0.0/24, never meet. Everything made is
// removed when the test's scope closes, failed or not. Needs root.

const { execFile, execFileSync, spawn } = require('node:child_process');
const crypto = require('node:crypto');
const fs = require('node:fs');
const http = require('node:http');
const os = require('node:os');
const path = require('node:path');
const { metric, waitForMetric, httpRequest } = require('./worker');
const { waitUntil, withTimeout } = require('./util');

const LOG_LINES_KEPT = 3000;
const GATEWAY_PORT = 4000;
const PEER_PORT = 7100;
const BROKER_METRICS_PORT = 9101;
const SHARD_METRICS_PORT = 9110; // the replicas' base: shard.i on base + i
const ETCD_PORT = 2379;

function bin(name) {
  const dir = process.env.SWITCHBOARD_BIN_DIR;
  if (!dir) throw new Error('SWITCHBOARD_BIN_DIR is not set (directory of switchboard, switchboard-broker, switchboard-worker)');
  return path.join(dir, name);
}

function ip(...args) {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

// Why namespaces cannot be made here, or null when they can.
function unavailable() {
  if (process.getuid() !== 0) return 'not root';
  const probe = `sbprobe${process.pid}`;
  try {
    ip('netns', 'add', probe);
  } catch (e) {
    return `ip netns add failed: ${String(e.stderr || e.message).trim()}`;
  }
  ip('netns', 'delete', probe);
  return null;
}

// A process whose output lines are kept (the last LOG_LINES_KEPT).
function spawnLogged(cmd, args, opts = {}) {
  const proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  const p = { proc, lines: [] };
  for (const stream of [proc.stdout, proc.stderr]) {
    let partial = '';
    stream.setEncoding('utf8');
    stream.on('data', (chunk) => {
      partial += chunk;
      const parts = partial.split('\n');
      partial = parts.pop();
      p.lines.push(...parts);
      if (p.lines.length > LOG_LINES_KEPT) p.lines.splice(0, p.lines.length - LOG_LINES_KEPT);
    });
  }
  p.exit = new Promise((resolve) => {
    proc.on('exit', (code, signal) => resolve({ code, signal }));
    proc.on('error', (e) => resolve({ code: null, signal: null, error: e.message }));
  });
  p.alive = () => proc.exitCode === null && proc.signalCode === null;
  return p;
}

// The network: a bridge, its host address .254, and one namespace per
// member, each with eth0 at .N on the bridge.
class Network {
  constructor(dir) {
    this.dir = dir;
    this.tag = crypto.randomBytes(3).toString('hex'); // names: 'sb' + 6 + 3 chars at most
    this.subnet = pickSubnet();
    this.bridge = `sb${this.tag}br`;
    this.namespaces = new Map(); // index -> name
    ip('link', 'add', this.bridge, 'type', 'bridge');
    ip('addr', 'add', `${this.hostAddr}/24`, 'dev', this.bridge);
    ip('link', 'set', this.bridge, 'up');
  }

  get hostAddr() {
    return this.addr(254);
  }

  addr(i) {
    return `${this.subnet}.${i}`;
  }

  // Namespace `i` (1..253) with its veth on the bridge; returns its name.
  addNamespace(i) {
    const ns = `sb${this.tag}n${i}`;
    const veth = `sb${this.tag}v${i}`;
    ip('netns', 'add', ns);
    this.namespaces.set(i, ns);
    ip('link', 'add', veth, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns);
    ip('link', 'set', veth, 'master', this.bridge, 'up');
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    ip('-n', ns, 'addr', 'add', `${this.addr(i)}/24`, 'dev', 'eth0');
    ip('-n', ns, 'link', 'set', 'eth0', 'up');
    return ns;
  }

  // Cuts namespace `i` from the namespaces `others` both ways (a blackhole
  // route to each on either side; the host side, and so the test's
  // clients and etcd, still reach it), or heals that cut.
  partition(i, others, cut = true) {
    const verb = cut ? 'add' : 'del';
    for (const j of others) {
      ip('-n', this.namespaces.get(i), 'route', verb, 'blackhole', `${this.addr(j)}/32`);
      ip('-n', this.namespaces.get(j), 'route', verb, 'blackhole', `${this.addr(i)}/32`);
    }
  }

  // Removes every namespace (its veth end, and so the pair, goes with it)
  // and the bridge.
  close() {
    const errors = [];
    for (const ns of this.namespaces.values()) {
      try {
        ip('netns', 'delete', ns);
      } catch (e) {
        errors.push(`${ns}: ${String(e.stderr || e.message).trim()}`);
      }
    }
    this.namespaces.clear();
    try {
      ip('link', 'delete', this.bridge);
    } catch (e) {
      errors.push(`${this.bridge}: ${String(e.stderr || e.message).trim()}`);
    }
    if (errors.length) throw new Error(`removing the test network: ${errors.join('; ')}`);
  }
}

// 10.78.X: X from the pid, moved on while a route to it exists (another
// run's bridge).
function pickSubnet() {
  const routes = execFileSync('ip', ['-4', 'route', 'show'], { encoding: 'utf8' });
  for (let k = 0; k < 250; k++) {
    const x = 1 + ((process.pid + k) % 250);
    if (!routes.includes(`10.78.${x}.`)) return `10.78.${x}`;
  }
  throw new Error('no free 10.78.X.0/24 for the test network');
}

// etcd on the bridge's host address, its data in `dir`: stop() and
// start() again keep its data (and the leases in it).
class Etcd {
  constructor(host, dir) {
    this.url = `http://${host}:${ETCD_PORT}`;
    this.host = host;
    this.dir = dir;
    this.p = null;
  }

  async start() {
    this.p = spawnLogged('etcd', ['--name', 'sbtest', '--data-dir', this.dir,
      '--listen-client-urls', this.url, '--advertise-client-urls', this.url,
      '--listen-peer-urls', 'http://127.0.0.1:0']);
    await waitUntil(async () => {
      if (!this.p.alive()) throw new Error(`etcd exited: ${this.p.lines.slice(-20).join('\n')}`);
      const r = await httpRequest(ETCD_PORT, { host: this.host, path: '/health', timeout: 1000 });
      return r.status === 200 && JSON.parse(r.body).health === 'true';
    }, { timeout: 20000, interval: 100, what: `etcd to answer /health on ${this.url}` });
  }

  async stop() {
    if (!this.p) return;
    if (this.p.alive()) this.p.proc.kill('SIGTERM');
    await withTimeout(this.p.exit, 15000, 'etcd to exit after SIGTERM');
    this.p = null;
  }

  // The value (parsed JSON) at `key`, or null.
  async get(key) {
    const body = JSON.stringify({ key: Buffer.from(key).toString('base64') });
    const res = await new Promise((resolve, reject) => {
      const req = http.request({ host: this.host, port: ETCD_PORT, method: 'POST', path: '/v3/kv/range', agent: false,
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (r) => {
        let text = '';
        r.setEncoding('utf8');
        r.on('data', (c) => { text += c; });
        r.on('end', () => resolve(text));
        r.on('error', reject);
      });
      req.setTimeout(2000, () => req.destroy(new Error('etcd range timed out')));
      req.on('error', reject);
      req.end(body);
    });
    const kvs = JSON.parse(res).kvs || [];
    return kvs.length ? JSON.parse(Buffer.from(kvs[0].value, 'base64').toString('utf8')) : null;
  }
}

const q = (s) => JSON.stringify(String(s));
const list = (items) => `[${items.map(q).join(', ')}]`;

// One node: `switchboard run` of its YAML in its namespace. Gateway on
// .N:4000 (two shards, replicas of one socket), broker metrics .N:9101.
class Node {
  constructor({ net, index, name, dir, cluster, membership, heartbeatMs, etcd, peers = [], advertise = null, ttl }) {
    this.net = net;
    this.index = index;
    this.name = name;
    this.ns = net.namespaces.get(index);
    this.dir = dir;
    this.opts = { cluster, membership, heartbeatMs, etcd, peers, advertise, ttl };
    this.addr = net.addr(index);
    this.keyFile = path.join(dir, 'node.key');
    this.pub = execFileSync(bin('switchboard'), ['keygen', '--secret-file', this.keyFile], { encoding: 'utf8' }).trim();
    this.file = path.join(dir, 'node.yaml');
    this.url = `ws://${this.addr}:${GATEWAY_PORT}/socket`;
    this.broker = { metricsHost: this.addr, metricsPort: BROKER_METRICS_PORT };
    this.endpoint = `tcp://${this.addr}:${PEER_PORT}`;
    this.p = null;
    this.runs = []; // every run's process, for the logs
  }

  yaml() {
    const o = this.opts;
    const hb = String(o.heartbeatMs);
    const out = [
      'node:',
      `  name: ${q(this.name)}`,
      `  control: ${q(path.join(this.dir, 'ctl.sock'))}`,
      `  events: ${q(path.join(this.dir, 'events'))}`,
      'cluster:',
      `  name: ${q(o.cluster)}`,
      `  peer_bind: ${q(this.endpoint)}`,
      `  curve_secret_file: ${q(this.keyFile)}`,
      `  membership: ${o.membership}`,
    ];
    if (o.membership === 'etcd') {
      const adv = o.advertise ? `, advertise: ${q(o.advertise)}` : '';
      out.push(`  etcd: {endpoints: [${q(o.etcd)}], ttl: ${o.ttl}${adv}}`);
    } else {
      out.push('  peers:');
      for (const p of o.peers) out.push(`    - {node: ${q(p.name)}, broker: ${q(p.endpoint)}, curve_public: ${q(p.pub)}}`);
    }
    out.push(
      'sockets:',
      `  - {name: gateway, listen: ${q(`${this.addr}:${GATEWAY_PORT}`)}}`,
      'supervisor:',
      '  strategy: one_for_one',
      '  intensity: 20',
      '  period: 10s',
      '  children:',
      '    - id: broker',
      `      command: ${list(['switchboard-broker', '--bind', `ipc://${path.join(this.dir, 'broker')}`,
        '--metrics', '{{metrics}}', '--heartbeat-ms', hb])}`,
      `      metrics: ${q(`${this.addr}:${BROKER_METRICS_PORT}`)}`,
      '      shutdown: 5s',
      '    - id: shards',
      '      type: supervisor',
      '      strategy: one_for_one',
      '      intensity: 20',
      '      period: 10s',
      '      children:',
      '        - id: shard',
      '          replicas: 2',
      `          command: ${list(['switchboard-worker', '--shard', '{{replica}}', '--broker', `ipc://${path.join(this.dir, 'broker')}`,
        '--metrics', '{{metrics}}', '--heartbeat-ms', hb, '--rate', '0'])}`,
      `          metrics: ${q(`${this.addr}:${SHARD_METRICS_PORT}`)}`,
      '          sockets: [gateway]',
      '          shutdown: 10s');
    return `${out.join('\n')}\n`;
  }

  get lines() {
    return this.p ? this.p.lines : [];
  }

  get alive() {
    return this.p !== null && this.p.alive();
  }

  // Starts `switchboard run` in the namespace and waits until its gateway
  // answers and its broker holds both shards.
  async start({ timeout = 20000 } = {}) {
    fs.writeFileSync(this.file, this.yaml());
    // `ip netns exec` execs the command: the pid is the daemon's.
    this.p = spawnLogged('ip', ['netns', 'exec', this.ns, bin('switchboard'), 'run', this.file]);
    this.runs.push(this.p);
    const ready = await waitUntil(async () => {
      if (!this.alive) return 'exited'; // a thrown error would only be polled again
      const h = await httpRequest(GATEWAY_PORT, { host: this.addr, path: '/healthz', timeout: 1000 });
      return h.status === 200 && (await metric(this.broker, 'switchboard_broker_connected_shards')) === 2 && 'ready';
    }, { timeout, interval: 100, what: `${this.name}: its gateway to answer and its broker to hold both shards` })
      .catch((e) => { throw new Error(`${e.message}\n${this.logTail(40)}`); });
    if (ready === 'exited') {
      throw new Error(`${this.name}: switchboard run exited ${JSON.stringify(await this.p.exit)}\n${this.logTail(40)}`);
    }
  }

  // SIGTERM; it must exit 0.
  async stop() {
    if (!this.p) return;
    if (this.alive) this.p.proc.kill('SIGTERM');
    const r = await withTimeout(this.p.exit, 30000, `${this.name}: switchboard run to exit after SIGTERM`);
    this.p = null;
    if (r.code !== 0) throw new Error(`${this.name}: switchboard run exited ${JSON.stringify(r)} after SIGTERM, expected 0`);
  }

  // The daemon killed with SIGKILL (its children die with it: PDEATHSIG).
  async kill9() {
    if (!this.p) return;
    if (this.alive) this.p.proc.kill('SIGKILL');
    await this.p.exit;
  }

  // `switchboard reload` after `edit(opts)` changed this node's options.
  reload(edit) {
    edit(this.opts);
    fs.writeFileSync(this.file, this.yaml());
    return new Promise((resolve, reject) => {
      execFile(bin('switchboard'), ['reload', '--config', this.file], { timeout: 10000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`${this.name}: switchboard reload: ${err.message} ${stdout}${stderr}`));
        else resolve(stdout);
      });
    });
  }

  metric(name, labels = {}) {
    return metric(this.broker, name, labels);
  }

  waitForMetric(name, labels, pred, opts) {
    return waitForMetric(this.broker, name, labels, pred, opts);
  }

  logTail(n = 120) {
    const out = [];
    for (const [i, r] of this.runs.entries()) {
      out.push(`--- ${this.name} run ${i + 1} (${this.file}) ---`, ...r.lines.slice(-n));
    }
    return out.join('\n');
  }
}

// The whole setup: the network, etcd, and nodes made by addNode.
class Testbed {
  constructor({ heartbeatMs = 200, ttl = '10s' } = {}) {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-netns-'));
    this.heartbeatMs = heartbeatMs;
    this.ttl = ttl;
    this.net = null;
    this.etcd = null;
    this.nodes = [];
    this.cluster = null;
  }

  async start() {
    this.net = new Network(this.dir);
    this.cluster = `t${this.net.tag}`;
    this.etcd = new Etcd(this.net.hostAddr, path.join(this.dir, 'etcd'));
    await this.etcd.start();
  }

  // A node in namespace `index`, not started. `membership`: 'etcd' (the
  // default) or 'static' with `peers` [{name, endpoint, pub}].
  addNode(index, { name = `node${index}`, membership = 'etcd', peers = [] } = {}) {
    this.net.addNamespace(index);
    const dir = path.join(this.dir, `ns${index}`);
    fs.mkdirSync(dir);
    const node = new Node({ net: this.net, index, name, dir, cluster: this.cluster, membership, peers,
      heartbeatMs: this.heartbeatMs, etcd: this.etcd.url, ttl: this.ttl });
    this.nodes.push(node);
    return node;
  }

  // Every uplink between `nodes` up.
  async meshUp(nodes, timeout = 15000) {
    for (const n of nodes) {
      for (const o of nodes) {
        if (o !== n) await n.waitForMetric('switchboard_broker_peer_up', { peer: o.name }, (v) => v === 1, { timeout });
      }
    }
  }

  // The record etcd holds for node `name`, or null.
  record(name) {
    return this.etcd.get(`/switchboard/v1/${this.cluster}/nodes/${name}`);
  }

  logs() {
    return [...this.nodes.map((n) => n.logTail()),
      ...(this.etcd && this.etcd.p ? ['--- etcd ---', ...this.etcd.p.lines.slice(-30)] : [])].join('\n');
  }

  // Stops every node still running (SIGTERM, exit 0 expected), etcd, and
  // removes the network and the files, whatever fails on the way.
  async close() {
    const errors = [];
    for (const n of this.nodes) {
      try {
        await n.stop();
      } catch (e) {
        errors.push(e.message);
        if (n.p) await n.kill9();
      }
    }
    try {
      if (this.etcd) await this.etcd.stop();
    } catch (e) {
      errors.push(e.message);
      this.etcd.p.proc.kill('SIGKILL');
    }
    try {
      if (this.net) this.net.close();
    } catch (e) {
      errors.push(e.message);
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
    if (errors.length) throw new Error(errors.join('\n'));
  }
}

module.exports = { unavailable, Testbed, Network, Etcd, Node, GATEWAY_PORT, PEER_PORT };
