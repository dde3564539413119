'use strict';
// The real switchboard-worker as a child process, its metrics endpoint, and
// plain HTTP requests to it. The binary comes from $SWITCHBOARD_WORKER
// (ctest sets it to the built target).

const { spawn } = require('node:child_process');
const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const nodeTest = require('node:test');
const { withTimeout, waitUntil } = require('./util');

const START_TIMEOUT_MS = 10000;
const STOP_TIMEOUT_MS = 10000;
const LOG_LINES_KEPT = 400;
const LOG_LINES_SHOWN = 150;

// Every worker this process started, so a failing test can show their logs.
const startedWorkers = [];

function workerBinary() {
  const bin = process.env.SWITCHBOARD_WORKER;
  if (!bin) throw new Error('SWITCHBOARD_WORKER is not set (path to the switchboard-worker binary)');
  return bin;
}

class Worker {
  constructor(proc, args) {
    this.proc = proc;
    this.args = args;
    this.lines = [];
    this.droppedLines = 0;
    this.startedAt = Date.now();
    this.stoppedAt = null;
    this.port = 0;
    this.metricsPort = 0;
    this.exit = new Promise((resolve) => {
      proc.on('exit', (code, signal) => {
        this.stoppedAt = Date.now();
        resolve({ code, signal });
      });
    });
  }

  get url() {
    return `ws://127.0.0.1:${this.port}/socket`;
  }

  get alive() {
    return this.proc.exitCode === null && this.proc.signalCode === null;
  }

  addLine(line) {
    this.lines.push(line);
    if (this.lines.length > LOG_LINES_KEPT) {
      this.lines.shift();
      this.droppedLines++;
    }
  }

  logTail(n = LOG_LINES_SHOWN) {
    const shown = this.lines.slice(-n);
    const skipped = this.droppedLines + this.lines.length - shown.length;
    const head = `--- switchboard-worker ${this.args.join(' ')} (pid ${this.proc.pid}` +
      `${skipped ? `, ${skipped} earlier lines not shown` : ''}) ---`;
    return [head, ...shown].join('\n');
  }

  // The worker's resident memory now and at its peak so far (VmRSS and
  // VmHWM from /proc), in bytes. The peak catches what a sampled gauge
  // misses: memory held for a moment and returned before the next sample.
  memory() {
    const status = fs.readFileSync(`/proc/${this.proc.pid}/status`, 'utf8');
    const bytes = (key) => {
      const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(status);
      if (!m) throw new Error(`no ${key} in /proc/${this.proc.pid}/status`);
      return Number(m[1]) * 1024;
    };
    return { rss: bytes('VmRSS'), peak: bytes('VmHWM') };
  }

  // SIGTERM, then the worker must exit 0 within 10 s (SIGKILL after that).
  async stop() {
    if (this.alive) this.proc.kill('SIGTERM');
    let result;
    try {
      result = await withTimeout(this.exit, STOP_TIMEOUT_MS, `worker pid ${this.proc.pid} to exit after SIGTERM`);
    } catch (e) {
      this.proc.kill('SIGKILL');
      await this.exit;
      throw new Error(`${e.message}; killed it with SIGKILL\n${this.logTail()}`);
    }
    if (result.code !== 0) {
      throw new Error(`worker exited with code ${result.code} signal ${result.signal} after SIGTERM, expected 0\n` +
        this.logTail());
    }
  }

  // Ends the worker at once without checking how (cleanup after a failure).
  async kill() {
    if (this.alive) this.proc.kill('SIGKILL');
    await this.exit;
  }
}

// Starts the worker on 127.0.0.1 (port 0 unless `listen` says otherwise) with
// a metrics endpoint, and resolves once it prints both listening lines.
// `bin`: another worker binary than $SWITCHBOARD_WORKER.
async function startWorker(args = [], { listen = '127.0.0.1:0', env = {}, bin = null } = {}) {
  const fullArgs = ['--listen', listen, '--metrics', '127.0.0.1:0', ...args];
  const proc = spawn(bin || workerBinary(), fullArgs, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  const worker = new Worker(proc, fullArgs);
  startedWorkers.push(worker);

  const ready = new Promise((resolve, reject) => {
    const check = () => {
      if (worker.port && worker.metricsPort) resolve();
    };
    const onData = (stream) => {
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        partial += chunk;
        let nl;
        while ((nl = partial.indexOf('\n')) >= 0) {
          const line = partial.slice(0, nl);
          partial = partial.slice(nl + 1);
          worker.addLine(line);
          const m = /metrics on 127\.0\.0\.1:(\d+)/.exec(line);
          if (m) worker.metricsPort = Number(m[1]);
          const l = /listening on 127\.0\.0\.1:(\d+)/.exec(line);
          if (l && !/metrics/.test(line)) worker.port = Number(l[1]);
          check();
        }
      });
    };
    onData(proc.stderr);
    onData(proc.stdout);
    proc.on('error', reject);
    worker.exit.then(({ code, signal }) =>
      reject(new Error(`worker exited (code ${code}, signal ${signal}) before it was listening`)));
  });
  try {
    await withTimeout(ready, START_TIMEOUT_MS, 'the worker to print "listening on" and "metrics on"');
  } catch (e) {
    await worker.kill();
    throw new Error(`${e.message}\n${worker.logTail()}`);
  }
  return worker;
}

