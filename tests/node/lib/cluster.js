'use strict';
// A whole node under the real supervisor: `switchboard run` on a YAML
// topology written into a temporary directory — one broker and N gateway
// shards, each shard with its own supervisor-bound socket (so a test puts a
// client on the shard it chooses, and a restarted shard's port never closes)
// and its own metrics port. With `balance` the shards are instead one
// replica set `shard` (shard.0, shard.1, ...) on one socket `gateway` with
// that balance, and the daemon serves its own metrics (this.daemon). The binaries come from $SWITCHBOARD_BIN_DIR
// (ctest sets it to the directory of the built targets); the supervisor
// finds switchboard-broker and switchboard-worker next to itself.

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const os = require('node:os');
const path = require('node:path');
const nodeTest = require('node:test');
const { freePort, scrape, metric, waitForMetric, sampleValue } = require('./worker');
const { withTimeout, waitUntil, delay } = require('./util');

const START_TIMEOUT_MS = 20000;
const STOP_TIMEOUT_MS = 30000;
const STATUS_TIMEOUT_MS = 10000;
const LOG_LINES_KEPT = 3000;
const LOG_LINES_SHOWN = 250;
const START_ATTEMPTS = 3;

// Every cluster this process started, so a failing test can show their logs.
const startedClusters = [];

function binDir() {
  const dir = process.env.SWITCHBOARD_BIN_DIR;
  if (!dir) throw new Error('SWITCHBOARD_BIN_DIR is not set (directory of switchboard, switchboard-broker, switchboard-worker)');
  return dir;
}

// A YAML scalar: JSON's double-quoted strings are YAML double-quoted strings.
const q = (s) => JSON.stringify(String(s));
const list = (items) => `[${items.map(q).join(', ')}]`;

// Distinct ports that were free a moment ago (the daemon binds the metrics
// endpoints' ports itself; a lost race is retried by startCluster).
async function distinctFreePorts(n, taken = new Set()) {
  const out = [];
  while (out.length < n) {
    const p = await freePort();
    if (taken.has(p)) continue;
    taken.add(p);
    out.push(p);
  }
  return out;
}

