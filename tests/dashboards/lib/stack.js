'use strict';
// The default cluster (config/cluster.yaml) under the real supervisor, and a
// real Prometheus scraping it with the shipped prometheus/prometheus.yml.
// Both are rewritten structurally, only where a test run must differ from a
// real one: free ports instead of 9100/9101/9110/4000, a temporary directory
// instead of /tmp/switchboard, 1 s scrape and evaluation intervals, absolute
// paths. Everything else (jobs, relabelling, rule files, the tree) is the
// shipped text. The binaries come from $SWITCHBOARD_BIN_DIR (set by ctest);
// `prometheus` from PATH (Debian package `prometheus`).

const { spawn, execFile } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const YAML = require('yaml');
const { REPO, PROMETHEUS_DIR } = require('./grafana');

const CLUSTER_YAML = path.join(REPO, 'config', 'cluster.yaml');
const PROMETHEUS_YML = path.join(PROMETHEUS_DIR, 'prometheus.yml');
const ALERTS_YML = path.join(PROMETHEUS_DIR, 'alerts.yml');
const SHIPPED_DIR = '/tmp/switchboard/';
const LOG_LINES_KEPT = 2000;
const START_ATTEMPTS = 3;

function binDir() {
  const dir = process.env.SWITCHBOARD_BIN_DIR;
  if (!dir) throw new Error('SWITCHBOARD_BIN_DIR is not set (directory of switchboard, switchboard-broker, switchboard-worker)');
  return dir;
}