// Runs the worker with `args` when it is expected to refuse to start:
// resolves with {code, signal, stderr} once it has exited (bounded).
async function runWorkerToExit(args, { timeout = START_TIMEOUT_MS } = {}) {
  const proc = spawn(workerBinary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (c) => { stderr += c; });
  proc.stdout.resume();
  const exited = new Promise((resolve, reject) => {
    proc.on('error', reject);
    proc.on('close', (code, signal) => resolve({ code, signal, stderr }));
  });
  try {
    return await withTimeout(exited, timeout, `switchboard-worker ${args.join(' ')} to exit`);
  } catch (e) {
    proc.kill('SIGKILL');
    throw new Error(`${e.message}\n${stderr}`);
  }
}

// A port that was free a moment ago (for tests that restart a worker on the
// same port).
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

// Wraps a test body so that, when it fails, the log tail of every worker
// that was running during the test goes to stderr (the test runner shows it
// with the file's output).
function withWorkerLogs(fn) {
  return async function (t) {
    const since = Date.now();
    try {
      return await fn(t);
    } catch (e) {
      const logs = startedWorkers
        .filter((w) => w.stoppedAt === null || w.stoppedAt >= since)
        .map((w) => w.logTail())
        .join('\n');
      if (logs) process.stderr.write(`--- logs of the workers of failed test "${t.name}" ---\n${logs}\n`);
      throw e;
    }
  };
}

// node:test's `it` with a default time bound and worker logs on failure.
function it(name, opts, fn) {
  if (typeof opts === 'function') {
    fn = opts;
    opts = {};
  }
  return nodeTest.it(name, { timeout: 60000, ...opts }, withWorkerLogs(fn));
}

// --- HTTP

function httpRequest(port, { host = '127.0.0.1', method = 'GET', path = '/', headers = {}, timeout = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path, headers, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c) => { body += c; });
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body }));
      res.on('error', reject);
    });
    req.setTimeout(timeout, () => req.destroy(new Error(`HTTP ${method} ${path} timed out after ${timeout} ms`)));
    req.on('error', reject);
    req.end();
  });
}

// --- Metrics (Prometheus text format)

// `worker`: {metricsPort}, and metricsHost where it is not 127.0.0.1.
async function scrape(worker) {
  const res = await httpRequest(worker.metricsPort, { host: worker.metricsHost, path: '/metrics' });
  if (res.status !== 200) throw new Error(`/metrics answered HTTP ${res.status}`);
  return res.body;
}

function parseLabels(text) {
  const labels = {};
  const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  let m;
  while ((m = re.exec(text)) !== null) labels[m[1]] = m[2];
  return labels;
}

// The sum of the samples of `name` whose labels include `labels`, or
// undefined if there is none.
function sampleValue(text, name, labels = {}) {
  let found = false;
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || !line.startsWith(name)) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = parseLabels(m[3] || '');
    if (!Object.entries(labels).every(([k, v]) => have[k] === String(v))) continue;
    found = true;
    sum += Number(m[4]);
  }
  return found ? sum : undefined;
}

async function metric(worker, name, labels = {}) {
  return sampleValue(await scrape(worker), name, labels);
}

// Polls /metrics until `pred(value)` holds (value is undefined while the
// series does not exist); returns the value.
async function waitForMetric(worker, name, labels, pred, { timeout = 10000 } = {}) {
  let last;
  const desc = `${name}${JSON.stringify(labels)}`;
  try {
    await waitUntil(async () => {
      last = await metric(worker, name, labels);
      return pred(last);
    }, { timeout, interval: 100, what: `metric ${desc} to satisfy ${pred}` });
  } catch (e) {
    throw new Error(`${e.message}; last value ${last}`);
  }
  return last;
}

module.exports = {
  startWorker,
  runWorkerToExit,
  freePort,
  withWorkerLogs,
  it,
  httpRequest,
  scrape,
  sampleValue,
  metric,
  waitForMetric,
};