// `n` consecutive ports that were free a moment ago, none of them in `taken`.
async function consecutiveFreePorts(n, taken) {
  const free = (port) => new Promise((resolve) => {
    const srv = net.createServer();
    srv.on('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
  for (let attempt = 0; attempt < 100; attempt++) {
    const base = await freePort();
    if (base + n > 65536) continue;
    let ok = true;
    for (let p = base; p < base + n && ok; p++) ok = !taken.has(p) && (p === base || await free(p));
    if (!ok) continue;
    for (let p = base; p < base + n; p++) taken.add(p);
    return base;
  }
  throw new Error(`no ${n} consecutive free ports`);
}

class Cluster {
  constructor(opts) {
    this.opts = opts;
    this.dir = null;
    this.proc = null;
    this.lines = [];
    this.droppedLines = 0;
    this.startedAt = Date.now();
    this.stoppedAt = null;
    this.exit = null;
    this.paused = new Set();
    this.brokerEndpoint = null;
    this.broker = null; // {id, metricsPort}
    this.daemon = null; // {id, metricsPort} with `balance`
    this.shards = []; // {id, index, name, port, url, metricsPort}
  }

  get controlPath() {
    return path.join(this.dir, 'ctl.sock');
  }

  get configPath() {
    return path.join(this.dir, 'cluster.yaml');
  }

  get alive() {
    return this.proc !== null && this.stoppedAt === null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  // The YAML topology: broker first, then the shards under their own
  // one_for_one supervisor (config/cluster.yaml's shape), every shard with
  // its own socket `gw-<i>`.
  yaml() {
    const o = this.opts;
    const hb = String(o.heartbeatMs);
    const out = [];
    out.push('node:');
    out.push(`  name: ${q(o.name)}`);
    out.push(`  control: ${q(this.controlPath)}`);
    out.push(`  events: ${q(path.join(this.dir, 'events'))}`);
    if (this.daemon) out.push(`  metrics: ${q(`127.0.0.1:${this.daemon.metricsPort}`)}`);
    out.push('sockets:');
    if (o.balance) {
      out.push(`  - {name: gateway, listen: "127.0.0.1:0", backlog: 4096, balance: ${o.balance}}`);
    } else {
      for (const s of this.shards) out.push(`  - {name: ${q(`gw-${s.index}`)}, listen: "127.0.0.1:0", backlog: 1024}`);
    }
    out.push('supervisor:');
    out.push('  strategy: one_for_one');
    out.push('  intensity: 20');
    out.push('  period: 10s');
    out.push('  children:');
    out.push('    - id: broker');
    out.push(`      command: ${list(['switchboard-broker', '--bind', this.brokerEndpoint, '--metrics', '{{metrics}}',
      '--heartbeat-ms', hb, ...o.brokerArgs])}`);
    out.push(`      metrics: ${q(`127.0.0.1:${this.broker.metricsPort}`)}`);
    out.push('      shutdown: 5s');
    out.push('    - id: shards');
    out.push('      type: supervisor');
    out.push('      strategy: one_for_one');
    out.push('      intensity: 20');
    out.push('      period: 10s');
    out.push('      children:');
    if (o.balance) {
      out.push('        - id: shard');
      out.push(`          replicas: ${this.shards.length}`);
      out.push(`          command: ${list(['switchboard-worker', '--shard', '{{replica}}', '--broker', this.brokerEndpoint,
        '--metrics', '{{metrics}}', '--heartbeat-ms', hb, '--rate', '0'])}`);
      out.push(`          metrics: ${q(`127.0.0.1:${this.shards[0].metricsPort}`)}`);
      out.push('          sockets: [gateway]');
      out.push('          shutdown: 10s');
      return `${out.join('\n')}\n`;
    }
    for (const s of this.shards) {
      out.push(`        - id: ${q(s.id)}`);
      out.push(`          command: ${list(['switchboard-worker', '--shard', s.name, '--broker', this.brokerEndpoint,
        '--metrics', '{{metrics}}', '--heartbeat-ms', hb, '--rate', '0', ...s.args])}`);
      out.push(`          metrics: ${q(`127.0.0.1:${s.metricsPort}`)}`);
      out.push(`          sockets: [${q(`gw-${s.index}`)}]`);
      out.push('          shutdown: 10s');
      if (o.upgrade) out.push(`          upgrade: ${o.upgrade}`);
    }
    return `${out.join('\n')}\n`;
  }

  addLine(line) {
    this.lines.push(line);
    if (this.lines.length > LOG_LINES_KEPT) {
      this.lines.shift();
      this.droppedLines++;
    }
    // A shard prints the port of the socket it was handed:
    // `[shard-1:stderr] ... shard 1: listening on 127.0.0.1:PORT`.
    const m = /\[([A-Za-z0-9_.-]+)(?::stderr)?\] .*: listening on 127\.0\.0\.1:(\d+)/.exec(line);
    if (m) {
      const s = this.shards.find((x) => x.id === m[1]);
      if (s) s.port = Number(m[2]);
    }
  }

  logTail(n = LOG_LINES_SHOWN) {
    const shown = this.lines.slice(-n);
    const skipped = this.droppedLines + this.lines.length - shown.length;
    const head = `--- switchboard run ${this.dir ? this.configPath : ''} (pid ${this.proc && this.proc.pid}` +
      `${skipped ? `, ${skipped} earlier lines not shown` : ''}) ---`;
    return [head, ...shown].join('\n');
  }

  async launch() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sb-cluster-'));
    this.brokerEndpoint = `ipc://${path.join(this.dir, 'broker')}`;
    const taken = new Set();
    let [brokerMetrics, ...shardMetrics] = await distinctFreePorts(1 + this.opts.shards.length, taken);
    if (this.opts.balance) {
      // A replica set's metrics ports are base + index.
      const base = await consecutiveFreePorts(this.opts.shards.length, taken);
      shardMetrics = shardMetrics.map((_, i) => base + i);
      this.daemon = { id: 'switchboard', metricsPort: (await distinctFreePorts(1, taken))[0] };
    }
    this.broker = { id: 'broker', metricsPort: brokerMetrics };
    this.shards = this.opts.shards.map((spec, i) => ({
      id: this.opts.balance ? `shard.${i}` : `shard-${i}`,
      index: i,
      name: String(i), // --shard: the `shard` label on its metrics, `peer` on the broker's
      args: spec.args || [],
      metricsPort: shardMetrics[i],
      port: 0,
      get url() {
        return `ws://127.0.0.1:${this.port}/socket`;
      },
    }));
    fs.writeFileSync(this.configPath, this.yaml());
    this.lines = [];
    this.proc = spawn(path.join(binDir(), 'switchboard'), ['run', this.configPath], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...this.opts.env },
    });
    this.exit = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.stoppedAt = Date.now();
        resolve({ code, signal });
      });
      // Not started at all (no such binary): no 'exit' follows.
      this.proc.on('error', (e) => {
        this.addLine(`spawn failed: ${e.message}`);
        this.stoppedAt = Date.now();
        resolve({ code: null, signal: null });
      });
    });
    for (const stream of [this.proc.stdout, this.proc.stderr]) {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        partial += chunk;
        let nl;
        while ((nl = partial.indexOf('\n')) >= 0) {
          this.addLine(partial.slice(0, nl));
          partial = partial.slice(nl + 1);
        }
      });
    }
  }

  // Ready: every worker of the tree running, every shard's port known, the
  // broker holding a session with every shard and every shard welcomed.
  async waitReady(timeout) {
    const deadline = Date.now() + timeout;
    let stage = 'every child of the tree to be running';
    let last = '';
    for (;;) {
      if (!this.alive) {
        const { code, signal } = await this.exit;
        throw new Error(`switchboard run exited (code ${code}, signal ${signal}) before the tree was ready`);
      }
      if (Date.now() >= deadline) throw new Error(`timed out after ${timeout} ms waiting for ${stage} (${last})`);
      try {
        const st = await this.status();
        const ws = workers(st.tree);
        last = ws.map((w) => `${w.id} ${w.state}`).join(', ');
        if (ws.every((w) => w.state === 'running' && w.pid)) {
          stage = 'every shard to print its listening port';
          if (this.shards.every((s) => s.port > 0)) {
            stage = 'the broker to hold a session with every shard, and every shard to be welcomed';
            const broker = await metric(this.broker, 'switchboard_broker_connected_shards');
            const up = [];
            for (const s of this.shards) up.push(await metric(s, 'switchboard_worker_broker_up'));
            last = `connected_shards ${broker}, broker_up ${up.join(' ')}`;
            if (broker === this.shards.length && up.every((v) => v === 1)) return;
          }
        }
      } catch (e) {
        last = e.message;
      }
      await delay(100);
    }
  }

  // Waits until the broker holds a session with every shard and every shard
  // is welcomed (after a start, or after a broker or shard restart).
  async waitMeshUp({ timeout = 10000 } = {}) {
    await waitForMetric(this.broker, 'switchboard_broker_connected_shards', {},
      (v) => v === this.shards.length, { timeout });
    for (const s of this.shards) {
      await waitForMetric(s, 'switchboard_worker_broker_up', {}, (v) => v === 1, { timeout });
    }
  }

  // Kills the broker with SIGKILL and waits until the daemon has started a
  // new one and every shard is welcomed by it again; returns the new pid.
  async restartBroker({ timeout = 15000 } = {}) {
    const old = await this.kill('broker');
    const node = await this.waitRestarted('broker', old, { timeout });
    await this.waitMeshUp({ timeout });
    return node.pid;
  }

  // The broker's Unix socket, for an ipc:// endpoint.
  get brokerSocketPath() {
    return this.brokerEndpoint.replace(/^ipc:\/\//, '');
  }

  // Child `id`'s resident memory now and at its peak so far (VmRSS and
  // VmHWM), in bytes, with its pid.
  async memory(id) {
    const pid = await this.pid(id);
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    const bytes = (key) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
      if (!m) throw new Error(`no ${key} in /proc/${pid}/status`);
      return Number(m[1]) * 1024;
    };
    return { pid, rss: bytes('VmRSS'), peak: bytes('VmHWM') };
  }

  // --- Control (`switchboard status --json` against the control socket)

  status() {
    return new Promise((resolve, reject) => {
      execFile(path.join(binDir(), 'switchboard'), ['status', '--json', '--control', this.controlPath],
        { timeout: STATUS_TIMEOUT_MS }, (err, stdout, stderr) => {
          if (err) {
            reject(new Error(`switchboard status --json: ${err.message.trim()} ${stderr.trim()}`));
            return;
          }
          try {
            const st = JSON.parse(stdout);
            if (!st.ok) throw new Error(`not ok: ${stdout.trim()}`);
            resolve(st);
          } catch (e) {
            reject(new Error(`switchboard status --json: ${e.message}`));
          }
        });
    });
  }

  // `switchboard scale ID N`: resolves with its output once the daemon has
  // applied it (added children started, removed ones stopped).
  scale(id, n) {
    return new Promise((resolve, reject) => {
      execFile(path.join(binDir(), 'switchboard'), ['scale', id, String(n), '--control', this.controlPath],
        { timeout: STATUS_TIMEOUT_MS }, (err, stdout, stderr) => {
          if (err) reject(new Error(`switchboard scale ${id} ${n}: ${err.message.trim()} ${stderr.trim()}`));
          else resolve(stdout.trim());
        });
    });
  }

  // `switchboard ARGS... --control <this node>`: resolves with its output.
  control(...args) {
    return new Promise((resolve, reject) => {
      execFile(path.join(binDir(), 'switchboard'), [...args, '--control', this.controlPath],
        { timeout: STATUS_TIMEOUT_MS }, (err, stdout, stderr) => {
          if (err) reject(new Error(`switchboard ${args.join(' ')}: ${err.message.trim()} ${stderr.trim()}`));
          else resolve(stdout.trim());
        });
    });
  }

  // `switchboard reload` after `edit(yaml)` rewrote the config file:
  // resolves with {ok, out} (ok false: the daemon refused or rejected it).
  reload(edit) {
    fs.writeFileSync(this.configPath, edit(fs.readFileSync(this.configPath, 'utf8')));
    return new Promise((resolve) => {
      execFile(path.join(binDir(), 'switchboard'), ['reload', '--control', this.controlPath],
        { timeout: STATUS_TIMEOUT_MS }, (err, stdout, stderr) => resolve({ ok: !err, out: `${stdout}${stderr}`.trim() }));
    });
  }

  // The status node of child `id` (a worker or a supervisor).
  async child(id) {
    const st = await this.status();
    const node = findNode(st.tree, id);
    if (!node) throw new Error(`no child '${id}' in the status tree`);
    return node;
  }

  async pid(id) {
    const node = await this.child(id);
    if (!node.pid) throw new Error(`child '${id}' has no pid (state ${node.state})`);
    return node.pid;
  }

  // Sends `signal` to child `id`'s process (by the pid in status); returns the pid.
  async signal(id, signal) {
    const pid = await this.pid(id);
    process.kill(pid, signal);
    return pid;
  }

  kill(id) {
    return this.signal(id, 'SIGKILL');
  }

  async pause(id) {
    const pid = await this.signal(id, 'SIGSTOP');
    this.paused.add(pid);
    return pid;
  }

  async resume(id) {
    const pid = await this.signal(id, 'SIGCONT');
    this.paused.delete(pid);
    return pid;
  }

  // Waits until child `id` runs again with a pid other than `oldPid`;
  // returns its status node.
  async waitRestarted(id, oldPid, { timeout = 10000 } = {}) {
    return waitUntil(async () => {
      const node = await this.child(id);
      return node.state === 'running' && node.pid && node.pid !== oldPid ? node : false;
    }, { timeout, interval: 50, what: `child '${id}' to run again with a pid other than ${oldPid}` });
  }

  // --- Metrics. `target` is this.broker or one of this.shards.

  scrape(target) {
    return scrape(target);
  }

  metric(target, name, labels = {}) {
    return metric(target, name, labels);
  }

  waitForMetric(target, name, labels, pred, opts) {
    return waitForMetric(target, name, labels, pred, opts);
  }

  // --- Stop

  // SIGTERM to the daemon (stopped children are continued first so they can
  // take their own SIGTERM); it must exit 0.
  async stop() {
    for (const pid of this.paused) {
      try {
        process.kill(pid, 'SIGCONT');
      } catch {
        // already gone
      }
    }
    this.paused.clear();
    if (this.alive) this.proc.kill('SIGTERM');
    let result;
    try {
      result = await withTimeout(this.exit, STOP_TIMEOUT_MS, `switchboard run (pid ${this.proc.pid}) to exit after SIGTERM`);
    } catch (e) {
      this.proc.kill('SIGKILL');
      await this.exit;
      throw new Error(`${e.message}; killed it with SIGKILL\n${this.logTail()}`);
    }
    if (result.code !== 0) {
      throw new Error(`switchboard run exited with code ${result.code} signal ${result.signal} after SIGTERM, expected 0\n` +
        this.logTail());
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  // Ends the daemon at once (its children die with it: PR_SET_PDEATHSIG).
  async kill9() {
    if (this.proc === null) return;
    if (this.alive) this.proc.kill('SIGKILL');
    await this.exit;
  }
}

function findNode(node, id) {
  if (node.id === id) return node;
  for (const c of node.children || []) {
    const f = findNode(c, id);
    if (f) return f;
  }
  return null;
}

function workers(node) {
  if (node.type === 'worker') return [node];
  return (node.children || []).flatMap(workers);
}

// Starts a node and resolves once it is ready (see Cluster.waitReady).
// opts: shards (a count, or a list of {args: [...]} with extra
// switchboard-worker flags per shard), brokerArgs (extra switchboard-broker
// flags), heartbeatMs (broker and shards; default 200), env, balance (one
// socket with this balance for a replica set of the shards; see the top).
async function startCluster({ shards = 2, brokerArgs = [], heartbeatMs = 200, env = {}, name = 'cluster', balance = null, upgrade = null } = {}) {
  binDir(); // fails early when the environment does not say where the binaries are
  const specs = typeof shards === 'number' ? Array.from({ length: shards }, () => ({})) : shards;
  let lastError;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const c = new Cluster({ shards: specs, brokerArgs, heartbeatMs, env, name, balance, upgrade });
    startedClusters.push(c);
    try {
      await c.launch();
      await c.waitReady(START_TIMEOUT_MS);
      return c;
    } catch (e) {
      lastError = new Error(`${e.message}\n${c.logTail()}`);
      await c.kill9();
      if (c.dir) fs.rmSync(c.dir, { recursive: true, force: true });
      // A metrics port taken between freePort and the daemon's bind makes a
      // child fail its start and the daemon exit 1: try again with new ports.
      const portLost = c.lines.some((l) => /serve metrics|[Aa]ddress already in use/.test(l));
      if (!portLost) break;
    }
  }
  throw lastError;
}

// Wraps a test body so that, when it fails, the log tail of every node that
// was running during the test goes to stderr.
function withClusterLogs(fn) {
  return async function (t) {
    const since = Date.now();
    try {
      return await fn(t);
    } catch (e) {
      const logs = startedClusters
        .filter((c) => c.proc && (c.stoppedAt === null || c.stoppedAt >= since))
        .map((c) => c.logTail())
        .join('\n');
      if (logs) process.stderr.write(`--- logs of the nodes of failed test "${t.name}" ---\n${logs}\n`);
      throw e;
    }
  };
}

// node:test's `it` with a default time bound and node logs on failure.
function it(name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  return nodeTest.it(name, { timeout: 60000, ...opts }, withClusterLogs(fn));
}

module.exports = { startCluster, Cluster, it, findNode, scrape, metric, waitForMetric, sampleValue, delay };