function delay(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// Polls `check` until it returns a truthy value (returned), at most `timeout`
// ms. An error with `fatal` set ends the wait at once.
async function waitUntil(check, { timeout = 10000, interval = 100, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (e) {
      if (e.fatal) throw e;
      last = e;
    }
    if (Date.now() >= deadline) {
      const detail = last instanceof Error ? ` (last error: ${last.message})` : '';
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail}`);
    }
    await delay(interval);
  }
}

function portIsFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

// `n` consecutive ports that were free a moment ago, none of them in `taken`.
async function freePorts(n, taken) {
  for (let attempt = 0; attempt < 200; attempt++) {
    const base = await freePort();
    if (base + n - 1 > 65535) continue;
    let ok = true;
    for (let p = base; p < base + n && ok; p++) ok = !taken.has(p) && (p === base || await portIsFree(p));
    if (!ok) continue;
    for (let p = base; p < base + n; p++) taken.add(p);
    return base;
  }
  throw new Error(`no ${n} consecutive free ports`);
}

function httpGet(port, pathAndQuery, { timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path: pathAndQuery, timeout, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, body }));
    });
    req.on('timeout', () => req.destroy(new Error(`GET ${pathAndQuery}: no answer within ${timeout} ms`)));
    req.on('error', (e) => reject(new Error(`GET 127.0.0.1:${port}${pathAndQuery}: ${e.message}`)));
  });
}

// A child process whose output lines are kept for failure messages.
class Proc {
  constructor(name, cmd, args, opts = {}) {
    this.name = name;
    this.cmdline = [cmd, ...args].join(' ');
    this.lines = [];
    this.dropped = 0;
    this.proc = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
    this.exited = false;
    this.exit = new Promise((resolve) => {
      this.proc.on('exit', (code, signal) => {
        this.exited = true;
        resolve({ code, signal });
      });
      this.proc.on('error', (e) => {
        this.addLine(`spawn failed: ${e.message}`);
        this.exited = true;
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

  addLine(line) {
    this.lines.push(line);
    if (this.lines.length > LOG_LINES_KEPT) {
      this.lines.shift();
      this.dropped++;
    }
  }

  logTail(n = 150) {
    const shown = this.lines.slice(-n);
    const skipped = this.dropped + this.lines.length - shown.length;
    return [`--- ${this.name}: ${this.cmdline} (pid ${this.proc.pid}${skipped ? `, ${skipped} earlier lines not shown` : ''}) ---`,
      ...shown].join('\n');
  }

  // SIGTERM, then SIGKILL after `timeout` ms; resolves with the exit.
  async stop(timeout = 20000) {
    if (!this.exited) this.proc.kill('SIGTERM');
    let timer;
    const killed = new Promise((resolve) => {
      timer = setTimeout(() => {
        if (!this.exited) this.proc.kill('SIGKILL');
        resolve();
      }, timeout);
    });
    const result = await Promise.race([this.exit, killed.then(() => this.exit)]);
    clearTimeout(timer);
    return result;
  }
}

// ---------------------------------------------------------------------------
// The cluster

// Replaces SHIPPED_DIR in every string of a YAML value, in place.
function rewritePaths(value, dir) {
  if (typeof value === 'string') return value.split(SHIPPED_DIR).join(`${dir}/`);
  if (Array.isArray(value)) return value.map((v) => rewritePaths(v, dir));
  if (value && typeof value === 'object') {
    for (const k of Object.keys(value)) value[k] = rewritePaths(value[k], dir);
  }
  return value;
}

// Every worker spec of a supervisor spec, with its supervisor: [{spec, parent}].
function workerSpecs(sup, out = []) {
  for (const c of sup.children || []) {
    if (c.type === 'supervisor') workerSpecs(c, out);
    else out.push({ spec: c, parent: sup });
  }
  return out;
}

// config/cluster.yaml for a run in `dir`: {yaml, shipped: {...}, run: {...}}.
// `shipped` is what a real run uses (the daemon's metrics address and
// file_sd path, which prometheus/prometheus.yml must name), `run` the same
// for this run.
async function clusterTopology(dir) {
  const doc = YAML.parse(fs.readFileSync(CLUSTER_YAML, 'utf8'));
  const node = doc.node || {};
  const name = node.name || 'node1';
  const control = node.control || `${SHIPPED_DIR}${name}.sock`;
  if (!node.metrics) throw new Error('config/cluster.yaml: node.metrics is not set; the dashboards need the daemon\'s metrics');
  const shipped = {
    name,
    daemonMetrics: node.metrics,
    fileSd: node.file_sd || path.join(path.dirname(control), `${name}.targets.json`),
  };
  if (!shipped.fileSd.startsWith(SHIPPED_DIR) || !control.startsWith(SHIPPED_DIR)) {
    throw new Error(`config/cluster.yaml: expected node.control and node.file_sd under ${SHIPPED_DIR}`);
  }
  rewritePaths(doc, dir);
  const taken = new Set();
  const host = (addr) => addr.slice(0, addr.lastIndexOf(':'));
  doc.node.metrics = `${host(node.metrics)}:${await freePorts(1, taken)}`;
  const sockets = {};
  for (const s of doc.sockets || []) {
    const port = await freePorts(1, taken);
    s.listen = `${host(s.listen)}:${port}`;
    sockets[s.name] = port;
  }
  const childMetrics = {};
  const intensity = {}; // child id → its supervisor's intensity (OTP default 1)
  for (const { spec: c, parent } of workerSpecs(doc.supervisor)) {
    const ids = c.replicas === undefined ? [c.id] : Array.from({ length: Number(c.replicas) }, (_, i) => `${c.id}.${i}`);
    for (const id of ids) intensity[id] = parent.intensity === undefined ? 1 : Number(parent.intensity);
    if (!c.metrics) continue;
    const base = await freePorts(Math.max(ids.length, 1), taken);
    c.metrics = `${host(c.metrics)}:${base}`;
    ids.forEach((id, i) => { childMetrics[id] = base + i; });
  }
  const runControl = doc.node.control || path.join(dir, `${name}.sock`);
  const run = {
    name,
    control: runControl,
    events: doc.node.events,
    daemonMetrics: doc.node.metrics,
    fileSd: doc.node.file_sd || path.join(path.dirname(runControl), `${name}.targets.json`),
    sockets,
    childMetrics,
    intensity,
  };
  return { yaml: YAML.stringify(doc), shipped, run };
}

function status(control) {
  return new Promise((resolve, reject) => {
    execFile(path.join(binDir(), 'switchboard'), ['status', '--json', '--control', control], { timeout: 10000 },
      (err, stdout, stderr) => {
        if (err) {
          reject(new Error(`switchboard status --json: ${err.message.trim()} ${String(stderr).trim()}`));
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

class Cluster {
  constructor(dir, topo) {
    this.dir = dir;
    this.topo = topo;
    this.daemon = null;
  }

  get run() {
    return this.topo.run;
  }

  async start() {
    const file = path.join(this.dir, 'cluster.yaml');
    fs.writeFileSync(file, this.topo.yaml);
    this.daemon = new Proc('switchboard run', path.join(binDir(), 'switchboard'), ['run', file]);
    await waitUntil(async () => {
      if (this.daemon.exited) throw Object.assign(new Error('switchboard run exited before the tree was ready'), { fatal: true });
      const st = await status(this.run.control);
      const ws = workers(st.tree);
      return ws.every((w) => w.state === 'running' && w.pid);
    }, { timeout: 20000, what: 'every child of the default cluster to be running' }).catch((e) => {
      throw new Error(`${e.message}\n${this.daemon.logTail()}`);
    });
  }

  status() {
    return status(this.run.control);
  }

  async pid(id) {
    const node = findNode((await this.status()).tree, id);
    if (!node || !node.pid) throw new Error(`child '${id}' has no pid`);
    return node.pid;
  }

  // kill -9 child `id`; resolves once it runs again with another pid.
  async crash(id, { timeout = 15000 } = {}) {
    const old = await this.pid(id);
    process.kill(old, 'SIGKILL');
    return waitUntil(async () => {
      const node = findNode((await this.status()).tree, id);
      return node && node.state === 'running' && node.pid && node.pid !== old ? node.pid : false;
    }, { timeout, interval: 25, what: `child '${id}' (pid ${old} killed) to run again` });
  }

  async stop() {
    if (!this.daemon) return null;
    return this.daemon.stop(30000);
  }
}

// Starts the default cluster in `dir`; retries with new ports when one was
// taken between choosing it and the daemon binding it.
async function startCluster(dir) {
  let lastError;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const sub = path.join(dir, `node-${attempt}`);
    fs.mkdirSync(sub);
    const c = new Cluster(sub, await clusterTopology(sub));
    try {
      await c.start();
      return c;
    } catch (e) {
      lastError = e;
      await c.stop().catch(() => {});
      if (!c.daemon.lines.some((l) => /serve metrics|[Aa]ddress already in use/.test(l))) break;
    }
  }
  throw lastError;
}

// ---------------------------------------------------------------------------
// Prometheus

// prometheus/prometheus.yml for this run. Asserts that the shipped file has
// the jobs it rewrites: one static job on the daemon's shipped address, one
// file_sd job on the daemon's shipped file_sd path, and alerts.yml.
function prometheusConfig(shipped, run) {
  const cfg = YAML.parse(fs.readFileSync(PROMETHEUS_YML, 'utf8'));
  const problems = [];
  const jobs = cfg.scrape_configs || [];
  const daemonJobs = jobs.filter((j) => (j.static_configs || []).some((s) => (s.targets || []).includes(shipped.daemonMetrics)));
  const sdJobs = jobs.filter((j) => (j.file_sd_configs || []).some((s) => (s.files || []).includes(shipped.fileSd)));
  if (daemonJobs.length !== 1) problems.push(`expected one job scraping the daemon at ${shipped.daemonMetrics} (config/cluster.yaml node.metrics), found ${daemonJobs.length}`);
  if (sdJobs.length !== 1) problems.push(`expected one job reading the daemon's file_sd output ${shipped.fileSd}, found ${sdJobs.length}`);
  if (JSON.stringify(cfg.rule_files) !== JSON.stringify(['alerts.yml'])) problems.push(`rule_files is ${JSON.stringify(cfg.rule_files)}, expected ["alerts.yml"]`);
  if (problems.length) throw new Error(`prometheus/prometheus.yml: ${problems.join('; ')}`);

  cfg.global = { ...(cfg.global || {}), scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
  for (const j of jobs) {
    delete j.scrape_interval;
    delete j.scrape_timeout;
  }
  for (const s of daemonJobs[0].static_configs) s.targets = s.targets.map((t) => (t === shipped.daemonMetrics ? run.daemonMetrics : t));
  for (const s of sdJobs[0].file_sd_configs) {
    s.files = s.files.map((f) => (f === shipped.fileSd ? run.fileSd : f));
    s.refresh_interval = '1s';
  }
  cfg.rule_files = [ALERTS_YML];
  return { yaml: YAML.stringify(cfg), daemonJob: daemonJobs[0].job_name, childrenJob: sdJobs[0].job_name };
}

// prometheus/prometheus.yml for nodes started by tests/node/lib (mesh.js),
// which serve no daemon metrics: the shipped file_sd job alone, reading
// every node's targets file (as the file's "Several nodes" note says), 1 s
// intervals, and `rulesFile` as its rules.
function meshPrometheusConfig(targetFiles, rulesFile) {
  const cfg = YAML.parse(fs.readFileSync(PROMETHEUS_YML, 'utf8'));
  const sdJobs = (cfg.scrape_configs || []).filter((j) => (j.file_sd_configs || []).length > 0);
  if (sdJobs.length !== 1) throw new Error(`prometheus/prometheus.yml: expected one file_sd job, found ${sdJobs.length}`);
  const job = sdJobs[0];
  delete job.scrape_interval;
  delete job.scrape_timeout;
  job.file_sd_configs = [{ files: targetFiles, refresh_interval: '1s' }];
  cfg.global = { ...(cfg.global || {}), scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' };
  cfg.scrape_configs = [job];
  cfg.rule_files = [rulesFile];
  return { yaml: YAML.stringify(cfg), childrenJob: job.job_name };
}

// Writes prometheus/alerts.yml to `file` with every rule of the groups in
// `groups` held for `forValue` instead of its shipped `for` (minutes: a
// test makes them fire within seconds). Everything else is the shipped text.
function alertsWithFor(file, groups, forValue) {
  const doc = YAML.parse(fs.readFileSync(ALERTS_YML, 'utf8'));
  let changed = 0;
  for (const gr of doc.groups || []) {
    if (!groups.has(gr.name)) continue;
    for (const r of gr.rules || []) {
      if (r.for !== undefined) changed++;
      r.for = forValue;
    }
  }
  if (changed === 0) throw new Error(`alerts.yml: no rule with a \`for\` in the groups ${[...groups].join(', ')}`);
  fs.writeFileSync(file, YAML.stringify(doc));
  return file;
}

class Prometheus {
  constructor(dir, port, configFile) {
    this.dir = dir;
    this.port = port;
    this.proc = new Proc('prometheus', 'prometheus', [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${port}`,
      '--log.level=info',
    ]);
  }

  async ready() {
    await waitUntil(async () => {
      if (this.proc.exited) throw Object.assign(new Error('prometheus exited'), { fatal: true });
      const r = await httpGet(this.port, '/-/ready');
      return r.status === 200;
    }, { timeout: 30000, what: 'prometheus to be ready' });
  }

  // GET /api/v1/<endpoint>; resolves with `data`, rejects with the API's error.
  async api(endpoint, params = {}) {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      for (const one of Array.isArray(v) ? v : [v]) qs.append(k, String(one));
    }
    const r = await httpGet(this.port, `/api/v1/${endpoint}?${qs}`);
    let body;
    try {
      body = JSON.parse(r.body);
    } catch {
      throw new Error(`/api/v1/${endpoint}: HTTP ${r.status}: ${r.body.slice(0, 300)}`);
    }
    if (body.status !== 'success') throw new Error(`${body.errorType || 'error'}: ${body.error || r.body.slice(0, 300)}`);
    return body.data;
  }

  stop() {
    return this.proc.stop(15000);
  }
}

// Starts Prometheus on a free loopback port with `configYaml`.
async function startPrometheus(dir, configYaml) {
  const configFile = path.join(dir, 'prometheus.yml');
  fs.writeFileSync(configFile, configYaml);
  let lastError;
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    const p = new Prometheus(path.join(dir, `prom-${attempt}`), await freePort(), configFile);
    try {
      await p.ready();
      return p;
    } catch (e) {
      lastError = new Error(`${e.message}\n${p.proc.logTail()}`);
      await p.stop();
      if (!p.proc.lines.some((l) => /address already in use/i.test(l))) break;
    }
  }
  throw lastError;
}

module.exports = {
  binDir, delay, waitUntil, httpGet, freePort, Proc,
  clusterTopology, startCluster, prometheusConfig, meshPrometheusConfig, alertsWithFor, startPrometheus, findNode, workers,
  CLUSTER_YAML, PROMETHEUS_YML, ALERTS_YML,
};
